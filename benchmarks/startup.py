"""Start-up cost of the CLI, and a tiny ``mmfuse train`` against a plain PyTorch script doing the same work.

Protocol (issue 13): whole processes in groups of one baseline A and its B commands; after warm-up runs of each
member (file cache, .pyc), ``--pairs`` rounds in which every member runs once, in an order rotated round by round
(so neither the baseline nor any B always runs first, and load drift hits all alike); per round the ratio B / A of
each B against the A of the same round. Reported per B: median wall time of each side, median ratio and its spread
(25th-75th percentile of the per-round ratios, and min-max), and the same for the children's CPU time (user + sys:
on a loaded machine the steadier figure); PASS/FAIL of the gated rows against the issue's target (median wall ratio
<= 1.5x); exit status 1 if a gated row fails. Thread count: the children get OMP_NUM_THREADS / MKL_NUM_THREADS =
--threads and the plain script calls torch.set_num_threads(--threads).

Rows (A = baseline, B = mmfuse):
  import  python -c "import torch"     vs  mmfuse --help                                        (gated)
  import  python -c "import torch"     vs  mmfuse list                                          (gated)
  import  python -c "import torch"     vs  python -c "from mmfuse.config import load_config; load_config(...)"  (gated)
  train   plain PyTorch script (below) vs  (a) tiny mmfuse train, the current defaults             (gated: the target)
  train   plain PyTorch script         vs  (b) the same with the old defaults
                                               training.evaluate_patterns=true training.plots=true  (info)
  train   plain PyTorch script         vs  (c) the same with training.diagnostics=false          (info)
The tiny train is ``mmfuse train examples/avmnist_families.yaml``, 1 epoch, 20 batches, no progress bar.

The plain script does the same work as the tiny ``mmfuse train`` without diagnostics: parse the same config, load
the same data, build the same model (mmfuse.build_model), 20 AdamW steps at batch 32 with the same lr / weight decay,
one validation and one test pass (accuracy), and save the weights (safetensors) -- a hand-written loop, no Lightning.

Output: the table on stdout; files only when asked (a plain run never overwrites the figures of record):
  --json FILE   raw wall AND CPU timings of every run as a pyperf BenchmarkSuite (benchmarks named "... [wall]" /
                "... [cpu]"; ``python -m pyperf stats FILE`` reads it) and FILE's .summary.json (the rows, with the
                per-round wall and CPU seconds of both sides, the load average before and after)
  --record      the same into benchmarks/results/startup.json (startup_import.json / startup_train.json with --only)

Run:  cd /work/main && .venv/bin/python benchmarks/startup.py [--pairs 5] [--threads 1] [--only import|train] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MMFUSE = str(Path(PY).with_name("mmfuse"))
CONFIG = str(ROOT / "examples" / "avmnist_families.yaml")
TINY = ["--set", "training.max_epochs=1", "--set", "training.limit_train_batches=20"]

PLAIN = r'''
import sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
from mmfuse.config import load_config
from mmfuse.datasets import load_dataset
from mmfuse.models import build_model
from safetensors.torch import save_file

cfg = load_config(sys.argv[1], ["training.max_epochs=1", "training.limit_train_batches=20"])
torch.manual_seed(cfg.seed)
d = load_dataset(cfg.data.name, seed=cfg.seed, **cfg.data.options)
tr = d["train"]
model = build_model(cfg.model, tr.shapes, int(tr.num_classes), "multiclass")
opt = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
g = torch.Generator().manual_seed(cfg.seed)
order = torch.randperm(len(tr), generator=g).tolist()
bs = cfg.data.batch_size
model.train()
for i in range(cfg.training.limit_train_batches):
    b = tr.batch(order[i * bs:(i + 1) * bs])
    loss = torch.nn.functional.cross_entropy(model(b).logits, b.target)
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()
accs = {}
with torch.no_grad():
    for split in ("val", "test"):
        ds, correct = d[split], 0
        for s in range(0, len(ds), cfg.data.eval_batch_size):
            b = ds.batch(list(range(s, min(len(ds), s + cfg.data.eval_batch_size))))
            correct += int((model(b).logits.argmax(1) == b.target).sum())
        accs[split] = correct / len(ds)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[3] + "/weights.safetensors")
print(accs)
'''


def groups_for(only: str | None, tmp: Path, threads: int) -> list[tuple[str, list[str], list[tuple[str, list[str], bool]]]]:
    """[(A name, A command, [(B name, B command, gated), ...]), ...]"""
    plain = tmp / "plain_train.py"
    plain.write_text(PLAIN)
    (tmp / "plain").mkdir(exist_ok=True)
    validate = f"from mmfuse.config import load_config; load_config({CONFIG!r})"
    out = []
    if only in (None, "import"):
        out.append(("import torch", [PY, "-c", "import torch"],
                    [("mmfuse --help", [MMFUSE, "--help"], True),
                     ("mmfuse list", [MMFUSE, "list"], True),
                     ("config validation", [PY, "-c", validate], True)]))
    if only in (None, "train"):
        train = [MMFUSE, "train", CONFIG, *TINY, "--out", str(tmp / "mm"), "--set", "training.progress=false"]
        out.append(("plain PyTorch script", [PY, str(plain), CONFIG, str(threads), str(tmp / "plain")],
                    [("(a) tiny train, defaults", train, True),
                     ("(b) tiny train, old defaults", [*train, "--set", "training.evaluate_patterns=true",
                                                        "--set", "training.plots=true"], False),
                     ("(c) tiny train, diagnostics=false", [*train, "--set", "training.diagnostics=false"], False)]))
    return out


def run(cmd: list[str], env: dict, tmp: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole process; CPU = the child's user + sys time."""
    import resource
    import shutil

    shutil.rmtree(tmp / "mm", ignore_errors=True)  # mmfuse train refuses a non-empty output folder
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return dt, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


