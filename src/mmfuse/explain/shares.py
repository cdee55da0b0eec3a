"""Modality shares from absolute contributions (MM-SHAP's T-SHAP / V-SHAP generalised to M modalities).

``share_m = Φ_m / Σ_k Φ_k`` with ``Φ_m = Σ_{j∈m} |φ_j|`` (feature level) or ``|φ_m|``
(modality level). Shares lie in [0, 1] and sum to 1; they are invariant to ``f → a·f + c``.
When every contribution of a sample is 0 (the score does not depend on any player) the share is
undefined: ``zero_total="nan"`` (default) gives NaN for that sample (averages then skip it),
``"equal"`` gives 1/M to every modality. A modality with no features in a sample (absent there)
is NaN in that sample's row when ``absent`` marks it.

Multi-output scores (multilabel: one sigmoid per label; regression with several outputs) give
contributions Tensor[B, M, K]: :func:`output_shares` computes the shares of each output
separately (Tensor[B, M, K]) and :func:`abs_shares` accepts them too, returning the mean over
outputs of the per-output shares (NaN outputs, with no contribution at all, skipped). A modality
that affects no output therefore has share exactly 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError

ZERO_TOTAL = ("nan", "equal")


def abs_shares(contributions: Tensor, zero_total: str = "nan", absent: Tensor | None = None) -> Tensor:
    """Shares Tensor[B, M] from non-negative contributions Φ Tensor[B, M] (float64).

    ``absent``: optional BoolTensor[B, M]; those entries are NaN and excluded from the total.
    """
    if zero_total not in ZERO_TOTAL:
        raise ConfigError(f"zero_total must be one of {ZERO_TOTAL}, got {zero_total!r}")
    if contributions.dim() == 3:
        return output_shares(contributions, zero_total, absent).nanmean(2)
    phi = contributions.to(torch.float64)
    if absent is not None:
        phi = phi.masked_fill(absent, 0.0)
    total = phi.sum(1, keepdim=True)
    shares = phi / total.where(total > 0, torch.ones_like(total))
    zero = (total <= 0).expand_as(shares)
    if zero_total == "equal":
        n_present = phi.shape[1] if absent is None else (~absent).sum(1, keepdim=True).clamp(min=1)
        fill = (torch.ones_like(shares) / n_present)
        shares = torch.where(zero, fill, shares)
    else:
        shares = shares.masked_fill(zero, float("nan"))
    if absent is not None:
        shares = shares.masked_fill(absent, float("nan"))
    return shares


def output_shares(contributions: Tensor, zero_total: str = "nan", absent: Tensor | None = None) -> Tensor:
    """Per-output shares Tensor[B, M, K] from contributions Tensor[B, M, K] (one share vector per output)."""
    B, M, K = contributions.shape
    flat = contributions.permute(0, 2, 1).reshape(B * K, M)
    ab = None if absent is None else absent.unsqueeze(1).expand(B, K, M).reshape(B * K, M)
    return abs_shares(flat, zero_total, ab).reshape(B, K, M).permute(0, 2, 1)
