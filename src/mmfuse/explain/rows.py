"""Building big batches of masked copies and bounding their size; the rows' ids of a dataset.

Shape legend: B rows of the original batch, K copies, * a modality's own dims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..batch import MultimodalBatch
from ..errors import ConfigError

#: Default cap on the rows of one model call, whatever the memory budget allows.
DEFAULT_MAX_ROWS = 512


def rows_per_call(batch: MultimodalBatch, memory_mb: float = 256.0, max_rows: int | None = None) -> int:
    """How many rows one model call may hold: ``memory_mb`` divided by the input bytes of one row.

    The budget covers the stacked *inputs*; activations scale with it, so lower ``memory_mb`` for
    large models. ``max_rows`` (when given) overrides the budget.
    """
    if max_rows is not None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ConfigError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        return max_rows
    if not isinstance(memory_mb, (int, float)) or memory_mb <= 0:
        raise ConfigError(f"memory_mb must be a positive number, got {memory_mb!r}")
    row_bytes = sum(x[:1].numel() * x.element_size() for x in batch.inputs.values()) or 1
    return int(max(1, min(DEFAULT_MAX_ROWS, memory_mb * 2**20 // row_bytes)))


def repeat_batch(batch: MultimodalBatch, k: int) -> MultimodalBatch:
    """K stacked copies of ``batch`` (copy-major: row c·B + b is row b of copy c)."""
    def rep(x: Tensor) -> Tensor:
        return x.repeat((k,) + (1,) * (x.dim() - 1))

    return MultimodalBatch(
        inputs={m: rep(x) for m, x in batch.inputs.items()},
        mask={m: rep(v) for m, v in batch.mask.items()},
        target=None,
        lengths={m: rep(v) for m, v in batch.lengths.items()},
    )


def cat_batches(batches: Sequence[MultimodalBatch]) -> MultimodalBatch:
    """Concatenate batches with the same modalities and per-row shapes along the batch dim."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    return MultimodalBatch(
        inputs={m: torch.cat([b.inputs[m] for b in batches]) for m in first.inputs},
        mask={m: torch.cat([b.mask[m] for b in batches]) for m in first.mask},
        target=None,
        lengths={m: torch.cat([b.lengths[m] for b in batches]) for m in first.lengths},
    )


@dataclass
class SplitRows:
    """N rows to score through a model's explanation split (``model.explain_split()``): each modality's
    *distinct* inputs are stored once and every row points at one of them.

    ``inputs[m]``: Tensor[U_m, *] distinct inputs of modality m, ``lengths[m]``: LongTensor[U_m] (variable-length
    modalities only), ``index[m]``: LongTensor[N] (row r uses ``inputs[m][index[m][r]]``), ``mask[m]``: BoolTensor[N].
    The model encodes U_m rows of modality m instead of N; the rows only repeat the (small) embeddings.
    """

    inputs: dict[str, Tensor]
    lengths: dict[str, Tensor]
    index: dict[str, Tensor]
    mask: dict[str, Tensor]

    @property
    def n_rows(self) -> int:
        return int(next(iter(self.mask.values())).shape[0])

    def row_lengths(self) -> dict[str, Tensor]:
        """LongTensor[N] per variable-length modality."""
        return {m: ln[self.index[m]] for m, ln in self.lengths.items()}

    @staticmethod
    def cat(parts: Sequence["SplitRows"]) -> "SplitRows":
        """Stack the rows of several parts (distinct inputs are concatenated, indices offset)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        index: dict[str, list[Tensor]] = {m: [] for m in first.inputs}
        for m in first.inputs:
            off = 0
            for p in parts:
                index[m].append(p.index[m] + off)
                off += p.inputs[m].shape[0]
        return SplitRows(
            inputs={m: torch.cat([p.inputs[m] for p in parts]) for m in first.inputs},
            lengths={m: torch.cat([p.lengths[m] for p in parts]) for m in first.lengths},
            index={m: torch.cat(v) for m, v in index.items()},
            mask={m: torch.cat([p.mask[m] for p in parts]) for m in first.mask},
        )


def split_coalitions(batch: MultimodalBatch, players: Sequence[str], coalitions: Tensor) -> SplitRows:
    """The rows of :func:`repeat_batch` (K copies, coalition-major) with ``batch.with_mask`` of each coalition
    (BoolTensor[K, M]), as :class:`SplitRows`: a player modality's distinct inputs are the batch's B rows
    plus one absent row (zeros, length 0: what ``with_mask`` gives every switched-off row)."""
    B, K = batch.batch_size, coalitions.shape[0]
    device = next(iter(batch.mask.values())).device
    col = {m: i for i, m in enumerate(players)}
    rows = torch.arange(B, device=device).repeat(K)
    inputs, lengths, index, mask = {}, {}, {}, {}
    for m, x in batch.inputs.items():
        on = batch.mask[m].repeat(K)
        if m in col:
            on = coalitions[:, col[m]].to(device).repeat_interleave(B) & on
        inputs[m] = torch.cat([x, torch.zeros_like(x[:1])])
        index[m] = torch.where(on, rows, torch.full_like(rows, B))
        if m in batch.lengths:
            lengths[m] = torch.cat([batch.lengths[m], torch.zeros_like(batch.lengths[m][:1])])
        mask[m] = on
    return SplitRows(inputs, lengths, index, mask)


def sample_ids(data: Any) -> list[Any] | None:
    """Each sample's identifier in its source, by position in ``data``: a user table's ``id`` column
    (``data.row_ids`` indexed by the row numbers ``data.ids``), else ``data.ids`` (the row number / the
    sample's index in the source dataset); None when ``data`` has no ``ids`` of its own length.

    ``mmfuse predict`` keys its rows with these, and so does explain's ``per_sample.csv``."""
    ids = getattr(data, "ids", None)
    if ids is None:
        return None
    try:
        n = len(data)
    except TypeError:
        return None
    ids = list(ids.tolist() if hasattr(ids, "tolist") else ids)
    if len(ids) != n:
        return None
    rid = getattr(data, "row_ids", None)
    return [rid[int(i)] for i in ids] if rid is not None else ids
