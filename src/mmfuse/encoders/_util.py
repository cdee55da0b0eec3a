"""Small shared helpers for encoders."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError


def as_shape(input_shape, encoder: str) -> tuple:
    if input_shape is None:
        raise ConfigError(f"encoder {encoder!r}: input_shape is required (one sample's shape, without the batch dim)")
    try:
        return tuple(None if s is None else int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"encoder {encoder!r}: input_shape must be a sequence of ints (None for a variable axis), got {input_shape!r}") from None


def int_tuple(value, key: str, encoder: str) -> tuple[int, ...]:
    vals = (value,) if isinstance(value, int) else tuple(value)
    if not vals or any(not isinstance(v, int) or v < 1 for v in vals):
        raise ConfigError(f"encoder {encoder!r}: {key} must be positive int(s), got {value!r}; "
                          f"use e.g. {key}: [64]" + (" (or [] for none)" if key == "hidden" else ""))
    return vals


def check_rank(x: Tensor, ranks: Sequence[int], encoder: str, expected: str) -> None:
    if x.dim() not in ranks:
        raise ShapeError(
            f"encoder {encoder!r}: expected input of shape {expected}, got {tuple(x.shape)}; "
            "check the modality's input_shape in the config"
        )


def lengths_mask(lengths: Tensor | None, B: int, T: int, device) -> Tensor:
    """BoolTensor[B, T], True on real (non-padding) positions."""
    if lengths is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    return torch.arange(T, device=device)[None, :] < lengths.to(device)[:, None]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of Tensor[B, T, D] over the True positions of BoolTensor[B, T] (0 where none)."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class Lambda(nn.Module):
    """A parameter-free reshaping step that can sit inside a stage (so stages stay modules)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "add_channel":
            return x.unsqueeze(1)
        if self.kind == "channels_first":  # (B, T, C) -> (B, C, T)
            return x.transpose(1, 2)
        raise RuntimeError(self.kind)  # pragma: no cover

    def extra_repr(self) -> str:
        return self.kind
