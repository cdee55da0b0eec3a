"""What every mmfuse model returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ModelOutput:
    """``logits``: Tensor[B, K] (K classes, labels or regression outputs);
    ``fused``: Tensor[B, D] the fused embedding (None for late fusion);
    ``embeddings``: per-modality embeddings Tensor[B, D_m] (pooled vectors);
    ``unimodal_logits``: per-modality logits Tensor[B, K] (late fusion and multi-stream models), else None;
    ``extras``: anything else a model reports (presence after modality dropout, attention maps, codes);
    ``losses``: extra loss terms, scalars, *already weighted*: the one training loop adds them all to the
    task loss (MEA's disparity and adversarial terms, reconstruction losses, SMIL's alignment terms).
    """

    logits: Tensor
    fused: Tensor | None = None
    embeddings: dict[str, Tensor] = field(default_factory=dict)
    unimodal_logits: dict[str, Tensor] | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
