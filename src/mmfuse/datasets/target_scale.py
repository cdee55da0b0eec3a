"""Regression targets on a standardised scale: the training rows' mean / std per output column.

``data.standardize_target`` (default true; only regression tasks): the model is trained to predict
``z = (y - mean) / std``, with ``mean`` / ``std`` of the **training rows only** (per output column; population
std, ``ddof=0``, as numpy's default). Where this lives:

* the statistics: a user table's fitted :class:`~mmfuse.datasets.columns.TargetEncoder` (saved in the
  checkpoint's ``pipeline.json``); a packaged dataset's training split otherwise
  (:func:`fit_target_scale`); the one used is recorded in the checkpoint's ``config.json``
  (``target_scale``) and set on the model as ``model.target_scale``;
* standardised: only in the task loss (:func:`mmfuse.training.losses.task_loss`), so every family
  and scheme trains on z-scores while datasets keep the original targets;
* inverted where outputs leave the model: :func:`mmfuse.evaluation.collect` (evaluation, metrics, MOSI's
  Acc-2 / Acc-7, predictions, compare's stored predictions, diagnostics), the validation metrics of
  training, and the explanation scores (:class:`mmfuse.explain.scoring.ScoreFunction`).

A constant target column (std 0) keeps std 1 (only the mean is removed) and a warning is given.
``model(batch).logits`` itself is on the standardised scale; use :meth:`TargetScale.invert`.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import CheckpointError, DataError


class TargetScale:
    """``mean`` / ``std`` float64 [K] of the K regression outputs; ``constant``: columns whose std was 0 (std 1)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], columns: Sequence[str] | None = None,
                 constant: Sequence[int] = ()):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape or not len(self.mean):
            raise CheckpointError(f"target scale: {self.mean.size} mean(s) for {self.std.size} std(s)")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all() and (self.std > 0).all()):
            raise CheckpointError(f"target scale: mean {self.mean.tolist()} / std {self.std.tolist()} must be finite "
                                  "with std > 0; the checkpoint was edited or is damaged, retrain or restore it")
        self.columns = [f"output {j}" for j in range(len(self.mean))] if columns is None else [str(c) for c in columns]
        self.constant = [int(j) for j in constant]

    @classmethod
    def fit(cls, targets: np.ndarray | Iterable[np.ndarray], columns: Sequence[str] | None = None) -> "TargetScale":
        """Mean and std (ddof 0) of the training targets ``[N, K]`` (or an iterable of rows) per column."""
        y = targets if isinstance(targets, np.ndarray) else np.asarray(list(targets))
        y = np.asarray(y, dtype=np.float64)
        y = y.reshape(len(y), -1)
        if not len(y):
            raise DataError("standardize_target: the training split has no rows to fit the target's mean / std on")
        if not np.isfinite(y).all():
            raise DataError("standardize_target: the training targets hold non-finite values (inf / nan); fix the "
                            "target column, or set data.standardize_target: false")
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = y.mean(0), y.std(0)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            names = columns if columns is not None else list(range(y.shape[1]))
            raise DataError(f"standardize_target: the mean / std of the training targets {list(names)} overflow "
                            "float64 (|values| near 1e154 or above); rescale the target column, or set "
                            "data.standardize_target: false")
        const = [j for j in range(y.shape[1]) if not std[j] > 0]
        std = np.where(std > 0, std, 1.0)
        return cls(mean, std, columns, const)

    def warn_constant(self) -> None:
        if self.constant:
            names = ", ".join(repr(self.columns[j]) for j in self.constant if j < len(self.columns))
            warnings.warn(f"standardize_target: the regression target {names} is constant on the training rows "
                          f"(std 0); it is only centred (std 1 is used). A constant target leaves nothing to learn: "
                          "check the target column, or the split", UserWarning, stacklevel=3)

    # -- the two directions
    def standardize(self, target):
        """``(target - mean) / std`` of a Tensor[B, K] (or numpy array), in its dtype and device."""
        return (target - self._like(self.mean, target)) / self._like(self.std, target)

    def invert(self, scores):
        """``scores * std + mean``: standardised outputs [B, K] (Tensor or numpy) back on the original scale."""
        if isinstance(scores, np.ndarray):
            s = scores.reshape(len(scores), -1).astype(np.float64) * self.std + self.mean
            return s.astype(scores.dtype if scores.dtype.kind == "f" else np.float64).reshape(scores.shape)
        return scores * self._like(self.std, scores) + self._like(self.mean, scores)

    def _like(self, v: np.ndarray, x):
        """``v`` as a Tensor in ``x``'s float dtype and device, built once per (array, dtype, device): the loss
        standardises every batch, and a fresh tensor from numpy per call cost ~14 µs of a ~50 µs loss."""
        if isinstance(x, np.ndarray):
            return v
        import torch

        dtype = x.dtype if x.is_floating_point() else torch.float32
        cache = self.__dict__.setdefault("_tensors", {})
        key = (id(v), dtype, x.device)
        t = cache.get(key)
        if t is None:
            t = cache[key] = torch.as_tensor(v, dtype=dtype, device=x.device)
        return t

    # -- JSON state (no pickle)
    def state_dict(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "columns": list(self.columns), "constant": list(self.constant)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TargetScale":
        try:
            return cls(state["mean"], state["std"], state.get("columns"), state.get("constant", ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"target scale: unreadable state {state!r} ({exc}); retrain or restore the "
                                  "checkpoint") from None

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TargetScale) and np.array_equal(self.mean, other.mean)
                and np.array_equal(self.std, other.std))

    def __repr__(self) -> str:
        return f"TargetScale(mean={self.mean.tolist()}, std={self.std.tolist()})"


def dataset_targets(dataset) -> np.ndarray:
    """Every target of ``dataset`` as [N, K] (its ``targets`` array, else read batch by batch)."""
    y = getattr(dataset, "targets", None)
    if y is not None:
        y = np.asarray(y)
        return y.reshape(len(y), -1)
    from ..evaluation import make_loader

    parts = [b.target.cpu().numpy() for b in make_loader(dataset, 4096)]
    y = np.concatenate(parts) if parts else np.zeros((0, 1))
    return y.reshape(len(y), -1)


def fit_target_scale(enabled: bool, train, task: str) -> TargetScale | None:
    """The scale the model is trained on: None unless ``task`` is regression and ``enabled``; the table pipeline's
    (fitted on the training rows when the table was read), else fitted on ``train``'s targets. Warns when a
    target column is constant."""
    if task != "regression" or not enabled:
        return None
    target = getattr(getattr(train, "pipeline", None), "target", None)
    scale = getattr(target, "scale", None)
    if scale is None:
        names = list(getattr(train, "class_names", None) or []) or None
        y = dataset_targets(train)
        scale = TargetScale.fit(y, names if names and len(names) == y.shape[1] else None)
    scale.warn_constant()
    return scale
