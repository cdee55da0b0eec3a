"""Tune / check the difficulty of ``load_dataset("avmnist", variant="hard")``.

Trains three small models with plain PyTorch on CPU (no mmfuse model code, so the numbers do not
depend on it) and reports test accuracy, mean +- std over seeds:

* image only: 2 conv layers (1->8->16, 3x3, ReLU, max-pool 2) -> 64-d embedding -> linear;
* audio only: 2 1-D conv layers over time (13->32->64, kernel 5, ReLU) -> mean+max pool -> 64-d -> linear;
* fused: both encoders, concat of the two 64-d embeddings -> linear head (trained jointly).

Each model: Adam (lr 1e-3, wd 1e-4), batch 64, ``--epochs`` epochs (default 10) on the train
split; the reported number is the test accuracy of the epoch with the best val accuracy.
The dataset seed and the model seed are the same.

    python benchmarks/avmnist_hard_tuning.py                      # the built-in defaults
    python benchmarks/avmnist_hard_tuning.py --variant clean
    python benchmarks/avmnist_hard_tuning.py --params '{"image_pca_drop": 30}'
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from mmfuse.datasets import load_dataset


class ImageNet(nn.Module):
    def __init__(self, dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, dim), nn.ReLU(),
        )

    def forward(self, x):
        return self.body(x)


class AudioNet(nn.Module):
    def __init__(self, dim: int = 64):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(13, 32, 5, padding=2), nn.ReLU(), nn.Conv1d(32, 64, 5, padding=2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(128, dim), nn.ReLU())

    def forward(self, x):  # x: [B, T, 13]
        h = self.conv(x.transpose(1, 2))
        return self.out(torch.cat([h.mean(-1), h.amax(-1)], dim=1))


class Model(nn.Module):
    def __init__(self, which: str):
        super().__init__()
        self.which = which
        self.image = ImageNet() if which in ("image", "fused") else None
        self.audio = AudioNet() if which in ("audio", "fused") else None
        self.head = nn.Linear(128 if which == "fused" else 64, 10)

    def forward(self, img, aud):
        parts = []
        if self.image is not None:
            parts.append(self.image(img))
        if self.audio is not None:
            parts.append(self.audio(aud))
        return self.head(torch.cat(parts, dim=1))


def tensors(ds):
    b = ds.batch()
    return b.inputs["image"], b.inputs["audio"], b.target


def accuracy(model, data) -> float:
    model.eval()
    with torch.no_grad():
        img, aud, y = data
        return float((model(img, aud).argmax(1) == y).float().mean())


def train(which: str, splits, seed: int, epochs: int) -> float:
    torch.manual_seed(seed)
    model = Model(which)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    img, aud, y = tensors(splits["train"])
    val, test = tensors(splits["val"]), tensors(splits["test"])
    g = torch.Generator().manual_seed(seed)
    best_val, best_test = -1.0, 0.0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=g)
        for k in range(0, len(y), 64):
            idx = perm[k:k + 64]
            loss = nn.functional.cross_entropy(model(img[idx], aud[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = accuracy(model, val)
        if v > best_val:
            best_val, best_test = v, accuracy(model, test)
    return best_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="hard", choices=["clean", "hard"])
    ap.add_argument("--params", default=None, help="JSON dict overriding avmnist HARD_DEFAULTS")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
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
