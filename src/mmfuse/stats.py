"""Paired tests of a compare study: each method against the best one, paired by seed, Holm-corrected.

``compare.test``:

- ``ttest`` (default): the paired t-test (``scipy.stats.ttest_rel``, two-sided) on the per-seed differences.
  It is the default because it is the only one of the two that can reject with few seeds.
- ``wilcoxon``: the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, exact null distribution for small n,
  two-sided). With n seeds its smallest possible two-sided p-value is ``2 / 2**n``: 0.25 with 3 seeds,
  0.0625 with 5, so with fewer than 6 seeds it can never reach alpha = 0.05 and every method is "≈ best".

The p-values of the m methods compared with the best are corrected with Holm's step-down procedure
(:func:`holm`); a method whose corrected p is ≥ ``compare.alpha`` is marked ``≈ best`` (no evidence that it is
worse), else ``worse``. The best method itself is marked ``best``. Degenerate pairs: all differences zero → p = 1;
all differences equal and non-zero (zero variance) → p = 0 for the t-test.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

TESTS = ("ttest", "wilcoxon")


def paired_p(a: Sequence[float], b: Sequence[float], test: str = "ttest") -> float:
    """The two-sided p-value of the paired test of ``a`` against ``b`` (same length, paired by position)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired test: expected two equal-length 1-D arrays, got shapes {a.shape} and {b.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    d = a[ok] - b[ok]
    if len(d) < 2:
        return float("nan")
    if np.allclose(d, 0.0, atol=1e-12):
        return 1.0
    if test == "ttest":
        if np.allclose(d, d[0], atol=1e-12):
            return 0.0  # a constant non-zero difference: t is infinite
        return float(stats.ttest_rel(a[ok], b[ok]).pvalue)
    if test == "wilcoxon":
        nz = d[~np.isclose(d, 0.0, atol=1e-12)]
        method = "exact" if len(nz) == len(d) else "auto"  # exact needs no zero differences
        return float(stats.wilcoxon(d, method=method, zero_method="wilcox").pvalue)
    raise ValueError(f"unknown paired test {test!r}; one of {list(TESTS)}")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: sort ascending, p_(i) * (m - i) (i from 0), running maximum,
    capped at 1; NaN stays NaN and does not count in m."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    idx = [i for i in np.argsort(p, kind="stable") if not math.isnan(p[i])]
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, p[i] * (m - rank)))
        out[i] = running
    return [float(x) for x in out]


def compare_to_best(scores: dict[str, Sequence[float]], best: str, direction: str = "max", test: str = "ttest",
                    alpha: float = 0.05) -> dict[str, dict]:
    """``scores``: method -> metric per seed (the same seed order for every method). Returns, per method,
    ``{"p": raw p, "p_holm": corrected p, "mark": "best" | "≈ best" | "worse" | "better" | "untested", "n": pairs}``
    (``untested``: fewer than two seeds paired with the best's)."""
    others = [m for m in scores if m != best]
    raw = [paired_p(scores[m], scores[best], test) for m in others]
    adj = holm(raw)
    out = {best: {"p": float("nan"), "p_holm": float("nan"), "mark": "best", "n": len(scores[best])}}
    sign = 1.0 if direction == "max" else -1.0
    for m, p, q in zip(others, raw, adj):
        n = int(np.sum(~(np.isnan(np.asarray(scores[m], float)) | np.isnan(np.asarray(scores[best], float)))))
        if math.isnan(q):
            mark = "untested"  # fewer than 2 paired seeds: no test possible
        elif q >= alpha:
            mark = "≈ best"
        else:
            diff = sign * (np.nanmean(scores[m]) - np.nanmean(scores[best]))
            mark = "better" if diff > 0 else "worse"  # "better" only if the caller's "best" was not the best
        out[m] = {"p": p, "p_holm": q, "mark": mark, "n": n}
    return out
