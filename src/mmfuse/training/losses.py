"""Task losses on raw scores, with target checks that name the sample."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError


def task_loss(task: str, scores: Tensor, target: Tensor, index: Tensor | None = None) -> Tensor:
    if task == "multiclass":
        t = target.long().view(-1)
        bad = (t < 0) | (t >= scores.shape[1])
        if bad.any():
            i = int(bad.nonzero()[0])
            where = f"sample {int(index[i])}" if index is not None else f"batch row {i}"
            raise DataError(f"{where}: label {int(t[i])} is outside the classes 0..{scores.shape[1] - 1}; "
                            "check the target column or num_classes")
        return F.cross_entropy(scores, t)
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(scores, target.float().view_as(scores))
    if task == "regression":
        return F.mse_loss(scores, target.float().view_as(scores))
    raise DataError(f"unknown task {task!r}")
