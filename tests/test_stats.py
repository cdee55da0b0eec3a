"""mmfuse.stats: paired tests against closed forms and scipy, Holm's correction on a textbook vector."""

import math

import numpy as np
import pytest
from scipy import stats as S

from mmfuse.stats import compare_to_best, holm, paired_p, sign_flip_p


def test_paired_ttest_matches_closed_form():
    a = np.array([0.81, 0.78, 0.84, 0.80, 0.79])
    b = np.array([0.76, 0.77, 0.80, 0.74, 0.78])
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p = 2 * S.t.sf(abs(t), len(d) - 1)
    assert paired_p(a, b, "ttest") == pytest.approx(p, rel=1e-12)
    assert paired_p(a, b, "ttest") == pytest.approx(S.ttest_rel(a, b).pvalue, rel=1e-12)


def test_wilcoxon_exact_small_n():
    # every difference positive: the exact two-sided p is 2 / 2^n (0.25 for 3 seeds, 0.0625 for 5)
    assert paired_p([3.0, 2.0, 1.5], [1.0, 1.0, 1.0], "wilcoxon") == pytest.approx(0.25)
    assert paired_p([5, 4, 3, 2.5, 2.2], [1, 1, 1, 1, 1], "wilcoxon") == pytest.approx(0.0625)
    # mixed signs: ranks of |d| = 1..4, W+ = 1 + 4 = 5 -> scipy's exact value
    a, b = np.array([1.1, 0.8, 1.3, 1.4]), np.array([1.0, 1.0, 1.0, 1.0])
    assert paired_p(a, b, "wilcoxon") == pytest.approx(S.wilcoxon(a - b, method="exact").pvalue)


def test_degenerate_pairs():
    assert paired_p([1, 2, 3], [1, 2, 3]) == 1.0  # no difference at all
    assert math.isnan(paired_p([1.0], [2.0]))


def test_zero_variance_uses_the_exact_sign_flip_p():
    # a method exactly 1/600 behind the best on every seed: t is infinite; the exact permutation p is 2/2^n
    best = np.array([0.90, 0.85, 0.88])
    assert paired_p(best - 1 / 600, best) == pytest.approx(2 / 2 ** 3)  # 0.25, not 0
    assert paired_p([2, 3, 4, 5, 6], [1, 2, 3, 4, 5]) == pytest.approx(2 / 2 ** 5)
    res = compare_to_best({"best": list(best), "behind": list(best - 1 / 600)}, "best")
    assert res["behind"]["p_holm"] == pytest.approx(0.25) and res["behind"]["mark"] == "≈ best"
    # the general sign-flip p on hand-enumerated inputs: d = (1, 2, -0.5), sum 2.5; of the 8 sign patterns
    # |±1 ± 2 ± 0.5| >= 2.5 for (+,+,±) and (-,-,±): 4/8
    assert sign_flip_p([1.0, 2.0, -0.5]) == pytest.approx(0.5)
    # d = (3, 1, 1, 1): |sum| >= 6 only for (+3 +1 +1 +1) and its negation -> 2/16; against 2/2^4 closed form
    assert sign_flip_p([3.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 16)
    # brute force over all 2^n patterns, independent of the implementation's bit trick
    import itertools
    d = np.array([0.3, -0.1, 0.25, 0.05, 0.2])
    hits = sum(abs(np.dot(s, d)) >= abs(d.sum()) - 1e-12 for s in itertools.product([1, -1], repeat=5))
    assert sign_flip_p(d) == pytest.approx(hits / 32)


def test_holm_textbook():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 capped at 1; running maximum
    out = holm([0.01, float("nan")])
    assert out[0] == pytest.approx(0.01) and math.isnan(out[1])


def test_marks_against_the_best():
    scores = {"best": [0.90, 0.91, 0.92, 0.93, 0.94],
              "tied": [0.905, 0.90, 0.925, 0.925, 0.945],
              "worse": [0.70, 0.72, 0.71, 0.69, 0.74]}
    res = compare_to_best(scores, "best", "max", "ttest", 0.05)
    assert res["best"]["mark"] == "best"
    raw = [paired_p(scores[m], scores["best"]) for m in ("tied", "worse")]
    assert [res["tied"]["p_holm"], res["worse"]["p_holm"]] == pytest.approx(holm(raw))
    assert res["tied"]["mark"] == "≈ best" and res["worse"]["mark"] == "worse"
    assert compare_to_best({"a": [1.0], "b": [0.5]}, "a")["b"]["mark"] == "untested (1 seed)"
    two = compare_to_best({"a": [1.0, 0.9], "b": [0.5, 0.4], "c": [0.9, 0.85, ]}, "a")
    assert two["b"]["mark"] == two["c"]["mark"] == "untested (2 seeds)"  # n < 3: no test at all
    assert math.isnan(two["b"]["p"]) and math.isnan(two["b"]["p_holm"])
