"""MM-SHAP in mmfuse vs shap.PermutationExplainer vs captum ShapleyValueSampling.

Same model, same features (AV-MNIST: 8 audio time windows + 4x4 image patches = 24 features),
same masking (zeros), same explained score (probability of the class predicted on the full input).

* shap: one ``PermutationExplainer`` per sample with a plain-function masker, as in the MM-SHAP
  reference code; the permutations are matched (we replay shap's ``np.random.shuffle`` sequence and
  hand the orders to ``mmshap(permutations=...)``), so values must agree to float32 rounding.
* captum: ``ShapleyValueSampling`` (forward-only sampling) with a feature mask; permutations matched
  by replaying its ``torch.randperm`` draws and running ``mmshap(antithetic=False)``.
* error against wall time: for P in --budgets, each explainer's mean |error| against a high-sample reference
  (mmfuse, 200 antithetic permutations) and its wall time; then the time each needs to reach the same error
  (log-log interpolation of its error-vs-time curve at the error of shap / captum at P = --permutations).

Protocol (issue 13): every import (shap, captum) and set-up (model, data, explainer objects' inputs, the
reference) happens before timing; each explainer is run once untimed (warm-up); then --repeats rounds, in each
round every (explainer, budget) once in a rotated order (interleaved in one process, so load drift hits all
alike); a round uses seed = its index, so the errors are medians over seeds too. Reported: median time and
spread (IQR, min-max), thread count. Raw timings: a pyperf BenchmarkSuite (``python -m pyperf stats FILE``).

The model (feature-level concat, 2 epochs) is trained through ``mmfuse.fit`` on 1200 training samples.

Run:  cd /work/main && .venv/bin/python benchmarks/explain_vs_shap.py
Options: --samples N (8) --permutations P (10) --budgets 2,5,10,20 --repeats R (7) --threads T (1) --synthetic.
Times depend on the machine and its load; read the ratios.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from mmfuse.batch import MultimodalBatch, collate
from mmfuse.explain import PatchMasker, WindowMasker, make_score_fn, mmshap

N_WIN, GRID = 8, 4
REF_P = 200  # antithetic permutations of the reference values


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


def stack_values(res):
    return torch.stack([s.values for s in res.samples])


def compare(name, a, b):
    corr = float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])
    return f"{name:<44} corr {corr:.6f}   max|diff| {float((a - b).abs().max()):.2e}"


def quantile(xs, q):
    return float(np.quantile(np.asarray(xs, dtype=float), q))


def time_to_error(points, target):
    """Wall time at which an error-vs-time curve (``[(seconds, error)]``, one per budget) reaches ``target``:
    log-log interpolation between the two budgets around it; None when outside the measured range."""
    pts = sorted(points)
    for (t0, e0), (t1, e1) in zip(pts, pts[1:]):
        if (e0 - target) * (e1 - target) <= 0 and e0 != e1:
            w = (np.log(target) - np.log(e0)) / (np.log(e1) - np.log(e0))
            return float(np.exp(np.log(t0) + w * (np.log(t1) - np.log(t0))))
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--permutations", type=int, default=10, help="the budget whose error defines 'equal error'")
    ap.add_argument("--budgets", default="2,5,10,20", help="permutation counts of the error-vs-time curves")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved timed rounds (after one warm-up round)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--json", default=None, help="write the raw timings as a pyperf BenchmarkSuite here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P = args.permutations
    budgets = sorted({int(b) for b in args.budgets.split(",")} | {P})
    t0 = time.perf_counter()
    # --- set-up, untimed: imports of every explainer, data, model, reference ---
    import captum.attr  # noqa: F401
    import pyperf
    import shap  # noqa: F401

    train, val, test, shapes, n_classes, name = load_data(args.synthetic)
    model = train_model(train, val)
    full = collate(test, sorted(shapes), shapes)
    with torch.no_grad():
        acc = float((model(full).logits.argmax(1) == full.target).float().mean())
    batch = collate(test[: args.samples], sorted(shapes), shapes)
    print(f"data {name}, model feature/concat, test acc {acc:.2f} (first {len(test)} test samples), "
          f"set-up {time.perf_counter() - t0:.1f}s, torch threads {torch.get_num_threads()}")
    maskers = {"audio": WindowMasker(N_WIN), "image": PatchMasker(GRID)}
    sf = make_score_fn(model, "predicted")
    classes = sf.classes(batch)
    ref_res = mmshap(sf, batch, maskers, n_permutations=REF_P, seed=10_000)
    ref = stack_values(ref_res)
    layouts = [s.layouts for s in ref_res.samples]
    n = ref_res.samples[0].values.numel()

    # --- agreement at matched permutations (correctness, untimed) ---
    om = stack_values(mmshap(sf, batch, maskers, permutations=shap_matched_perms(n, P, 0)))
    sv = run_shap(model, batch, layouts, maskers, classes, P, 0)
    torch.manual_seed(0)
    cperms = torch.stack([torch.randperm(n) for _ in range(P)])
    of = stack_values(mmshap(sf, batch, maskers, permutations=cperms, antithetic=False))
    cv = run_captum(model, batch, layouts, classes, P, 0)
    print(f"\n{batch.batch_size} samples x {n} features; reference: {REF_P} antithetic permutations\n")
    print("Agreement with matched permutations (same orders => same values up to float32 rounding)")
    print(compare("mmfuse antithetic vs shap PermutationExplainer", om, sv))
    print(compare("mmfuse forward-only vs captum SVS", of, cv))

    methods = {
        "mmfuse": lambda p, seed: stack_values(mmshap(sf, batch, maskers, n_permutations=p, seed=seed)),
        "shap": lambda p, seed: run_shap(model, batch, layouts, maskers, classes, p, seed),
        "captum": lambda p, seed: run_captum(model, batch, layouts, classes, p, seed),
    }
    jobs = [(m, p) for p in budgets for m in methods]
    for m, p in jobs:  # warm-up: every explainer and budget once, untimed
        methods[m](p, 0)
    times = {j: [] for j in jobs}
    errs = {j: [] for j in jobs}
    for r in range(args.repeats):
        k = r % len(jobs)
        for m, p in jobs[k:] + jobs[:k]:  # rotated order: no explainer always first or last
            t = time.perf_counter()
            v = methods[m](p, r + 1)
            times[(m, p)].append(time.perf_counter() - t)
            errs[(m, p)].append(float((v.double() - ref.double()).abs().mean()))

    print(f"\nError vs wall time ({args.repeats} interleaved rounds, median [IQR] of seconds; mean |error| median "
          f"over the rounds' seeds; torch threads {torch.get_num_threads()})")
    print(f"  {'explainer':<8} {'P':>3}  {'seconds':>8}  {'IQR':>15}  {'error':>9}")
    curves = {m: [] for m in methods}
    for m, p in sorted(jobs):
        ts, es = times[(m, p)], errs[(m, p)]
        med_t, med_e = float(np.median(ts)), float(np.median(es))
        curves[m].append((med_t, med_e))
        print(f"  {m:<8} {p:>3}  {med_t:8.3f}  {quantile(ts, .25):7.3f}-{quantile(ts, .75):7.3f}  {med_e:9.2e}")

    print(f"\nSame-budget ratios at P={P} (median over rounds of per-round time ratios; IQR, min-max)")
    for other in ("shap", "captum"):
        rr = [b / a for a, b in zip(times[("mmfuse", P)], times[(other, P)])]
        print(f"  {other} / mmfuse: {np.median(rr):.2f}x  (IQR {quantile(rr, .25):.2f}-{quantile(rr, .75):.2f}, "
              f"min-max {min(rr):.2f}-{max(rr):.2f})")
    print("\nTime to reach the same error (log-log interpolation on each explainer's error-vs-time curve)")
    for other in ("shap", "captum"):
        target = float(np.median(errs[(other, P)]))
        t_m, t_o = time_to_error(curves["mmfuse"], target), time_to_error(curves[other], target)
        if t_m is None or t_o is None:
            print(f"  error {target:.2e} ({other} at P={P}): outside mmfuse's measured range; widen --budgets")
            continue
        print(f"  error {target:.2e} ({other} at P={P}): mmfuse {t_m:.3f}s, {other} {t_o:.3f}s -> mmfuse "
              f"{t_o / t_m:.2f}x faster")
    if args.json:
        suite = pyperf.BenchmarkSuite([pyperf.Benchmark([pyperf.Run(times[(m, p)], metadata={
            "name": f"{m} P={p}", "unit": "second", "loops": 1})]) for m, p in jobs])
        suite.dump(args.json, replace=True)
        print(f"raw timings (pyperf): {args.json}")
    print(f"total {time.perf_counter() - t0:.1f}s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
