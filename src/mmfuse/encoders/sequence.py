"""Sequence encoders: ``gru``, ``lstm`` and ``transformer``.

Input: token ids (B, T) int64 when ``vocab_size`` is given (or the modality is integer), or
frames (B, T, F) float. ``lengths`` (B,) marks the real positions of padded sequences; without
it, token id ``pad_id`` marks padding for token inputs. Output: (B, D) pooled, or (B, T, D) with
``return_sequence=True`` (``output_kind == "sequence"``; padding positions are zero).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import ConfigError, ShapeError
from ..registry import ENCODERS
from ._util import as_shape, lengths_mask, masked_mean
from .base import Encoder


class _Embed(nn.Module):
    """Token ids -> embeddings, or frames -> linear projection."""

    def __init__(self, vocab_size: int | None, in_features: int | None, dim: int, pad_id: int):
        super().__init__()
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.layer = nn.Embedding(vocab_size, dim, padding_idx=pad_id) if vocab_size else nn.Linear(in_features, dim)

    def forward(self, x: Tensor, name: str) -> Tensor:
        if self.vocab_size:
            if x.dim() != 2 or x.is_floating_point():
                raise ShapeError(f"encoder {name!r}: expected token ids of shape (B, T) and integer dtype, got {tuple(x.shape)} {x.dtype}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
                raise ShapeError(f"encoder {name!r}: token id {int(x.max())} outside the vocabulary [0, {self.vocab_size}); raise vocab_size")
            return self.layer(x)
        if x.dim() != 3:
            raise ShapeError(f"encoder {name!r}: expected frames of shape (B, T, F), got {tuple(x.shape)}")
        return self.layer(x.float())

    def positions(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        if lengths is not None:
            return lengths_mask(lengths, x.shape[0], x.shape[1], x.device)
        if self.vocab_size:
            return x != self.pad_id
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def _inputs(input_shape, vocab_size, name):
    shape = as_shape(input_shape, name)
    if vocab_size is not None:
        if len(shape) != 1:
            raise ConfigError(f"encoder {name!r}: token input must have one sample shape (T,), got {input_shape!r}")
        return None
    if len(shape) != 2 or shape[1] is None:
        raise ConfigError(f"encoder {name!r}: frame input must have one sample shape (T, F); for token ids set vocab_size")
    return shape[1]


class RNNEncoder(Encoder):
    accepts_lengths = True

    def __init__(self, cell: str, vocab_size, in_features, hidden: int = 64, layers: int = 1,
                 bidirectional: bool = False, output_dim: int = 64, pad_id: int = 0, return_sequence: bool = False,
                 embed_dim: int | None = None):
        super().__init__()
        self.name = cell
        self.embed = _Embed(vocab_size, in_features, embed_dim or hidden, pad_id)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(embed_dim or hidden, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.proj = nn.Linear(hidden * (2 if bidirectional else 1), output_dim)
        self.output_dim = int(output_dim)
        self.return_sequence = return_sequence
        self.output_kind = "sequence" if return_sequence else "vector"

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h = self.embed(x, self.name)
        valid = self.embed.positions(x, lengths)
        n = valid.sum(1).clamp_min(1).cpu()  # absent samples (length 0) run over one zero step
        packed = pack_padded_sequence(h, n, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
        if self.return_sequence:
            return self.proj(out) * valid.unsqueeze(-1)
        last = out[torch.arange(out.shape[0]), n.to(out.device) - 1]  # forward direction's last real step
        if self.rnn.bidirectional:
            half = self.rnn.hidden_size
            last = torch.cat([last[:, :half], out[:, 0, half:]], dim=1)
        return self.proj(last)


class TransformerEncoder(Encoder):
    accepts_lengths = True

    def __init__(self, vocab_size, in_features, dim: int = 64, layers: int = 2, heads: int = 4,
                 max_len: int = 512, dropout: float = 0.1, output_dim: int | None = None, pad_id: int = 0,
                 return_sequence: bool = False):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"encoder 'transformer': dim ({dim}) must be divisible by heads ({heads})")
        self.embed = _Embed(vocab_size, in_features, dim, pad_id)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.output_dim = int(output_dim or dim)
        self.proj = nn.Linear(dim, self.output_dim) if self.output_dim != dim else nn.Identity()
        self.max_len, self.return_sequence = max_len, return_sequence
        self.output_kind = "sequence" if return_sequence else "vector"

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.shape[1] > self.max_len:
            raise ShapeError(f"encoder 'transformer': sequence length {x.shape[1]} exceeds max_len {self.max_len}; raise max_len")
        valid = self.embed.positions(x, lengths)
        safe = valid.clone()
        safe[:, 0] |= ~valid.any(1)  # an absent sample attends to one position rather than none (NaN)
        h = self.embed(x, "transformer") + self.pos[:, : x.shape[1]]
        h = self.proj(self.norm(self.body(h, src_key_padding_mask=~safe)))
        if self.return_sequence:
            return h * valid.unsqueeze(-1)
        return masked_mean(h, valid)


def _rnn_factory(cell):
    def factory(input_shape, vocab_size: int | None = None, hidden: int = 64, layers: int = 1,
                bidirectional: bool = False, output_dim: int = 64, pad_id: int = 0, return_sequence: bool = False,
                embed_dim: int | None = None):
        feats = _inputs(input_shape, vocab_size, cell)
        return RNNEncoder(cell, vocab_size, feats, hidden, layers, bidirectional, output_dim, pad_id, return_sequence, embed_dim)

    factory.__name__ = cell
    factory.__doc__ = f"{cell.upper()} over token ids (set vocab_size) or frames (T, F); last real step -> Linear."
    return factory


ENCODERS.register("gru", _rnn_factory("gru"), test_options={"input_shape": (None, 5), "hidden": 8, "output_dim": 8})
ENCODERS.register("lstm", _rnn_factory("lstm"), test_options={"input_shape": (None,), "vocab_size": 30, "hidden": 8, "bidirectional": True, "output_dim": 8})


@ENCODERS.register("transformer", test_options={"input_shape": (None,), "vocab_size": 30, "dim": 16, "heads": 2, "dropout": 0.0, "layers": 1})
def transformer(input_shape, vocab_size: int | None = None, dim: int = 64, layers: int = 2, heads: int = 4,
                max_len: int = 512, dropout: float = 0.1, output_dim: int | None = None, pad_id: int = 0,
                return_sequence: bool = False):
    """Pre-norm Transformer over token ids or frames, masked-mean pooled."""
    feats = _inputs(input_shape, vocab_size, "transformer")
    return TransformerEncoder(vocab_size, feats, dim, layers, heads, max_len, dropout, output_dim, pad_id, return_sequence)
