"""Modality dropout: randomly mark whole modalities of a sample absent during training.

``ModalityDropout`` works on presence masks, so it composes with every feature-level fusion
operator (they all honour the mask) and with the imputers of :mod:`mmfuse.missing.imputation`.

Semantics
---------
* Per sample and per modality, a *present* modality is dropped with probability ``rates[m]``.
  Absent modalities stay absent (dropout never invents data).
* A sample never ends with fewer than ``min(min_present, number originally present)`` present
  modalities: when the draw drops too many, randomly chosen dropped modalities are restored.
  Because of this restoration the *effective* drop rate is a little below the nominal rate
  (for two modalities at rate ``p`` each, ``p - p**2 / 2``); with a single modality
  listed in ``rates`` and others always kept, the effective rate equals the nominal one.
* Only in training mode (``module.train()``); in eval mode the mask is returned unchanged.
* A new mask dict is returned; the input is never modified in place.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..batch import MultimodalBatch
from ..errors import ConfigError, MissingModalityError, ShapeError
from ..registry import suggestion


def _check_rate(name: str, rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
        raise ConfigError(f"ModalityDropout: rate for {name} must be a number in [0, 1], got {rate!r}; use e.g. 0.3 (0 = never drop)")
    return float(rate)


class ModalityDropout(nn.Module):
    """Drop present modalities per sample with probability ``rates`` (training only).

    ``rates``: one float for every modality, or a mapping ``{modality: rate}`` (modalities not
    listed are never dropped). ``min_present``: the least number of modalities a sample keeps
    (never below what it had). ``generator``: optional ``torch.Generator`` for reproducible draws.

    ``forward(mask)`` takes ``dict[str, BoolTensor[B]]`` and returns a new dict; passing a
    :class:`~mmfuse.batch.MultimodalBatch` returns a new batch whose dropped inputs are zeroed.
    """

    def __init__(self, rates: float | Mapping[str, float] = 0.5, min_present: int = 1, generator: torch.Generator | None = None):
        super().__init__()
        if isinstance(rates, Mapping):
            if not rates:
                raise ConfigError("ModalityDropout: rates mapping is empty; give {modality: rate} or one float")
            self.rates: float | dict[str, float] = {str(m): _check_rate(repr(m), r) for m, r in rates.items()}
        else:
            self.rates = _check_rate("every modality", rates)
        if isinstance(min_present, bool) or not isinstance(min_present, int) or min_present < 0:
            raise ConfigError(f"ModalityDropout: min_present must be an int >= 0, got {min_present!r}")
        self.min_present = min_present
        self.generator = generator

    def extra_repr(self) -> str:
        return f"rates={self.rates}, min_present={self.min_present}"

    def _rate_vector(self, names: list[str], device: torch.device) -> Tensor:
        if isinstance(self.rates, dict):
            unknown = [m for m in self.rates if m not in names]
            if unknown:
                raise MissingModalityError(
                    f"ModalityDropout: rates name modality {unknown[0]!r} but the mask has {names}; "
                    f"{suggestion(unknown[0], names)}"
                )
            vals = [self.rates.get(m, 0.0) for m in names]
        else:
            vals = [self.rates] * len(names)
        return torch.tensor(vals, dtype=torch.float32, device=device)

    def forward(self, mask: Mapping[str, Tensor] | MultimodalBatch):
        if isinstance(mask, MultimodalBatch):
            return mask.with_mask(self.drop(mask.mask))
        return self.drop(mask)

    def drop(self, mask: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The new mask (a fresh dict; unchanged copy in eval mode)."""
        if not isinstance(mask, Mapping) or not mask:
            raise ConfigError("ModalityDropout: expected a non-empty dict {modality: BoolTensor[B]}")
        names = sorted(mask)
        cols = []
        B = None
        for m in names:
            v = mask[m]
            if not isinstance(v, Tensor) or v.dim() != 1:
                raise ShapeError(f"ModalityDropout: mask[{m!r}] must be a 1-D bool tensor, got {getattr(v, 'shape', type(v))}")
            if B is None:
                B = v.shape[0]
            elif v.shape[0] != B:
                raise ShapeError(f"ModalityDropout: mask[{m!r}] has {v.shape[0]} rows, expected {B}")
            cols.append(v.to(torch.bool))
        present = torch.stack(cols, dim=1)  # [B, N]
        rates = self._rate_vector(names, present.device)
        if not self.training or not bool((rates > 0).any()):
            return {m: present[:, i].clone() for i, m in enumerate(names)}
        u = torch.rand(present.shape, generator=self.generator, device=present.device) if self.generator is not None \
            else torch.rand(present.shape, device=present.device)
        keep = present & ~(u < rates)
        # restore randomly chosen dropped modalities where too many were dropped
        need = (torch.clamp(present.sum(1), max=self.min_present) - keep.sum(1)).clamp(min=0)  # [B]
        if bool((need > 0).any()):
            cand = present & ~keep
            s = torch.rand(present.shape, generator=self.generator, device=present.device) if self.generator is not None \
                else torch.rand(present.shape, device=present.device)
            s = torch.where(cand, s, torch.full_like(s, float("inf")))
            rank = s.argsort(dim=1).argsort(dim=1)
            keep = keep | (cand & (rank < need[:, None]))
        return {m: keep[:, i].clone() for i, m in enumerate(names)}
