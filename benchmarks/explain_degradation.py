"""How modality shares move when one modality is degraded at test time (issue: "why" results).

Trains the demo's late-fusion model on AV-MNIST hard (seed 0, `mmfuse.fit`), then explains the test split with
exact modality-level Shapley values while Gaussian noise of growing std is added to one modality's test
inputs (the other left clean). Prints accuracy and the mean share of each modality (± std over samples).

    PYTHONPATH=src .venv/bin/python benchmarks/explain_degradation.py      # ~1 min on an idle 2-core machine
"""

from __future__ import annotations

import json
import tempfile

import numpy as np
import torch

from mmfuse.cli import DEMO_CONFIG
from mmfuse.config import parse_config
from mmfuse.explain import explain_dataset
from mmfuse.training import fit
from mmfuse.training.fit import load_data


def noisy(ds, modality: str, std: float, seed: int = 0):
    """A copy of ``ds`` whose ``modality`` inputs carry N(0, std²) noise (fixed by ``seed``)."""
    if std == 0:
        return ds
    rng = np.random.default_rng(seed)
    arrays = dict(ds.arrays)
    x = np.asarray(arrays[modality], dtype=np.float32)
    arrays[modality] = (x + rng.normal(0, std, x.shape)).astype(np.float32)
    out = ds.subset(np.arange(len(ds)))
    out.arrays = arrays
    return out


def main() -> None:
    torch.set_num_threads(1)
    cfg = parse_config(json.loads(json.dumps(DEMO_CONFIG)), ["model.strategy=late", "training.progress=false"])
    data = load_data(cfg)
    res = fit(cfg, data, save=False, progress=False, evaluate_patterns=False)
    test = data["test"]
    print(f"late-fusion model (mean_prob), test accuracy {res.test['metrics']['accuracy']:.3f}")
    print("| degraded | noise std | accuracy | audio share | image share |")
    print("|---|---|---|---|---|")
    for modality in ("image", "audio"):
        for std in (0.0, 0.5, 1.0, 2.0):
            ds = noisy(test, modality, std)
            with tempfile.TemporaryDirectory() as tmp:
                s = explain_dataset(res.model, ds, "shapley", tmp, plots=False, seed=0)
            share, sd = s["mean_share"], s.get("std_share", {})
            acc = s.get("accuracy", float("nan"))
            print(f"| {modality} | {std} | {acc:.3f} | {share['audio']:.3f} | {share['image']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
