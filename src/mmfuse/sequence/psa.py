"""Predictive self-attention (PSA): MEA's intra-modal, modality-*exclusive* branch.

Paper (MEA, Yang et al. 2024, abstract + Fig. 2a caption): stacked PSA layers per modality use a
*predictive attention map* and a *weighted attention layer* "to capture reliable context dynamics
within modalities and reinforce unique features over the modality-exclusive spaces". The equations
were not readable; everything below marked [inferred] is our design.

Shape legend: B batch, T_m length of modality m (padded), D width, H heads.

- :class:`PredictiveSelfAttention` — one layer. Layer 1 is masked multi-head self-attention.
  From layer 2 on, the attention map of the previous layer *predicts* this layer's map:
  ``P = softmax_valid(Conv2d_heads(A_prev))`` and ``A = renorm(μ·P + (1−μ)·softmax_valid(QKᵀ/√d))``
  [inferred, after the 3rd-party sketch's μ = 0.25; we normalise the prediction with a masked
  softmax instead of its GELU so that A stays a distribution over valid keys]. Post-LN residual +
  feed-forward [inferred].
- :class:`WeightedAttention` — the weighted attention layer across modalities: a reliability score
  per modality ``tanh(w·pool(h_m))``, softmax over *present* modalities, and each sequence is
  rescaled by ``M_present · weight`` (so equal scores leave it unchanged) [inferred].
- :class:`PSA` — for each layer: a PSA layer per modality, then the weighted attention layer.

Padding (``lengths``) and absent samples (``present`` False) never act as keys; their output steps
are 0, and padded rows of ``A_prev`` are zeroed before the convolution, so padded contents cannot
reach real steps through the 3×3 kernel either.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ._common import FeedForward, MultiHead, check_heads, masked_pool, masked_softmax, zero_invalid


class PredictiveSelfAttention(nn.Module):
    """One PSA layer: ``forward(x [B,T,D], valid [B,T], prev_attn [B,H,T,T] | None) -> (y [B,T,D], attn [B,H,T,T])``."""

    def __init__(self, dim: int, heads: int = 4, mu: float = 0.25, predictive: bool = True, dropout: float = 0.0):
        super().__init__()
        check_heads(dim, heads, "PredictiveSelfAttention")
        if not 0.0 <= float(mu) <= 1.0:
            raise ConfigError(f"PredictiveSelfAttention: mu must be in [0, 1], got {mu!r}")
        self.mu = float(mu)
        self.attn = MultiHead(dim, heads)
        # heads -> heads 3x3 convolution over the (query, key) map of the previous layer
        self.predict = nn.Conv2d(heads, heads, kernel_size=3, padding=1) if predictive else None
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor, prev_attn: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logits, v = self.attn.scores(x, x)                      # [B, H, T, T], [B, H, T, d]
        keys = valid[:, None, None, :]                          # [B, 1, 1, T]
        a = masked_softmax(logits, keys)
        if self.predict is not None and prev_attn is not None:
            rows = valid[:, None, :, None]                      # real query rows only
            prev = torch.where(rows, prev_attn, torch.zeros((), dtype=prev_attn.dtype, device=prev_attn.device))
            p = masked_softmax(self.predict(prev), keys)
            a = self.mu * p + (1.0 - self.mu) * a
            a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)    # renormalise (rows with no key stay 0)
        h = self.norm1(x + self.drop(self.attn.mix(a, v)))
        h = self.norm2(h + self.drop(self.ff(h)))
        return zero_invalid(h, valid), a


class WeightedAttention(nn.Module):
    """Reliability weights across modalities: ``forward(seqs, valid, present [B,M]) -> (seqs, weights [B,M])``."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, seqs: list[Tensor], valid: list[Tensor], present: Tensor) -> tuple[list[Tensor], Tensor]:
        s = torch.cat([torch.tanh(self.score(masked_pool(h, v))) for h, v in zip(seqs, valid)], dim=1)  # [B, M]
        w = masked_softmax(s, present)
        scale = w * present.sum(1, keepdim=True).to(w.dtype)   # equal scores -> scale 1
        return [h * scale[:, i, None, None] for i, h in enumerate(seqs)], w


class PSA(nn.Module):
    """Stacked PSA over every modality -> modality-exclusive sequences (each keeps its own T_m).

    ``forward(seqs: dict[m, Tensor[B,T_m,D]], valid: dict[m, BoolTensor[B,T_m]], present: BoolTensor[B,M])``
    returns ``(dict[m, Tensor[B,T_m,D]], info)`` where ``info["weights"]`` is the last layer's
    Tensor[B, M] modality weights. Layer parameters are separate per modality (exclusive spaces)
    [inferred]; modalities in sorted order.
    """

    def __init__(self, modalities: list[str], dim: int, heads: int = 4, layers: int = 2, mu: float = 0.25,
                 predictive: bool = True, dropout: float = 0.0):
        super().__init__()
        if not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"PSA: layers must be a positive int, got {layers!r}")
        self.modalities = sorted(modalities)
        self.layers = nn.ModuleList(
            nn.ModuleDict({m: PredictiveSelfAttention(dim, heads, mu, predictive and i > 0, dropout) for m in self.modalities})
            for i in range(layers))
        self.weighting = nn.ModuleList(WeightedAttention(dim) for _ in range(layers))

    def forward(self, seqs: Mapping[str, Tensor], valid: Mapping[str, Tensor], present: Tensor):
        hs = [seqs[m] for m in self.modalities]
        vs = [valid[m] for m in self.modalities]
        attn: list[Tensor | None] = [None] * len(hs)
        w = present.to(hs[0].dtype)
        for layer, weigh in zip(self.layers, self.weighting):
            outs = [layer[m](h, v, a) for m, h, v, a in zip(self.modalities, hs, vs, attn)]
            hs, attn = [o[0] for o in outs], [o[1] for o in outs]
            hs, w = weigh(hs, vs, present)
        return dict(zip(self.modalities, hs)), {"weights": w}
