"""Diagnostics of a multimodal run: does the fused model use every modality?

* :func:`unimodal_gap` — the fused methods' metric minus each unimodal model's metric, from the rows of
  ``compare``'s leaderboard (``mmfuse.compare.leaderboard``).
* :func:`only_present` — the model's test metric with every other modality masked (the simulated pattern
  {m} of :func:`mmfuse.evaluation.evaluate`, reused when it was computed).
* :func:`chance_metrics` — the metrics of a constant prediction fitted on the train split (the majority
  class for multiclass, each label's majority for multilabel, the mean for regression).
* :func:`probe_reference` — a *probe*, the unimodal reference of ``mmfuse train`` (which trains no
  unimodal model): a linear model (logistic regression; ridge for regression and multilabel) fitted on the
  train split's embeddings of one modality from the trained model's own encoder (``model.encode``), scored on
  the test split. It measures how much the modality's embedding *carries*, not what a unimodal network
  trained end to end would reach.
* :func:`ignored_modalities` — a warning per modality whose only-present metric is near chance while its
  unimodal reference is far above chance; it suggests modality dropout (``model.missing.modality_dropout``).
* :func:`leaderboard_ignored` — the same warning in ``compare``: a fused method's ``pattern[<m>]`` metric
  against the ``unimodal:<m>`` run.
* :func:`encoder_collapse` / :func:`collapsed_modalities` — per modality, the embedding dimensions that are constant
  over the evaluated test rows (var ≤ 1e-12·(1 + mean²): dead ReLUs, a saturated or zeroed layer), from the same
  test-split embeddings the probe scores; a warning when at least three quarters of them are (the encoder's output
  collapsed).
* :func:`grad_norm_summary` — the per-modality encoder gradient norms recorded by
  :class:`mmfuse.training.callbacks.GradNormMonitor` in the run's history, and their ratio to the largest.
* :func:`diagnose` — all of the above for a trained model; ``fit`` stores its result in
  ``report["diagnostics"]`` of the test report (``training.diagnostics``, default true).

The ``report["diagnostics"]`` document (JSON-serialisable)::

    {"metric": "accuracy", "direction": "max",
     "only_present": {m: value},                 # test metric, only m present (rows that have m)
     "chance": {m: value},                       # a constant prediction's metric on the same rows
     "unimodal_reference": {m: value},           # the probe's test metric (absent when skipped)
     "reference_kind": "linear probe on the model's own <m> encoder embeddings",
     "probe_skipped": "reason" | None,
     "ignored": [{"modality", "metric", "only_present", "chance", "reference", "reference_kind", "message"}],
     "grad_norm": {"modalities", "per_epoch": [{"epoch", "norm": {m}, "ratio": {m}}],
                   "mean_norm": {m}, "mean_ratio": {m}} | None,
     "collapse": {m: {"dims", "constant", "rows", "fraction"}},   # {} when not computed (collapse_skipped says why)
     "collapse_skipped": "reason" | None,
     "collapsed": [{"modality", "dims", "constant", "rows", "fraction", "message"}],
     "thresholds": {"near": 0.25, "far": 0.25, "collapse_fraction": 0.75}}
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import ConfigError, DataError

#: A modality is "near chance" when its only-present gain over chance is at most NEAR × the reference's gain.
NEAR = 0.25
#: The reference is "far above chance" when its gain is at least FAR × the room above chance (1 − chance for
#: a score in [0, 1]; the constant prediction's own error for an error metric such as mae / mse).
FAR = 0.25  # a quarter of the way from chance to perfect: a probe a few points above chance on a small test
#  split is noise, not evidence that the modality carries what the fused model ignores
LOWER_IS_BETTER = ("mse", "mae")
UNIMODAL_PREFIX = "unimodal:"
DROPOUT_KEY = "model.missing.modality_dropout"
MAX_PROBE_ROWS = 2000
#: A dimension is constant over the rows when its variance is at most COLLAPSE_VAR × (1 + mean²) (relative: a
#: dimension at 1e3 with float32 rounding noise is still constant, one at 1e-3 that varies is not).
COLLAPSE_VAR = 1e-12
#: An encoder's output is "collapsed" when at least this fraction of its dimensions is constant over the rows
#: (ReLU encoders that work keep a share dead: `mmfuse demo --quick`'s audio encoders had 25-50 % of 64 dimensions
#: constant at 0.50-0.53 accuracy alone, its image encoders 53-83 % at 0.11-0.22, chance 0.10) ...
COLLAPSE_FRACTION = 0.75
#: ... and there are at least this many rows (a healthy ReLU unit active on 5 % of the inputs is zero on all of
#: 10 rows 60 % of the time, on 30 rows ~20 %, on 100 rows < 1 %: few rows prove nothing about one unit; the rule
#: asks for three quarters of the dimensions, which a healthy encoder does not reach by chance).
COLLAPSE_MIN_ROWS = 30
#: Test rows the collapse check encodes when the probe does not run (a seeded random subset; when the probe runs,
#: the check reuses the probe's MAX_PROBE_TEST_ROWS test rows).
MAX_COLLAPSE_ROWS = 512
#: The probe is scored on at most this many seeded random test rows that have the modality (a binomial metric's
#: standard error ≤ 0.012 there): the diagnostics' memory stays bounded whatever the size of the test split.
MAX_PROBE_TEST_ROWS = 2000


def metric_direction(metric: str) -> str:
    """'min' for error metrics (mse, mae), else 'max'."""
    return "min" if metric in LOWER_IS_BETTER or metric.endswith("loss") else "max"


def main_metric(task: str, monitor: str | None = None) -> tuple[str, str]:
    """The metric the diagnostics compare: the monitored one (``training.monitor`` = ``val_<metric>``) when it is a
    test metric of the task, else the task's primary metric (accuracy / f1_micro / mae)."""
    from .evaluation.metrics import METRIC_NAMES, primary_metric

    if monitor and monitor.startswith("val_") and monitor[4:] in METRIC_NAMES.get(task, ()):
        return monitor[4:], metric_direction(monitor[4:])
    return primary_metric(task)


