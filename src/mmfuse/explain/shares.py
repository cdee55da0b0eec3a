"""Modality shares from absolute contributions (MM-SHAP's T-SHAP / V-SHAP generalised to M modalities).

``share_m = Φ_m / Σ_k Φ_k`` with ``Φ_m = Σ_{j∈m} |φ_j|`` (feature level) or ``|φ_m|``
(modality level). Shares lie in [0, 1] and sum to 1; they are invariant to ``f → a·f + c``.
When every contribution of a sample is 0 (the score does not depend on any player) the share is
undefined: ``zero_total="nan"`` (default) gives NaN for that sample (averages then skip it),
``"equal"`` gives 1/M to every modality. A modality with no features in a sample (absent there)
is NaN in that sample's row when ``absent`` marks it.
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
