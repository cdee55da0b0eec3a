"""``categorical``: an embedding of the one-hot category blocks the table's ``categorical`` loader gives.

Input: one sample ``(K,)``, the concatenated one-hot blocks of a modality's categorical columns (a category
unseen in training: its block all zero); output ``(B, output_dim)`` = the sum of the embeddings of the active slots, i.e. ``x @ W`` with
one row of ``W`` per category (an ``nn.EmbeddingBag(mode="sum")`` over the one-hot positions, written as a matrix
product so that multi-hot / fractional inputs and input attributions work as well). Several columns in one
modality get their categories' embeddings summed, each column having its own rows of ``W`` (its own block).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from ..registry import ENCODERS
from ._util import as_shape
from .base import Encoder


class CategoricalEncoder(Encoder):
    """(B, K) one-hot blocks -> (B, D): the sum of the active categories' embeddings (``x @ weight``)."""

    output_kind = "vector"

    def __init__(self, num_slots: int, output_dim: int = 16):
        super().__init__()
        if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
            raise ConfigError(f"encoder 'categorical': output_dim must be a positive int, got {output_dim!r}; "
                              "set e.g. output_dim: 16")
        self.num_slots, self.output_dim = int(num_slots), int(output_dim)
        self.weight = nn.Parameter(torch.empty(self.num_slots, self.output_dim))
        nn.init.normal_(self.weight)  # as nn.Embedding

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = x.flatten(1).to(self.weight.dtype)
        if x.shape[1] != self.num_slots:
            raise ShapeError(f"encoder 'categorical': expected {self.num_slots} category slots per sample, got "
                             f"{x.shape[1]}; the table's categorical columns changed since the model was built")
        return x @ self.weight


@ENCODERS.register("categorical", test_options={"input_shape": (6,), "output_dim": 8})
def categorical(input_shape, output_dim: int = 16):
    """Embedding of the ``categorical`` table loader's one-hot blocks (input ``(K,)``) -> output_dim."""
    shape = as_shape(input_shape, "categorical")
    if len(shape) != 1 or shape[0] is None or shape[0] < 1:
        raise ConfigError(f"encoder 'categorical': input_shape must be (K,), the one-hot width the table's "
                          f"categorical loader gives, got {shape}; use it on a modality with loader: categorical")
    return CategoricalEncoder(int(shape[0]), output_dim)