# ---------------------------------------------------------------------------------------------- unimodal gap
def _rows(board_rows: Any) -> list[dict]:
    if hasattr(board_rows, "to_dict"):  # a pandas DataFrame
        return list(board_rows.to_dict("records"))
    if isinstance(board_rows, Mapping):
        raise ConfigError("unimodal_gap: board_rows must be the leaderboard's rows (a DataFrame or a list of dicts), "
                          "got a single mapping; pass compare.leaderboard(...) or its to_dict('records')")
    return [dict(r) for r in board_rows]


def unimodal_gap(board_rows: Any, metric: str, direction: str) -> dict[str, Any]:
    """The fused methods against each unimodal model, from ``compare``'s leaderboard rows.

    ``board_rows``: the rows of :func:`mmfuse.compare.leaderboard` for ONE grid point (a DataFrame or a list of
    dicts), each with ``method`` (the unimodal baselines are named ``unimodal:<modality>``; ``kind`` ==
    ``"unimodal"`` also marks them) and ``<metric>_mean`` (the test metric averaged over seeds; a plain
    ``<metric>`` or ``test_<metric>`` column is accepted too). ``direction``: "max" or "min" (as
    :func:`mmfuse.evaluation.metrics.primary_metric`).

    Returns ``{"metric", "direction", "unimodal": {m: value}, "fused": {method: value},
    "gap": {method: {m: fused − unimodal}}, "advantage": {method: {m: signed so > 0 = the fused method is
    better}}, "best_fused": method, "best_gap": {m: gap of best_fused}}``. No unimodal rows: ``unimodal`` is {}
    and the gaps are empty.
    """
    if direction not in ("max", "min"):
        raise ConfigError(f"unimodal_gap: direction must be 'max' or 'min', got {direction!r}")
    rows = _rows(board_rows)
    sign = 1.0 if direction == "max" else -1.0

    def value(r: dict) -> float:
        for key in (f"{metric}_mean", metric, f"test_{metric}"):
            if key in r and r[key] is not None:
                return float(r[key])
        raise DataError(f"unimodal_gap: the leaderboard row of method {r.get('method')!r} has no column "
                        f"{metric}_mean; give the rows of compare.leaderboard(runs, {metric!r}, ...)")

    uni: dict[str, float] = {}
    fused: dict[str, float] = {}
    for r in rows:
        if "method" not in r:
            raise DataError(f"unimodal_gap: a leaderboard row has no 'method' column (columns {sorted(r)[:8]})")
        name = str(r["method"])
        if name.startswith(UNIMODAL_PREFIX) or r.get("kind") == "unimodal":
            uni[name[len(UNIMODAL_PREFIX):] if name.startswith(UNIMODAL_PREFIX) else name] = value(r)
        else:
            fused[name] = value(r)
    gap = {f: {m: v - u for m, u in uni.items()} for f, v in fused.items()}
    adv = {f: {m: sign * g for m, g in gs.items()} for f, gs in gap.items()}
    finite = {f: v for f, v in fused.items() if not math.isnan(v)}
    best = max(finite, key=lambda f: sign * finite[f]) if finite else None
    return {"metric": metric, "direction": direction, "unimodal": uni, "fused": fused, "gap": gap,
            "advantage": adv, "best_fused": best, "best_gap": gap.get(best, {}) if best else {}}


