"""mmfuse's numpy F1 / AUROC (evaluation/metrics.py) equal scikit-learn's f1_score / roc_auc_score.

compute_metrics no longer imports scikit-learn (seconds of every training's start-up); these are the
oracles that the replacement computes the same numbers, ties and absent classes included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from mmfuse.evaluation.metrics import binary_auroc, compute_metrics, macro_f1, multilabel_f1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_f1_and_auroc_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    K, N = 5, 60
    scores = np.round(rng.normal(size=(N, K)), 1)  # rounded: ties in the scores
    target = rng.integers(0, K, N)
    target[:K] = np.arange(K)
    pred = rng.integers(0, K - 1, N)  # class K-1 never predicted
    assert macro_f1(target, pred, K) == pytest.approx(
        f1_score(target, pred, average="macro", labels=np.arange(K), zero_division=0), abs=1e-12)
    m = compute_metrics("multiclass", scores, target)
    p = np.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert m["auroc"] == pytest.approx(roc_auc_score(target, p, multi_class="ovr", average="macro"), abs=1e-12)
    t2 = (target % 2).astype(int)
    assert binary_auroc(t2 == 1, scores[:, 0]) == pytest.approx(roc_auc_score(t2, scores[:, 0]), abs=1e-12)
    m2 = compute_metrics("multiclass", scores[:, :2], t2)
    p2 = np.exp(scores[:, :2] - scores[:, :2].max(1, keepdims=True))
    assert m2["auroc"] == pytest.approx(roc_auc_score(t2, p2[:, 1] / p2.sum(1)), abs=1e-12)


@pytest.mark.parametrize("average", ["micro", "macro", "samples"])
def test_multilabel_f1_equals_sklearn(average):
    rng = np.random.default_rng(3)
    t = rng.integers(0, 2, (40, 4))
    t[0] = 0  # a sample without labels
    pred = rng.integers(0, 2, (40, 4))
    pred[0] = 0
    pred[:, 3] = 0  # a label never predicted
    assert multilabel_f1(t, pred, average) == pytest.approx(f1_score(t, pred, average=average, zero_division=0),
                                                            abs=1e-12)


def test_auroc_omitted_for_nonfinite_scores_and_one_class():
    scores = np.array([[0.1, np.nan, 0.3], [0.2, 0.1, 0.0], [0.0, 1.0, 2.0]])
    assert "auroc" not in compute_metrics("multiclass", scores, np.array([0, 1, 2]))
    assert "auroc" not in compute_metrics("multiclass", np.zeros((3, 3)), np.array([1, 1, 1]))


def test_weighted_binary_f1_equals_sklearn():
    from mmfuse.evaluation.metrics import weighted_binary_f1

    rng = np.random.default_rng(4)
    for n in (1, 7, 50):
        t, p = rng.random(n) > 0.3, rng.random(n) > 0.6
        assert weighted_binary_f1(t, p) == pytest.approx(f1_score(t, p, average="weighted", zero_division=0), abs=1e-12)
    t = np.ones(5, dtype=bool)  # one class only in the truth, the other predicted
    p = np.array([True, False, True, False, False])
    assert weighted_binary_f1(t, p) == pytest.approx(f1_score(t, p, average="weighted", zero_division=0), abs=1e-12)
