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

The splits of a streamed table (``load_table``) are :class:`SpooledDataset` s: that per-row bookkeeping (paths,
each split's row indices, which are also its ids, targets, presence masks, numeric columns) is written to files
and mapped read-only by a :class:`RowSpool`, and a batch reads it one array at a time, each array's pages
released right after (``madvise(MADV_DONTNEED)``), so it is neither anonymous memory nor resident beyond one
array's pages of one batch; the C heap's free pages are handed back before every batch (:data:`TRIM_EVERY`,
:data:`TRIM_WORKER_EVERY`; :func:`trim_every`). With the chunked sampler of :func:`mmfuse.evaluation.make_loader` (and its
:class:`~mmfuse.evaluation.evaluate.WorkerLoader`, whose workers end with their pass), a streamed training's peak
memory is flat in the number of rows (measured in ``benchmarks/README.md``, table loader (d)).
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .base import ArrayDataset, Gather


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


class RowSpool:
    """The per-row bookkeeping of a streamed table (paths, each split's row indices, targets, presence masks, the
    numbers of numeric columns) in files, mapped read-only, so that it is not anonymous memory of the process.

    :meth:`put` writes an array to a file in a fresh folder (under the table cache's root, else the system's temp
    folder), maps it (``mmap``, read-only, shared: the pages are the page cache's clean pages) and unlinks the
    file as soon as it is mapped (the mapping keeps it until the process ends); :meth:`finish` removes the folder.
    A mapped page counts in the resident set only from the moment it is read: :meth:`take` reads rows of one
    array and at once takes that array's pages out of this process's resident set (``madvise(MADV_DONTNEED)``;
    the data stay in the page cache or on disk, the next read maps them back), :meth:`drop` does it for every
    array. :class:`SpooledDataset` reads a batch array by array through :meth:`take`; single rows read through
    a :class:`StreamColumn` call :meth:`drop` every :data:`DROP_EVERY` rows. So the bookkeeping resident at a
    time is at most one array's pages of one batch, in the main process as in each DataLoader worker (the
    mappings are inherited by fork). The arrays are read-only numpy arrays (a write raises); they pickle as
    ordinary arrays (a copy). Where no folder can be made or written, :meth:`put` returns the array itself (in
    memory, as before).

    Caveats: under a start method other than fork (spawn, forkserver: macOS; Linux from Python 3.14) a DataLoader
    worker or ``compare``'s process pool receives the dataset pickled, i.e. these arrays by value (O(rows) per
    process). When the spool's folder is on a tmpfs (the system temp folder with the cache off, on some systems),
    its pages are shared memory: RAM that ``ru_maxrss`` and ``Pss_Anon`` don't count. On Windows a mapped file
    cannot be deleted: the spool's files stay in its folder (under the cache root the cache's ``remove_stale``
    removes them later; in the temp folder they are left)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.maps: list[mmap.mmap] = []
        self.spans: list[tuple[int, int, mmap.mmap]] = []  # (first, end) address of each mapped array
        self.dir: Path | None = None
        for where in ([root] if root is not None else []) + [None]:
            try:
                if where is not None:
                    Path(where).mkdir(parents=True, exist_ok=True)
                # named as the table cache's writer folders: removed by ColumnCache.remove_stale if this process
                # dies before finish() (only ever an empty folder or the one file being written)
                self.dir = Path(tempfile.mkdtemp(prefix=f".rows.{os.getpid()}.", suffix=".tmp", dir=where))
                break
            except OSError:
                continue
        self._n = 0

    def put(self, array: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(array)
        if self.dir is None or a.nbytes == 0:
            return a
        path = self.dir / f"{self._n}.bin"
        self._n += 1
        try:
            with open(path, "w+b") as f:
                a.tofile(f)
                f.flush()
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # a full disk, a quota: this array stays in memory
            return a
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.maps.append(mm)
        out = np.frombuffer(mm, dtype=a.dtype, count=a.size).reshape(a.shape)
        first = out.__array_interface__["data"][0]
        self.spans.append((first, first + out.nbytes, mm))
        return out

    def mapping(self, a: Any) -> mmap.mmap | None:
        """The mapping holding array ``a`` (a spooled array or a view of one), else None."""
        if not isinstance(a, np.ndarray) or not self.spans:
            return None
        at = a.__array_interface__["data"][0]
        for first, end, mm in self.spans:
            if first <= at < end:
                return mm
        return None

    def take(self, a: Any, idx: np.ndarray) -> np.ndarray:
        """``a[idx]`` (a copy), the pages of ``a``'s mapping read for it then taken out of the resident set at
        once: reading a batch's rows from the spooled arrays one array after the other, at most one array's read
        pages (at most one page per row of the batch) are resident at a time."""
        out = a[idx]
        mm = self.mapping(a)
        if mm is not None and MADV_DONTNEED is not None:
            try:
                mm.madvise(MADV_DONTNEED)
            except (OSError, ValueError):
                pass
        return out

    def __getstate__(self) -> dict:  # a pickled copy (spawned worker, deepcopy) holds its arrays by value
        return {"maps": [], "spans": [], "dir": None, "_n": 0}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def finish(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def drop(self) -> None:
        """Take the mapped pages out of this process's resident set (they are re-read on access)."""
        for mm in self.maps:
            try:
                mm.madvise(MADV_DONTNEED)
            except (OSError, ValueError, AttributeError):
                return


MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
DROP_EVERY = 256  # single rows read through a StreamColumn between two RowSpool.drop calls


class StreamColumn(Gather):
    """Rows ``rows`` of a file column, decoded on access by the fitted ``loader``."""

    def __init__(self, loader: Any, cells: Any, rows: np.ndarray, shape: tuple[int, ...], dtype: Any,
                 csv: bool = False, prefix: str | None = None, spool: RowSpool | None = None):
        self.loader = loader
        self.spool = spool if spool is not None and spool.maps and MADV_DONTNEED is not None else None
        self._reads = 0
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

    def decode_row(self, r: int, cell: bytes | None = None) -> np.ndarray:
        """Row ``r`` of the table decoded (``cell``: its entry of :attr:`cells`, when already read)."""
        if cell is None:
            c = self.path(r)
        else:
            c = os.fsdecode(self.prefix + cell) if cell else None
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
        sp = self.spool
        if sp is not None and np.ndim(idx) == 0:  # single rows: the bookkeeping pages they read leave the
            self._reads += 1                      # resident set every DROP_EVERY rows
            if self._reads >= DROP_EVERY:
                sp.drop()
                self._reads = 0
        if np.ndim(idx) == 0:
            return self.decode_row(int(self.rows[idx]))
        if sp is not None:  # a batch: its row numbers, then its paths, each read and its pages released
            r = sp.take(self.rows, np.asarray(idx, dtype=np.int64).reshape(-1))
            cells = sp.take(self.cells, r)
        else:
            r = np.asarray(self.rows[idx]).reshape(-1)
            cells = None
        out = np.zeros((len(r),) + self.item_shape, dtype=self._dtype)
        for j, rr in enumerate(r.tolist()):
            out[j] = self.decode_row(rr, None if cells is None else cells[j])
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)

    def take(self, indices: np.ndarray) -> "StreamColumn":
        return StreamColumn(self.loader, self.cells, self.rows[np.asarray(indices, dtype=np.int64)],
                            self.item_shape, self._dtype, self.csv, self.prefix, self.spool)


