"""Frozen-embedding cache: a frozen encoder's outputs computed once per split, kept on disk, looked up by row.

A frozen encoder (:func:`mmfuse.encoders.base.is_frozen`: no parameter trains and its forward ignores
training mode, e.g. ``efficientnet_lite0`` / ``sentence_transformer`` / ``hf_auto`` with ``freeze: true``)
gives the same output for a row every epoch, seed and command. :func:`attach_embedding_cache` computes
those outputs once for every split, writes them under ``<mmfuse cache>/embeddings/`` (safetensors, never
pickle) and attaches an :class:`EmbeddingCache` to the model; ``MultimodalModel.encode`` then reads a
batch's embeddings from it instead of running the encoder.

Keys
- a file per (encoder, split): ``embeddings/<encoder key>/<data fingerprint>.safetensors``;
- the encoder key is a SHA-256 of :func:`mmfuse.encoders.base.encoder_identity` (registry name and options,
  class, printed architecture, a SHA-256 of every weight), the torch version, the chunk size and
  :data:`CACHE_VERSION`;
- the data fingerprint is a SHA-256 of the split's row digests, in row order.

Rows are looked up by content: each row of a batch (its bytes, dtype, shape and, for padded sequences, the
valid prefix) has a 128-bit BLAKE2b digest, and the table maps digests to embedding rows. So a batch from
any split, in any order, of any size hits; a row the table does not hold (an explanation's masked or
perturbed input, a new table row) misses, and then the whole batch runs through the encoder as it would
without a cache. Equal rows are computed once (easy-VQA's questions share ~4,000 images).

Identical results: a frozen encoder always runs on fixed chunks of ``FROZEN_CHUNK`` rows
(:func:`mmfuse.encoders.base.frozen_forward`), with or without the cache, so a row's embedding does not
depend on its batch and a cached embedding is the same floats as a fresh one (tested exactly). Absent
modalities stay absent: the cache returns embeddings only; masks are the batch's own.

Scope: the ``feature`` and ``late`` strategies of ``MultimodalModel`` (their encode step), encoders with a
vector output (a sequence output's length is the batch's padding: not cached), float32 training
(``training.precision`` 32). Sequence inputs (token ids) are cached by their valid prefix; their embeddings
equal fresh ones up to the padding length's effect on the encoder's float sums.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ._io import atomic_write
from .encoders.base import FROZEN_CHUNK, encoder_identity, frozen_forward, is_frozen

CACHE_VERSION = 1
DIGEST_BYTES = 16
CACHE_MODES = ("auto", "off")
_READ_ROWS = 512  # rows per ds.batch() call while digesting a split


def row_digests(x: Tensor, lengths: Tensor | None = None) -> list[bytes]:
    """One BLAKE2b digest per row of ``x`` (bytes, dtype, shape; only the first ``lengths[i]`` positions of a
    padded sequence row, so the batch's padding does not change it)."""
    a = x.detach().cpu().contiguous().numpy()
    ln = None if lengths is None or x.dim() < 2 else lengths.detach().cpu().numpy()
    out = []
    for i in range(a.shape[0]):
        row = a[i] if ln is None else a[i, : int(ln[i])]
        h = hashlib.blake2b(digest_size=DIGEST_BYTES)
        h.update(f"{row.dtype.str}|{row.shape}|".encode())
        h.update(np.ascontiguousarray(row).tobytes())
        out.append(h.digest())
    return out


@dataclass
class ModalityTable:
    """Embeddings of one modality's distinct rows: ``embeddings`` Tensor[U, D], ``rows`` digest -> row."""

    encoder_key: str
    embeddings: Tensor
    rows: dict[bytes, int] = field(default_factory=dict)

    def add(self, digests: list[bytes], emb: Tensor) -> None:
        new = [(d, k) for k, d in enumerate(digests) if d not in self.rows]
        if not new:
            return
        base = self.embeddings.shape[0]
        take = torch.tensor([k for _, k in new], dtype=torch.long)
        self.embeddings = torch.cat([self.embeddings, emb.index_select(0, take)]) if base else emb.index_select(0, take)
        for j, (d, _) in enumerate(new):
            self.rows[d] = base + j

    def lookup(self, digests: list[bytes]) -> Tensor | None:
        idx = []
        for d in digests:
            r = self.rows.get(d)
            if r is None:
                return None
            idx.append(r)
        return self.embeddings.index_select(0, torch.tensor(idx, dtype=torch.long))


class EmbeddingCache:
    """Per-modality tables of frozen embeddings; ``lookup(m, x, lengths)`` -> Tensor[B, D] or None (a miss)."""

    def __init__(self) -> None:
        self.tables: dict[str, ModalityTable] = {}
        self.hits = 0
        self.misses = 0
        self.computed_rows = 0  # rows this process ran through an encoder to fill the cache
        self.loaded_files = 0
        self.written_files = 0

    @property
    def modalities(self) -> list[str]:
        return sorted(self.tables)

    def lookup(self, modality: str, x: Tensor, lengths: Tensor | None = None) -> Tensor | None:
        table = self.tables.get(modality)
        if table is None or x.requires_grad:  # a gradient w.r.t. the input needs the encoder itself
            return None
        out = table.lookup(row_digests(x, lengths))
        if out is None:
            self.misses += 1
            return None
        self.hits += 1
        return out.to(x.device)

    def stats(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "hits": self.hits, "misses": self.misses,
                "computed_rows": self.computed_rows, "loaded_files": self.loaded_files,
                "written_files": self.written_files,
                "rows": {m: int(t.embeddings.shape[0]) for m, t in self.tables.items()}}


# -- keys -----------------------------------------------------------------------------------------------------------

def encoder_key(encoder: nn.Module, spec: Mapping | None = None) -> str:
    ident = encoder_identity(encoder, dict(spec) if spec is not None else None)
    ident.update(torch=torch.__version__, chunk=FROZEN_CHUNK, cache_version=CACHE_VERSION)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def embeddings_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    from .datasets.loading import cache_root

    return cache_root(cache_dir) / "embeddings"


_DIGESTS: "weakref.WeakKeyDictionary[Any, dict[str, tuple]]" = weakref.WeakKeyDictionary()


def split_digests(ds, modality: str) -> tuple[list[bytes], str, np.ndarray]:
    """The row digests of ``ds``'s ``modality`` (as its batches collate it), the split's fingerprint and the
    first row of each distinct digest. Remembered per dataset object (datasets are not changed in place)."""
    try:
        memo = _DIGESTS.setdefault(ds, {})
    except TypeError:  # not weak-referenceable: recompute
        memo = {}
    if modality in memo:
        return memo[modality]
    digests: list[bytes] = []
    n = len(ds)
    for s in range(0, n, _READ_ROWS):
        b = ds.batch(np.arange(s, min(n, s + _READ_ROWS)))
        digests += row_digests(b.inputs[modality], b.lengths.get(modality))
    fp = hashlib.sha256(b"".join(digests)).hexdigest()
    first: dict[bytes, int] = {}
    for i, d in enumerate(digests):
        first.setdefault(d, i)
    out = (digests, fp, np.fromiter(first.values(), dtype=np.int64, count=len(first)))
    memo[modality] = out
    return out


# -- files ----------------------------------------------------------------------------------------------------------

def _read(path: Path, key: str) -> tuple[list[bytes], Tensor] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            dig, emb = f.get_tensor("digests"), f.get_tensor("embeddings")
        if meta.get("encoder_key") != key or dig.dim() != 2 or dig.shape[1] != DIGEST_BYTES or dig.shape[0] != emb.shape[0]:
            raise ValueError("its header does not match this encoder")
    except Exception as exc:  # noqa: BLE001 - a damaged cache file is rebuilt, never trusted
        warnings.warn(f"mmfuse: ignoring unreadable embedding cache {path} ({exc}); recomputing it", stacklevel=3)
        return None
    raw = dig.numpy().tobytes()
    return [raw[i * DIGEST_BYTES:(i + 1) * DIGEST_BYTES] for i in range(dig.shape[0])], emb


def _write(path: Path, key: str, digests: list[bytes], emb: Tensor) -> bool:
    from safetensors.torch import save_file

    dig = torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.uint8).reshape(len(digests), DIGEST_BYTES)
    try:
        atomic_write(path, lambda tmp: save_file({"digests": dig, "embeddings": emb.detach().cpu().contiguous()}, tmp,
                                                 metadata={"encoder_key": key, "cache_version": str(CACHE_VERSION)}))
    except OSError as exc:
        warnings.warn(f"mmfuse: could not write embedding cache {path} ({exc}); continuing without the file", stacklevel=3)
        return False
    return True


