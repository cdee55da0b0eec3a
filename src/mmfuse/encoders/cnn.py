"""Convolutional encoders with stages (for intermediate fusion such as MMTM).

Shape legend: B batch, C channels, T time, H height, W width, D output_dim.
- ``cnn1d``: input (T, C) channels-last sequences (MFCC frames, sensor series) -> (B, D)
- ``cnn2d``: input (C, H, W) or (H, W) images -> (B, D)
- ``cnn3d``: input (C, T, H, W) clips -> (B, D)
Each stage is a strided conv -> ReLU (no BatchNorm, so a sample's output never depends on the
rest of its batch). Strided convolutions instead of conv + max-pool: on CPU they are about 3x
faster for the same receptive-field growth. ``finish`` average-pools the last feature map to a small ``grid`` per spatial dim (so the layout
of a digit survives; a global average would discard it) and projects to D.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import ENCODERS
from ._util import Lambda, as_shape, check_rank, int_tuple
from .base import StagedEncoder

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class ConvEncoder(StagedEncoder):
    """A stack of ``len(channels)`` conv stages over ``spatial_dims`` (1, 2 or 3) dims."""

    output_kind = "vector"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels=(16, 32),
        output_dim: int = 64,
        kernel_size: int = 3,
        stride: int = 2,
        dropout: float = 0.0,
        prepare: str | None = None,
        name: str = "cnn",
        grid: int = 4,
    ):
        super().__init__()
        channels = int_tuple(channels, "channels", name)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"encoder {name!r}: dropout must be in [0, 1), got {dropout}")
        self.name, self.spatial_dims = name, spatial_dims
        self.output_dim = int(output_dim)
        self.stage_channels = list(channels)
        stages, c_in = [], in_channels
        for i, c in enumerate(channels):
            layers: list[nn.Module] = [Lambda(prepare)] if (i == 0 and prepare) else []
            layers += [_CONV[spatial_dims](c_in, c, kernel_size, stride=stride, padding=kernel_size // 2), nn.ReLU()]
            stages.append(nn.Sequential(*layers))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.input_rank = spatial_dims + (1 if prepare == "add_channel" else 2)
        if not isinstance(grid, int) or grid < 1:
            raise ConfigError(f"encoder {name!r}: grid must be a positive int, got {grid!r}")
        self.grid = grid
        self.pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[spatial_dims](grid)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in * grid**spatial_dims, self.output_dim), nn.ReLU())

    def finish(self, h: Tensor) -> Tensor:
        return self.proj(self.pool(h).flatten(1))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        check_rank(x, (self.input_rank,), self.name, f"(B, ...) with {self.input_rank} dims")
        return super().forward(x)


@ENCODERS.register("cnn1d", test_options={"input_shape": (20, 5), "channels": [4, 8], "output_dim": 8})
def cnn1d(input_shape, channels=(32, 64), output_dim: int = 64, kernel_size: int = 3, stride: int = 2, dropout: float = 0.0,
          grid: int = 4):
    """1-D CNN over a channels-last sequence of one sample shape (T, C)."""
    shape = as_shape(input_shape, "cnn1d")
    if len(shape) != 2 or shape[1] is None:
        raise ConfigError(f"encoder 'cnn1d': input_shape must be (T, C) with a fixed C, got {input_shape!r}")
    return ConvEncoder(1, shape[1], channels, output_dim, kernel_size, stride, dropout, prepare="channels_first", name="cnn1d", grid=grid)


@ENCODERS.register("cnn2d", test_options={"input_shape": (1, 16, 16), "channels": [4, 8], "output_dim": 8})
def cnn2d(input_shape, channels=(16, 32), output_dim: int = 64, kernel_size: int = 3, stride: int = 2, dropout: float = 0.0,
          grid: int = 4):
    """2-D CNN over images of one sample shape (C, H, W) or (H, W)."""
    shape = as_shape(input_shape, "cnn2d")
    if len(shape) not in (2, 3):
        raise ConfigError(f"encoder 'cnn2d': input_shape must be (C, H, W) or (H, W), got {input_shape!r}")
    in_ch = 1 if len(shape) == 2 else shape[0]
    return ConvEncoder(2, in_ch, channels, output_dim, kernel_size, stride, dropout,
                       prepare="add_channel" if len(shape) == 2 else None, name="cnn2d", grid=grid)


@ENCODERS.register("cnn3d", test_options={"input_shape": (1, 4, 8, 8), "channels": [4, 8], "output_dim": 8})
def cnn3d(input_shape, channels=(16, 32), output_dim: int = 64, kernel_size: int = 3, stride: int = 2, dropout: float = 0.0,
          grid: int = 2):
    """3-D CNN over clips of one sample shape (C, T, H, W) or (T, H, W)."""
    shape = as_shape(input_shape, "cnn3d")
    if len(shape) not in (3, 4):
        raise ConfigError(f"encoder 'cnn3d': input_shape must be (C, T, H, W) or (T, H, W), got {input_shape!r}")
    in_ch = 1 if len(shape) == 3 else shape[0]
    return ConvEncoder(3, in_ch, channels, output_dim, kernel_size, stride, dropout,
                       prepare="add_channel" if len(shape) == 3 else None, name="cnn3d", grid=grid)
