"""MEA vs a concat of GRU encoders on *asynchronous* BasicMotions (accelerometer + gyroscope).

Asynchrony: the accelerometer keeps its 100 steps (10 Hz); the gyroscope of every sample is
resampled at a third of the rate with a random phase (offset 0-2) after dropping a random 0-20
leading steps, so it has 26-34 steps that start at a different time and are not aligned with the
accelerometer's steps. The transform is seeded per split and sample (the same for every model
and seed). Padded with ``lengths`` by ``mmfuse.batch.collate``.

Models (3 seeds each, same plain-PyTorch loop: Adam lr 3e-3, batch 8, ``--epochs`` (20) epochs, the
last model is tested; no selection on the test set):
- ``gru_concat``: ``build_model({"encoders": {m: {"name": "gru"}}, "fusion": {"name": "concat"}})``
- ``mea``: ``MEAModel(dim=32)`` with α = 0.02, β = 0.03 (task + auxiliary loss)
- ``mea_a0_b0``: the same with α = β = 0 (no disparity / adversarial constraints)

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/mea_basicmotions.py``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.nn import functional as F

from mmfuse.batch import collate
from mmfuse.datasets import load_dataset
from mmfuse.models import build_model
from mmfuse.sequence import MEAModel

SHAPES = {"accelerometer": (100, 3), "gyroscope": (None, 3)}


def asynchronous(ds, split_seed: int) -> list[dict]:
    """Samples with the gyroscope subsampled at 1/3 rate, random phase and random start crop."""
    rng = np.random.default_rng(split_seed)
    out = []
    for i in range(len(ds)):
        s = ds[i]
        start, phase = int(rng.integers(0, 21)), int(rng.integers(0, 3))
        gyro = np.asarray(s["gyroscope"])[start + phase::3]
        out.append({"accelerometer": np.asarray(s["accelerometer"]), "gyroscope": gyro, "target": s["target"]})
    return out


def batches(samples, bs, rng=None):
    order = np.arange(len(samples)) if rng is None else rng.permutation(len(samples))
    for k in range(0, len(order), bs):
        yield collate([samples[j] for j in order[k:k + bs]], shapes=SHAPES)


def make(kind: str, seed: int):
    torch.manual_seed(seed)
    if kind == "gru_concat":
        return build_model({"encoders": {m: {"name": "gru"} for m in SHAPES}, "fusion": {"name": "concat"}},
                           SHAPES, 4, "multiclass")
    ab = {"mea": (0.02, 0.03), "mea_a0_b0": (0.0, 0.0)}[kind]
    return MEAModel({m: 3 for m in SHAPES}, 4, dim=32, heads=4, alpha=ab[0], beta=ab[1])


def run(kind: str, seed: int, data, epochs: int) -> tuple[float, float]:
    model = make(kind, seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    t0 = time.process_time()
    for _ in range(epochs):
        model.train()
        for b in batches(data["train"], 8, rng):
            out = model(b)
            loss = F.cross_entropy(out.logits, b.target)
            if isinstance(model, MEAModel):
                loss = loss + model.auxiliary_loss(out)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(b).logits.argmax(1) == b.target).sum()) for b in batches(data["test"], 40))
    return 100.0 * correct / len(data["test"]), time.process_time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--models", default="gru_concat,mea,mea_a0_b0")
    args = p.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset("basicmotions")
    data = {split: asynchronous(ds[split], k) for k, split in enumerate(("train", "test"))}
    lens = [len(s["gyroscope"]) for s in data["train"] + data["test"]]
    print(f"train {len(data['train'])}, test {len(data['test'])}; accelerometer 100 steps, gyroscope {min(lens)}-{max(lens)} steps")
    print(f"| model | test accuracy % (mean ± std, {args.seeds} seeds) | per seed | CPU s / run |")
    print("|---|---|---|---|")
    for kind in args.models.split(","):
        res = [run(kind, s, data, args.epochs) for s in range(args.seeds)]
        acc = np.array([r[0] for r in res])
        print(f"| {kind} | {acc.mean():.1f} ± {acc.std():.1f} | {', '.join(f'{a:.1f}' for a in acc)} | "
              f"{np.mean([r[1] for r in res]):.1f} |", flush=True)


if __name__ == "__main__":
    main()
