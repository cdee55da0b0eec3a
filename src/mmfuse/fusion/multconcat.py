"""MultConcat fusion (Amel, Stassin, Mahmoudi, Siebert; arXiv 2406.04349): concatenation plus
the element-wise product of the projected modalities.

Concatenation keeps modality-specific features; the product captures their agreement.

Shape legend: B batch, D_m width of modality m, D common width, N modalities.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..registry import FUSIONS
from .base import FusionOp, zero_absent_inputs, masked_prod, module_key, stack_masked
from .options import positive_int


@FUSIONS.register("multconcat", test_options={"dim": 3}, search_space={"model.fusion.options.dim": {"choices": [16, 32, 64, 128]}})
class MultConcatFusion(FusionOp):
    """``[out_1 ‖ … ‖ out_N ‖ Π_m out_m]`` with ``out_m = ReLU(W_m x_m + b_m)``::

        out_m = ReLU(W_m x_m + b_m)        [B, D]        one per modality, common width D
        C     = out_1 ‖ … ‖ out_N          [B, N·D]      absent modality -> zeros in its block
        Z     = Π_{m present} out_m        [B, D]        absent acts as 1; none present -> 0
        out   = C ‖ Z                      [B, (N+1)·D]

    Every entry is >= 0 (ReLU). Options: ``dim`` (default: the largest input width).
    """

    def __init__(self, input_dims: Mapping[str, int], *, dim: int | None = None):
        super().__init__(input_dims)
        self.dim = positive_int(dim, "dim", "multconcat", default=max(self.input_dims.values()))
        self.proj = nn.ModuleDict(
            {module_key(m, "multconcat"): nn.Linear(d, self.dim) for m, d in self.input_dims.items()}
        )
        self.output_dim = (len(self.modalities) + 1) * self.dim

    def fuse(self, xs: list[Tensor], present: Tensor) -> Tensor:
        xs = zero_absent_inputs(xs, present)
        outs = stack_masked([torch.relu(self.proj[m](x)) for m, x in zip(self.modalities, xs)], present)  # [B, N, D]
        concat = outs.flatten(1)  # [B, N·D]
        product = masked_prod(outs, present)  # [B, D]
        return torch.cat([concat, product], dim=-1)