TARGET = 1.5  # issue 13: every gated B / A ratio here <= 1.5x (median of the paired wall-clock ratios)


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=7, help="rounds per group (every member once per round; after warm-up)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs of each member, not timed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["import", "train"], default=None)
    ap.add_argument("--json", default=None, help="write the raw wall + CPU timings (pyperf suite) and a .summary.json "
                    "here; by default no file is written")
    ap.add_argument("--record", action="store_true", help="write the figures of record: benchmarks/results/"
                    "startup.json (startup_<only>.json with --only)")
    args = ap.parse_args()
    if args.record and args.json is None:
        args.json = str(ROOT / "benchmarks" / "results" / f"startup{'_' + args.only if args.only else ''}.json")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONWARNINGS": "ignore"}
    import pyperf

    load0 = os.getloadavg()
    print(f"load average at the start: {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f} on {os.cpu_count()} cores; "
          f"{args.pairs} rounds per group after {args.warmup} warm-up run(s) of each member, {args.threads} thread(s)",
          flush=True)
    benches, rows = {}, []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for a_name, a_cmd, bs in groups_for(args.only, tmp, args.threads):
            members = [(a_name, a_cmd)] + [(b, c) for b, c, _ in bs]
            for _ in range(args.warmup):
                for _, cmd in members:
                    run(cmd, env, tmp)
            wall = {name: [] for name, _ in members}
            cpu = {name: [] for name, _ in members}
            for r in range(args.pairs):  # rotated order: round r starts with member r mod n
                k = r % len(members)
                for name, cmd in members[k:] + members[:k]:
                    w, c = run(cmd, env, tmp)
                    wall[name].append(w), cpu[name].append(c)
            for b_name, _, gated in bs:
                ta, tb, ca, cb = wall[a_name], wall[b_name], cpu[a_name], cpu[b_name]
                ratios = [b / a for a, b in zip(ta, tb)]
                cpu_ratios = [b / a for a, b in zip(ca, cb)]
                row = {"a": a_name, "b": b_name, "gated": gated,
                       "a_median_s": statistics.median(ta), "b_median_s": statistics.median(tb),
                       "ratio_median": statistics.median(ratios), "ratio_q25": quantile(ratios, 0.25),
                       "ratio_q75": quantile(ratios, 0.75), "ratio_min": min(ratios), "ratio_max": max(ratios),
                       "a_cpu_median_s": statistics.median(ca), "b_cpu_median_s": statistics.median(cb),
                       "cpu_ratio_median": statistics.median(cpu_ratios), "cpu_ratio_q25": quantile(cpu_ratios, 0.25),
                       "cpu_ratio_q75": quantile(cpu_ratios, 0.75), "cpu_ratio_min": min(cpu_ratios),
                       "cpu_ratio_max": max(cpu_ratios), "pairs": args.pairs, "threads": args.threads,
                       "target": TARGET, "pass": statistics.median(ratios) <= TARGET,
                       "a_wall_s": ta, "b_wall_s": tb, "a_cpu_s": ca, "b_cpu_s": cb}
                rows.append(row)
                verdict = ("PASS" if row["pass"] else "FAIL") if gated else ("<= 1.5x" if row["pass"] else "> 1.5x") + ", not gated"
                print(f"{b_name:>34} vs {a_name:<20} {row['b_median_s']:6.2f} s vs {row['a_median_s']:6.2f} s   ratio "
                      f"{row['ratio_median']:.2f}x (IQR {row['ratio_q25']:.2f}-{row['ratio_q75']:.2f}, "
                      f"min-max {row['ratio_min']:.2f}-{row['ratio_max']:.2f}); CPU {row['b_cpu_median_s']:.2f} s vs "
                      f"{row['a_cpu_median_s']:.2f} s, ratio {row['cpu_ratio_median']:.2f}x "
                      f"(IQR {row['cpu_ratio_q25']:.2f}-{row['cpu_ratio_q75']:.2f})  {verdict}", flush=True)
            for name, _ in members:
                for clock, ts in (("wall", wall[name]), ("cpu", cpu[name])):
                    key = f"{name} [{a_name} group] [{clock}]"
                    benches[key] = pyperf.Benchmark([pyperf.Run(ts, metadata={"name": key, "unit": "second",
                                                                             "loops": 1, "threads": args.threads},
                                                                collect_metadata=False)])
    load1 = os.getloadavg()
    print(f"load average at the end: {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f} on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pyperf.BenchmarkSuite(list(benches.values())).dump(args.json, replace=True)
        summary = {"rows": rows, "load_start": list(load0), "load_end": list(load1), "threads": args.threads,
                   "pairs": args.pairs, "warmup": args.warmup, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                   "command": " ".join(sys.argv)}
        Path(args.json).with_suffix(".summary.json").write_text(json.dumps(summary, indent=2))
        print(f"raw timings (pyperf, wall + CPU): {args.json}; summary: {Path(args.json).with_suffix('.summary.json')}")
    for r in rows:  # one verdict line per row (benchmarks/run_all.py collects them)
        tag = ("PASS" if r["pass"] else "FAIL") if r["gated"] else "INFO"
        print(f"{tag}: {r['b']} vs {r['a']} {r['ratio_median']:.2f}x (paired median wall, IQR {r['ratio_q25']:.2f}-"
              f"{r['ratio_q75']:.2f}; CPU {r['cpu_ratio_median']:.2f}x) " + (f"target <= {TARGET}x" if r["gated"] else
              f"{'<=' if r['pass'] else '>'} {TARGET}x, not gated"))
    failed = [r for r in rows if r["gated"] and not r["pass"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
