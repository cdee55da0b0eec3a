"""Task losses on raw scores, with target checks that name the sample."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError, ShapeError


def _where(index: Tensor | None, i: int) -> str:
    return f"sample {int(index[i])}" if index is not None else f"batch row {i}"


def task_loss(task: str, scores: Tensor, target: Tensor, index: Tensor | None = None, scale=None) -> Tensor:
    """Cross-entropy (multiclass), BCE with logits (multilabel), MSE (regression). ``scale`` (regression, a
    :class:`~mmfuse.datasets.target_scale.TargetScale`): the target is standardised, ``(y - mean) / std``, and
    ``scores`` are the model's standardised outputs (``data.standardize_target``)."""
    if task != "multiclass" and target.numel() != scores.numel():
        raise ShapeError(f"{task} targets have shape {tuple(target.shape)} but the model gives {tuple(scores.shape)} "
                         "(batch, outputs); give every sample a target of the model's width, or rebuild the model "
                         "for this data")
    if task == "multiclass":
        if target.is_floating_point() or target.is_complex():
            bad = (target != target.round()).reshape(-1) if target.is_floating_point() else target.imag.reshape(-1) != 0
            if bad.any():
                i = int(bad.nonzero()[0])
                raise DataError(f"{_where(index, i)}: label {target.reshape(-1)[i].item()} is not a class id; "
                                "multiclass labels must be whole numbers 0..num_classes-1: round or remap them")
        t = target.real.long().view(-1) if target.is_complex() else target.long().view(-1)
        bad = (t < 0) | (t >= scores.shape[1])
        if bad.any():
            i = int(bad.nonzero()[0])
            where = f"sample {int(index[i])}" if index is not None else f"batch row {i}"
            raise DataError(f"{where}: label {int(t[i])} is outside the classes 0..{scores.shape[1] - 1}; "
                            "check the target column or num_classes")
        return F.cross_entropy(scores, t)
    if task == "multilabel":
        bad = ~((target == 0) | (target == 1)).reshape(len(target), -1).all(1)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(f"{_where(index, i)}: multilabel target {target[i].tolist()} is not 0/1; each label is "
                            "1 (on) or 0 (off): binarise the targets, e.g. (target > 0.5)")
        return F.binary_cross_entropy_with_logits(scores, target.float().view_as(scores))
    if task == "regression":
        y = target.float().view_as(scores)
        return F.mse_loss(scores, y if scale is None else scale.standardize(y))
    raise DataError(f"unknown task {task!r}")
