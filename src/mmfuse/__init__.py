"""mmfuse: multimodal deep learning — which encoder, when and how to fuse, and why."""

from __future__ import annotations

from .batch import Collator, MultimodalBatch, collate
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MissingModalityError,
    MMFuseError,
    ShapeError,
    UnknownNameError,
)
from .registry import ENCODERS, FUSIONS, HEADS, INTERACTIONS, LATE_COMBINERS, Registry

__version__ = "0.1.0"
