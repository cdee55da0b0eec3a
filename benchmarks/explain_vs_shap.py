"""MM-SHAP in mmfuse vs shap.PermutationExplainer vs captum ShapleyValueSampling.

Same model, same features (AV-MNIST: 8 audio time windows + 4x4 image patches = 24 features),
same masking (zeros), same explained score (probability of the class predicted on the full input).

* shap: one ``PermutationExplainer`` per sample with a plain-function masker, as in the MM-SHAP
  reference code; the permutations are matched (we replay shap's ``np.random.shuffle`` sequence and
  hand the orders to ``mmshap(permutations=...)``), so values must agree to float32 rounding.
* captum: ``ShapleyValueSampling`` (forward-only sampling) with a feature mask; permutations matched
  by replaying its ``torch.randperm`` draws and running ``mmshap(antithetic=False)``.
* error against wall time: for P in --budgets, each explainer's mean |error| against a high-sample reference
  (mmfuse's walk, 200 antithetic permutations) and its wall time; then the time each needs to reach the same error
  (log-log interpolation of its error-vs-time curve at the error of shap / captum at P = --permutations). The
  curve is first made monotone: its lower envelope (points sorted by time, a point kept only if its error is below
  every faster point's; a dominated budget is dropped). The ratio's spread: a bootstrap over the rounds (resample
  rounds whole, recompute every median time and error, interpolate, ratio; --bootstrap resamples): median, 95 %
  interval and IQR; also the per-round ratios (each round's own curve, one seed per point) for the record.
* the reference's own error: a second 200-permutation reference with another seed; mean |r1 - r2| / sqrt 2
  estimates the reference's mean |error| (it lifts every curve's error floor; compare it with the target errors).

Protocol (issue 13): every import (shap, captum) and set-up (model, data, explainer objects' inputs, the
reference) happens before timing; each explainer is run once untimed (warm-up); then --repeats rounds, in each
round every (explainer, budget) once in a rotated order (interleaved in one process, so load drift hits all
alike); a round uses seed = its index, so the errors are medians over seeds too. Reported: median time and
spread (IQR, min-max), thread count; wall time and process CPU time (every explainer runs on one thread, so its CPU
time is the work done, less exposed to other jobs on a shared machine); the time-to-error ratios for both clocks. Raw timings: a pyperf BenchmarkSuite (``python -m pyperf stats FILE``).

The model (feature-level concat, 2 epochs) is trained through ``mmfuse.fit`` on 1200 training samples.

mmfuse runs with its defaults: the explanation split (each modality's distinct masked inputs encoded once,
fusion + head per coalition), the interleave estimator (orders per modality, averaged exactly over all
interleavings) and ``reuse="auto"`` (a pilot per sample, then each modality's number of distinct orders by the
cost-optimal rule; the pilot is inside the timed call); --variants also times ``reuse=None`` (one new order of every
modality per draw: the default before), ``reuse={"image": 4}`` (each image order serves 4 draws: a hand-chosen
setting, reported apart) and the walk estimator (shap's) with the split; --whole-walk the walk with whole-model
calls (mmfuse before the split). The error of
every explainer is measured against the same reference (mmfuse's *walk*, i.e. shap's estimator, at 200
antithetic permutations, its own seed), with the same definition (mean |phi - phi_ref| over features and samples).
When mmfuse's cheapest budget is already more accurate than the target error, its time-to-error is that
budget's time (an upper bound, so the ratio is a lower bound, printed with >=).

Run:  cd /work/main && .venv/bin/python benchmarks/explain_vs_shap.py
Options: --samples N (8) --permutations P (10) --budgets 2,5,10,20 --repeats R (7) --threads T (1) --synthetic
--variants --whole-walk --bootstrap N (2000) --plot PNG --json FILE (pyperf suite + key "mmfuse_summary": ratios,
bootstrap intervals, reference error, curves, load).
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
    """The demo model (``cli.DEMO_CONFIG``'s encoders and head: image cnn2d 32/64 ch, audio cnn1d 32/64 ch k5,
    mlp head 64; feature/concat), trained through ``mmfuse.fit`` (Adam lr 5e-3, batch 32, 2 epochs)."""
    from mmfuse import fit
    from mmfuse.cli import DEMO_CONFIG
    from mmfuse.config import parse_config

    demo = DEMO_CONFIG["model"]
    cfg = parse_config({
        "seed": 0,
        "data": {"name": "avmnist", "batch_size": 32},  # a label only: the splits are passed in memory
        "model": {"family": "fusion", "strategy": "feature", "fusion": {"name": "concat"},
                  "encoders": demo["encoders"], "head": demo["head"]},
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


def lower_envelope(points):
    """The error-vs-time curve made monotone: points (``(seconds, error)``) sorted by time, keeping only those more
    accurate than every faster one (the Pareto front; a budget that took longer but erred more than a cheaper one is
    dominated and dropped), so error is a decreasing function of time."""
    front = []
    for t, e in sorted(points):
        if not front or e < front[-1][1]:
            front.append((t, e))
    return front


def time_to_error(points, target):
    """Wall time at which an error-vs-time curve (``[(seconds, error)]``, one per budget) reaches ``target``:
    log-log interpolation between the two points around it on the curve's :func:`lower_envelope` (monotone).
    Returns (seconds, exact): when even the fastest point's error is below ``target``, (that time, False): an
    upper bound; None when the curve never gets down to ``target``."""
    pts = lower_envelope(points)
    if pts and pts[0][1] <= target:
        return pts[0][0], False
    for (t0, e0), (t1, e1) in zip(pts, pts[1:]):
        if e0 > target >= e1:
            w = (np.log(target) - np.log(e0)) / (np.log(e1) - np.log(e0))
            return float(np.exp(np.log(t0) + w * (np.log(t1) - np.log(t0)))), True
    return None


def ratio_at_equal_error(tt, errs, rounds, mine, other, P, budgets):
    """(ratio, exact) = other's time at P over mine's time to reach other's error at P, from the medians over
    ``rounds`` (indices into the per-round lists; repeated indices = a bootstrap resample); None if not reached."""
    med = lambda xs: float(np.median([xs[r] for r in rounds]))  # noqa: E731
    target = med(errs[(other, P)])
    got = time_to_error([(med(tt[(mine, p)]), med(errs[(mine, p)])) for p in budgets], target)
    if got is None:
        return None
    return med(tt[(other, P)]) / got[0], got[1]


def bootstrap_ratio(tt, errs, mine, other, P, budgets, n_boot, seed=0):
    """The time-to-equal-error ratio's spread: resample the rounds with replacement (a round = every explainer and
    budget once, same seed and load, so rounds are resampled whole), recompute every curve's median time and error
    per budget, interpolate, ratio. Returns dict(median, lo, hi (2.5 / 97.5 %), q25, q75, n, bounds: resamples where
    mine's fastest budget was already below the error (ratio a lower bound, counted as is), missed: resamples where
    mine never reached it (left out))."""
    R = len(tt[(other, P)])
    rng = np.random.default_rng(seed)
    vals, bounds, missed = [], 0, 0
    for _ in range(n_boot):
        got = ratio_at_equal_error(tt, errs, rng.integers(0, R, R).tolist(), mine, other, P, budgets)
        if got is None:
            missed += 1
            continue
        vals.append(got[0])
        bounds += not got[1]
    if not vals:
        return {"n": 0, "missed": missed}
    q = lambda x: float(np.quantile(vals, x))  # noqa: E731
    return {"median": q(.5), "lo": q(.025), "hi": q(.975), "q25": q(.25), "q75": q(.75), "n": len(vals),
            "bounds": bounds, "missed": missed}


def plot_curves(curves, targets, path):
    """Error against wall time, log-log, one line per explainer (points = budgets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in curves.items():
        pts = sorted(pts)
        ax.plot([t for t, _, _ in pts], [e for _, e, _ in pts], "o-", label=name)
        for t, e, p in pts:
            ax.annotate(str(p), (t, e), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for name, e in targets.items():  # the equal-error levels
        ax.axhline(e, ls=":", lw=0.8, color="grey")
        ax.text(0.01, e, f"{name} P=10 error", fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
    ax.set_xlabel("wall time, s (median over rounds)")
    ax.set_ylabel("mean |phi - phi_ref|")
    ax.set_title("MM-SHAP error vs time (labels: permutations P)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--permutations", type=int, default=10, help="the budget whose error defines 'equal error'")
    ap.add_argument("--budgets", default="2,5,10,20", help="permutation counts of the error-vs-time curves")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved timed rounds (after one warm-up round)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bootstrap", type=int, default=2000, help="resamples of the rounds for the ratios' spread")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--json", default=None, help="write the raw timings as a pyperf BenchmarkSuite here")
    ap.add_argument("--plot", default=None, help="error-vs-time plot (PNG); none by default, so a plain run never "
                    "overwrites the figure of record benchmarks/results/explain_vs_shap.png")
    ap.add_argument("--variants", action="store_true",
                    help="also time mmfuse with reuse=None (the previous default), reuse={'image': 4} (by hand) and "
                         "the walk estimator (with the split)")
    ap.add_argument("--whole-walk", action="store_true",
                    help="also time the walk estimator with whole-model calls (mmfuse before the split)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P = args.permutations
    budgets = sorted({int(b) for b in args.budgets.split(",")} | {P})
    t0 = time.perf_counter()
    load0 = [round(x, 2) for x in os.getloadavg()]
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
    # the reference: shap's estimator (antithetic walk), independent of mmfuse's default estimator
    ref_res = mmshap(sf, batch, maskers, n_permutations=REF_P, seed=10_000, estimator="walk")
    ref = stack_values(ref_res)
    layouts = [s.layouts for s in ref_res.samples]
    # the reference's own error: a second, independent reference (another seed); for two independent estimates with
    # the same (near-normal) error, E|r1 - r2| = sqrt(2) E|r1 - phi|, so the reference's mean |error| ~ mean|r1-r2|/sqrt2
    ref2 = stack_values(mmshap(sf, batch, maskers, n_permutations=REF_P, seed=20_000, estimator="walk"))
    ref_err = float((ref.double() - ref2.double()).abs().mean()) / np.sqrt(2)
    n = ref_res.samples[0].values.numel()

    # --- agreement at matched permutations (correctness, untimed) ---
    om = stack_values(mmshap(sf, batch, maskers, permutations=shap_matched_perms(n, P, 0)))
    sv = run_shap(model, batch, layouts, maskers, classes, P, 0)
    torch.manual_seed(0)
    cperms = torch.stack([torch.randperm(n) for _ in range(P)])
    of = stack_values(mmshap(sf, batch, maskers, permutations=cperms, antithetic=False))
    cv = run_captum(model, batch, layouts, classes, P, 0)
    print(f"\n{batch.batch_size} samples x {n} features; reference: {REF_P} antithetic permutations (walk); its own "
          f"mean |error| ~ {ref_err:.2e} (mean |r1 - r2| / sqrt 2 over two independent references)\n")
    print("Agreement with matched permutations (same orders => same values up to float32 rounding)")
    print(compare("mmfuse antithetic vs shap PermutationExplainer", om, sv))
    print(compare("mmfuse forward-only vs captum SVS", of, cv))
    sf.use_split = False
    whole = stack_values(mmshap(sf, batch, maskers, permutations=shap_matched_perms(n, P, 0)))
    sf.use_split = True
    print(compare("mmfuse split (encode once) vs whole-model calls", om, whole))

    def whole_walk(p, seed):
        sf.use_split = False
        try:
            return stack_values(mmshap(sf, batch, maskers, n_permutations=p, seed=seed, estimator="walk"))
        finally:
            sf.use_split = True

    extra = {
        # the default before reuse="auto": one new order of every modality per draw
        "mmfuse-plain": lambda p, seed: stack_values(mmshap(sf, batch, maskers, n_permutations=p, seed=seed,
                                                            reuse=None)),
        # hand-chosen: each image order serves 4 draws (the image encoder is the cost, audio carries the error)
        "mmfuse-reuse4": lambda p, seed: stack_values(mmshap(sf, batch, maskers, n_permutations=p, seed=seed,
                                                             reuse={"image": 4})),
        "mmfuse-walk": lambda p, seed: stack_values(mmshap(sf, batch, maskers, n_permutations=p, seed=seed,
                                                           estimator="walk")),
    } if args.variants else {}
    if args.whole_walk:
        extra["mmfuse-whole-walk"] = whole_walk
    methods = {
        # default: the explanation split + the interleave estimator (estimator="auto")
        "mmfuse": lambda p, seed: stack_values(mmshap(sf, batch, maskers, n_permutations=p, seed=seed)),
        **extra,
        "shap": lambda p, seed: run_shap(model, batch, layouts, maskers, classes, p, seed),
        "captum": lambda p, seed: run_captum(model, batch, layouts, classes, p, seed),
    }
    jobs = [(m, p) for p in budgets for m in methods]
    for m, p in jobs:  # warm-up: every explainer and budget once, untimed
        methods[m](p, 0)
    times = {j: [] for j in jobs}
    cpu = {j: [] for j in jobs}  # process CPU time: single-threaded explainers, so less exposed to other jobs
    errs = {j: [] for j in jobs}
    for r in range(args.repeats):
        k = r % len(jobs)
        for m, p in jobs[k:] + jobs[:k]:  # rotated order: no explainer always first or last
            c, t = time.process_time(), time.perf_counter()
            v = methods[m](p, r + 1)
            times[(m, p)].append(time.perf_counter() - t)
            cpu[(m, p)].append(time.process_time() - c)
            errs[(m, p)].append(float((v.double() - ref.double()).abs().mean()))

    print(f"\nError vs wall time ({args.repeats} interleaved rounds, median [IQR] of seconds; mean |error| median "
          f"over the rounds' seeds; torch threads {torch.get_num_threads()})")
    print(f"  {'explainer':<8} {'P':>3}  {'seconds':>8}  {'IQR':>15}  {'error':>9}")
    curves = {m: [] for m in methods}
    for m, p in sorted(jobs):
        ts, es = times[(m, p)], errs[(m, p)]
        med_t, med_e = float(np.median(ts)), float(np.median(es))
        curves[m].append((med_t, med_e, p))
        cs = cpu[(m, p)]
        print(f"  {m:<8} {p:>3}  {med_t:8.3f}  {quantile(ts, .25):7.3f}-{quantile(ts, .75):7.3f}  {med_e:9.2e}"
              f"   CPU {np.median(cs):7.3f} ({quantile(cs, .25):.3f}-{quantile(cs, .75):.3f})")

    print(f"\nSame-budget ratios at P={P} (median over rounds of per-round time ratios; IQR, min-max)")
    for other in ("shap", "captum"):
        rr = [b / a for a, b in zip(times[("mmfuse", P)], times[(other, P)])]
        print(f"  {other} / mmfuse: {np.median(rr):.2f}x  (IQR {quantile(rr, .25):.2f}-{quantile(rr, .75):.2f}, "
              f"min-max {min(rr):.2f}-{max(rr):.2f})")
    targets, summary = {}, {"reference_error": ref_err, "reference_permutations": REF_P, "rounds": args.repeats,
                             "bootstrap": args.bootstrap, "threads": torch.get_num_threads(), "P": P,
                             "budgets": budgets, "ratios": {}}
    rounds = list(range(args.repeats))
    for clock, tt in (("wall", times), ("CPU", cpu)):
        print(f"\nTime to reach the same error ({clock} time; log-log interpolation on each explainer's error-vs-time "
              f"curve made monotone: its lower envelope); bootstrap over the {args.repeats} rounds ({args.bootstrap} "
              "resamples): median [95 % interval] (IQR)")
        for other in ("shap", "captum"):
            target = float(np.median(errs[(other, P)]))
            targets[other] = target
            t_o = float(np.median(tt[(other, P)]))
            for mine in [m for m in methods if m.startswith("mmfuse")]:
                pts = [(float(np.median(tt[(mine, p)])), float(np.median(errs[(mine, p)]))) for p in budgets]
                got = time_to_error(pts, target)
                if got is None:
                    print(f"  error {target:.2e} ({other} at P={P}): {mine} does not reach it; widen --budgets")
                    continue
                t_m, exact = got
                bs = bootstrap_ratio(tt, errs, mine, other, P, budgets, args.bootstrap)
                # per-round ratios: each round's own curve (one seed per point: noisy; reported for the record)
                per = [x[0] for x in (ratio_at_equal_error(tt, errs, [r], mine, other, P, budgets) for r in rounds)
                       if x is not None]
                how = "" if exact else " (its cheapest budget is already below this error: a bound, >=)"
                spread = (f"  bootstrap {bs['median']:.2f}x [{bs['lo']:.2f}-{bs['hi']:.2f}] (IQR {bs['q25']:.2f}-"
                          f"{bs['q75']:.2f}; {bs['bounds']} bounds, {bs['missed']} not reached of {args.bootstrap})"
                          if bs["n"] else f"  bootstrap: never reached in {bs['missed']} resamples")
                if per:
                    spread += (f"; per-round ratio median {np.median(per):.2f}x (IQR {quantile(per, .25):.2f}-"
                               f"{quantile(per, .75):.2f}, {len(per)} of {args.repeats} rounds reach it)")
                print(f"  error {target:.2e} ({other} at P={P}): {mine} {t_m:.3f}s, {other} {t_o:.3f}s -> {mine} "
                      f"{'' if exact else '>= '}{t_o / t_m:.2f}x faster{how}\n  {spread}")
                summary["ratios"][f"{clock} {other} / {mine}"] = {
                    "target_error": target, "other_seconds": t_o, "mine_seconds": t_m, "ratio": t_o / t_m,
                    "exact": exact, "bootstrap": bs,
                    "per_round": {"median": float(np.median(per)), "q25": quantile(per, .25),
                                  "q75": quantile(per, .75), "n": len(per)} if per else None}
    summary["curves"] = {m: [{"P": p, "seconds": t, "error": e} for t, e, p in sorted(c, key=lambda x: x[2])]
                         for m, c in curves.items()}
    if args.plot:
        plot_curves(curves, targets, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        suite = pyperf.BenchmarkSuite([pyperf.Benchmark([pyperf.Run(tt[(m, p)], metadata={
            "name": f"{m} P={p}{tag}", "unit": "second", "loops": 1})]) for m, p in jobs
            for tt, tag in ((times, ""), (cpu, " cpu"))])
        suite.dump(args.json, replace=True)
        import json

        with open(args.json) as fh:  # pyperf ignores other top-level keys: the summary rides along
            data = json.load(fh)
        summary["load_average"] = {"start": load0, "end": [round(x, 2) for x in os.getloadavg()]}
        data["mmfuse_summary"] = summary
        with open(args.json, "w") as fh:
            json.dump(data, fh)
        print(f"raw timings (pyperf) + summary (key 'mmfuse_summary': ratios, bootstrap, reference error): "
              f"{args.json}")
    print(f"total {time.perf_counter() - t0:.1f}s; load average {load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} "
          f"at the end, on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
