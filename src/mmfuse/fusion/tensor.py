"""Tensor fusion (TFN, Zadeh et al., EMNLP 2017) and its low-rank form (LMF, Liu et al., ACL 2018).

Both append a constant 1 in front of each embedding, ``z̃_m = [1; z_m]``, so that the outer
product ``z̃_1 ⊗ … ⊗ z̃_N`` holds the constant, every unimodal term and every cross-modal
interaction. An absent modality becomes ``[1, 0, …, 0]``: only its constant slot survives, so
its placeholder values cannot leak and the other modalities' terms are untouched.

Shape legend: B batch, D_m width of modality m, H output width of LMF, R rank, N modalities.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

from ..registry import FUSIONS
from .base import FusionOp, masked, module_key
from .options import positive_int


def with_constant(x: Tensor, present_col: Tensor | None) -> Tensor:
    """``[1; x]`` per row (Tensor[B, D] -> Tensor[B, D+1]); absent rows become ``[1, 0, …, 0]``.

    ``present_col=None`` means every row is present (the fast path: no mask arithmetic).
    """
    ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    return torch.cat([ones, x if present_col is None else masked(x, present_col, 0.0)], dim=-1)


@FUSIONS.register("tensor")
class TensorFusion(FusionOp):
    """TFN: the flattened outer product ``vec(z̃_1 ⊗ z̃_2 ⊗ … ⊗ z̃_N)``::

        z̃_m = [1; z_m]                        [B, D_m + 1]
        out = vec(z̃_1 ⊗ … ⊗ z̃_N)              [B, Π_m (D_m + 1)]

    Flattening is row-major in sorted modality order (first modality slowest), as in the
    reference code: ``idx = (i_1·(D_2+1) + i_2)·(D_3+1) + i_3``. Hence ``out[:, 0] == 1`` and the
    entries with all other indices 0 reproduce each ``z_m``. No parameters; the output width
    grows multiplicatively, so keep the embeddings small (e.g. 32/32/64 -> 70 785).
    """

    def __init__(self, input_dims: Mapping[str, int]):
        super().__init__(input_dims)
        self.output_dim = math.prod(d + 1 for d in self.input_dims.values())

    def fuse(self, xs: list[Tensor], present: Tensor | None) -> Tensor:
        col = (lambda i: None) if present is None else (lambda i: present[:, i])
        out = with_constant(xs[0], col(0))  # [B, D_1 + 1]
        for i, x in enumerate(xs[1:], start=1):
            z = with_constant(x, col(i))  # [B, D_i + 1]
            out = (out.unsqueeze(-1) * z.unsqueeze(1)).flatten(1)  # [B, prod so far · (D_i + 1)]
        return out

    def fuse_all_present(self, xs: list[Tensor]) -> Tensor:
        """Every modality present: ``[1; z_m]`` without the masking (bitwise equal to ``fuse``)."""
        return TensorFusion.fuse(self, xs, None)


@FUSIONS.register("low_rank", test_options={"rank": 2, "output_dim": 3},
                  search_space={"model.fusion.options.rank": {"low": 2, "high": 16, "log": True},
                                "model.fusion.options.output_dim": {"choices": [32, 64, 128]}})
class LowRankFusion(FusionOp):
    """LMF: a rank-R factorisation of a linear map applied to the TFN tensor::

        z̃_m   = [1; z_m]                                    [B, D_m + 1]
        f_m   = z̃_m · W_m^{(i)} for every rank i           [B, R, H]     W_m: [R, D_m + 1, H]
        h     = Σ_i w_i Π_m f_m[:, i] + b                   [B, H]        w: [1, R], b: [H]

    This is exactly ``h = (Σ_i w_i ⊗_m W_m^{(i)}) · vec(TFN(z)) + b``: a linear map of the
    TFN features whose weight has CP rank R, computed without building the tensor.

    Paper vs code: the paper's last equation writes ``Π_m [Σ_i W_m^{(i)} z̃_m]`` (sum over rank
    inside each modality, then the product), which is *not* algebraically equal to the CP form.
    The official code (whose comment says it swaps the order of summation and element-wise
    product) computes the CP-exact form above, with a learned weighted sum over rank
    (Xavier-normal ``w``) and a zero-initialised bias. We implement the code's form, with the
    same initialisation (Xavier-normal factors of shape ``(R, D_m + 1, H)``). There is no
    activation after fusion.

    Options: ``rank`` (default 4), ``output_dim`` (default: the largest input width).
    Parameters: ``R·Σ_m (D_m+1)·H + R + H``.
    """

    def __init__(self, input_dims: Mapping[str, int], *, rank: int = 4, output_dim: int | None = None):
        super().__init__(input_dims)
        self.rank = positive_int(rank, "rank", "low_rank")
        self.output_dim = positive_int(output_dim, "output_dim", "low_rank", default=max(self.input_dims.values()))
        self.factors = nn.ParameterDict(
            {
                module_key(m, "low_rank"): nn.Parameter(nn.init.xavier_normal_(torch.empty(self.rank, d + 1, self.output_dim)))
                for m, d in self.input_dims.items()
            }
        )
        self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, self.rank)))
        self._row_split = [[1, d] for d in self.input_dims.values()]  # constant row | the D_m rows of W_m
        self._factor_keys = [module_key(m, "low_rank") for m in self.input_dims]  # sorted modality order
        self.bias = nn.Parameter(torch.zeros(self.output_dim))

    def fuse(self, xs: list[Tensor], present: Tensor | None) -> Tensor:
        # z̃_m · W_m^{(i)} = W_m^{(i)}[0] + z_m · W_m^{(i)}[1:]: one baddbmm per modality for every
        # rank at once, without building [1; z_m] (an absent row, zeroed, gives exactly W_m^{(i)}[0],
        # the row [1, 0, …, 0] of the docstring).
        # Each parameter is looked up by name in the module's ``_parameters`` dict (a dict.get: nn.Module.__getattr__
        # costs ~1 µs per parameter and call, +6 % of a batch-64 forward, benchmarks/lmf_param_access.py); a name
        # that is not there (torch.nn.utils.parametrize moves a parametrized tensor out of ``_parameters`` and
        # serves it through a property) falls back to the ordinary attribute access, so parametrizations
        # (weight norm, orthogonal, ...) are honoured.
        factors = self.factors
        table = factors._parameters
        prod = None
        for i, (x, key, sizes) in enumerate(zip(xs, self._factor_keys, self._row_split)):
            w = table.get(key)
            if w is None:
                w = getattr(factors, key)  # a parametrized factor: computed by its parametrization
            if present is not None:
                x = masked(x, present[:, i], 0.0)
            w0, w1 = w.split_with_sizes(sizes, 1)  # [R, 1, H], [R, D_m, H] (one call: half the cost of two slices)
            f = torch.baddbmm(w0, x.expand(w.shape[0], -1, -1), w1)  # [R, B, H]
            prod = f if prod is None else prod * f
        R, B, H = prod.shape
        # Σ_i w_i prod[i] as one [1, R] x [R, B·H] product
        own = self._parameters
        lam, bias = own.get("rank_weights"), own.get("bias")
        if lam is None:
            lam = self.rank_weights
        if bias is None:
            bias = self.bias
        return torch.matmul(lam, prod.view(R, B * H)).view(B, H) + bias  # [B, H]

    def fuse_all_present(self, xs: list[Tensor]) -> Tensor:
        """Every modality present: ``[1; z_m]`` without the masking (bitwise equal to ``fuse``)."""
        return LowRankFusion.fuse(self, xs, None)
