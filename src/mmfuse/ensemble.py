"""Caruana et al. (2004) ensemble selection: greedy forward selection with replacement, on validation.

``compare.ensemble: {size: N, top: K}`` (size 0 = off): the K methods with the best *validation* metric (their
stored validation predictions, mean over seeds; :func:`rank_by_val` — never the test ranking) are the library;
starting from an empty ensemble, each of N steps adds (with replacement) the member whose addition gives the best
validation metric of the averaged predictions (ties: the earlier, i.e. better-ranked, member). The weights are the
selection counts / N. Averaged are probabilities (multiclass: softmax, multilabel: sigmoid) or, for regression, the
outputs; the average is turned back into scores (log-probabilities / logits) for
:func:`mmfuse.evaluation.metrics.compute_metrics`, so the ensemble's metrics are those of its averaged
probabilities. In ``compare`` the selection is done per seed (the runs of seed s of every member) and the test
metric is reported as mean ± std over seeds, as one more leaderboard row ``ensemble(a×w, b×w, ...)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def to_probs(scores: np.ndarray, task: str) -> np.ndarray:
    """Raw model outputs -> what is averaged: class probabilities, label probabilities, or the outputs."""
    s = np.asarray(scores, np.float64)
    if task == "multiclass":
        z = s - s.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    if task == "multilabel":
        return 1.0 / (1.0 + np.exp(-s))
    return s


def from_probs(p: np.ndarray, task: str) -> np.ndarray:
    """Averaged probabilities -> scores whose softmax / sigmoid gives them back (the metrics' input)."""
    eps = 1e-12
    if task == "multiclass":
        return np.log(np.clip(p, eps, None))
    if task == "multilabel":
        p = np.clip(p, eps, 1 - eps)
        return np.log(p) - np.log1p(-p)
    return p


def caruana(preds: dict[str, np.ndarray], score: Callable[[np.ndarray], float], size: int,
            direction: str = "max") -> tuple[dict[str, float], list[str], list[float]]:
    """Greedy forward selection with replacement.

    ``preds``: member -> averaged-space predictions (probabilities or outputs) on the validation rows, in rank
    order (ties go to the earlier member); ``score(avg)``: the validation metric of averaged predictions.
    Returns ``(weights, chosen sequence, score after each step)``; weights sum to 1 over the chosen members.
    """
    if size < 1 or not preds:
        raise ValueError("caruana: need size >= 1 and at least one member")
    names = list(preds)
    total = np.zeros_like(np.asarray(preds[names[0]], np.float64))
    chosen: list[str] = []
    trace: list[float] = []
    better = (lambda a, b: a > b) if direction == "max" else (lambda a, b: a < b)
    for step in range(size):
        best_name, best_val = None, None
        for n in names:
            v = float(score((total + preds[n]) / (step + 1)))
            if best_val is None or better(v, best_val):
                best_name, best_val = n, v
        total = total + preds[best_name]
        chosen.append(best_name)
        trace.append(best_val)
    weights = {n: chosen.count(n) / size for n in dict.fromkeys(chosen)}
    return weights, chosen, trace


def blend(preds: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The weighted average of the members' predictions (averaged space)."""
    return sum(w * np.asarray(preds[n], np.float64) for n, w in weights.items())


def label(weights: dict[str, float]) -> str:
    """``ensemble(a×0.60, b×0.40)``."""
    return "ensemble(" + ", ".join(f"{n}×{w:.2f}" for n, w in weights.items()) + ")"


def rank_by_val(val: dict[str, dict[int, np.ndarray]], y_val: np.ndarray, task: str, metric: str,
                direction: str) -> list[tuple[str, float]]:
    """The members ranked by their validation metric (mean over their seeds' ``val`` raw scores), best first
    (ties keep the given order): the ensemble's candidates are chosen on validation, never on test."""
    from .evaluation.metrics import compute_metrics

    scored = []
    for m, per_seed in val.items():
        v = [compute_metrics(task, np.asarray(s), y_val).get(metric, float("nan")) for s in per_seed.values()]
        v = [x for x in v if np.isfinite(x)]
        scored.append((m, float(np.mean(v)) if v else float("nan")))
    worst = -np.inf if direction == "max" else np.inf
    key = (lambda t: -(t[1] if np.isfinite(t[1]) else worst)) if direction == "max" else (
        lambda t: t[1] if np.isfinite(t[1]) else worst)
    return sorted(scored, key=key)


def seedwise(val: dict[str, dict[int, np.ndarray]], test: dict[str, dict[int, np.ndarray]],
             y_val: np.ndarray, y_test: np.ndarray, task: str, metric: str, direction: str, size: int,
             seeds: Sequence[int]) -> dict:
    """One Caruana ensemble per seed (members: the runs of that seed); ``val`` / ``test``: member -> seed ->
    raw scores. Returns ``{"per_seed": [{seed, weights, val, test metrics}], "test_<m>": [...]}``."""
    from .evaluation.metrics import compute_metrics

    def score_of(y):
        return lambda avg: compute_metrics(task, from_probs(avg, task), y).get(metric, float("nan"))

    out: dict = {"per_seed": []}
    for s in seeds:
        members = [m for m in val if s in val[m] and s in test.get(m, {})]
        if not members:
            continue
        pv = {m: to_probs(val[m][s], task) for m in members}
        w, chosen, trace = caruana(pv, score_of(y_val), size, direction)
        pt = blend({m: to_probs(test[m][s], task) for m in w}, w)
        mets = compute_metrics(task, from_probs(pt, task), y_test)
        out["per_seed"].append({"seed": s, "weights": w, "chosen": chosen, "val": trace[-1], "test": mets})
    return out
