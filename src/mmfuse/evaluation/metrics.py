"""Metrics per task, computed from collected scores and targets (numpy / scikit-learn).

- multiclass: accuracy, macro_f1, top{k}_accuracy, auroc (one-vs-rest, macro)
- multilabel: f1_samples, f1_micro, f1_macro (threshold 0 on logits)
- regression: mae, pearson_r
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from ..errors import ConfigError


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
               "macro_f1": float(f1_score(target, pred, average="macro", labels=np.arange(scores.shape[1]), zero_division=0))}
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
                        out["auroc"] = float(roc_auc_score(target, probs[:, 1]))
                    elif len(present) == scores.shape[1]:
                        out["auroc"] = float(roc_auc_score(target, probs, multi_class="ovr", average="macro"))
                except ValueError:
                    pass
        return out
    if task == "multilabel":
        pred = (scores > 0).astype(int)
        t = target.astype(int)
        return {
            "f1_samples": float(f1_score(t, pred, average="samples", zero_division=0)),
            "f1_micro": float(f1_score(t, pred, average="micro", zero_division=0)),
            "f1_macro": float(f1_score(t, pred, average="macro", zero_division=0)),
        }
    if task == "regression":
        s = scores.reshape(len(scores), -1)
        t = target.reshape(len(target), -1).astype(np.float64)
        out = {"mae": float(np.abs(s - t).mean())}
        if len(s) > 1 and s.std() > 0 and t.std() > 0:
            out["pearson_r"] = float(np.mean([np.corrcoef(s[:, j], t[:, j])[0, 1] for j in range(s.shape[1])]))
        return out
    raise ConfigError(f"task must be multiclass, multilabel or regression, got {task!r}")


METRIC_NAMES = {
    "multiclass": ("accuracy", "macro_f1", "top3_accuracy", "auroc"),
    "multilabel": ("f1_samples", "f1_micro", "f1_macro"),
    "regression": ("mae", "pearson_r"),
}


def primary_metric(task: str) -> tuple[str, str]:
    """(metric name, 'max' or 'min') used to rank runs."""
    return {"multiclass": ("accuracy", "max"), "multilabel": ("f1_micro", "max"), "regression": ("mae", "min")}[task]
