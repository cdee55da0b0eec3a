"""Start-up cost of the CLI, and a tiny ``mmfuse train`` against a plain PyTorch script doing the same work.

Protocol (issue 13): whole processes, paired and interleaved A/B/A/B (so load drift hits both sides alike),
after warm-up runs of each (file cache, .pyc); per pair the ratio B/A; reported: median time of each side,
median ratio and its spread (25th-75th percentile of the per-pair ratios, and min-max), and the same for the
children's CPU time (user + sys: on a loaded machine the steadier figure); PASS/FAIL of each pair against the
issue's target (median wall ratio <= 1.5x); exit status 1 if any fails. Thread count: the
children get OMP_NUM_THREADS / MKL_NUM_THREADS = --threads and the training scripts call
torch.set_num_threads(--threads). The raw timings are written as a pyperf BenchmarkSuite (one benchmark per
command) so ``python -m pyperf stats|compare_to FILE`` can read them.

Pairs measured (A = baseline, B = mmfuse):
  import        python -c "import torch"          vs  mmfuse --help
  import        python -c "import torch"          vs  mmfuse list
  import        python -c "import torch"          vs  python -c "from mmfuse.config import load_config; load_config(...)"
  train         plain PyTorch script (below)      vs  mmfuse train examples/avmnist_families.yaml, 1 epoch, 20 batches
  train         plain PyTorch script (below)      vs  the same with training.evaluate_patterns=auto, training.plots=auto
  train         plain PyTorch script (below)      vs  the same, and training.diagnostics=false (no probe: no scikit-learn)

The plain script does the same work as the tiny ``mmfuse train``: parse the same config, load the same data, build
the same model (mmfuse.build_model), 20 AdamW steps at batch 32 with the same lr / weight decay, one validation and
one test pass (accuracy), and save the weights (safetensors) -- with a hand-written loop, no Lightning.

Run:  cd /work/main && .venv/bin/python benchmarks/startup.py [--pairs 7] [--threads 1] [--only import|train]
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


def pairs_for(only: str | None, tmp: Path, threads: int) -> list[tuple[str, list[str], str, list[str]]]:
    plain = tmp / "plain_train.py"
    plain.write_text(PLAIN)
    validate = f"from mmfuse.config import load_config; load_config({CONFIG!r})"
    out = []
    if only in (None, "import"):
        out += [("import torch", [PY, "-c", "import torch"], "mmfuse --help", [MMFUSE, "--help"]),
                ("import torch", [PY, "-c", "import torch"], "mmfuse list", [MMFUSE, "list"]),
                ("import torch", [PY, "-c", "import torch"], "config validation", [PY, "-c", validate])]
    if only in (None, "train"):
        out += [("plain PyTorch script", [PY, str(plain), CONFIG, str(threads), str(tmp / "plain")],
                 "tiny mmfuse train", [MMFUSE, "train", CONFIG, *TINY, "--out", str(tmp / "mm"),
                                       "--set", "training.progress=false"]),
                ("plain PyTorch script", [PY, str(plain), CONFIG, str(threads), str(tmp / "plain")],
                 "tiny train, auto", [MMFUSE, "train", CONFIG, *TINY, "--out", str(tmp / "mm"),
                                      "--set", "training.progress=false", "--set", "training.evaluate_patterns=auto",
                                      "--set", "training.plots=auto"]),
                ("plain PyTorch script", [PY, str(plain), CONFIG, str(threads), str(tmp / "plain")],
                 "tiny, auto, no diag", [MMFUSE, "train", CONFIG, *TINY, "--out", str(tmp / "mm"),
                                         "--set", "training.progress=false", "--set", "training.evaluate_patterns=auto",
                                         "--set", "training.plots=auto", "--set", "training.diagnostics=false"])]
    (tmp / "plain").mkdir(exist_ok=True)
    return out


CPU: dict[str, float] = {}  # command line -> CPU seconds (user + sys) of its last run


def run(cmd: list[str], env: dict, tmp: Path) -> float:
    import resource
    import shutil

    shutil.rmtree(tmp / "mm", ignore_errors=True)  # mmfuse train refuses a non-empty output folder
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[" ".join(cmd)] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return dt


TARGET = 1.5  # issue 13: every B / A ratio here <= 1.5x (median of the paired wall-clock ratios)


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=7, help="interleaved A/B pairs per comparison (after warm-up)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs of each side, not timed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["import", "train"], default=None)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "startup.json"),
                    help="pyperf BenchmarkSuite file of the raw timings")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONWARNINGS": "ignore"}
    import pyperf

    benches, rows = {}, []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for a_name, a_cmd, b_name, b_cmd in pairs_for(args.only, tmp, args.threads):
            for _ in range(args.warmup):
                run(a_cmd, env, tmp), run(b_cmd, env, tmp)
            ta, tb, ca, cb = [], [], [], []
            ka, kb = " ".join(a_cmd), " ".join(b_cmd)
            for i in range(args.pairs):  # A/B, then B/A: neither side always runs first
                if i % 2 == 0:
                    ta.append(run(a_cmd, env, tmp)), tb.append(run(b_cmd, env, tmp))
                else:
                    tb.append(run(b_cmd, env, tmp)), ta.append(run(a_cmd, env, tmp))
                ca.append(CPU[ka]), cb.append(CPU[kb])
            ratios = [b / a for a, b in zip(ta, tb)]
            cpu_ratios = [b / a for a, b in zip(ca, cb)]
            row = {"a": a_name, "b": b_name, "a_median_s": statistics.median(ta), "b_median_s": statistics.median(tb),
                   "ratio_median": statistics.median(ratios), "ratio_q25": quantile(ratios, 0.25),
                   "ratio_q75": quantile(ratios, 0.75), "ratio_min": min(ratios), "ratio_max": max(ratios),
                   "pairs": args.pairs, "threads": args.threads,
                   "a_cpu_median_s": statistics.median(ca), "b_cpu_median_s": statistics.median(cb),
                   "cpu_ratio_median": statistics.median(cpu_ratios), "cpu_ratio_q25": quantile(cpu_ratios, 0.25),
                   "cpu_ratio_q75": quantile(cpu_ratios, 0.75), "target": TARGET,
                   "pass": statistics.median(ratios) <= TARGET}
            rows.append(row)
            print(f"{b_name:>20} vs {a_name:<22} {row['b_median_s']:6.2f} s vs {row['a_median_s']:6.2f} s   ratio "
                  f"{row['ratio_median']:.2f}x (IQR {row['ratio_q25']:.2f}-{row['ratio_q75']:.2f}, "
                  f"min-max {row['ratio_min']:.2f}-{row['ratio_max']:.2f}; {args.pairs} pairs, {args.threads} thread(s)); "
                  f"CPU {row['b_cpu_median_s']:.2f} s vs {row['a_cpu_median_s']:.2f} s, ratio {row['cpu_ratio_median']:.2f}x "
                  f"(IQR {row['cpu_ratio_q25']:.2f}-{row['cpu_ratio_q75']:.2f})  "
                  f"{'PASS' if row['pass'] else 'FAIL'} (target <= {TARGET}x)", flush=True)
            for name, ts in ((a_name, ta), (b_name, tb)):
                key = f"{name} [{b_name} pair]"
                benches[key] = pyperf.Benchmark([pyperf.Run(ts, metadata={"name": key, "unit": "second",
                                                                         "loops": 1})])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    suite = pyperf.BenchmarkSuite(list(benches.values()))
    suite.dump(args.json, replace=True)
    Path(args.json).with_suffix(".summary.json").write_text(json.dumps(rows, indent=2))
    print(f"raw timings (pyperf): {args.json}; summary: {Path(args.json).with_suffix('.summary.json')}")
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    failed = [f"{r['b']} vs {r['a']}" for r in rows if not r["pass"]]
    print("PASS: every ratio <= 1.5x" if not failed else f"FAIL: {', '.join(failed)} above {TARGET}x")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
