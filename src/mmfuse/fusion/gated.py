"""Gated fusion: the Gated Multimodal Unit (Arevalo et al., 2017) for N modalities.

The paper's two-modality unit is ``h = z ⊙ h_1 + (1 − z) ⊙ h_2`` with ``h_m = tanh(W_m x_m)`` and
``z = σ(W_z [x_1; x_2])``. Here the gate is a softmax over modalities, which for N = 2 is exactly
that sigmoid form: ``softmax(g_1, g_2)_1 = σ(g_1 − g_2)``.

Shape legend: B batch, D_m width of modality m, D hidden width, N modalities.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..registry import FUSIONS
from .base import FusionOp, zero_absent_inputs, masked_softmax, module_key, stack_masked
from .options import positive_int


@FUSIONS.register("gated", test_options={"dim": 4}, search_space={"model.fusion.options.dim": {"choices": [16, 32, 64, 128]}})
class GatedFusion(FusionOp):
    """N-modal Gated Multimodal Unit::

        h_m = tanh(W_m x_m)                       [B, D]      one hidden vector per modality
        g   = W_z [x_1; …; x_N]                   [B, N, D]   gate logits from all inputs
        z   = softmax over present modalities of g (per feature; absent -> weight 0)
        out = Σ_m z_m ⊙ h_m                       [B, D]

    Absent modalities' inputs are zeroed before ``W_z`` and get gate weight 0, the remaining
    weights are renormalised; with no modality present the output is 0. Every output entry is a
    convex combination of the present ``h_m``, so it lies between them and inside (−1, 1).

    Options: ``dim`` (default: the largest input width), ``bias`` (default False, as in the paper's
    formulas; True adds biases to ``W_m`` and ``W_z``, letting the gate learn a modality prior).
    Needs at least two modalities (with one, the gate is constant and learns nothing).
    """

    min_modalities = 2

    def __init__(self, input_dims: Mapping[str, int], *, dim: int | None = None, bias: bool = False):
        super().__init__(input_dims)
        self.dim = positive_int(dim, "dim", "gated", default=max(self.input_dims.values()))
        self.hidden = nn.ModuleDict(
            {module_key(m, "gated"): nn.Linear(d, self.dim, bias=bool(bias)) for m, d in self.input_dims.items()}
        )
        self.gate = nn.Linear(sum(self.input_dims.values()), len(self.modalities) * self.dim, bias=bool(bias))
        self.output_dim = self.dim

    def parts(self, xs: list[Tensor], present: Tensor) -> tuple[Tensor, Tensor]:
        """The hidden vectors ``h`` [B, N, D] and the gate weights ``z`` [B, N, D]."""
        xs = zero_absent_inputs(xs, present)
        h = stack_masked([torch.tanh(self.hidden[m](x)) for m, x in zip(self.modalities, xs)], present)
        g = self.gate(torch.cat(xs, dim=-1)).view(-1, len(xs), self.dim)  # [B, N, D]
        z = masked_softmax(g, present.unsqueeze(-1), dim=1)
        return h, z

    def fuse(self, xs: list[Tensor], present: Tensor) -> Tensor:
        h, z = self.parts(xs, present)
        return (z * h).sum(dim=1)

    def fuse_all_present(self, xs: list[Tensor]) -> Tensor:
        """Every modality present: the masked softmax is the plain softmax (bitwise equal to ``fuse``)."""
        h = torch.stack([torch.tanh(self.hidden[m](x)) for m, x in zip(self.modalities, xs)], dim=1)
        g = self.gate(torch.cat(xs, dim=-1)).view(-1, len(xs), self.dim)
        return (torch.softmax(g, dim=1) * h).sum(dim=1)
