"""MEA vs a concat of GRU encoders on *asynchronous* BasicMotions (accelerometer + gyroscope).

Asynchrony: the accelerometer keeps its 100 steps (10 Hz); the gyroscope of every sample is
resampled at a third of the rate with a random phase (offset 0-2) after dropping a random 0-20
leading steps, so it has 26-34 steps that start at a different time and are not aligned with the
accelerometer's steps. The transform is seeded per split and sample (the same for every model
and seed). The splits are ``ArrayDataset``s (the gyroscope a list of variable-length arrays, padded
with ``lengths`` by the loader).

Every model trains through ``mmfuse.fit`` (the one training path of ``mmfuse train``): Adam, lr 3e-3, batch 8, ``--epochs`` (20) epochs, 3 seeds; the epoch with the lowest validation loss
is kept (the dataset's val split: ``--val-per-class`` (2) training cases per class, so 24 train /
8 val / 40 test); the test split is never used for selection.
- ``gru_concat``: ``{family: fusion, encoders: {m: {name: gru}}, fusion: {name: concat}}``
- ``mea``: ``{family: mea, dim: 32, heads: 4}`` with α = 0.02, β = 0.03 (task + ``ModelOutput.losses``)
- ``mea_a0_b0``: the same with α = β = 0 (no disparity / adversarial constraints)

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/mea_basicmotions.py``
(smallest: ``--epochs 1 --seeds 1 --models mea``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from mmfuse.config import parse_config
from mmfuse.datasets import load_dataset
from mmfuse.datasets.base import ArrayDataset
from mmfuse.training import fit

MODELS = {
    "gru_concat": {"family": "fusion", "encoders": {m: {"name": "gru"} for m in ("accelerometer", "gyroscope")},
                   "fusion": {"name": "concat"}},
    "mea": {"family": "mea", "dim": 32, "heads": 4, "alpha": 0.02, "beta": 0.03},
    "mea_a0_b0": {"family": "mea", "dim": 32, "heads": 4, "alpha": 0.0, "beta": 0.0},
}


def asynchronous(ds, split_seed: int) -> ArrayDataset:
    """The split with the gyroscope subsampled at 1/3 rate, random phase and random start crop."""
    rng = np.random.default_rng(split_seed)
    acc, gyro, target = [], [], []
    for i in range(len(ds)):
        s = ds[i]
        start, phase = int(rng.integers(0, 21)), int(rng.integers(0, 3))
        acc.append(np.asarray(s["accelerometer"]))
        gyro.append(np.asarray(s["gyroscope"])[start + phase::3])
        target.append(int(s["target"]))
    return ArrayDataset({"accelerometer": np.stack(acc), "gyroscope": gyro}, np.asarray(target), task="multiclass",
                        num_classes=ds.num_classes, class_names=ds.class_names, name=f"async-{ds.name}")


def run(kind: str, seed: int, data: dict, epochs: int) -> tuple[float, float, int]:
    cfg = parse_config({"seed": seed, "model": MODELS[kind], "data": {"name": "basicmotions", "batch_size": 8},
                        "training": {"max_epochs": epochs, "lr": 3e-3, "optimizer": "adam", "progress": False}})
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(cfg, data, out_dir=tmp, save=False, evaluate_patterns=False)
    return 100.0 * res.test["metrics"]["accuracy"], time.process_time() - t0, res.best_epoch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--val-per-class", type=int, default=2)
    p.add_argument("--models", default="gru_concat,mea,mea_a0_b0")
    args = p.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset("basicmotions", val_per_class=args.val_per_class)
    data = {split: asynchronous(ds[split], k) for k, split in enumerate(("train", "test", "val"))}
    lens = [len(g) for split in data.values() for g in split.arrays["gyroscope"]]
    print(f"train {len(data['train'])}, val {len(data['val'])}, test {len(data['test'])}; accelerometer 100 steps, "
          f"gyroscope {min(lens)}-{max(lens)} steps")
    print(f"| model | test accuracy % (mean ± std, {args.seeds} seeds) | per seed | best epochs | CPU s / run |")
    print("|---|---|---|---|---|")
    for kind in args.models.split(","):
        res = [run(kind, s, data, args.epochs) for s in range(args.seeds)]
        acc = np.array([r[0] for r in res])
        print(f"| {kind} | {acc.mean():.1f} ± {acc.std():.1f} | {', '.join(f'{a:.1f}' for a in acc)} | "
              f"{', '.join(str(r[2]) for r in res)} | {np.mean([r[1] for r in res]):.1f} |", flush=True)


if __name__ == "__main__":
    main()
