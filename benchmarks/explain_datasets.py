"""Modality shares of small trained models on AV-MNIST and easy-VQA, with the slides' breakdowns.

For each dataset: train a small feature-fusion (concat) model briefly through ``mmfuse.fit`` (``family:
fusion``, ``strategy: feature``, Adam lr 3e-3, batch 32, the epoch with the lowest validation loss kept), then run
``explain_dataset`` twice on the test split: modality-level Shapley ("shapley": absent = batch
mask, the model's missing-modality path) and MM-SHAP ("mmshap": zero-masked features, 10
permutations; AV-MNIST 8 audio windows + 4x4 image patches, easy-VQA question tokens + image
patches on the reference grid p = ceil(sqrt(#tokens))). Prints mean ± std shares overall, per
class and for correct vs incorrect predictions; CSV/PNG files go to --out.

Run:  cd /work/main && PYTHONPATH=src .venv/bin/python benchmarks/explain_datasets.py [--dataset avmnist|easyvqa|both]
Options: --out DIR (/tmp/mmfuse_explain), --threads T (1), --mmshap-samples N (64), --epochs E (3 avmnist, 5 easyvqa),
--quick (smoke run: 1 epoch on 640 training samples, 100 samples explained, 8 for MM-SHAP).
"""

from __future__ import annotations

import argparse
import time

import torch

from mmfuse import fit
from mmfuse.config import parse_config
from mmfuse.datasets import load_dataset
from mmfuse.explain import explain_dataset


def train(name, model, splits, epochs, batch_size=32, lr=3e-3, limit=None):
    """Train ``model`` (a ``model`` config section) on ``splits`` through ``mmfuse.fit``; the trained module."""
    cfg = parse_config({
        "seed": 0,
        "data": {"name": name, "batch_size": batch_size},
        "model": model,
        "training": {"max_epochs": epochs, "lr": lr, "optimizer": "adam", "scheme": "joint", "progress": False},
    })
    tr = splits["train"]
    if limit is not None and limit < len(tr):
        tr = tr.subset(range(limit))
    r = fit(cfg, datasets={"train": tr, "val": splits["val"]}, save=False, progress=False, evaluate_patterns=False)
    return r.model.eval()


def accuracy(model, ds, n):
    b = ds.collate_fn([ds[i] for i in range(min(n, len(ds)))])
    with torch.no_grad():
        return float((model(b).logits.argmax(1) == b.target).float().mean())


def show(name, s):
    mods = s["modalities"]
    head = " ".join(f"{m:>15}" for m in mods)
    print(f"  {name}: {s['n_samples']} samples, acc {s['accuracy']:.2f}, {s['n_evaluations']} evals, {s['seconds']:.1f}s")
    print(f"    {'level':<14} {head}")
    print(f"    {'all':<14} " + " ".join(f"{s['mean_share'][m]:.3f} ± {s['std_share'][m]:.3f}" for m in mods))
    for group in ("by_correctness", "by_class"):
        for level, d in s[group].items():
            print(f"    {level[:14]:<14} " + " ".join(f"{d[m]:>15.3f}" for m in mods))


def run(name, args):
    t0 = time.perf_counter()
    torch.manual_seed(0)
    d = load_dataset(name)
    tr, te = d["train"], d["test"]
    if name == "avmnist":
        cfg = {"family": "fusion", "strategy": "feature", "fusion": {"name": "concat"}}
        maskers = {"audio": {"kind": "windows", "n_windows": 8}, "image": {"kind": "patches", "grid": 4}}
        vocab = None
    else:
        cfg = {"family": "fusion", "strategy": "feature", "fusion": {"name": "concat"},
               "encoders": {"question": {"name": "gru", "options": {"vocab_size": len(tr.vocab)}}}}
        maskers = {"question": {"kind": "tokens", "pad_id": 0}, "image": {"kind": "patches", "grid": "auto"}}
        vocab = tr.vocab
    epochs = args.epochs or {"avmnist": 3, "easyvqa": 5}[name]
    limit = 6000 if name == "easyvqa" else None  # first 6000 of 10000 training questions (time budget)
    n_explain = 600
    if args.quick:
        epochs, limit, n_explain = 1, 640, 100
    model = train(name, cfg, d, epochs, limit=limit)
    print(f"\n{name}: trained {epochs} epochs in {time.perf_counter() - t0:.1f}s, test acc {accuracy(model, te, 1000):.2f} (first 1000)")
    common = dict(class_names=te.class_names, plots=True, batch_size=64)
    s1 = explain_dataset(model, te, "shapley", f"{args.out}/{name}_shapley", max_samples=n_explain, **common)
    show("modality-level Shapley (absent = mask)", s1)
    s2 = explain_dataset(model, te, "mmshap", f"{args.out}/{name}_mmshap", maskers=maskers,
                         max_samples=args.mmshap_samples, vocab=vocab, **common)
    show("MM-SHAP (zero-masked features, 10 permutations)", s2)
    print(f"  {name} total {time.perf_counter() - t0:.1f}s; files in {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="both", choices=["avmnist", "easyvqa", "both"])
    ap.add_argument("--out", default="/tmp/mmfuse_explain")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mmshap-samples", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=None, help="default: 3 for avmnist, 5 for easyvqa")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 epoch on 640 training samples, 100 samples explained, 8 for MM-SHAP")
    args = ap.parse_args()
    if args.quick:
        args.mmshap_samples = min(args.mmshap_samples, 8)
    torch.set_num_threads(args.threads)
    for name in (["avmnist", "easyvqa"] if args.dataset == "both" else [args.dataset]):
        run(name, args)


if __name__ == "__main__":
    main()
