"""Tune / check the difficulty of ``load_dataset("avmnist", variant="hard")``.

Trains three small models on CPU and reports test accuracy, mean +- std over seeds. The encoders are
plain PyTorch modules defined here (not mmfuse's built-in encoders, so the numbers do not depend on
them), registered as encoders ``tuning_image`` / ``tuning_audio`` and trained through ``mmfuse.fit``
(``family: fusion``, ``strategy: feature``, ``fusion: concat``, ``head: linear``, ``scheme: joint``):

* image only: 2 conv layers (1->8->16, 3x3, ReLU, max-pool 2) -> 64-d embedding -> linear;
* audio only: 2 1-D conv layers over time (13->32->64, kernel 5, ReLU) -> mean+max pool -> 64-d -> linear;
* fused: both encoders, concat of the two 64-d embeddings -> linear head (trained jointly).

Each model: Adam (lr 1e-3, wd 1e-4), batch 64, ``--epochs`` epochs (default 10) on the train
split; the reported number is the test accuracy of the epoch with the best val accuracy
(``training.monitor: val_accuracy``). The dataset seed and the model seed are the same.

    python benchmarks/avmnist_hard_tuning.py                      # the built-in defaults
    python benchmarks/avmnist_hard_tuning.py --variant clean
    python benchmarks/avmnist_hard_tuning.py --params '{"image_pca_drop": 30}'
    python benchmarks/avmnist_hard_tuning.py --quick                  # smoke run: seed 0, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from mmfuse import fit
from mmfuse.config import parse_config
from mmfuse.datasets import load_dataset
from mmfuse.encoders import Encoder
from mmfuse.registry import ENCODERS


class ImageNet(Encoder):
    """(B, 1, 28, 28) -> 2 conv layers (1->8->16, 3x3, ReLU, max-pool 2) -> (B, 64)."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.output_dim = dim
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, dim), nn.ReLU(),
        )

    def forward(self, x, lengths=None):
        return self.body(x)


class AudioNet(Encoder):
    """(B, T, 13) -> 2 1-D conv layers over time (13->32->64, kernel 5, ReLU) -> mean+max pool -> (B, 64)."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.output_dim = dim
        self.conv = nn.Sequential(nn.Conv1d(13, 32, 5, padding=2), nn.ReLU(), nn.Conv1d(32, 64, 5, padding=2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(128, dim), nn.ReLU())

    def forward(self, x, lengths=None):  # x: [B, T, 13]
        h = self.conv(x.transpose(1, 2))
        return self.out(torch.cat([h.mean(-1), h.amax(-1)], dim=1))


ENCODERS.register("tuning_image", lambda input_shape=None: ImageNet(), overwrite=True)
ENCODERS.register("tuning_audio", lambda input_shape=None: AudioNet(), overwrite=True)


def config(which: str, seed: int, epochs: int):
    mods = ["image", "audio"] if which == "fused" else [which]
    return parse_config({
        "seed": seed,
        "data": {"name": "avmnist", "batch_size": 64},
        "model": {"family": "fusion", "strategy": "feature", "modalities": mods, "fusion": {"name": "concat"},
                  "head": {"name": "linear"},
                  "encoders": {m: {"name": f"tuning_{m}"} for m in mods}},
        "training": {"max_epochs": epochs, "lr": 1e-3, "weight_decay": 1e-4, "optimizer": "adam",
                     "scheme": "joint", "monitor": "val_accuracy", "progress": False},
    })


def train(which: str, splits, seed: int, epochs: int) -> float:
    r = fit(config(which, seed, epochs), datasets=splits, save=False, progress=False, evaluate_patterns=False)
    return float(r.test["metrics"]["accuracy"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="hard", choices=["clean", "hard"])
    ap.add_argument("--params", default=None, help="JSON dict overriding avmnist HARD_DEFAULTS")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="smoke run: seed 0, 1 epoch")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs = "0", 1
    torch.set_num_threads(1)  # small models: one thread is faster than two on a busy machine
    params = json.loads(args.params) if args.params else None
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[float]] = {"image": [], "audio": [], "fused": []}
    t0 = time.time()
    for seed in seeds:
        splits = load_dataset("avmnist", seed=seed, variant=args.variant, hard_params=params, cache=False)
        for which in results:
            t = time.time()
            results[which].append(train(which, splits, seed, args.epochs))
            print(f"seed {seed} {which:5s} acc {results[which][-1]:.3f} ({time.time() - t:.1f} s)", flush=True)
    print(f"variant={args.variant} params={params} epochs={args.epochs} seeds={seeds} ({time.time() - t0:.0f} s)")
    for which, accs in results.items():
        print(f"  {which:5s} {np.mean(accs):.3f} +- {np.std(accs):.3f}")
    best_uni = max(np.mean(results["image"]), np.mean(results["audio"]))
    print(f"  fused - best unimodal = {np.mean(results['fused']) - best_uni:+.3f}")


if __name__ == "__main__":
    main()