def leaderboard_ignored(board_rows: Any, metric: str, direction: str, chance: Mapping[str, float] | float,
                        near: float = NEAR, far: float = FAR) -> dict[str, list[dict]]:
    """The ignored-modality warnings of ``compare``: for each fused method of the leaderboard rows (one grid
    point, as :func:`unimodal_gap`), its only-present metric ``pattern[<m>]_<metric>_mean`` against the
    ``unimodal:<m>`` run's ``<metric>_mean``. ``chance``: the chance level per modality (or one number), e.g. a
    run's ``report["diagnostics"]["chance"]``. Returns ``{method: [warning, ...]}`` (methods without warnings left
    out)."""
    rows = _rows(board_rows)
    gap = unimodal_gap(rows, metric, direction)
    out = {}
    for r in rows:
        name = str(r.get("method"))
        if name not in gap["fused"]:
            continue
        only = {m: float(r[f"pattern[{m}]_{metric}_mean"]) for m in gap["unimodal"]
                if r.get(f"pattern[{m}]_{metric}_mean") is not None}
        ch = {m: float(chance[m] if isinstance(chance, Mapping) else chance) for m in only
              if not isinstance(chance, Mapping) or m in chance}
        warn = ignored_modalities(only, gap["unimodal"], ch, metric, direction, "unimodal model", near, far)
        if warn:
            out[name] = warn
    return out


# ---------------------------------------------------------------------------------------------- metrics
def _targets(dataset) -> np.ndarray:
    from .evaluation import make_loader

    y = getattr(dataset, "targets", None)
    if isinstance(y, np.ndarray) and len(y) == len(dataset) and callable(getattr(dataset, "batch", None)):
        return np.array(y)  # what the batches' targets concatenate to (ArrayDataset.batch), without decoding a pass
    return np.concatenate([b.target.cpu().numpy() for b in make_loader(dataset, 512)])


def constant_scores(task: str, train_target: np.ndarray, n: int, num_outputs: int) -> np.ndarray:
    """Scores [n, K] of the constant prediction fitted on ``train_target`` (majority class / label, mean)."""
    y = np.asarray(train_target)
    if task == "multiclass":
        counts = np.bincount(y.astype(int).reshape(-1), minlength=num_outputs)
        s = np.zeros((n, max(num_outputs, len(counts))))
        s[:, int(counts.argmax())] = 1.0
        return s
    if task == "multilabel":
        on = y.reshape(len(y), -1).mean(0) > 0.5
        return np.tile(np.where(on, 1.0, -1.0), (n, 1))
    return np.tile(y.reshape(len(y), -1).astype(np.float64).mean(0), (n, 1))


def chance_metrics(task: str, train_target: np.ndarray, test_target: np.ndarray, num_outputs: int) -> dict[str, float]:
    """The metrics of the constant prediction (fitted on the train targets) on ``test_target``."""
    from .evaluation.metrics import compute_metrics

    return compute_metrics(task, constant_scores(task, train_target, len(test_target), num_outputs), test_target)


