"""Decoupled graph fusion: MEA's last step, knowledge exchange between decoupled features.

Paper (MEA abstract): "a decoupled graph fusion mechanism to enhance knowledge exchange across
heterogeneous modalities and learn robust multimodal representations". Design [inferred]: one graph
per sample whose nodes are the *decoupled* features — the pooled modality-exclusive code of every
modality plus one modality-agnostic node (the mean of the present modalities' agnostic codes).
Edge weights are learned by attention over nodes (scaled dot product, softmax over *present*
nodes, self-loops included); each round passes messages ``h ← LN(h + GELU(W·Σ_j α_ij v_j))``.
Readout: mean over present nodes, then a linear layer.

Shape legend: B batch, N nodes (M modalities + 1), D width.
Absent nodes receive no weight, send no message and are excluded from the readout; a sample with
no present node reads out 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ._common import masked_softmax


class GraphFusion(nn.Module):
    """``forward(nodes [B,N,D], present [B,N]) -> (fused [B,D], edges [B,N,N])``."""

    def __init__(self, dim: int, rounds: int = 2):
        super().__init__()
        if not isinstance(rounds, int) or rounds < 1:
            raise ConfigError(f"GraphFusion: rounds must be a positive int, got {rounds!r}")
        self.q = nn.ModuleList(nn.Linear(dim, dim) for _ in range(rounds))
        self.k = nn.ModuleList(nn.Linear(dim, dim) for _ in range(rounds))
        self.msg = nn.ModuleList(nn.Linear(dim, dim) for _ in range(rounds))
        self.norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(rounds))
        self.readout = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, nodes: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        zero = torch.zeros((), dtype=nodes.dtype, device=nodes.device)
        h = torch.where(present[..., None], nodes, zero)
        edges = torch.zeros(h.shape[0], h.shape[1], h.shape[1], dtype=h.dtype, device=h.device)
        for q, k, msg, norm in zip(self.q, self.k, self.msg, self.norm):
            edges = masked_softmax(q(h) @ k(h).transpose(1, 2) * self.scale, present[:, None, :])  # [B, N, N]
            h = torch.where(present[..., None], norm(h + nn.functional.gelu(msg(edges @ h))), zero)
        pooled = h.sum(1) / present.sum(1, keepdim=True).clamp_min(1).to(h.dtype)
        fused = torch.where(present.any(1, keepdim=True), self.readout(pooled), zero)
        return fused, edges
