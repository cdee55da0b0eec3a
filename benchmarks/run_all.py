"""``make bench``: the quick versions of the issue-13 benchmarks, in sequence, each with PASS/FAIL.

Every benchmark here follows the protocol of benchmarks/README.md (warm-up, A and B interleaved in one
process or as paired whole processes, median and spread, threads stated) and prints its own
``PASS: ...`` / ``FAIL: ...`` lines against the issue's target; this script runs them with fewer rounds,
collects those lines and prints a summary. The quick runs are guards, not figures of record: on a
loaded machine their spread is wide; they write no file. ``--full`` re-runs each benchmark with the settings of
its figure of record and writes the raw timings to benchmarks/results/run_all_full/ (never over the figures of
record, benchmarks/results/*.json, whose commands, medians, spreads, thread counts and load are in
benchmarks/README.md). The tiny-train rows of startup.py run in the quick mode too (3 rounds).

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

FULL = f"{RESULTS}/run_all_full"  # --full writes here: never over the figures of record in benchmarks/results/*.json

# name -> (quick arguments, full arguments, target, README section). The quick runs write no file; the full runs use
# the settings of the figures of record (benchmarks/README.md) and write their raw timings to FULL, so that a re-run
# never replaces a recorded figure with one measured under other settings or load (copy it over by hand, with the
# README's numbers, to make it the new figure of record).
BENCHMARKS = {
    "startup": (["benchmarks/startup.py", "--pairs", "3"],
                ["benchmarks/startup.py", "--pairs", "5", "--json", f"{FULL}/startup.json"],
                "`mmfuse --help` / `mmfuse list` / config validation and a tiny `mmfuse train` with the defaults "
                "<= 1.5x their baselines (the tiny train's old-defaults and diagnostics=false rows: INFO)", "Start-up"),
    "mmtm_overhead": (["benchmarks/mmtm_overhead.py", "--sizes", "realistic", "--repeats", "10", "--warmup", "2"],
                      ["benchmarks/mmtm_overhead.py", "--sizes", "realistic", "--repeats", "60", "--warmup", "3",
                       "--output", f"{FULL}/mmtm_overhead_realistic.json"],
                      "MMTM default placement < +10 % per training step", "MMTM / Overhead"),
    "lmf_vs_paper": (["benchmarks/lmf_vs_paper.py", "--batches", "64", "--repeats", "40", "--inner", "20", "--warmup", "20"],
                     ["benchmarks/lmf_vs_paper.py", "--repeats", "100", "--inner", "20", "--warmup", "30", "--absent",
                      "--output", f"{FULL}/lmf_vs_paper.json"],
                     "low_rank <= 1.0x the paper's LMF at batch 64", "Fusion operators"),
    "training_throughput": (["benchmarks/training_throughput.py", "--repeats", "3", "--epochs", "2"],
                            ["benchmarks/training_throughput.py", "--repeats", "20", "--epochs", "3",
                             "--output", f"{FULL}/training_throughput.json"],
                            "mmfuse / hand loop >= 0.95 (same work: loop alone and whole call; defaults: loop alone)",
                            "Training throughput"),
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
        if args.full:
            (ROOT / FULL).mkdir(parents=True, exist_ok=True)
        cmd += ["--threads", str(args.threads)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}\n    target: {target}", flush=True)
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        print(p.stdout, end="")
        verdicts = [line for line in p.stdout.splitlines() if line.startswith(("PASS", "FAIL", "INFO"))]
        if p.returncode not in (0, 1) or not any(v.startswith(("PASS", "FAIL")) for v in verdicts):
            verdicts.append(f"FAIL: {name} did not run (exit {p.returncode}): {p.stderr.strip()[-500:]}")
            print(p.stderr[-2000:], end="")
        summary.append((name, section, time.perf_counter() - t, verdicts))
    print("\n=== summary (figures of record: benchmarks/README.md, section in brackets, raw timings benchmarks/results/"
          + (f"; this run's raw timings: {FULL}/)" if args.full else "; the quick runs write no file)"))
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