def only_present(model, dataset, task: str, report: Mapping | None = None, modalities: Sequence[str] | None = None,
                 batch_size: int = 256) -> dict[str, dict]:
    """``{m: {"metrics": {...}, "rows": np.ndarray of test row positions}}``: the test metrics with only m kept
    (every other modality masked), over the rows that really have m.

    Reuses ``report["patterns"][m]`` (an :func:`~mmfuse.evaluation.evaluate` report) when every row has m;
    otherwise (or without patterns) runs one pass with the others masked, just for the M single-modality
    patterns."""
    from .evaluation import collect, make_loader
    from .evaluation.metrics import compute_metrics

    mods = list(modalities or getattr(model, "modalities", None) or dataset.modalities)
    loader = make_loader(dataset, batch_size)
    n = len(dataset)
    pats = (report or {}).get("patterns") or {}
    observed = (report or {}).get("observed")
    rows_with = None
    if observed:  # rows per real presence pattern: how many rows have each modality, without a pass
        rows_with = {m: sum(o["n"] for p, o in observed.items() if m in p.split("+")) for m in mods}
    present: dict[str, np.ndarray] | None = None
    out: dict[str, dict] = {}
    for m in mods:
        if m in pats and rows_with is not None and rows_with.get(m) == n:
            out[m] = {"metrics": dict(pats[m]), "rows": np.arange(n)}
            continue
        res = collect(model, loader, keep=[m], masks=present is None)
        if present is None:
            present = {k: np.asarray(res[f"present_{k}"], bool) for k in mods if f"present_{k}" in res}
        rows = np.flatnonzero(present.get(m, np.ones(n, bool)))
        out[m] = {"metrics": compute_metrics(task, res["scores"][rows], res["target"][rows]) if len(rows) else {},
                  "rows": rows}
    return out


# ---------------------------------------------------------------------------------------------- the probe
def probe_skip_reason(model, family: str | None = None) -> str | None:
    """Why the probe cannot run on ``model`` (None: it can). Only the fusion family's per-modality encoders are
    unimodal by construction (``model.encode``); intermediate fusion mixes the modalities inside the encoders."""
    from .models.model import MultimodalModel

    if family not in (None, "fusion") or not isinstance(model, MultimodalModel):
        return (f"the {family or type(model).__name__} family has no separate per-modality encoders "
                "(model.encode); no probe")
    if model.strategy == "early":
        return "early fusion encodes the modalities together; no per-modality probe"
    return None


def _embeddings(model, dataset, modalities: Sequence[str], batch_size: int, limit: int | None, seed: int) -> dict:
    """``{m: (X [n_m, D_m], y)}``: every modality's embeddings (``model.encode``, one pass for all of them) of the
    rows that have m; with ``limit``, from a seeded random order, stopping once each modality has ``limit`` rows."""
    import torch

    from .evaluation import make_loader

    xs: dict[str, list] = {m: [] for m in modalities}
    ys: dict[str, list] = {m: [] for m in modalities}
    count = dict.fromkeys(modalities, 0)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in make_loader(dataset, batch_size, shuffle=limit is not None, seed=seed):
                emb = model.encode(b)
                for m in modalities:
                    keep = b.mask[m].bool().cpu().numpy()
                    if keep.any() and (limit is None or count[m] < limit):
                        e = emb[m].float().cpu().numpy()
                        xs[m].append(e.reshape(len(e), -1)[keep])
                        ys[m].append(b.target.cpu().numpy()[keep])
                        count[m] += int(keep.sum())
                if limit is not None and min(count.values()) >= limit:
                    break
    finally:
        model.train(was)
    return {m: (np.concatenate(xs[m])[:limit], np.concatenate(ys[m])[:limit]) for m in modalities if xs[m]}


