"""Streaming file columns of a user table: rows decoded on access, for tables larger than memory.

:class:`StreamColumn` is an array-like :class:`~mmfuse.datasets.base.Gather` over a file column: it holds the
checked paths of every row and the *fitted* column loader, and decodes a row (``loader.transform_cell``, the
same code the in-memory loader uses) only when it is indexed, in the process that indexes it (a DataLoader
worker when ``data.num_workers > 0``). Splits are index views (``take``); memory stays bounded by the
batch, whatever the number of rows. The per-row bookkeeping is numpy, not Python objects: the paths are one
bytes array (``S`` dtype, relative to a common prefix; an empty entry = an absent cell) and the row indices an
int64 array, so the per-row cost is a few dozen bytes and a forked DataLoader worker that reads rows touches
no Python object per row (no copy-on-write of the parent's pages by reference counts). A file that fails to decode raises a :class:`~mmfuse.errors.DataError`
naming the row, the column and the file when that row is read.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import DataError
from .base import Gather


def available_memory() -> int:
    """Bytes of RAM available now (``MemAvailable``), else the total."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


class StreamColumn(Gather):
    """Rows ``rows`` of a file column, decoded on access by the fitted ``loader``."""

    def __init__(self, loader: Any, cells: Any, rows: np.ndarray, shape: tuple[int, ...], dtype: Any,
                 csv: bool = False, prefix: str | None = None):
        self.loader = loader
        if prefix is None and hasattr(cells, "prefix"):  # a columns.PathColumn: already packed by the check
            cells, prefix = cells.cells, cells.prefix
        elif prefix is None:  # a list of paths (None = absent): packed into one bytes array
            cells, prefix = pack_paths(cells)
        self.cells = cells
        self.prefix = prefix
        self.rows = np.asarray(rows, dtype=np.int64)
        self.item_shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self.scale = None
        self.csv = csv

    @property
    def bank(self):  # no bank in memory: the files are the bank
        return self

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows),) + self.item_shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def path(self, r: int) -> str | None:
        b = self.cells[r]
        return os.fsdecode(self.prefix + b) if b else None

    def decode_row(self, r: int) -> np.ndarray:
        c = self.path(r)
        if c is None:
            return np.zeros(self.item_shape, dtype=self._dtype)
        ld = self.loader
        where = f"row {r} (line {r + 2})" if self.csv else f"row {r}"
        try:
            v = ld.transform_cell(c)
        except Exception as exc:  # noqa: BLE001 - named by row, column and file
            raise DataError(f"{where}, column {ld.columns[0]!r} (modality {ld.modality!r}): cannot read "
                            f"{ld.loader_name} file {c} ({type(exc).__name__}: {exc}); replace it with a valid "
                            f"{ld.loader_name} file or leave the cell empty (streaming mode decodes files when "
                            "they are read)") from None
        if tuple(v.shape) != self.item_shape:
            raise DataError(f"{where}, column {ld.columns[0]!r} (modality {ld.modality!r}): file {c} decodes to "
                            f"shape {tuple(v.shape)}, the column's fitted shape is {self.item_shape}; fix the file "
                            "(or set the loader's size / max_frames option)")
        return v.astype(self._dtype, copy=False)

    def __getitem__(self, idx: Any) -> np.ndarray:
        r = self.rows[idx]
        if np.ndim(r) == 0:
            return self.decode_row(int(r))
        out = np.zeros((len(r),) + self.item_shape, dtype=self._dtype)
        for j, rr in enumerate(np.asarray(r).reshape(-1)):
            out[j] = self.decode_row(int(rr))
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)

    def take(self, indices: np.ndarray) -> "StreamColumn":
        return StreamColumn(self.loader, self.cells, self.rows[np.asarray(indices, dtype=np.int64)],
                            self.item_shape, self._dtype, self.csv, self.prefix)


def pack_paths(paths: list[Any]) -> tuple[np.ndarray, bytes]:
    """(one ``S`` array of the paths after their common folder prefix, that prefix); None -> ``b""``."""
    from .columns import pack_path_bytes

    return pack_path_bytes([b"" if p is None else os.fsencode(str(p)) for p in paths])
