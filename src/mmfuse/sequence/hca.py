"""Hierarchical cross-modal attention (HCA): MEA's inter-modal, modality-*agnostic* branch.

Paper (MEA abstract, Fig. 2b/c captions): HCA is built from Modality Reinforcement Units (MRU)
and "explores valuable element correlations among modalities over the modality-agnostic space".
Equations were not readable; [inferred] marks our design choices.

Shape legend: B batch, T target length, S source length, D width, M modalities.

- :class:`MRU` — a target sequence is reinforced by cross-attention from a source sequence
  (queries = target, keys/values = source), then post-LN residual + feed-forward. Target and
  source lengths are independent, so asynchronous (unaligned) sequences need no alignment.
  A sample whose source has no valid step (absent modality) passes the target through unchanged
  [inferred: reinforcement from nothing is the identity].
- :class:`HCA` — per target modality, each layer runs three levels [inferred, after the 3rd-party
  sketch]: *mixed* (source = all modalities joined along time), *coarse* (all other modalities
  joined), *fine* (each other modality separately, averaged over the present ones). The MRUs
  are **shared across target modalities** (one module per level and layer) so that every modality
  is mapped into one common, agnostic space [inferred].

Padding and absent modalities are excluded from the keys; output steps that are not valid are 0.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ._common import FeedForward, MultiHead, check_heads, masked_softmax, zero_invalid

LEVELS = ("mixed", "coarse", "fine")


class MRU(nn.Module):
    """``forward(target [B,T,D], target_valid [B,T], source [B,S,D], source_valid [B,S]) -> [B,T,D]``."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        check_heads(dim, heads, "MRU")
        self.attn = MultiHead(dim, heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)
        self.drop = nn.Dropout(dropout)
        self.last_attention: Tensor | None = None  # [B, H, T, S] of the last call (for inspection)

    def forward(self, target: Tensor, target_valid: Tensor, source: Tensor, source_valid: Tensor) -> Tensor:
        logits, v = self.attn.scores(target, source)
        a = masked_softmax(logits, source_valid[:, None, None, :])
        self.last_attention = a.detach()
        h = self.norm1(target + self.drop(self.attn.mix(a, v)))
        h = self.norm2(h + self.drop(self.ff(h)))
        has_source = source_valid.any(1)[:, None, None]
        return zero_invalid(torch.where(has_source, h, target), target_valid)


def _join(seqs: list[Tensor], valid: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Concatenate sequences (and masks) along time: asynchronous steps simply become more keys."""
    return torch.cat(seqs, dim=1), torch.cat(valid, dim=1)


class HCA(nn.Module):
    """Stacked hierarchical MRUs -> modality-agnostic sequences (each keeps its own T_m).

    ``forward(seqs: dict[m, Tensor[B,T_m,D]], valid: dict[m, BoolTensor[B,T_m]]) -> dict[m, Tensor[B,T_m,D]]``.
    """

    def __init__(self, modalities: list[str], dim: int, heads: int = 4, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        if len(modalities) < 2:
            raise ConfigError(f"HCA: needs at least 2 modalities to attend across, got {sorted(modalities)}")
        if not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"HCA: layers must be a positive int, got {layers!r}")
        self.modalities = sorted(modalities)
        self.layers = nn.ModuleList(nn.ModuleDict({lv: MRU(dim, heads, dropout) for lv in LEVELS}) for _ in range(layers))

    def forward(self, seqs: Mapping[str, Tensor], valid: Mapping[str, Tensor]) -> dict[str, Tensor]:
        hs = {m: seqs[m] for m in self.modalities}
        for units in self.layers:
            all_src, all_valid = _join([hs[m] for m in self.modalities], [valid[m] for m in self.modalities])
            new = {}
            for t in self.modalities:
                others = [m for m in self.modalities if m != t]
                h = units["mixed"](hs[t], valid[t], all_src, all_valid)
                src, src_valid = _join([hs[m] for m in others], [valid[m] for m in others])
                h = units["coarse"](h, valid[t], src, src_valid)
                fine = torch.stack([units["fine"](h, valid[t], hs[m], valid[m]) for m in others], 1)  # [B, M-1, T, D]
                has = torch.stack([valid[m].any(1) for m in others], 1)                                  # [B, M-1]
                n = has.sum(1).clamp_min(1).to(h.dtype)[:, None, None]
                mean = torch.where(has[:, :, None, None], fine, torch.zeros((), dtype=h.dtype)).sum(1) / n
                new[t] = torch.where(has.any(1)[:, None, None], mean, h)
            hs = new
        return hs
