"""Feature-level fusion operators (how to fuse per-modality embeddings).

Importing this package registers every built-in operator in :data:`mmfuse.registry.FUSIONS`:
concat, sum, mean, max, product, gated, multconcat, tensor, low_rank, cross_attention.

>>> from mmfuse.fusion import create_fusion
>>> op = create_fusion("gated", {"image": 8, "text": 4}, dim=6)
>>> op.output_dim
6
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import nn

from ..registry import FUSIONS
from .attention import CrossAttentionFusion
from .base import FusionOp, masked
from .concat import ConcatFusion
from .elementwise import ElementwiseFusion, MaxFusion, MeanFusion, ProductFusion, SumFusion
from .gated import GatedFusion
from .multconcat import MultConcatFusion
from .tensor import LowRankFusion, TensorFusion


def create_fusion(name_or_module: str | nn.Module, input_dims: Mapping[str, int], **options: Any) -> nn.Module:
    """Build the registered operator ``name_or_module`` for ``input_dims`` with ``options``.

    An ``nn.Module`` instance is returned unchanged. Unknown names raise UnknownNameError
    (listing close names); unknown or invalid options raise ConfigError naming the option.
    """
    if isinstance(name_or_module, nn.Module):
        return name_or_module
    return FUSIONS.create(name_or_module, input_dims=input_dims, **options)


def list_fusions() -> list[str]:
    """The names of every registered fusion operator, sorted."""
    return FUSIONS.list()


def register_fusion(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a fusion operator class (or factory ``f(input_dims, **options)``)."""
    return FUSIONS.register(name)


__all__ = [
    "FusionOp",
    "ConcatFusion",
    "ElementwiseFusion",
    "SumFusion",
    "MeanFusion",
    "MaxFusion",
    "ProductFusion",
    "GatedFusion",
    "MultConcatFusion",
    "TensorFusion",
    "LowRankFusion",
    "CrossAttentionFusion",
    "create_fusion",
    "list_fusions",
    "register_fusion",
    "masked",
]
