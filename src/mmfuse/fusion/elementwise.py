"""Element-wise fusion: sum, mean, max and product of (projected) embeddings.

When all widths are equal and no ``dim`` is given, the embeddings are combined as they are.
Otherwise (widths differ, or ``dim`` is given) each modality first goes through its own
``Linear(D_m, dim)``; ``dim`` defaults to the largest input width.

Masked semantics (an absent modality never leaks): sum over present modalities, mean over
present ones, max over present ones, product over present ones (absent acts as 1). A sample with
no modality present gets 0 from every reduction.

Shape legend: B batch, D_m width of modality m, D common width, N modalities.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from ..registry import FUSIONS
from .base import FusionOp, zero_absent_inputs, masked_max, masked_mean, masked_prod, masked_sum, module_key
from .options import positive_int


class ElementwiseFusion(FusionOp):
    """Base of the element-wise operators; subclasses set ``name`` and ``reduce``.

    Options: ``dim`` (int, optional) — common width; when given, every modality is projected.
    """

    name = "elementwise"
    reduce: Callable[[Tensor, Tensor], Tensor] = staticmethod(masked_sum)

    def __init__(self, input_dims: Mapping[str, int], *, dim: int | None = None):
        super().__init__(input_dims)
        widths = set(self.input_dims.values())
        self.project = dim is not None or len(widths) > 1
        self.dim = positive_int(dim, "dim", self.name, default=max(widths))
        if self.project:
            self.proj = nn.ModuleDict(
                {module_key(m, self.name): nn.Linear(d, self.dim) for m, d in self.input_dims.items()}
            )
        self.output_dim = self.dim

    def fuse(self, xs: list[Tensor], present: Tensor) -> Tensor:
        xs = zero_absent_inputs(xs, present)
        if self.project:
            xs = [self.proj[m](x) for m, x in zip(self.modalities, xs)]  # each [B, D]
        stacked = torch.stack(xs, dim=1)  # [B, N, D]
        return type(self).reduce(stacked, present)  # [B, D]

    def fuse_all_present(self, xs: list[Tensor]) -> Tensor:
        """``fuse`` with every modality present: no zeroing, a plain reduction (bitwise equal)."""
        if self.project:
            xs = [self.proj[m](x) for m, x in zip(self.modalities, xs)]
        return _ALL_PRESENT[type(self).reduce](torch.stack(xs, dim=1))

    def has_fast_path(self) -> bool:
        # only for the built-in reductions: a subclass with its own ``reduce`` keeps the masked path
        return super().has_fast_path() and type(self).reduce in _ALL_PRESENT


def _sum_all(x: Tensor) -> Tensor:
    return x.sum(dim=1)


def _mean_all(x: Tensor) -> Tensor:  # the same division as masked_mean (by the count N as a float)
    return x.sum(dim=1) / float(x.shape[1])


def _max_all(x: Tensor) -> Tensor:
    return x.amax(dim=1)


def _prod_all(x: Tensor) -> Tensor:
    return x.prod(dim=1)


#: masked reduction -> the same reduction when every modality is present (no neutral elements needed)
_ALL_PRESENT: dict[Callable, Callable[[Tensor], Tensor]] = {
    masked_sum: _sum_all, masked_mean: _mean_all, masked_max: _max_all, masked_prod: _prod_all,
}


@FUSIONS.register("sum")
class SumFusion(ElementwiseFusion):
    """Sum over present modalities: ``Σ_{m present} x_m``."""

    name = "sum"
    reduce = staticmethod(masked_sum)


@FUSIONS.register("mean")
class MeanFusion(ElementwiseFusion):
    """Mean over present modalities: ``Σ_{m present} x_m / #present``."""

    name = "mean"
    reduce = staticmethod(masked_mean)


@FUSIONS.register("max")
class MaxFusion(ElementwiseFusion):
    """Element-wise max over present modalities (gradient flows to the winning modality only)."""

    name = "max"
    reduce = staticmethod(masked_max)


@FUSIONS.register("product")
class ProductFusion(ElementwiseFusion):
    """Element-wise (Hadamard) product over present modalities; an absent modality acts as 1."""

    name = "product"
    reduce = staticmethod(masked_prod)
