"""Building big batches of masked copies and bounding their size; the rows' ids of a dataset.

Shape legend: B rows of the original batch, K copies, * a modality's own dims.
"""

from __future__ import annotations

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