@torch.no_grad()
def _compute(encoder: nn.Module, ds, modality: str, rows: np.ndarray, batch_rows: int) -> Tensor:
    outs = []
    step = max(FROZEN_CHUNK, (batch_rows // FROZEN_CHUNK) * FROZEN_CHUNK)
    for s in range(0, len(rows), step):
        b = ds.batch(rows[s:s + step])
        outs.append(frozen_forward(encoder, b.inputs[modality], b.lengths.get(modality)))
    return torch.cat(outs)


# -- attaching ------------------------------------------------------------------------------------------------------

def cacheable_models(model: nn.Module) -> list[nn.Module]:
    """The ``MultimodalModel`` parts of ``model`` whose encode step reads the cache (feature / late strategy)."""
    from .models.model import MultimodalModel

    return [m for m in model.modules() if isinstance(m, MultimodalModel) and m.strategy in ("feature", "late")]


def frozen_modalities(model: nn.Module) -> dict[str, nn.Module]:
    """Modality -> frozen encoder, over the cacheable parts of ``model``."""
    out = {}
    for mm in cacheable_models(model):
        for m, enc in mm.encoders.items():
            if is_frozen(enc):
                out[m] = enc
    return out


def attach_embedding_cache(model: nn.Module, datasets: Mapping[str, Any] | Iterable[Any], *,
                           specs: Mapping[str, Any] | None = None, cache_dir: str | os.PathLike | None = None,
                           batch_size: int = 256, write: bool = True) -> EmbeddingCache | None:
    """Fill an :class:`EmbeddingCache` for every frozen encoder of ``model`` over ``datasets`` (the splits; a
    dict or a list) and attach it (``model.embedding_cache``), reading and writing the on-disk files.

    ``specs``: modality -> the encoder's config (registry name and options), part of the key. Returns the
    cache, or None when ``model`` has no frozen encoder it could use. Detach with :func:`detach_embedding_cache`.
    """
    targets = cacheable_models(model)
    frozen = frozen_modalities(model)
    if not targets or not frozen:
        return None
    splits = [d for d in (datasets.values() if isinstance(datasets, Mapping) else datasets) if d is not None and len(d)]
    cache = EmbeddingCache()
    root = embeddings_dir(cache_dir)
    for m, enc in frozen.items():
        spec = specs.get(m) if specs is not None else None
        if spec is not None and hasattr(spec, "model_dump"):
            spec = spec.model_dump(mode="json")
        key = encoder_key(enc, spec)
        table = None
        for ds in splits:
            if m not in getattr(ds, "modalities", [m]):
                continue
            digests, fp, first = split_digests(ds, m)
            path = root / key[:24] / f"{fp[:32]}.safetensors"
            got = _read(path, key) if path.exists() else None
            if got is not None:
                cache.loaded_files += 1
                dig, emb = got
            else:
                emb = _compute(enc, ds, m, first, batch_size)
                dig = [digests[i] for i in first]
                cache.computed_rows += len(first)
                if emb.dim() != 2:  # a sequence output: its length is the batch's padding, not cacheable
                    table = None
                    break
                if write and _write(path, key, dig, emb):
                    cache.written_files += 1
            if table is None:
                table = ModalityTable(key, emb[:0].clone())
            table.add(dig, emb)
        if table is not None:
            cache.tables[m] = table
    if not cache.tables:
        return None
    for mm in targets:
        mm.embedding_cache = cache
    return cache


def detach_embedding_cache(model: nn.Module) -> None:
    for mm in cacheable_models(model):
        mm.__dict__.pop("embedding_cache", None)
