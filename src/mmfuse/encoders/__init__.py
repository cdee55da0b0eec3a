"""Encoders: one per modality. ``create_encoder(name, input_shape=..., **options)``, ``list_encoders()``."""

from __future__ import annotations

from torch import nn

from ..registry import ENCODERS
from . import cnn, hf, mlp, sequence  # noqa: F401  (fill the registry)
from . import efficientnet  # noqa: F401  (efficientnet_lite0)
from . import speaker  # noqa: F401  (ge2e_speaker)
from . import categorical  # noqa: F401  (categorical: one-hot category blocks)
from .base import Encoder, StagedEncoder
from .cnn import ConvEncoder


def create_encoder(name_or_module: str | nn.Module, input_shape=None, **options) -> nn.Module:
    if isinstance(name_or_module, nn.Module):
        return name_or_module
    return ENCODERS.create(name_or_module, input_shape=input_shape, **options)


def list_encoders() -> list[str]:
    return ENCODERS.list()


def register_encoder(name: str):
    return ENCODERS.register(name)


__all__ = ["Encoder", "StagedEncoder", "ConvEncoder", "create_encoder", "list_encoders", "register_encoder"]
