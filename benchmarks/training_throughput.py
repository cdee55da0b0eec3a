"""Training throughput: mmfuse (`fit`, Lightning) versus a hand-written PyTorch loop (issue 13, item 5).

Same model (built by `build_model` from the demo config, concat fusion), same data (AV-MNIST hard
train/val/test splits), same batch size (128), optimiser (AdamW, lr 5e-3, weight decay 1e-4), epochs
and seed. Both validate once per epoch (accuracy), keep the weights of the best validation epoch, and
after training restore them and evaluate the validation and test splits once; no checkpoint, no logs, no
progress bar (``save=False``). The hand loop indexes pre-stacked tensors (the fastest plain loop there is: no
per-sample collate, no DataLoader).

Two mmfuse sides, each against the same hand loop:

* **same work** (``mmfuse``): ``training.diagnostics=false`` and ``evaluate_patterns=False``: no per-step
  gradient-norm monitor, no post-training only-present evaluation / probe, no per-pattern test passes -- the
  work the hand loop does.
* **defaults** (``mmfuse-defaults``): ``mmfuse.fit(cfg, data, save=False)`` with the library's defaults:
  ``training.diagnostics=true`` (a ``GradNormMonitor`` callback on every step; after training each modality's
  only-present test metric, and a torch linear probe only for a modality whose metric is near chance) and
  ``training.evaluate_patterns="auto"`` (here: 3 epochs x 2,100 rows >= 600 test rows x 3 patterns, so the
  per-pattern test passes run). The hand loop does none of this: the ratio is the price of the defaults.

Two figures per side, each a paired ratio (hand time / mmfuse time = mmfuse throughput / hand throughput):

* **training loop alone**: mmfuse: the wall time of ``trainer.fit`` (``RunResult.train_seconds``: Lightning's
  fit, i.e. its loop set-up, the epochs of training and per-epoch validation); hand loop: the wall time
  of its epochs (training + per-epoch validation + keeping the best weights), model and optimiser built
  before the clock starts.
* **whole call**: the whole ``fit(...)`` call (model build, Trainer set-up, training, validation, best
  weights restored, final val + test evaluation) against the whole hand function (model build,
  optimiser, the epochs, restore, final val + test evaluation). Imports (Lightning included) and
  data loading are outside the timed region: the warm-up runs both sides first. Process start-up and
  imports are measured by ``benchmarks/startup.py``.

Protocol (benchmarks/README.md): one warm-up run of each side, then ``--repeats`` rounds with the sides
interleaved in one process, the order rotated round by round (hand, mmfuse, defaults / mmfuse, defaults, hand /
...); torch threads ``--threads`` (OMP/MKL set to the same); wall clock (``time.perf_counter``) and CPU time
(``time.process_time``). Median, IQR and min-max of the per-round ratios. Files only when asked: ``--output
FILE`` writes the raw wall and CPU timings as a pyperf BenchmarkSuite (``python -m pyperf stats FILE`` reads it)
and FILE's ``.summary.json`` (per-round seconds, ratios, load average); a plain run writes nothing.

    .venv/bin/python benchmarks/training_throughput.py [--repeats 7] [--epochs 3] [--threads 1] [--no-defaults] \
        [--output benchmarks/results/training_throughput.json]

Target (issue 13): ratio mmfuse / hand >= 0.95, gated (PASS/FAIL) on both figures of the same-work side and on
the training loop alone of the defaults side; the defaults' whole call is reported (INFO), not gated, since it
does work the hand loop does not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def _threads_from_argv() -> str:
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


# before torch is imported, so its OpenMP pool has the stated size
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = _threads_from_argv()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pyperf  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mmfuse.cli import DEMO_CONFIG  # noqa: E402
from mmfuse.config import parse_config  # noqa: E402
from mmfuse.models import build_model  # noqa: E402
from mmfuse.training.fit import fit as mmfuse_train, load_data  # noqa: E402


def quantiles(xs):
    """(median, q1, q3, min, max) of a list of numbers."""
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0], xs[0], xs[0]]
    return statistics.median(xs), q[0], q[2], min(xs), max(xs)


def accuracy(model, full, bs: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(full.target), bs):
            b = full.select(slice(i, i + bs))
            correct += int((model(b).logits.argmax(-1) == b.target).sum())
    return correct / len(full.target)


def hand_loop(cfg, data, epochs: int) -> dict:
    """The hand-written loop; returns wall / CPU seconds of the epochs alone and of the whole call."""
    w0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    tr = data["train"]
    model = build_model(cfg.model, tr.shapes, int(tr.num_classes), "multiclass")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
    full, val, test = tr.batch(), data["val"].batch(), data["test"].batch()  # pre-stacked whole splits
    n, bs, ebs = len(tr), cfg.data.batch_size, cfg.data.eval_batch_size
    g = torch.Generator().manual_seed(cfg.seed)
    best, best_state = -1.0, None
    w1, c1 = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            b = full.select(perm[i:i + bs])
            loss = F.cross_entropy(model(b).logits, b.target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = accuracy(model, val, ebs)
        if acc > best:
            best, best_state = acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
    w2, c2 = time.perf_counter(), time.process_time()
    model.load_state_dict(best_state)
    metrics = {"val_accuracy": accuracy(model, val, ebs), "test_accuracy": accuracy(model, test, ebs)}
    w3, c3 = time.perf_counter(), time.process_time()
    return {"loop_wall": w2 - w1, "loop_cpu": c2 - c1, "whole_wall": w3 - w0, "whole_cpu": c3 - c0, **metrics}


SIDES = ("hand", "mmfuse", "mmfuse-defaults")


def mmfuse_fit(cfg, data, epochs: int, defaults: bool = False) -> dict:
    """``mmfuse.fit``; the loop time is its ``trainer.fit`` (``RunResult.train_seconds``). ``defaults``: the
    library's defaults (diagnostics, ``evaluate_patterns="auto"``); otherwise the hand loop's work only."""
    extra = [] if defaults else ["training.diagnostics=false"]
    c = parse_config(cfg.model_dump(), [f"training.max_epochs={epochs}", "training.progress=false", *extra])
    import lightning as L

    # CPU time of trainer.fit alone: wrap Lightning's Trainer.fit for this call (no change to the library)
    orig, cpu = L.Trainer.fit, {}

    def timed(self, *a, **k):
        t = time.process_time()
        try:
            return orig(self, *a, **k)
        finally:
            cpu["loop"] = time.process_time() - t

    w0, c0 = time.perf_counter(), time.process_time()
    L.Trainer.fit = timed
    try:
        r = mmfuse_train(c, data, save=False, progress=False, evaluate_patterns=None if defaults else False)
    finally:
        L.Trainer.fit = orig
    w3, c3 = time.perf_counter(), time.process_time()
    return {"loop_wall": r.train_seconds, "loop_cpu": cpu["loop"], "whole_wall": w3 - w0, "whole_cpu": c3 - c0,
            "val_accuracy": r.val["metrics"]["accuracy"], "test_accuracy": r.test["metrics"]["accuracy"],
            "patterns": "patterns" in r.test, "diagnostics": "diagnostics" in r.test}


def run_side(side, cfg, data, epochs):
    if side == "hand":
        return hand_loop(cfg, data, epochs)
    return mmfuse_fit(cfg, data, epochs, defaults=side == "mmfuse-defaults")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds (one run of each side per round)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default=None, help="write the raw wall + CPU timings (pyperf BenchmarkSuite) and a "
                    ".summary.json here; by default no file is written")
    ap.add_argument("--no-defaults", action="store_true", help="only the same-work side (no mmfuse-defaults side)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sides = SIDES[:2] if args.no_defaults else SIDES
    cfg = parse_config(json.loads(json.dumps(DEMO_CONFIG)), ["model.fusion.name=concat"])
    data = load_data(cfg)
    n = len(data["train"])
    load0 = os.getloadavg()
    # warm-up: every side once (imports, Lightning, allocator, kernels)
    for side in sides:
        run_side(side, cfg, data, 1)
    runs = {side: [] for side in sides}
    for r in range(args.repeats):
        k = r % len(sides)
        order = sides[k:] + sides[:k]  # rotated: every side runs first, second, ... equally often
        for side in order:
            runs[side].append(run_side(side, cfg, data, args.epochs))
        print(f"round {r} ({' > '.join(order)}): loop wall " + " / ".join(f"{s} {runs[s][-1]['loop_wall']:.2f} s" for s in sides)
              + "; whole wall " + " / ".join(f"{runs[s][-1]['whole_wall']:.2f}" for s in sides)
              + "; test acc " + " / ".join(f"{runs[s][-1]['test_accuracy']:.4f}" for s in sides), flush=True)
    load1 = os.getloadavg()

    meta = {"threads": str(args.threads), "epochs": str(args.epochs), "train_samples": str(n),
            "batch_size": str(cfg.data.batch_size), "unit": "second"}
    bench = []
    for side in runs:
        for key in ("loop_wall", "loop_cpu", "whole_wall", "whole_cpu"):
            vals = [x[key] for x in runs[side]]
            bench.append(pyperf.Benchmark([pyperf.Run(vals, metadata={"name": f"train-{key}-{side}", **meta},
                                                      collect_metadata=False)]))

    print(f"\nTraining throughput, AV-MNIST hard ({n} training samples), concat, batch {cfg.data.batch_size}, "
          f"{args.epochs} epochs, torch threads {args.threads}, {args.repeats} interleaved rounds (rotated order) after "
          f"one warm-up of each side (torch {torch.__version__}, pyperf {pyperf.__version__}); load average "
          f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end on {os.cpu_count()} cores")
    if "mmfuse-defaults" in runs:
        d = runs["mmfuse-defaults"][-1]
        print(f"  mmfuse-defaults ran: per-pattern test passes {d['patterns']}, diagnostics {d['diagnostics']}")
    verdicts, summary = [], {}
    for side in sides[1:]:
        for key, label in (("loop_wall", "training loop alone, wall"), ("loop_cpu", "training loop alone, CPU"),
                           ("whole_wall", "whole call, wall"), ("whole_cpu", "whole call, CPU")):
            hs = [x[key] for x in runs["hand"]]
            ms = [x[key] for x in runs[side]]
            hm, ms_med = statistics.median(hs), statistics.median(ms)
            ratio = [a / b for a, b in zip(hs, ms)]  # = throughput mmfuse / throughput hand, per round
            rm, r1, r3, lo, hi = quantiles(ratio)
            summary[f"{side}:{key}"] = {"hand_median_s": hm, "mmfuse_median_s": ms_med, "ratio_median": rm,
                                        "ratio_q25": r1, "ratio_q75": r3, "ratio_min": lo, "ratio_max": hi}
            print(f"  {side:15s} {label:26s} hand {hm:6.2f} s ({args.epochs * n / hm:5.0f} samples/s)  {ms_med:6.2f} s "
                  f"({args.epochs * n / ms_med:5.0f} samples/s)  ratio mmfuse/hand median {rm:.3f} "
                  f"(IQR {r1:.3f}-{r3:.3f}, min-max {lo:.3f}-{hi:.3f}) {'>= 0.95' if rm >= 0.95 else '< 0.95'}")
            if key.endswith("wall"):
                gated = side == "mmfuse" or key == "loop_wall"
                verdicts.append((f"{'same work' if side == 'mmfuse' else 'defaults'}, {label}", rm, gated))
    for side in sides:
        print(f"  test accuracy {side}: {statistics.median(x['test_accuracy'] for x in runs[side]):.4f}")
    for label, rm, gated in verdicts:
        tag = ("PASS" if rm >= 0.95 else "FAIL") if gated else "INFO"
        print(f"{tag}: {label} ratio mmfuse/hand {rm:.3f} ({'target >= 0.95' if gated else 'not gated: more work than the hand loop'})")
    if args.output:
        pyperf.BenchmarkSuite(bench).dump(args.output, replace=True)
        Path(args.output).with_suffix(".summary.json").write_text(json.dumps({
            "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "threads": args.threads,
            "epochs": args.epochs, "repeats": args.repeats, "load_start": list(load0), "load_end": list(load1),
            "figures": summary, "runs": runs}, indent=2))
        print(f"raw timings (pyperf, wall + CPU): {args.output}; summary: {Path(args.output).with_suffix('.summary.json')}")
    return 0 if all(rm >= 0.95 for _, rm, gated in verdicts if gated) else 1


if __name__ == "__main__":
    sys.exit(main())
