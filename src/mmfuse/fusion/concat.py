"""Concatenation fusion: the embeddings side by side.

Shape legend: B batch, D_m width of modality m, N modalities.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..registry import FUSIONS
from .base import FusionOp, masked


@FUSIONS.register("concat")
class ConcatFusion(FusionOp):
    """``[x_1 ‖ x_2 ‖ … ‖ x_N]`` in sorted modality order; an absent modality's slot is zeros.

    Output width ``Σ_m D_m``. No parameters and no options.
    """

    def __init__(self, input_dims: Mapping[str, int]):
        super().__init__(input_dims)
        self.output_dim = sum(self.input_dims.values())

    def fuse(self, xs: list[Tensor], present: Tensor) -> Tensor:
        # xs[m]: [B, D_m]; present: [B, N]  ->  [B, Σ D_m]
        return torch.cat([masked(x, present[:, i], 0.0) for i, x in enumerate(xs)], dim=-1)

    def fuse_all_present(self, xs: list[Tensor]) -> Tensor:
        """Every modality present: the plain concatenation (bitwise equal to ``fuse``)."""
        return torch.cat(xs, dim=-1)
