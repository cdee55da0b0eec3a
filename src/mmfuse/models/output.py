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
    ``extras``: anything a model wants to hand to its loss (e.g. SMIL's reconstructions).
    """

    logits: Tensor
    fused: Tensor | None = None
    embeddings: dict[str, Tensor] = field(default_factory=dict)
    unimodal_logits: dict[str, Tensor] | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
