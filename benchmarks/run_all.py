"""``make bench``: the quick versions of the issue-13 benchmarks, in sequence, each with PASS/FAIL.

Every benchmark here follows the protocol of benchmarks/README.md (warm-up, A and B interleaved in one
process or as paired whole processes, median and spread, threads stated) and prints its own
``PASS: ...`` / ``FAIL: ...`` lines against the issue's target; this script runs them with fewer rounds,
collects those lines and prints a summary. The quick runs are guards, not figures of record: on a
loaded machine their spread is wide. The full runs (commands, medians, spreads, thread counts, load)
are in benchmarks/README.md; their raw timings in benchmarks/results/*.json (pyperf suites).

    cd /work/main && .venv/bin/python benchmarks/run_all.py [--full] [--only NAME ...]

Exit status 1 when any benchmark reports FAIL or fails to run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RESULTS = "benchmarks/results"

# name -> (quick arguments, full arguments, target, README section)
BENCHMARKS = {
    "startup": (["benchmarks/startup.py", "--pairs", "3", "--only", "import", "--json", f"{RESULTS}/startup_quick.json"],
                ["benchmarks/startup.py", "--pairs", "5", "--json", f"{RESULTS}/startup.json"],
                "`mmfuse --help` / `mmfuse list` / config validation (quick) and a tiny `mmfuse train` (full) "
                "<= 1.5x their baselines", "Start-up"),
    "mmtm_overhead": (["benchmarks/mmtm_overhead.py", "--sizes", "realistic", "--repeats", "10", "--warmup", "2"],
                      ["benchmarks/mmtm_overhead.py", "--sizes", "realistic", "--repeats", "60", "--warmup", "5",
                       "--output", f"{RESULTS}/mmtm_overhead_realistic.json"],
                      "MMTM default placement < +10 % per training step", "MMTM / Overhead"),
    "lmf_vs_paper": (["benchmarks/lmf_vs_paper.py", "--batches", "64", "--repeats", "40", "--inner", "20", "--warmup", "20"],
                     ["benchmarks/lmf_vs_paper.py", "--repeats", "100", "--inner", "20", "--warmup", "30", "--absent",
                      "--output", f"{RESULTS}/lmf_vs_paper.json"],
                     "low_rank <= 1.0x the paper's LMF at batch 64", "Fusion operators"),
    "training_throughput": (["benchmarks/training_throughput.py", "--repeats", "3", "--epochs", "2"],
                            ["benchmarks/training_throughput.py", "--repeats", "15", "--epochs", "5",
                             "--output", f"{RESULTS}/training_throughput.json"],
                            "mmfuse / hand loop >= 0.95 (loop alone and whole call)", "Training throughput"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the full runs of benchmarks/README.md (tens of minutes)")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    load = os.getloadavg()
    print(f"mmfuse benchmarks ({'full' if args.full else 'quick'}), {args.threads} thread(s), load average "
          f"{load[0]:.1f} on {os.cpu_count()} cores (other jobs inflate wall times; the ratios are interleaved)")
    summary = []
    for name in args.only or list(BENCHMARKS):
        quick, full, target, section = BENCHMARKS[name]
        cmd = [PY, *(full if args.full else quick)]
        cmd += ["--threads", str(args.threads)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}\n    target: {target}", flush=True)
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        print(p.stdout, end="")
        verdicts = [line for line in p.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
        if p.returncode not in (0, 1) or not verdicts:
            verdicts.append(f"FAIL: {name} did not run (exit {p.returncode}): {p.stderr.strip()[-500:]}")
            print(p.stderr[-2000:], end="")
        summary.append((name, section, time.perf_counter() - t, verdicts))
    print("\n=== summary (full figures: benchmarks/README.md, section in brackets; raw timings: benchmarks/results/)")
    failed = False
    for name, section, secs, verdicts in summary:
        for v in verdicts:
            failed |= v.startswith("FAIL")
            print(f"  {name:20s} [{section}] {v}")
        print(f"  {name:20s} ran {secs:.0f} s")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
