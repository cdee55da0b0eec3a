"""Metrics per task, computed from collected scores and targets (numpy / scikit-learn).

- multiclass: accuracy, macro_f1, top{k}_accuracy, auroc (one-vs-rest, macro)
- multilabel: f1_micro, f1_macro, f1_samples, subset_accuracy (every label of a sample right),
  label_accuracy; a label is predicted on when its probability sigmoid(logit) > 0.5, i.e. logit > 0
- regression: r2 (coefficient of determination per output, averaged over outputs whose target
  varies), mse, mae (averaged over samples and outputs), pearson_r (mean over outputs where
  both the prediction and the target vary)
- sentiment regression (MOSI / MOSEI / SIMS, datasets whose ``metric_set`` is ``"mosi"``): also
  the metrics MMSA reports, :func:`mosi_metrics` (acc2_has0, f1_has0, acc2_non0, f1_non0, acc7,
  acc5, corr)
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ConfigError, DataError, ShapeError

# F1 and AUROC are computed here with numpy (the same definitions as scikit-learn's f1_score with
# zero_division=0 and roc_auc_score, checked against them in tests/test_metrics_numpy.py): importing
# scikit-learn (and pandas, which it loads) took seconds of every training process's start-up.


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 = 2 TP / (2 TP + FP + FN) element-wise; 0 where the denominator is 0 (``zero_division=0``)."""
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def macro_f1(target: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over the labels 0..n_classes-1 of the per-class F1 (absent classes count, as 0 or 1 / F1)."""
    labels = np.arange(n_classes)
    t, p = target[:, None] == labels, pred[:, None] == labels
    return float(_f1((t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)).mean())


def multilabel_f1(t: np.ndarray, pred: np.ndarray, average: str) -> float:
    """F1 of 0/1 label matrices [N, K]: ``micro`` (pooled counts), ``macro`` (mean over labels), ``samples``."""
    t, p = t.astype(bool), pred.astype(bool)
    tp, fp, fn = t & p, ~t & p, t & ~p
    if average == "micro":
        return float(_f1(tp.sum(), fp.sum(), fn.sum()))
    axis = 0 if average == "macro" else 1
    return float(_f1(tp.sum(axis), fp.sum(axis), fn.sum(axis)).mean())


def weighted_binary_f1(t: np.ndarray, p: np.ndarray) -> float:
    """F1 of boolean labels averaged over the two classes weighted by their true counts (``average="weighted"``)."""
    t, p = np.asarray(t, dtype=bool), np.asarray(p, dtype=bool)
    tc, pc = np.stack([~t, t]), np.stack([~p, p])  # [class, N]
    support = tc.sum(1)
    if support.sum() == 0:
        return 0.0
    f1 = _f1((tc & pc).sum(1), (~tc & pc).sum(1), (tc & ~pc).sum(1))
    return float((f1 * support).sum() / support.sum())


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``x``, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of the ranks start+1 .. end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > a negative's) + P(tie) / 2 (Mann-Whitney U)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes")
    if not np.isfinite(score).all():  # as scikit-learn: no AUROC of NaN / inf scores
        raise ValueError("AUROC of non-finite scores")
    r = _average_ranks(np.asarray(score, dtype=np.float64))
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def compute_metrics(task: str, scores: np.ndarray, target: np.ndarray, top_k: int = 3) -> dict[str, float]:
    """``scores``: [N, K] logits (or regression outputs); ``target``: [N] class ids, [N, K] labels or values."""
    scores = np.asarray(scores, dtype=np.float64)
    target = np.asarray(target)
    if len(scores) == 0:
        return {}
    if task == "multiclass":
        pred = scores.argmax(1)
        out = {"accuracy": float((pred == target).mean()),
               "macro_f1": macro_f1(target, pred, scores.shape[1])}
        if scores.shape[1] > top_k:
            top = np.argsort(-scores, 1)[:, :top_k]
            out[f"top{top_k}_accuracy"] = float((top == target[:, None]).any(1).mean())
        probs = _softmax(scores)
        present = np.unique(target)
        if len(present) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    if scores.shape[1] == 2:
                        out["auroc"] = binary_auroc(target == present.max(), probs[:, 1])
                    elif len(present) == scores.shape[1]:  # one-vs-rest, macro average
                        out["auroc"] = float(np.mean([binary_auroc(target == c, probs[:, c])
                                                      for c in range(scores.shape[1])]))
                except ValueError:
                    pass
        return out
    if task == "multilabel":
        pred = (scores > 0).astype(int)  # sigmoid(logit) > 0.5
        t = target.reshape(scores.shape)
        if not np.isin(t, (0, 1)).all():
            raise DataError("multilabel metrics: targets must be 0/1 per label; check the target columns or the task")
        t = t.astype(int)
        return {
            "f1_micro": multilabel_f1(t, pred, "micro"),
            "f1_macro": multilabel_f1(t, pred, "macro"),
            "f1_samples": multilabel_f1(t, pred, "samples"),
            "subset_accuracy": float((pred == t).all(1).mean()),
            "label_accuracy": float((pred == t).mean()),
        }
    if task == "regression":
        s = scores.reshape(len(scores), -1)
        t = target.reshape(len(target), -1).astype(np.float64)
        if t.shape != s.shape:
            raise ShapeError(f"regression metrics: the model predicts {s.shape[1]} output(s) but the targets have "
                             f"{t.shape[1]} column(s); evaluate with targets of the model's width, or train a model "
                             "for these targets")
        err = s - t
        out = {}
        sst = ((t - t.mean(0)) ** 2).sum(0)
        ok = sst > 0
        if ok.any():
            out["r2"] = float(np.mean(1.0 - (err ** 2).sum(0)[ok] / sst[ok]))
        out["mse"] = float((err ** 2).mean())
        out["mae"] = float(np.abs(err).mean())
        cols = [j for j in range(s.shape[1]) if s[:, j].std() > 0 and t[:, j].std() > 0]
        if len(s) > 1 and cols:
            out["pearson_r"] = float(np.mean([np.corrcoef(s[:, j], t[:, j])[0, 1] for j in cols]))
        return out
    raise ConfigError(f"task must be multiclass, multilabel or regression, got {task!r}")


def mosi_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The sentiment metrics MMSA reports (``MetricsTop.__eval_mosei_regression``), for one output.

    * ``acc2_has0`` / ``f1_has0``: binary accuracy and weighted F1 of ``pred >= 0`` against
      ``y >= 0`` over every clip (0 counts as positive: "Has0");
    * ``acc2_non0`` / ``f1_non0``: the same with ``> 0`` over the clips whose label is not 0 ("Non0");
    * ``acc7`` / ``acc5``: ``round(clip(pred)) == round(clip(y))`` with both clipped to [-3, 3] /
      [-2, 2] (numpy's round: halves to even, as MMSA);
    * ``mae``: mean absolute error; ``corr``: Pearson correlation (absent when either side is constant).
    """
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(y, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise DataError(f"mosi metrics: {p.size} predictions for {t.size} labels")
    if p.size == 0:
        return {}
    out = {"mae": float(np.abs(p - t).mean())}
    if p.std() > 0 and t.std() > 0:
        out["corr"] = float(np.corrcoef(p, t)[0, 1])
    for name, lim in (("acc7", 3.0), ("acc5", 2.0)):
        out[name] = float((np.round(np.clip(p, -lim, lim)) == np.round(np.clip(t, -lim, lim))).mean())
    out["acc2_has0"] = float(((p >= 0) == (t >= 0)).mean())
    out["f1_has0"] = weighted_binary_f1(t >= 0, p >= 0)
    nz = t != 0
    if nz.any():
        out["acc2_non0"] = float(((p[nz] > 0) == (t[nz] > 0)).mean())
        out["f1_non0"] = weighted_binary_f1(t[nz] > 0, p[nz] > 0)
    return out


METRIC_SETS = {"mosi": mosi_metrics}


def dataset_metrics(dataset, task: str, scores: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The extra metrics the field reports for ``dataset`` (its ``metric_set`` attribute), else {}."""
    name = getattr(dataset, "metric_set", None)
    if task != "regression" or name not in METRIC_SETS or len(scores) == 0:
        return {}
    s = np.asarray(scores).reshape(len(scores), -1)
    if s.shape[1] != 1:
        return {}
    return METRIC_SETS[name](s[:, 0], np.asarray(target).reshape(-1))


METRIC_NAMES = {
    "multiclass": ("accuracy", "macro_f1", "top3_accuracy", "auroc"),
    "multilabel": ("f1_micro", "f1_macro", "f1_samples", "subset_accuracy", "label_accuracy"),
    "regression": ("r2", "mse", "mae", "pearson_r"),
}


def primary_metric(task: str) -> tuple[str, str]:
    """(metric name, 'max' or 'min') used to rank runs."""
    return {"multiclass": ("accuracy", "max"), "multilabel": ("f1_micro", "max"), "regression": ("mae", "min")}[task]
