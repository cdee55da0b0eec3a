"""Page faults on CPU: PyTorch's CPU allocator with and without ``THP_MEM_ALLOC_ENABLE=1`` (transparent huge pages).

``THP_MEM_ALLOC_ENABLE=1`` makes c10's CPU allocator ``madvise(MADV_HUGEPAGE)`` every allocation of >= 2 MiB, so
that the kernel backs it with 2 MiB pages (one fault per 2 MiB instead of one per 4 KiB) when
``/sys/kernel/mm/transparent_hugepage/enabled`` is ``madvise`` (or ``always``); with ``never`` it does nothing.
torch reads the variable once, at its first CPU allocation, so each side here is its own process.

Protocol: paired whole processes. Per workload, one untimed warm-up process of each side, then ``--pairs`` pairs,
the order alternating pair by pair (A B / B A / ...), A = ``THP_MEM_ALLOC_ENABLE=0``, B = ``=1``; every child gets
OMP_NUM_THREADS = MKL_NUM_THREADS = ``--threads`` and calls ``torch.set_num_threads``. Reported per workload and
figure: the median and IQR over the processes of each side, and the median (IQR) of the per-pair ratio B / A;
the 1-min load average at the start and end of each workload. Workloads:

* ``mmtm``: benchmarks/mmtm_overhead.py's realistic sizes (2 x cnn2d 64/128/256 channels at 56/28/14 px, batch 16),
  variants ``none`` (no MMTM block) and ``default`` (default placement) built in one process, 3 warm-up steps
  each, then ``--steps`` interleaved rounds (order rotated); per process, per variant: the median over its steps
  of wall, CPU (user+sys), system time and minor page faults of one training step, and the paired overhead
  default / none - 1 (CPU time and wall) within the process.
* ``demo``: the demo's training (``mmfuse.cli.DEMO_CONFIG``: AV-MNIST hard, 2,100 training rows, batch 128)
  via ``mmfuse.training.fit.fit(cfg, data, save=False)`` for ``--epochs`` epochs; the figures of the ``fit`` call
  (data loaded before), divided by its number of optimiser steps, plus the whole process (``wait4``).
* ``alloc``: the mechanism alone: a fresh 64 MiB float tensor written 5 times (``torch.empty(...).fill_(1)``,
  freed in between: glibc returns it to the kernel, so every write faults its pages in again); per process the
  median minor faults and wall time of one allocation + write. Without huge pages: 16,384 faults (one per 4 KiB).
* ``tiny``: benchmarks/startup.py's tiny train: the whole process ``mmfuse train examples/avmnist_families.yaml``,
  1 epoch, 20 batches, no progress bar (wall, user, sys, minor faults, max RSS from ``wait4``).

Files only when asked: ``--output FILE.json`` writes every sample (each process's figures, per-step lists included
for mmtm), the summary and the load averages.

    cd /work/main && .venv/bin/python benchmarks/thp_pagefaults.py [--workload alloc mmtm demo tiny] [--pairs 8] \
        [--threads 1] [--steps 8] [--epochs 2] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MMFUSE = str(Path(PY).with_name("mmfuse"))
SIDES = {"A (THP_MEM_ALLOC_ENABLE=0)": "0", "B (THP_MEM_ALLOC_ENABLE=1)": "1"}


def quantiles(xs):
    """(median, q1, q3) of a list of numbers."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return statistics.median(xs), q[0], q[2]


# ----------------------------------------------------------------------------------------------- children
def _ru():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime, r.ru_stime, r.ru_minflt


def _delta(a, b):
    return {"wall": b[0] - a[0], "cpu": b[1] - a[1], "sys": b[2] - a[2], "minflt": b[3] - a[3]}


