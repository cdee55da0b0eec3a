"""Intermediate-level interaction blocks that run between encoder stages (e.g. MMTM).

Contract: ``block(features: dict[str, Tensor[B, C_m, *]], mask: dict[str, BoolTensor[B]] | None = None)``
returns a dict with the same keys and shapes. Blocks are registered in ``mmfuse.registry.INTERACTIONS``.
"""

from __future__ import annotations

from .mmtm import MMTM, PRESETS, squeeze

__all__ = ["MMTM", "PRESETS", "squeeze"]
