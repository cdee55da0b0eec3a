"""Ngiam et al. (2011) learning settings on AV-MNIST (clean), trained through ``mmfuse.fit``.

Every cell is one run of the ``ngiam`` model family with the ``greedy_pretrain`` scheme (z-scored
flattened inputs; layer-wise CD-k pre-training of the RBM stack; the autoencoders initialised from
it; then joint fine-tuning of representation + linear head with the weighted reconstruction term):

* ``model``: dbn | bimodal_ae | video_only_ae (the image plays the paper's "video");
* ``setting`` (Table 1): fusion (train A+V, test A+V), cross_modality (train and test on ``source``),
  shared (train on ``source``, test on the other modality: the evaluation pattern holding only it).

Mean ± std of the test accuracy over seeds (the seed sets the data split, pairing, initialisation
and sampling). The same runs from the command line::

    mmfuse train CONFIG --set model.family=ngiam --set model.model=dbn --set model.setting=shared \\
        --set model.source=image

    cd /work/main && PYTHONPATH=src .venv/bin/python benchmarks/ngiam_avmnist.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch

import mmfuse
from mmfuse.config import parse_config
from mmfuse.datasets import load_dataset


def plan(models: list[str]) -> list[tuple[str, str, str, str]]:
    """(model, setting, source, evaluation pattern) cells; the pattern names the test modalities."""
    cells = []
    for model in models:
        sources = ("image",) if model == "video_only_ae" else ("image", "audio")
        cells.append((model, "fusion", "image", "audio+image"))
        for s in sources:
            cells.append((model, "cross_modality", s, s))
        for s in sources:
            cells.append((model, "shared", s, "audio" if s == "image" else "image"))
    return cells


def config(args, seed: int, model: str, setting: str, source: str):
    return parse_config({
        "seed": seed,
        "data": {"name": "avmnist", "options": {"variant": "clean"}, "batch_size": args.batch_size},
        "model": {"family": "ngiam", "model": model, "setting": setting, "source": source,
                  "hidden_dims": args.hidden, "shared_dim": args.joint, "sparsity_target": args.rho,
                  "sparsity_cost": args.lam, "reconstruction_weight": args.recon,
                  "freeze_representation": args.freeze, "head": {"name": "linear"}},
        "training": {"max_epochs": args.epochs, "lr": args.lr, "monitor": "val_accuracy", "progress": False,
                     "scheme": "greedy_pretrain",
                     "scheme_options": {"epochs": args.rbm_epochs, "lr": args.rbm_lr, "joint_lr": args.joint_lr,
                                        "batch_size": 50}},
        "output_dir": "/tmp/ngiam_avmnist_runs",
    })


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=["dbn", "bimodal_ae", "video_only_ae"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--joint", type=int, default=256)
    p.add_argument("--rho", type=float, default=0.1)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--rbm-epochs", type=int, default=15)
    p.add_argument("--rbm-lr", type=float, default=0.01)
    p.add_argument("--joint-lr", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--recon", type=float, default=1.0, help="reconstruction_weight in fine-tuning")
    p.add_argument("--freeze", action="store_true", help="train only the head (the paper's linear classifier)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", default="/tmp/ngiam_avmnist.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    acc: dict[tuple, list[float]] = defaultdict(list)
    runs = []
    for seed in args.seeds:
        data = load_dataset("avmnist", seed=seed, variant="clean")
        for model, setting, source, pattern in plan(args.models):
            t = time.perf_counter()
            res = mmfuse.fit(config(args, seed, model, setting, source), data, save=False)
            a = res.test["patterns"][pattern]["accuracy"]
            acc[(model, setting, source, pattern)].append(a)
            runs.append({"seed": seed, "model": model, "setting": setting, "source": source, "test": pattern,
                         "accuracy": a, "patterns": {k: v["accuracy"] for k, v in res.test["patterns"].items()},
                         "pretrain_final_error": {k: v[-1] for k, v in res.model.pretrain_history.items() if v},
                         "seconds": time.perf_counter() - t})
            print(f"  seed {seed} {model:14s} {setting:15s} train {source:5s} test {pattern:11s} "
                  f"acc {a:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
    print(f"\nAV-MNIST clean, test accuracy, mean ± std over seeds {args.seeds} "
          f"(total {time.perf_counter() - start:.0f} s)\n")
    print("| model | setting | train | test | accuracy |")
    print("|---|---|---|---|---|")
    for (model, setting, source, pattern), v in acc.items():
        train = "audio+image" if setting == "fusion" else source
        print(f"| {model} | {setting} | {train} | {pattern} | {np.mean(v):.3f} ± {np.std(v):.3f} |")
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