def child_mmtm(args) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import mmtm_overhead as mo

    torch.set_num_threads(args.threads)
    batch = mo.make_batch("realistic", 16)
    models = {"none": mo.build("realistic", []), "default": mo.build("realistic", "auto")}

    def step(m):
        a = _ru()
        m.zero_grad(set_to_none=True)
        out = m(batch)
        torch.nn.functional.cross_entropy(out.logits, batch.target).backward()
        return _delta(a, _ru())

    for m in models.values():
        m.train()
        for _ in range(3):
            step(m)
    steps = {k: [] for k in models}
    names = list(models)
    for r in range(args.steps):
        j = r % len(names)
        for k in names[j:] + names[:j]:
            steps[k].append(step(models[k]))
    out = {}
    for k, ss in steps.items():
        out[k] = {f: statistics.median(s[f] for s in ss) for f in ("wall", "cpu", "sys", "minflt")}
    for clock in ("cpu", "wall"):
        out[f"overhead_{clock}"] = statistics.median(d[clock] / n[clock] - 1 for n, d in zip(steps["none"], steps["default"]))
    out["steps"] = steps
    return out


def child_demo(args) -> dict:
    import torch

    from mmfuse.cli import DEMO_CONFIG
    from mmfuse.config import parse_config
    from mmfuse.training.fit import fit, load_data

    torch.set_num_threads(args.threads)
    cfg = parse_config(json.loads(json.dumps(DEMO_CONFIG)), [f"training.max_epochs={args.epochs}", "training.progress=false"])
    data = load_data(cfg)
    n_steps = args.epochs * -(-len(data["train"]) // cfg.data.batch_size)
    a = _ru()
    r = fit(cfg, data, save=False, progress=False)
    d = _delta(a, _ru())
    return {"fit": d, "optimizer_steps": n_steps, "per_step": {k: v / n_steps for k, v in d.items()},
            "test_accuracy": r.test["metrics"]["accuracy"]}


def child_alloc(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    ss = []
    for _ in range(5):
        a = _ru()
        x = torch.empty(64 * 2**20 // 4).fill_(1.0)
        ss.append(_delta(a, _ru()))
        del x
    return {"alloc": {f: statistics.median(s[f] for s in ss) for f in ("wall", "cpu", "sys", "minflt")}, "steps": ss}


# ----------------------------------------------------------------------------------------------- driver
def run_process(cmd, env, parse_json: bool) -> dict:
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    out, err = p.stdout.read(), p.stderr.read()
    p.stdout.close(), p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-3000:]}")
    res = {"process": {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "cpu": ru.ru_utime + ru.ru_stime,
                       "minflt": ru.ru_minflt, "maxrss_mb": ru.ru_maxrss / 1024}}
    if parse_json:
        res.update(json.loads(out.strip().splitlines()[-1]))
    return res


def commands(workload, args, tmp: Path):
    if workload == "tiny":
        return [MMFUSE, "train", str(ROOT / "examples" / "avmnist_families.yaml"), "--set", "training.max_epochs=1",
                "--set", "training.limit_train_batches=20", "--set", "training.progress=false",
                "--out", str(tmp / "mm")], False
    return [PY, str(Path(__file__).resolve()), "--child", workload, "--threads", str(args.threads),
            "--steps", str(args.steps), "--epochs", str(args.epochs)], True


# (label, getter) of the figures summarised per workload
FIGURES = {
    "mmtm": [(f"{v} step {f}", (lambda v, f: lambda r: r[v][f])(v, f))
             for v in ("none", "default") for f in ("wall", "cpu", "sys", "minflt")]
    + [("overhead default/none-1 (cpu)", lambda r: r["overhead_cpu"]), ("overhead default/none-1 (wall)", lambda r: r["overhead_wall"]),
       ("process wall", lambda r: r["process"]["wall"])],
    "demo": [(f"fit per optimiser step {f}", (lambda f: lambda r: r["per_step"][f])(f)) for f in ("wall", "cpu", "sys", "minflt")]
    + [("fit wall (whole call)", lambda r: r["fit"]["wall"]), ("test accuracy", lambda r: r["test_accuracy"])]
    + [(f"process {f}", (lambda f: lambda r: r["process"][f])(f)) for f in ("wall", "cpu", "sys", "minflt", "maxrss_mb")],
    "alloc": [(f"64 MiB write {f}", (lambda f: lambda r: r["alloc"][f])(f)) for f in ("wall", "sys", "minflt")],
    "tiny": [(f"process {f}", (lambda f: lambda r: r["process"][f])(f)) for f in ("wall", "user", "sys", "cpu", "minflt", "maxrss_mb")],
}


def fmt(label, x):
    if "minflt" in label:
        return f"{x:9.0f}"
    if "overhead" in label:
        return f"{100 * x:+8.1f}%"
    if "accuracy" in label or "maxrss" in label:
        return f"{x:9.3f}" if "accuracy" in label else f"{x:7.0f}MB"
    if "step" in label or "write" in label:
        return f"{1000 * x:7.1f}ms"
    return f"{x:8.2f}s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", nargs="+", choices=("alloc", "mmtm", "demo", "tiny"),
                    default=["alloc", "mmtm", "demo", "tiny"])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="mmtm: timed rounds per process (one step of each variant)")
    ap.add_argument("--epochs", type=int, default=2, help="demo: epochs of the demo training")
    ap.add_argument("--output", default=None, help="write every sample and the summary as JSON here (no file otherwise)")
    ap.add_argument("--child", choices=("alloc", "mmtm", "demo"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        res = {"alloc": child_alloc, "mmtm": child_mmtm, "demo": child_demo}[args.child](args)
        print(json.dumps(res))
        return 0

    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    thp_setting = thp.read_text().strip() if thp.exists() else "(no THP sysfs)"
    defrag = Path("/sys/kernel/mm/transparent_hugepage/defrag")
    defrag_setting = defrag.read_text().strip() if defrag.exists() else "?"
    env0 = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
            "PYTHONWARNINGS": "ignore"}
    print(f"transparent_hugepage/enabled: {thp_setting}; defrag: {defrag_setting}; threads {args.threads}; "
          f"{args.pairs} pairs per workload (A/B order alternating) after one warm-up process of each side", flush=True)
    record = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "thp_enabled": thp_setting,
              "thp_defrag": defrag_setting, "threads": args.threads, "pairs": args.pairs, "steps": args.steps,
              "epochs": args.epochs, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "workloads": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for w in args.workload:
            cmd, parse = commands(w, args, tmp)
            load0 = os.getloadavg()
            runs = {s: [] for s in SIDES}

            def once(side):
                shutil.rmtree(tmp / "mm", ignore_errors=True)
                return run_process(cmd, {**env0, "THP_MEM_ALLOC_ENABLE": SIDES[side]}, parse)

            for s in SIDES:  # warm-up (file cache, .pyc)
                once(s)
            names = list(SIDES)
            for r in range(args.pairs):
                for s in (names if r % 2 == 0 else names[::-1]):
                    runs[s].append(once(s))
                print(f"  {w} pair {r}: process wall " + " / ".join(f"{runs[s][-1]['process']['wall']:.2f} s" for s in names), flush=True)
            load1 = os.getloadavg()
            summary = {}
            print(f"\n{w}: load average (1 min) {load0[0]:.2f} -> {load1[0]:.2f} on {os.cpu_count()} cores; "
                  f"median (IQR) over {args.pairs} processes per side; ratio = paired B / A")
            for label, get in FIGURES[w]:
                a = [get(x) for x in runs[names[0]]]
                b = [get(x) for x in runs[names[1]]]
                (am, a1, a3), (bm, b1, b3) = quantiles(a), quantiles(b)
                row = {"A_median": am, "A_q1": a1, "A_q3": a3, "B_median": bm, "B_q1": b1, "B_q3": b3}
                line = (f"  {label:34s} A {fmt(label, am)} ({fmt(label, a1).strip()}..{fmt(label, a3).strip()})   "
                        f"B {fmt(label, bm)} ({fmt(label, b1).strip()}..{fmt(label, b3).strip()})")
                if "overhead" not in label and all(x > 0 for x in a):
                    rm, r1, r3 = quantiles([y / x for x, y in zip(a, b)])
                    row.update(ratio_median=rm, ratio_q1=r1, ratio_q3=r3)
                    line += f"   B/A {rm:.3f} (IQR {r1:.3f}-{r3:.3f})"
                summary[label] = row
                print(line, flush=True)
            record["workloads"][w] = {"load_start": list(load0), "load_end": list(load1), "summary": summary,
                                      "samples": {names[0]: runs[names[0]], names[1]: runs[names[1]]}}
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=1))
        print(f"every sample: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
