"""``mlp`` (tabular values, precomputed features) and ``identity`` encoders.

Shape legend: B batch, F = prod(one sample's shape), D output_dim.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from ..registry import ENCODERS
from ._util import as_shape, int_tuple
from .base import Encoder


def _flat_size(shape: tuple, name: str) -> int:
    if any(s is None for s in shape):
        raise ConfigError(f"encoder {name!r}: needs a fixed input_shape, got {shape}; use a sequence encoder (gru, transformer, cnn1d) for variable lengths")
    return int(math.prod(shape)) if shape else 1


class MLPEncoder(Encoder):
    """(B, *shape) -> flatten -> [Linear -> ReLU -> Dropout] x len(hidden) -> Linear -> ReLU -> (B, D)."""

    output_kind = "vector"

    def __init__(self, in_features: int, hidden=(64,), output_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        hidden = int_tuple(hidden, "hidden", "mlp") if hidden else ()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"encoder 'mlp': dropout must be in [0, 1), got {dropout}")
        if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
            raise ConfigError(f"encoder 'mlp': output_dim must be a positive int, got {output_dim!r}; set e.g. output_dim: 64")
        self.in_features, self.output_dim = in_features, int(output_dim)
        layers, d = [], in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        layers += [nn.Linear(d, self.output_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = x.flatten(1).float()
        if x.shape[1] != self.in_features:
            raise ShapeError(f"encoder 'mlp': expected {self.in_features} features per sample, got {x.shape[1]}")
        return self.net(x)


class IdentityEncoder(Encoder):
    """(B, *shape) -> (B, F): passes precomputed features through, flattened."""

    output_kind = "vector"

    def __init__(self, in_features: int):
        super().__init__()
        self.output_dim = in_features

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = x.flatten(1).float()
        if x.shape[1] != self.output_dim:
            raise ShapeError(f"encoder 'identity': expected {self.output_dim} features per sample, got {x.shape[1]}")
        return x


@ENCODERS.register("mlp", test_options={"input_shape": (6,), "hidden": (8,), "output_dim": 8})
def mlp(input_shape, hidden=(64,), output_dim: int = 64, dropout: float = 0.0):
    return MLPEncoder(_flat_size(as_shape(input_shape, "mlp"), "mlp"), hidden, output_dim, dropout)


@ENCODERS.register("identity", test_options={"input_shape": (2, 3)})
def identity(input_shape):
    return IdentityEncoder(_flat_size(as_shape(input_shape, "identity"), "identity"))