class SpooledGather(Gather):
    """A :class:`~mmfuse.datasets.base.Gather` over a spooled (read-only mapped) bank: a row read is a copy, never
    a view of the mapping (a tensor made from it may be written to)."""

    def __getitem__(self, idx: Any) -> np.ndarray:
        out = super().__getitem__(idx)
        return out if out.flags.writeable else np.array(out)

    def take(self, indices: np.ndarray) -> "SpooledGather":
        return SpooledGather(self.bank, self.rows[np.asarray(indices, dtype=np.int64)], self.scale)


_LIBC: Any = None  # glibc's malloc_trim, or False where there is none: looked up once
# SpooledDataset.batch (and a WorkerLoader's pass) trims the heap once every this many batches: 1 keeps a streamed
# training's peak flat in the row count (8: +3.2 MB from 10k to 100k rows) for page faults that cost no measurable
# CPU on the benchmark's epoch (benchmarks/README.md, table loader (d))
TRIM_EVERY = 1


def _glibc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        import platform
        import sys

        # only Linux with glibc has malloc_trim; ctypes.CDLL(None) raises TypeError on Windows, musl lacks it
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            try:
                import ctypes

                trim = ctypes.CDLL(None).malloc_trim
                trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
                _LIBC = trim
            except Exception:  # noqa: BLE001 - no trimming is always correct
                _LIBC = False
    return _LIBC


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``; a no-op returning False where
    there is no such function: Windows, macOS, musl). Freed memory otherwise stays resident: glibc raises its mmap
    threshold to the largest block freed (a batch's decoded array), so later blocks of that size come from the
    heap, whose free pages are returned only when enough of them sit at its top. The call itself takes ~0.25 ms in
    a fit, but the pages it returns are faulted back in by the next batches: per batch, use :func:`trim_every`.
    (A trim only when glibc's free-byte count grew was tried and measured useless: that count includes free pages
    made resident again by reuse; benchmarks/README.md, table loader (d).)"""
    trim = _glibc()
    if not trim:
        return False
    try:
        trim(0)
    except Exception:  # noqa: BLE001
        return False
    return True


_BATCHES = 0  # batches counted by trim_every in this process since its last trim
TRIM_WORKER_EVERY = 1  # trim_every's period in a DataLoader worker process


def _in_worker() -> bool:
    import sys

    if "torch" not in sys.modules:
        return False
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None


def trim_every(n: int | None = None) -> bool:
    """:func:`trim_heap` once every ``n`` calls (default :data:`TRIM_EVERY`) in this process: one call per batch
    read. Trimming before *each* batch cost ~19 % more process CPU time in a streamed epoch (the pages it returns
    are faulted back in by the next batch); a heap-free-bytes threshold instead (tried, removed) left the
    peak growing with the rows (+2 to +3 MB to the end of training, +10 to +14 MB for the whole ``fit`` from 10k to
    100k rows, ``benchmarks/README.md``): the free bytes don't say which free pages are resident. In a DataLoader
    worker the period is :data:`TRIM_WORKER_EVERY` (1: the faults are the worker's, not the training process's)."""
    global _BATCHES
    _BATCHES += 1
    if n is None:  # a DataLoader worker trims before each batch: its faults are off the training process
        n = TRIM_WORKER_EVERY if _in_worker() else TRIM_EVERY
    if _BATCHES < n:
        return False
    _BATCHES = 0
    return trim_heap()


class SpooledDataset(ArrayDataset):
    """An :class:`~mmfuse.datasets.base.ArrayDataset` whose per-row arrays are in a :class:`RowSpool`:
    :meth:`batch` gives the same batch as ``ArrayDataset.batch`` (same values, dtypes, masks, index), reading each
    array's rows through :meth:`RowSpool.take`, so the spool's pages resident while a batch is read are those of
    one array at a time (not those of every array). Everything else is ``ArrayDataset``'s (``subset`` and
    ``with_present`` give ``ArrayDataset`` views of the same mapped arrays)."""

    spool: RowSpool | None = None

    def batch(self, indices=None):
        sp = self.spool
        if sp is None or indices is None or any(self.shapes[m][0] is None for m in self.modalities):
            return super().batch(indices)
        import torch

        from ..batch import MultimodalBatch

        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            return super().batch(idx)  # its error
        trim_every()  # the previous batches' freed blocks leave the resident set, every TRIM_EVERY batches
        inputs, mask = {}, {}
        for m in self.modalities:
            pres = torch.from_numpy(np.array(sp.take(self.present[m], idx), dtype=bool))
            v = self.arrays[m]
            if isinstance(v, StreamColumn):
                x = v[idx]
            elif isinstance(v, Gather):
                x = sp.take(v.bank, sp.take(v.rows, idx))
                if v.scale is not None:
                    x = x.astype(np.float32) * np.float32(v.scale)
            else:
                x = sp.take(v, idx)
            x = torch.from_numpy(np.ascontiguousarray(x))
            if x.dtype == torch.float64:
                x = x.float()
            if not bool(pres.all()):
                shape = (-1,) + (1,) * (x.dim() - 1)
                x = torch.where(pres.view(shape), x, torch.zeros((), dtype=x.dtype))
            inputs[m], mask[m] = x, pres
        target = torch.from_numpy(np.ascontiguousarray(sp.take(self.targets, idx)))
        return MultimodalBatch(inputs, mask, target, {}, torch.from_numpy(idx.copy()))


def pack_paths(paths: list[Any]) -> tuple[np.ndarray, bytes]:
    """(one ``S`` array of the paths after their common folder prefix, that prefix); None -> ``b""``."""
    from .columns import pack_path_bytes

    return pack_path_bytes([b"" if p is None else os.fsencode(str(p)) for p in paths])
