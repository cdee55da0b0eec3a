"""Paired tests of a compare study: each method against the best one, paired by seed, Holm-corrected.

``compare.test``:

- ``ttest`` (default): the paired t-test (``scipy.stats.ttest_rel``, two-sided) on the per-seed differences.
  It is the default because it is the only one of the two that can reject with few seeds.
- ``wilcoxon``: the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, exact null distribution for small n,
  two-sided). With n seeds its smallest possible two-sided p-value is ``2 / 2**n``: 0.25 with 3 seeds,
  0.0625 with 5, so with fewer than 6 seeds it can never reach alpha = 0.05 and every method is "≈ best".

The p-values of the m methods compared with the best are corrected with Holm's step-down procedure
(:func:`holm`); a method whose corrected p is ≥ ``compare.alpha`` is marked ``≈ best`` (no evidence that it is
worse), else ``worse``. The best method itself is marked ``best``.

Degenerate pairs: all differences zero → p = 1. Differences with zero variance but a non-zero mean (e.g. a
method exactly 1/600 behind the best on every seed) leave the t statistic undefined (±inf); the t-test then
falls back to the exact paired permutation (sign-flip) test (:func:`sign_flip_p`): under H0 each difference's
sign is ±1 with probability 1/2, and p is the fraction of the 2^n sign patterns whose |mean| reaches the observed
one — ``2 / 2**n`` when all n differences are equal (0.25 with 3 seeds), never 0.

Fewer than :data:`MIN_SEEDS` (3) paired seeds: no test (``untested (n seeds)``): with 2 seeds the t-test has one
degree of freedom and the exact tests' smallest p is 0.5, so the test cannot separate methods.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

TESTS = ("ttest", "wilcoxon")
MIN_SEEDS = 3  # fewer paired seeds: the methods are marked "untested (n seeds)"


def untested_mark(n: int) -> str:
    """``untested (1 seed)`` / ``untested (2 seeds)``."""
    return f"untested ({n} seed{'' if n == 1 else 's'})"


def sign_flip_p(d: Sequence[float]) -> float:
    """The exact two-sided paired permutation (sign-flip) p-value of the differences ``d``: the fraction of
    the 2^n sign assignments ``s`` with ``|mean(s * d)| >= |mean(d)|`` (ties within 1e-12 count). n ≤ 20."""
    d = np.asarray(d, float)
    n = len(d)
    if n == 0 or n > 20:
        raise ValueError(f"sign_flip_p: expected 1 to 20 differences, got {n}")
    signs = 1.0 - 2.0 * ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1)  # [2^n, n]
    stat = np.abs(signs @ d)
    obs = abs(float(d.sum()))
    return float(np.mean(stat >= obs - 1e-12 * max(1.0, obs)))


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
        if np.allclose(d, d[0], atol=1e-12) or float(np.std(d)) <= 1e-12 * float(np.max(np.abs(d))):
            return sign_flip_p(d) if len(d) <= 20 else 2.0 / 2 ** len(d)  # zero variance: t is infinite; the exact sign-flip p (2/2^n), never 0
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
    ``{"p": raw p, "p_holm": corrected p, "mark": "best" | "≈ best" | "worse" | "better" | "untested (n seeds)",
    "n": pairs}`` (``untested (n seed(s))``: fewer than :data:`MIN_SEEDS` seeds paired with the best's; such a
    method gets no p and does not count in Holm's m)."""
    others = [m for m in scores if m != best]

    def pairs(m: str) -> int:
        return int(np.sum(~(np.isnan(np.asarray(scores[m], float)) | np.isnan(np.asarray(scores[best], float)))))

    raw = [paired_p(scores[m], scores[best], test) if pairs(m) >= MIN_SEEDS else float("nan") for m in others]
    adj = holm(raw)
    out = {best: {"p": float("nan"), "p_holm": float("nan"), "mark": "best", "n": len(scores[best])}}
    sign = 1.0 if direction == "max" else -1.0
    for m, p, q in zip(others, raw, adj):
        n = pairs(m)
        if math.isnan(q):
            mark = untested_mark(n)  # fewer than MIN_SEEDS paired seeds: the test cannot separate methods
        elif q >= alpha:
            mark = "≈ best"
        else:
            diff = sign * (np.nanmean(scores[m]) - np.nanmean(scores[best]))
            mark = "better" if diff > 0 else "worse"  # "better" only if the caller's "best" was not the best
        out[m] = {"p": p, "p_holm": q, "mark": mark, "n": n}
    return out
