"""Multilabel and regression through every path: metrics, predictions CSV, and tiny end-to-end fits
of late fusion (mean_prob, learned_weights) and feature fusion."""

import itertools

import numpy as np
import pytest

from mmfuse.cli import prediction_frame
from mmfuse.config import parse_config
from mmfuse.datasets.base import ArrayDataset
from mmfuse.evaluation import collect, compute_metrics, evaluate, make_loader
from mmfuse.training import fit


# ---------------------------------------------------------------- metrics by hand

def test_regression_metrics_by_hand():
    t = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [6.0, 5.0]])
    s = np.array([[1.5, 4.0], [2.0, 6.0], [2.0, 5.0], [6.0, 5.0]])
    m = compute_metrics("regression", s, t)
    err = s - t
    assert m["mse"] == pytest.approx((err ** 2).mean()) and m["mae"] == pytest.approx(np.abs(err).mean())
    # R² of output 0 only: output 1's target is constant (R² undefined there)
    assert m["r2"] == pytest.approx(1 - (0.25 + 0 + 1 + 0) / ((1 - 3) ** 2 + 1 + 0 + 9))
    assert compute_metrics("regression", t[:, :1], t[:, 0])["r2"] == 1.0  # [N] targets, [N, 1] predictions
    mean_pred = np.full((4, 1), t[:, 0].mean())
    assert compute_metrics("regression", mean_pred, t[:, 0])["r2"] == pytest.approx(0.0)


def test_multilabel_metrics_by_hand():
    t = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    logits = np.array([[2.0, -1, 0.5], [-3, 4, 1], [1, -2, -1], [-1, -1, -1]])  # on iff logit > 0 (p > 0.5)
    p = (logits > 0).astype(int)
    m = compute_metrics("multilabel", logits, t)
    tp, fp, fn = int(((p == 1) & (t == 1)).sum()), int(((p == 1) & (t == 0)).sum()), int(((p == 0) & (t == 1)).sum())
    assert (tp, fp, fn) == (4, 1, 1)
    assert m["f1_micro"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    per_label = [2 / 2, 2 * 1 / (2 * 1 + 0 + 1), 2 * 1 / (2 * 1 + 1 + 0)]
    assert m["f1_macro"] == pytest.approx(np.mean(per_label))
    assert m["subset_accuracy"] == pytest.approx(2 / 4)  # rows 0 and 3 entirely right
    assert m["label_accuracy"] == pytest.approx(10 / 12)


def test_prediction_frame_per_task():
    scores = np.array([[2.0, -1.0], [-0.5, 0.3]])
    ml = prediction_frame({"scores": scores, "target": np.array([[1.0, 0.0], [0.0, 0.0]])}, "multilabel",
                          ["cat", "dog"], ids=np.array([10, 11]))
    assert ml["pred[cat]"].tolist() == [1, 0] and ml["pred[dog]"].tolist() == [0, 1]
    np.testing.assert_allclose(ml["p[dog]"], 1 / (1 + np.exp(-scores[:, 1])))
    assert ml["target[cat]"].tolist() == [1, 0] and ml["id"].tolist() == [10, 11]
    reg = prediction_frame({"scores": scores[:, :1], "target": np.array([[0.5], [1.5]])}, "regression")
    assert reg["prediction"].tolist() == [2.0, -0.5] and reg["target"].tolist() == [0.5, 1.5]
    reg2 = prediction_frame({"scores": scores}, "regression")
    assert reg2["prediction[1]"].tolist() == [-1.0, 0.3] and "prediction" not in reg2
    mc = prediction_frame({"scores": scores, "target": np.array([0, 1])}, "multiclass", ["cat", "dog"])
    assert mc["prediction"].tolist() == ["cat", "dog"] and mc["p[cat]"].iloc[0] == pytest.approx(1 / (1 + np.exp(-3)))


# ---------------------------------------------------------------- tiny end-to-end fits

def tiny(task, n=240, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 6)).astype(np.float32)
    b = rng.normal(size=(n, 4)).astype(np.float32)
    if task == "regression":
        y = (a[:, :2].sum(1) - b[:, 0] + 0.1 * rng.normal(size=n)).astype(np.float32)[:, None]
    else:  # label 0 from a, label 1 from b, label 2 from both
        z = np.stack([a[:, 0] + a[:, 1], b[:, 0] - b[:, 1], a[:, 2] + b[:, 2] - 0.5], 1)
        y = (z > 0).astype(np.float32)
    cut = {"train": slice(0, 160), "val": slice(160, 200), "test": slice(200, n)}
    return {k: ArrayDataset({"a": a[s], "b": b[s]}, y[s], task=task, name=f"tiny_{task}") for k, s in cut.items()}


def cfg_for(strategy, late=None):
    model = {"encoders": {m: {"name": "mlp", "options": {"hidden": [16], "output_dim": 8}} for m in ("a", "b")},
             "strategy": strategy}
    if late:
        model["late"] = {"name": late}
    else:
        model["fusion"] = {"name": "concat"}
    return parse_config({"model": model, "training": {"max_epochs": 12, "lr": 0.02, "progress": False},
                         "data": {"batch_size": 32}})


def best_constant_micro_f1(t):
    best = 0.0
    for c in itertools.product([0, 1], repeat=t.shape[1]):
        p = np.broadcast_to(np.array(c), t.shape)
        tp, fp, fn = ((p == 1) & (t == 1)).sum(), ((p == 1) & (t == 0)).sum(), ((p == 0) & (t == 1)).sum()
        best = max(best, 2 * tp / max(2 * tp + fp + fn, 1))
    return best


VARIANTS = [("late", "mean_prob"), ("late", "learned_weights"), ("feature", None)]


@pytest.fixture(scope="module")
def data():
    return {"regression": tiny("regression"), "multilabel": tiny("multilabel")}


@pytest.mark.parametrize("strategy,late", VARIANTS)
def test_regression_fits(data, tmp_path, strategy, late):
    ds = data["regression"]
    res = fit(cfg_for(strategy, late), ds, tmp_path, save=False, evaluate_patterns=False)
    assert res.task == "regression"
    assert res.test["metrics"]["r2"] > 0.5, res.test
    out = collect(res.model, make_loader(ds["test"]))
    assert out["scores"].std() > 0.5  # real predictions, not the 0.0 the late combiners used to give
    frame = prediction_frame(out, "regression")
    assert np.corrcoef(frame["prediction"], frame["target"])[0, 1] > 0.7


@pytest.mark.parametrize("strategy,late", VARIANTS)
def test_multilabel_fits(data, tmp_path, strategy, late):
    ds = data["multilabel"]
    res = fit(cfg_for(strategy, late), ds, tmp_path, save=False, evaluate_patterns=False)
    t = ds["test"].targets.astype(int)
    base = best_constant_micro_f1(t)
    m = res.test["metrics"]
    assert m["f1_micro"] > base + 0.1, (m, base)
    best_row = max((t == np.array(c)).all(1).mean() for c in itertools.product([0, 1], repeat=t.shape[1]))
    assert m["subset_accuracy"] > best_row  # beats predicting the most frequent label set for every row
    rep = evaluate(res.model, ds["test"], "multilabel", per_pattern=True)
    assert set(rep["patterns"]) == {"a+b", "a", "b"} and rep["patterns"]["a+b"] == rep["metrics"]
    frame = prediction_frame(collect(res.model, make_loader(ds["test"])), "multilabel")
    assert set(frame.columns) >= {"pred[0]", "p[2]", "target[1]"}
    assert (frame["pred[0]"] == frame["target[0]"]).mean() > 0.7
