"""MM-SHAP in mmfuse vs shap.PermutationExplainer vs captum ShapleyValueSampling.

Same model, same features (AV-MNIST: 8 audio time windows + 4x4 image patches = 24 features),
same masking (zeros), same explained score (probability of the class predicted on the full input).

* shap: one ``PermutationExplainer`` per sample with a plain-function masker, as in the MM-SHAP
  reference code; the permutations are matched (we replay shap's ``np.random.shuffle`` sequence and
  hand the orders to ``mmshap(permutations=...)``), so values must agree to float32 rounding.
* captum: ``ShapleyValueSampling`` (forward-only sampling) with a feature mask; permutations matched
  by replaying its ``torch.randperm`` draws and running ``mmshap(antithetic=False)``.
* accuracy at equal budget: error against a 100-permutation antithetic reference.

The model (feature-level concat, 2 epochs) is trained through ``mmfuse.fit`` on 1200 training samples.

Run:  cd /work/main && PYTHONPATH=src .venv/bin/python benchmarks/explain_vs_shap.py
Options: --samples N (8) --permutations P (10) --threads T (1) --synthetic (skip AV-MNIST).
Times depend on the machine and its load; read the ratios.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from mmfuse.batch import MultimodalBatch, collate
from mmfuse.explain import PatchMasker, WindowMasker, make_score_fn, mmshap

N_WIN, GRID = 8, 4
REF_P = 100  # permutations of the reference values


def as_dataset(samples, shapes, n_classes, name):
    """An in-memory ``ArrayDataset`` of sample dicts (all modalities present)."""
    from mmfuse.datasets.base import ArrayDataset

    arrays = {m: np.stack([np.asarray(x[m], dtype=np.float32) for x in samples]) for m in sorted(shapes)}
    return ArrayDataset(arrays, np.array([int(x["target"]) for x in samples]), num_classes=n_classes, name=name)


def load_data(synthetic: bool):
    """(train dataset, val dataset, test samples, shapes, num_classes, name)."""
    if not synthetic:
        try:
            from mmfuse.datasets import load_dataset

            d = load_dataset("avmnist")
            tr, va, te = d["train"], d["val"], d["test"]
            return (tr.subset(range(1200)), va.subset(range(min(200, len(va)))), [te[i] for i in range(64)],
                    dict(tr.shapes), tr.num_classes, "avmnist")
        except Exception as exc:  # noqa: BLE001 - fall back to synthetic data, say why
            print(f"(avmnist unavailable: {exc}; using synthetic data)")
    g = torch.Generator().manual_seed(0)
    protos_a, protos_i = torch.randn(10, 40, 13, generator=g), torch.randn(10, 1, 28, 28, generator=g)

    def sample(y):
        return {"audio": protos_a[y] + torch.randn(40, 13, generator=g), "image": protos_i[y] + torch.randn(1, 28, 28, generator=g),
                "target": y}

    ys = torch.randint(0, 10, (1264,), generator=g).tolist()
    data = [sample(y) for y in ys]
    # validation samples for mmfuse.fit, drawn after the others so the train and test samples are unchanged
    val = [sample(y) for y in torch.randint(0, 10, (200,), generator=g).tolist()]
    shapes = {"audio": (40, 13), "image": (1, 28, 28)}
    return (as_dataset(data[:1200], shapes, 10, "synthetic-train"), as_dataset(val, shapes, 10, "synthetic-val"),
            data[1200:], shapes, 10, "synthetic")


def train_model(train, val):
    """The feature/concat model, trained through ``mmfuse.fit`` (Adam lr 5e-3, batch 32, 2 epochs)."""
    from mmfuse import fit
    from mmfuse.config import parse_config

    cfg = parse_config({
        "seed": 0,
        "data": {"name": "avmnist", "batch_size": 32},  # a label only: the splits are passed in memory
        "model": {"family": "fusion", "strategy": "feature", "fusion": {"name": "concat"}},
        "training": {"max_epochs": 2, "lr": 5e-3, "optimizer": "adam", "scheme": "joint", "progress": False},
    })
    r = fit(cfg, datasets={"train": train, "val": val}, save=False, progress=False, evaluate_patterns=False)
    return r.model.eval()


def shap_matched_perms(n: int, P: int, seed: int) -> torch.Tensor:
    """The orders shap.PermutationExplainer(seed=seed) draws for one row: P in-place shuffles of arange(n)."""
    np.random.seed(seed)
    inds, rows = np.arange(n), []
    for _ in range(P):
        np.random.shuffle(inds)
        rows.append(inds.copy())
    return torch.as_tensor(np.stack(rows))


def run_shap(model, batch, layouts, maskers, classes, P, seed):
    import shap

    n = sum(lay.n for lay in layouts[0].values())
    out = np.zeros((batch.batch_size, n))
    for i in range(batch.batch_size):
        lay, c = layouts[i], int(classes[i])
        xa, xi = batch.inputs["audio"][i], batch.inputs["image"][i]

        def f(Z, lay=lay, c=c, xa=xa, xi=xi):
            keep = torch.from_numpy(np.asarray(Z) != 0)
            K = keep.shape[0]
            na = lay["audio"].n
            b = MultimodalBatch({"audio": maskers["audio"].apply(xa, lay["audio"], keep[:, :na]),
                                 "image": maskers["image"].apply(xi, lay["image"], keep[:, na:])},
                                {"audio": torch.ones(K, dtype=torch.bool), "image": torch.ones(K, dtype=torch.bool)})
            with torch.no_grad():
                return model(b).logits.softmax(1)[:, c].numpy()

        def masker(mask, x):
            return (x * mask)[None]

        explainer = shap.PermutationExplainer(f, masker, seed=seed)
        ev = P * (2 * n + 1)
        out[i] = explainer(np.arange(1, n + 1, dtype=float)[None], max_evals=ev, batch_size=ev, silent=True).values[0]
    return torch.as_tensor(out)


def run_captum(model, batch, layouts, classes, P, seed):
    from captum.attr import ShapleyValueSampling

    lay = layouts[0]
    na = lay["audio"].n
    fa = lay["audio"].fmap.unsqueeze(0)
    fi = (lay["image"].fmap + na).masked_fill(lay["image"].fmap < 0, -1).unsqueeze(0)
    n = na + lay["image"].n

    def forward(audio, image):
        ones = torch.ones(audio.shape[0], dtype=torch.bool)
        return model(MultimodalBatch({"audio": audio, "image": image}, {"audio": ones, "image": ones})).logits.softmax(1)

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr = ShapleyValueSampling(forward).attribute(
            (batch.inputs["audio"], batch.inputs["image"]), baselines=(0.0, 0.0), target=classes,
            feature_mask=(fa, fi), n_samples=P, perturbations_per_eval=n)
    # every element of a feature carries the feature's value: read one element per feature
    vals = torch.zeros(batch.batch_size, n, dtype=torch.float64)
    for a, fm in zip(attr, (fa, fi)):
        flat, ids = a.reshape(a.shape[0], -1).double(), fm.reshape(-1)
        for j in ids[ids >= 0].unique().tolist():
            vals[:, j] = flat[:, (ids == j).nonzero()[0, 0]]
    return vals


def timed(fn, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def stack_values(res):
    return torch.stack([s.values for s in res.samples])


def compare(name, a, b):
    corr = float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])
    return f"{name:<44} corr {corr:.6f}   max|diff| {float((a - b).abs().max()):.2e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--permutations", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--synthetic", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P, seed = args.permutations, 0
    t0 = time.perf_counter()
    train, val, test, shapes, n_classes, name = load_data(args.synthetic)
    model = train_model(train, val)
    batch = collate(test[: args.samples], sorted(shapes), shapes)
    acc = float((model(collate(test, sorted(shapes), shapes)).logits.argmax(1) == collate(test, sorted(shapes), shapes).target).float().mean())
    print(f"data {name}, model feature/concat, test acc {acc:.2f} (first {len(test)} test samples), "
          f"setup {time.perf_counter() - t0:.1f}s, torch threads {args.threads}")

    maskers = {"audio": WindowMasker(N_WIN), "image": PatchMasker(GRID)}
    sf = make_score_fn(model, "predicted")
    classes = sf.classes(batch)
    mmshap(sf, batch.select([0]), maskers, n_permutations=1)  # warm-up (first-call allocations)
    ours, t_ours = timed(lambda: mmshap(sf, batch, maskers, n_permutations=P, seed=seed))
    layouts = [s.layouts for s in ours.samples]
    n = ours.samples[0].values.numel()

    perms = shap_matched_perms(n, P, seed)
    ours_m, t_ours_m = timed(lambda: mmshap(sf, batch, maskers, permutations=perms))
    shap_v, t_shap = timed(lambda: run_shap(model, batch, layouts, maskers, classes, P, seed))

    torch.manual_seed(seed)
    cperms = torch.stack([torch.randperm(n) for _ in range(P)])
    ours_f, t_ours_f = timed(lambda: mmshap(sf, batch, maskers, permutations=cperms, antithetic=False))
    cap_v, t_cap = timed(lambda: run_captum(model, batch, layouts, classes, P, seed))
    cap2_v, t_cap2 = timed(lambda: run_captum(model, batch, layouts, classes, 2 * P, seed + 1))

    ref = stack_values(mmshap(sf, batch, maskers, n_permutations=REF_P, seed=123))
    om, of = stack_values(ours_m), stack_values(ours_f)
    ev_ours = ours_m.n_evaluations // batch.batch_size
    print(f"\n{batch.batch_size} samples x {n} features, {P} permutations\n")
    print("Agreement with matched permutations")
    print(compare("mmfuse antithetic vs shap PermutationExplainer", om, shap_v))
    print(compare("mmfuse forward-only vs captum SVS", of, cap_v))
    print(f"\nAccuracy vs {REF_P}-permutation antithetic reference (mean |error|; evals per sample)")
    for label, v, ev in (("mmfuse antithetic, P", om, ev_ours), ("shap PermutationExplainer, P", shap_v, P * (2 * n + 1)),
                         ("captum SVS, P", cap_v, P * n + 1), ("captum SVS, 2P", cap2_v, 2 * P * n + 1)):
        print(f"  {label:<32} {float((v - ref).abs().mean()):.2e}   evals {ev}")
    print("\nTime                                     seconds   ratio vs mmfuse (shap's permutations)")
    rows = (("mmfuse mmshap (own permutations)", t_ours), ("mmfuse mmshap (shap's permutations)", t_ours_m),
            ("shap PermutationExplainer", t_shap), ("mmfuse forward-only (captum's perms)", t_ours_f),
            ("captum ShapleyValueSampling, P", t_cap), ("captum ShapleyValueSampling, 2P", t_cap2))
    for label, t in rows:
        print(f"  {label:<38} {t:7.3f}   {t / t_ours_m:6.1f}x")
    print(f"\nspeed-up vs shap at identical values: {t_shap / t_ours_m:.1f}x; vs captum (P, forward-only): {t_cap / t_ours_f:.1f}x")
    print(f"total {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
