"""Ngiam et al. (2011) multimodal representations on AV-MNIST (clean): learning-settings table.

Inputs: image (1, 28, 28) and audio MFCC (40, 13), flattened, standardised and PCA-whitened per
modality on the training split (the paper PCA-whitens its audio and video). Models, all learned on
the paired training split without labels:

* raw        — the whitened inputs, concatenated, absent modality = zeros (``ConcatFeatures``)
* rbm-concat — shallow bimodal sparse RBM on [a; v]
* dbn        — bimodal DBN (Gaussian RBM per modality + joint binary RBM), missing modality inferred
               by mean-field in the joint RBM
* bimodal-ae — bimodal deep AE initialised from the DBN, fine-tuned denoising-style (1/3 audio zeroed,
               1/3 image zeroed, 1/3 both)
* image-ae   — video-only deep AE with the image as "video", initialised from the DBN

Then ``evaluate_settings`` (standardised features -> logistic regression) on the test split.
Mean ± std over seeds (the seed sets the data split, pairing, initialisation and sampling).

    cd /work/main && PYTHONPATH=src .venv/bin/python benchmarks/ngiam_avmnist.py
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch

from mmfuse.datasets import load_dataset
from mmfuse.representation import (BimodalDBN, BimodalDeepAE, ConcatFeatures, ShallowBimodalRBM, VideoOnlyDeepAE,
                                   evaluate_settings)


def whiten(train: np.ndarray, others: list[np.ndarray], n_pc: int) -> list[torch.Tensor]:
    """Standardise then PCA-whiten with the training statistics; keep ``n_pc`` components."""
    mu, sd = train.mean(0), train.std(0) + 1e-3
    z = (train - mu) / sd
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    proj = vt[:n_pc].T / (s[:n_pc] / np.sqrt(len(z) - 1))       # [D, n_pc]
    return [torch.tensor(((a - mu) / sd) @ proj, dtype=torch.float32) for a in [train] + others]


def load(seed: int, n_pc: int):
    ds = load_dataset("avmnist", variant="clean", seed=seed)
    flat = {s: {m: np.asarray(ds[s].arrays[m], dtype=np.float64).reshape(len(ds[s]), -1) for m in ("audio", "image")}
            for s in ("train", "test")}
    x = {"train": {}, "test": {}}
    for m in ("audio", "image"):
        x["train"][m], x["test"][m] = whiten(flat["train"][m], [flat["test"][m]], n_pc)
    return {s: (x[s], torch.as_tensor(ds[s].targets)) for s in ("train", "test")}


def run_seed(seed: int, args) -> dict[str, list[dict]]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    splits = load(seed, args.n_pc)
    x_tr = splits["train"][0]
    dims = {m: v.shape[1] for m, v in x_tr.items()}
    out, times = {}, {}

    t = time.perf_counter()
    out["raw"] = evaluate_settings(ConcatFeatures(dims), splits, seed=seed, C=args.C)
    times["raw"] = time.perf_counter() - t

    t = time.perf_counter()
    shallow = ShallowBimodalRBM(dims, args.joint, sparsity_target=args.rho, sparsity_cost=args.lam, generator=g)
    shallow.fit(x_tr, epochs=args.rbm_epochs, batch_size=50, lr=args.rbm_lr, generator=g)
    out["rbm-concat"] = evaluate_settings(shallow, splits, seed=seed, C=args.C)
    times["rbm-concat"] = time.perf_counter() - t

    t = time.perf_counter()
    dbn = BimodalDBN(dims, hidden_dims=args.hidden, joint_dim=args.joint, sparsity_target=args.rho,
                     sparsity_cost=args.lam, joint_sparsity_target=args.rho, joint_sparsity_cost=args.lam, generator=g)
    hist = dbn.fit(x_tr, epochs=args.rbm_epochs, batch_size=50, lr=args.rbm_lr, joint_lr=args.joint_lr, generator=g)
    out["dbn"] = evaluate_settings(dbn, splits, seed=seed, C=args.C)
    times["dbn"] = time.perf_counter() - t
    print(f"  seed {seed}: DBN recon errors " + ", ".join(f"{k} {v[0]:.3f}->{v[-1]:.3f}" for k, v in hist.items()),
          flush=True)

    t = time.perf_counter()
    ae = BimodalDeepAE(dims, hidden_dims=args.hidden, shared_dim=args.joint).init_from_dbn(dbn)
    h = ae.fit(x_tr, epochs=args.ae_epochs, batch_size=64, lr=args.ae_lr, generator=g)
    out["bimodal-ae"] = evaluate_settings(ae, splits, seed=seed, C=args.C)
    times["bimodal-ae"] = time.perf_counter() - t + times["dbn"]
    print(f"  seed {seed}: bimodal AE loss {h[0]:.3f}->{h[-1]:.3f}", flush=True)

    t = time.perf_counter()
    vae = VideoOnlyDeepAE(dims, source="image", hidden_dims=args.hidden, shared_dim=args.joint).init_from_dbn(dbn)
    h = vae.fit(x_tr, epochs=args.ae_epochs, batch_size=64, lr=args.ae_lr, generator=g)
    out["image-ae"] = evaluate_settings(vae, splits, seed=seed, C=args.C)
    times["image-ae"] = time.perf_counter() - t + times["dbn"]
    print(f"  seed {seed}: image-only AE loss {h[0]:.3f}->{h[-1]:.3f}; times "
          + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-pc", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--joint", type=int, default=256)
    p.add_argument("--rho", type=float, default=0.1)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--rbm-epochs", type=int, default=15)
    p.add_argument("--rbm-lr", type=float, default=0.02)
    p.add_argument("--joint-lr", type=float, default=0.05)
    p.add_argument("--ae-epochs", type=int, default=10)
    p.add_argument("--ae-lr", type=float, default=3e-3)
    p.add_argument("--C", type=float, default=0.1, help="inverse L2 strength of the logistic regression")
    p.add_argument("--json", default="/tmp/ngiam_avmnist.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    per_seed = []
    for seed in args.seeds:
        per_seed.append(run_seed(seed, args))
    acc = defaultdict(list)
    for res in per_seed:
        for model, rows in res.items():
            for r in rows:
                acc[(r["setting"], r["train"], r["test"], model)].append(r["accuracy"])
    models = list(per_seed[0])
    keys = list(dict.fromkeys(k[:3] for k in acc))
    print(f"\nAV-MNIST clean, test accuracy, mean ± std over seeds {args.seeds} "
          f"(total {time.perf_counter() - start:.0f} s)\n")
    print("| setting | train | test | " + " | ".join(models) + " |")
    print("|---|---|---|" + "---|" * len(models))
    for k in keys:
        cells = [f"{np.mean(acc[k + (m,)]):.3f} ± {np.std(acc[k + (m,)]):.3f}" for m in models]
        print(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cells) + " |")
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "per_seed": per_seed}, f, indent=1)


if __name__ == "__main__":
    main()