def _logistic_probe(x: np.ndarray, y: np.ndarray, k: int, x_test: np.ndarray, c: float = 1.0,
                    max_iter: int = 100) -> np.ndarray:
    """Multinomial logistic regression with an L2 penalty ``||W||² / (2C)`` on the weights (not the bias), the
    objective of scikit-learn's ``LogisticRegression(C=1)``, minimised by L-BFGS in float64 torch (no scikit-learn
    import: the probe costs a fraction of a second). Returns the test rows' log-probabilities [n_test, k]."""
    import torch

    X = torch.as_tensor(x, dtype=torch.float64)
    Y = torch.as_tensor(y, dtype=torch.long)
    W = torch.zeros(X.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure():
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(X @ W + b, Y, reduction="sum") + (W * W).sum() / (2 * c)
            # the probe's own gradients (autograd.grad: the training loop alone calls backward, see CONTRACTS)
            W.grad, b.grad = torch.autograd.grad(loss, [W, b])
        return loss.detach()

    opt.step(closure)  # the probe's own small convex fit (no model parameter is touched)
    with torch.no_grad():
        return torch.log_softmax(torch.as_tensor(x_test, dtype=torch.float64) @ W + b, 1).numpy()


def _ridge_probe(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Ridge regression with an unpenalised intercept (scikit-learn's ``Ridge(alpha)``), closed form."""
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return (x_test - xm) @ w + ym


def probe_reference(model, train, test, task: str, num_outputs: int, modalities: Sequence[str] | None = None,
                    batch_size: int = 256, max_train_rows: int = MAX_PROBE_ROWS, seed: int = 0,
                    max_test_rows: int | None = MAX_PROBE_TEST_ROWS,
                    test_embeddings: Mapping[str, tuple] | None = None) -> dict[str, dict]:
    """``{m: {"metrics": {...}, "n_train": rows, "n_test": rows}}``: a linear probe per modality (see the module
    docstring) fitted on at most ``max_train_rows`` train rows that have m (a seeded random subset), scored on
    at most ``max_test_rows`` test rows that have m (a seeded random subset; None: every one). A modality with no
    usable rows is left out. ``test_embeddings``: the test split's
    ``{m: (X, y)}`` when already computed (:func:`diagnose` shares them with the collapse check)."""
    from .evaluation.metrics import compute_metrics

    mods = list(modalities or model.modalities)
    tr = _embeddings(model, train, mods, batch_size, max_train_rows, seed)
    te = (test_embeddings if test_embeddings is not None
          else _embeddings(model, test, mods, batch_size, max_test_rows, seed))
    out: dict[str, dict] = {}
    for m in mods:
        if m not in tr or m not in te:
            continue
        (xtr, ytr), (xte, yte) = tr[m], te[m]
        mu, sd = xtr.mean(0), xtr.std(0)
        sd = np.where(sd > 1e-12, sd, 1.0)  # StandardScaler's rule: a constant feature is centred, not scaled
        ztr, zte = (xtr - mu) / sd, (xte - mu) / sd
        if task == "multiclass":
            ytr = ytr.astype(int).reshape(-1)
            classes = np.unique(ytr)
            if len(classes) < 2:
                continue
            scores = np.full((len(xte), max(num_outputs, int(classes.max()) + 1)), -1e9)
            scores[:, classes] = _logistic_probe(ztr, np.searchsorted(classes, ytr), len(classes), zte)
        else:  # ridge: regression outputs, or a linear probability model per label (logit proxy: p − 0.5)
            yt = ytr.reshape(len(ytr), -1).astype(np.float64)
            scores = _ridge_probe(ztr, yt, zte, alpha=1.0)
            if task == "multilabel":
                scores = scores - 0.5
        out[m] = {"metrics": compute_metrics(task, scores, yte), "n_train": int(len(xtr)), "n_test": int(len(xte))}
    return out


# ---------------------------------------------------------------------------------------------- collapsed encoders
def encoder_collapse(embeddings: Mapping[str, Any], rel: float = COLLAPSE_VAR) -> dict[str, dict]:
    """``{m: {"dims": D, "constant": k, "rows": n, "fraction": k / D}}`` of each modality's embeddings [n, D]
    (the rows that have m; an ``(X, y)`` pair as :func:`_embeddings` returns is accepted): k = the dimensions whose
    variance over the n rows is at most ``rel · (1 + mean²)`` (float64; relative, so the float rounding of a large
    constant still counts as constant). A modality without rows is left out."""
    out: dict[str, dict] = {}
    for m, x in embeddings.items():
        x = np.asarray(x[0] if isinstance(x, tuple) else x, dtype=np.float64)
        if x.ndim == 0 or len(x) == 0:
            continue
        x = x.reshape(len(x), -1)
        if x.shape[1] == 0:
            continue
        mean, var = x.mean(0), x.var(0)
        k = int(np.count_nonzero(var <= rel * (1.0 + mean * mean)))  # NaN variance: not counted
        out[m] = {"dims": int(x.shape[1]), "constant": k, "rows": int(len(x)), "fraction": k / x.shape[1]}
    return out


def collapse_message(m: str, detail: str) -> str:
    """The collapsed-encoder warning; ``detail``: e.g. "8 of 8 dimensions constant over 48 test rows"."""
    return (f"modality {m!r}: encoder output collapsed ({detail}; dead ReLUs?), so the model gets little or nothing "
            f"from {m} — try a lower learning rate "
            f"(--set training.lr=...), fewer epochs or early stopping (training.patience), or a wider encoder "
            f"(model.encoders.{m}.options.output_dim); and check that the {m} inputs themselves vary (not all zeros "
            "or one value after loading)")


def collapsed_modalities(stats: Mapping[str, Mapping], fraction: float = COLLAPSE_FRACTION,
                         min_rows: int = COLLAPSE_MIN_ROWS) -> list[dict]:
    """The warnings for :func:`encoder_collapse`'s result: a modality with at least ``min_rows`` rows and at least
    ``fraction`` of its embedding dimensions constant over them."""
    out = []
    for m in sorted(stats):
        st = stats[m]
        if st["rows"] < min_rows or st["dims"] == 0 or st["constant"] < fraction * st["dims"]:
            continue
        out.append({"modality": m, "dims": st["dims"], "constant": st["constant"], "rows": st["rows"],
                    "fraction": st["fraction"],
                    "message": collapse_message(m, f"{st['constant']} of {st['dims']} dimensions constant over "
                                                   f"{st['rows']} test rows")})
    return out


def runs_collapsed(run_rows: Any, fraction: float = COLLAPSE_FRACTION) -> dict[str, list[dict]]:
    """The collapsed-encoder warnings of ``compare``: ``run_rows`` (runs.csv rows of one grid point, a DataFrame or
    dicts) with ``method`` and ``collapsed[<m>]`` (each run's :func:`encoder_collapse` fraction on its test rows;
    empty / NaN when not computed); a method is flagged for m when at least one of its runs has ``fraction`` or
    more of m's dimensions constant. Returns ``{method: [{"modality", "runs", "of_runs", "fraction", "message"}]}``
    (``fraction``: the mean over the flagged runs; methods without warnings left out)."""
    rows = _rows(run_rows)
    by: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        for k, v in r.items():
            if isinstance(k, str) and k.startswith("collapsed[") and k.endswith("]") and v is not None:
                v = float(v)
                if not math.isnan(v):
                    by.setdefault(str(r.get("method")), {}).setdefault(k[10:-1], []).append(v)
    out: dict[str, list[dict]] = {}
    for method, mods in by.items():
        for m in sorted(mods):
            vals = mods[m]
            bad = [v for v in vals if v >= fraction]
            if not bad:
                continue
            mean = float(np.mean(bad))
            detail = (f"{mean:.0%} of its dimensions constant over the test rows in {len(bad)} of {len(vals)} "
                      f"run{'s' if len(vals) != 1 else ''}")
            out.setdefault(method, []).append({"modality": m, "runs": len(bad), "of_runs": len(vals),
                                               "fraction": mean, "message": collapse_message(m, detail)})
    return out


# ---------------------------------------------------------------------------------------------- the warning
def ignored_modalities(only: Mapping[str, float], reference: Mapping[str, float], chance: Mapping[str, float],
                       metric: str, direction: str, reference_kind: str = "unimodal model",
                       near: float = NEAR, far: float = FAR) -> list[dict]:
    """The modalities the fused model ignores: only-present ``metric`` near chance while the unimodal reference is
    far above chance. With gains over chance g = ±(value − chance) (sign by ``direction``), m is flagged when
    ``g_ref ≥ far × room`` (room = 1 − chance for a score, the constant prediction's error for an error metric)
    and ``g_only ≤ near × g_ref``. Each warning names the modality, both numbers and suggests modality dropout."""
    sign = 1.0 if direction == "max" else -1.0
    out = []
    for m in sorted(only):
        if m not in reference or m not in chance:
            continue
        o, r, c = float(only[m]), float(reference[m]), float(chance[m])
        if any(math.isnan(x) for x in (o, r, c)):
            continue
        room = (1.0 - c) if direction == "max" else abs(c)
        g_ref, g_only = sign * (r - c), sign * (o - c)
        if room <= 0 or g_ref < far * room or g_only > near * g_ref:
            continue
        msg = (f"modality {m!r} looks ignored: test {metric} with only {m} present is {o:.3f} (chance level {c:.3f}), "
               f"while the {reference_kind} reaches {r:.3f}; the fused model does not use what {m} carries. "
               f"Train with modality dropout, e.g. --set {DROPOUT_KEY}=0.3 (or a per-modality dict that drops the "
               f"other modalities more often), so that the model must predict from {m} alone")
        out.append({"modality": m, "metric": metric, "only_present": o, "chance": c, "reference": r,
                    "reference_kind": reference_kind, "message": msg})
    return out


# ---------------------------------------------------------------------------------------------- gradient norms
GRAD_KEY = "grad_norm[{}]"


def grad_norm_summary(history: Iterable[Mapping], modalities: Sequence[str]) -> dict | None:
    """From the history entries' ``grad_norm[<m>]`` (:class:`~mmfuse.training.callbacks.GradNormMonitor`):
    ``{"modalities", "per_epoch": [{"epoch", "norm": {m}, "ratio": {m}}], "mean_norm": {m}, "mean_ratio": {m}}``;
    ``ratio`` = the norm / the epoch's largest norm. None when nothing was recorded."""
    per = []
    for h in history:
        norms = {m: h.get(GRAD_KEY.format(m)) for m in modalities}
        norms = {m: float(v) for m, v in norms.items() if v is not None and not math.isnan(float(v))}
        if not norms:
            continue
        top = max(norms.values())
        per.append({"epoch": int(h.get("epoch", len(per))), "norm": norms,
                    "ratio": {m: (v / top if top > 0 else float("nan")) for m, v in norms.items()}})
    if not per:
        return None
    mods = [m for m in modalities if any(m in p["norm"] for p in per)]
    mean = {m: float(np.mean([p["norm"][m] for p in per if m in p["norm"]])) for m in mods}
    ratio = {m: float(np.nanmean([p["ratio"][m] for p in per if m in p["ratio"]])) for m in mods}
    return {"modalities": mods, "per_epoch": per, "mean_norm": mean, "mean_ratio": ratio}


# ---------------------------------------------------------------------------------------------- everything
def diagnose(model, datasets: Mapping, task: str, report: Mapping | None = None, *,
             history: Iterable[Mapping] = (), family: str | None = None, monitor: str | None = None,
             batch_size: int = 256, seed: int = 0, probe: bool = True, near: float = NEAR,
             far: float = FAR) -> dict[str, Any]:
    """The ``report["diagnostics"]`` document of a trained ``model`` (see the module docstring): only-present
    metrics on ``datasets["test"]`` (reusing ``report["patterns"]``), chance levels, the probe reference fitted on
    ``datasets["train"]`` (``probe=False`` or a family without per-modality encoders: skipped, with the reason),
    the ignored-modality warnings, the gradient-norm summary of ``history`` and the collapsed-encoder check (from
    the test split's per-modality embeddings: one encoder-only pass, over at most ``MAX_PROBE_TEST_ROWS`` seeded
    random test rows when the probe runs (then reused by it), else over at most ``MAX_COLLAPSE_ROWS``; families
    without per-modality encoders: skipped, with the reason)."""
    test, train = datasets.get("test"), datasets["train"]
    if test is None or len(test) == 0:
        raise DataError("diagnostics: the data has no non-empty 'test' split to evaluate the modalities on")
    metric, direction = main_metric(task, monitor)
    mods = list(getattr(model, "modalities", None) or test.modalities)
    num_outputs = int(getattr(train, "num_classes", 0) or 0)
    doc: dict[str, Any] = {"metric": metric, "direction": direction, "modalities": mods,
                           "thresholds": {"near": near, "far": far, "collapse_fraction": COLLAPSE_FRACTION}}
    doc["grad_norm"] = grad_norm_summary(history, mods)
    no_encoders = probe_skip_reason(model, family)
    doc["collapse"], doc["collapse_skipped"], doc["collapsed"] = {}, None, []
    if no_encoders is not None:
        reason = no_encoders.removesuffix("; no probe").removesuffix("; no per-modality probe")
        doc["collapse_skipped"] = reason + "; no collapse check"

    def collapse_check(rows: int | None) -> dict | None:
        if no_encoders is not None:
            return None
        emb = _embeddings(model, test, mods, batch_size, rows, seed)
        doc["collapse"] = encoder_collapse(emb)
        doc["collapsed"] = collapsed_modalities(doc["collapse"])
        return emb

    if len(mods) < 2:
        collapse_check(MAX_COLLAPSE_ROWS)
        doc.update(only_present={}, chance={}, unimodal_reference={}, probe_skipped="a single modality",
                   reference_kind=None, ignored=[])
        return doc
    only = only_present(model, test, task, report, mods, batch_size)
    ytr, yte = _targets(train), _targets(test)
    doc["only_present"] = {m: o["metrics"].get(metric, float("nan")) for m, o in only.items()}
    doc["chance"] = {m: chance_metrics(task, ytr, yte[o["rows"]], num_outputs).get(metric, float("nan"))
                     if len(o["rows"]) else float("nan") for m, o in only.items()}
    skip = None if probe else "no probe (training.diagnostics: no_probe)"
    skip = skip or no_encoders
    ref = {}
    # only a modality whose only-present gain over chance is at most `near` x the room above chance can ever be
    # flagged (the reference's gain is at most the room): the probe runs for those alone, so a run that uses every
    # modality pays nothing for it (no scikit-learn import, no fits); the warnings are the same as probing all
    sign = 1.0 if direction == "max" else -1.0
    candidates = [m for m in mods if m in doc["only_present"] and m in doc["chance"]
                  and not math.isnan(doc["only_present"][m]) and not math.isnan(doc["chance"][m])
                  and sign * (doc["only_present"][m] - doc["chance"][m])
                  <= near * ((1.0 - doc["chance"][m]) if direction == "max" else abs(doc["chance"][m]))]
    if skip is None and not candidates:
        skip = ("not needed: every modality alone is well above chance, so none can be ignored "
                f"(only-present gain > {near} x the room above chance)")
    # the probe's test rows (up to MAX_PROBE_TEST_ROWS) when it runs, and the collapse check reuses them
    test_emb = collapse_check(MAX_PROBE_TEST_ROWS if skip is None else MAX_COLLAPSE_ROWS)
    if skip is None:
        probes = probe_reference(model, train, test, task, num_outputs, candidates, batch_size, seed=seed,
                                 test_embeddings={m: test_emb[m] for m in candidates if m in test_emb})
        ref = {m: p["metrics"].get(metric, float("nan")) for m, p in probes.items()}
    kind = "linear probe on the model's own encoder embeddings (train split → test split)"
    doc.update(unimodal_reference=ref, reference_kind=kind if skip is None else None, probe_skipped=skip)
    doc["ignored"] = ignored_modalities(doc["only_present"], ref, doc["chance"], metric, direction,
                                        "linear probe on its own encoder's embeddings", near, far)
    return doc


def warning_lines(diagnostics: Mapping | None) -> list[str]:
    """The lines ``mmfuse train`` prints at the end: one per ignored modality and per collapsed encoder, and a
    gradient-norm note."""
    if not diagnostics:
        return []
    lines = [f"warning: {w['message']}" for w in diagnostics.get("ignored") or []]
    lines += [f"warning: {w['message']}" for w in diagnostics.get("collapsed") or []]
    g = diagnostics.get("grad_norm")
    if g and len(g.get("mean_ratio", {})) > 1:
        parts = ", ".join(f"{m} {r:.2f}" for m, r in g["mean_ratio"].items())
        lines.append(f"encoder gradient-norm ratio to the largest (mean over epochs): {parts}")
    return lines
