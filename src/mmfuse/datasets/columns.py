"""Column loaders of user tables: fitted transformers in the manner of scikit-learn.

A column loader turns the cells of one modality's column(s) into arrays. It is a registered class
(:data:`mmfuse.registry.COLUMN_LOADERS`) with

* ``Options``: a pydantic model of its schema keys (``extra="forbid"``);
* ``check(cells, row)``: a per-cell check returning the parsed cells (``None`` = empty cell, i.e.
  the modality is absent for that row) and a list of problems naming the row and the column;
* ``fit(cells)``: learns *all* its state from the parsed cells of the training rows only
  (vocabulary, normalisation statistics, image size, feature width, ...);
* ``transform(cells, row)``: the arrays of any rows, using only the fitted state and each row's own
  cell, so a row's value never depends on the other rows of the table;
* ``state_dict()`` / ``load_state(state)``: the fitted state as JSON-able values and numpy arrays
  (saved in a checkpoint as JSON + safetensors, never pickle).

Register a loader of your own with ``@COLUMN_LOADERS.register("name")`` on a :class:`ColumnLoader`
subclass; a schema then uses it with ``loader: name``.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError, DataError
from ..registry import COLUMN_LOADERS

RowFn = Callable[[int], str]


def empty(v: Any) -> bool:
    """Whether a table cell is empty (None, blank string, float NaN, pandas NA)."""
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip() == ""
    if isinstance(v, float) and math.isnan(v):
        return True
    try:
        import pandas as pd

        return bool(pd.isna(v)) if np.ndim(v) == 0 else False
    except (TypeError, ValueError):
        return False


class LoaderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnLoader:
    """Base class; subclasses set ``Options`` and implement ``check_cell`` / ``fit`` / ``transform_cell``."""

    Options: type[BaseModel] = LoaderOptions
    multi_column = False  # reads ``columns: [...]`` (else one ``column``)
    loader_name = "?"

    def __init__(self, modality: str, columns: list[str], options: BaseModel | dict | None = None):
        self.modality = modality
        self.columns = list(columns)
        self.options = options if isinstance(options, BaseModel) else self.Options(**dict(options or {}))
        self.fitted = False
        self.base_dir = Path(".")
        # folders the file cells must resolve inside (None: anywhere); set by load_table from the schema
        self.roots: list[Path] | None = None

    # -- checks
    def where(self, i: int, row: RowFn, col: str | None = None) -> str:
        return f"{row(i)}, column {col or self.columns[0]!r} (modality {self.modality!r})"

    def check(self, cells: list[list[Any]], row: RowFn) -> tuple[list[Any], list[str]]:
        """``cells[j][i]``: column j, row i. Parsed cells (None when absent) and the problems found."""
        n = len(cells[0]) if cells else 0
        parsed, problems = [], []
        for i in range(n):
            raw = [c[i] for c in cells]
            if any(empty(v) for v in raw):
                parsed.append(None)
                continue
            try:
                parsed.append(self.check_cell(raw if self.multi_column else raw[0], i, row, problems))
            except _CellError as exc:
                problems.append(str(exc))
                parsed.append(None)
        return parsed, problems

    def check_cell(self, value: Any, i: int, row: RowFn, problems: list[str]) -> Any:
        return value

    # -- fitting
    def fit(self, cells: list[Any]) -> "ColumnLoader":
        """Learn the state from the parsed, present cells of the training rows."""
        self.fitted = True
        return self

    def transform(self, cells: list[Any], row: RowFn) -> tuple[Any, list[str]]:
        """(array [N, ...] or list of arrays / None, problems) for any rows, from the fitted state."""
        if not self.fitted:
            raise DataError(f"column loader of modality {self.modality!r}: transform before fit")
        out: list[Any] = [None] * len(cells)
        problems: list[str] = []
        shape = self.empty_shape()
        buf: np.ndarray | None = None  # rows written straight into one array when the fitted shape is fixed
        use_buf = shape is not None
        for i, c in enumerate(cells):
            if c is None:
                continue
            try:
                v = self.transform_cell(c)
            except Exception as exc:  # noqa: BLE001 - reported with the row
                problems.append(f"{self.where(i, row)}: decoding {c} failed ({type(exc).__name__}: {exc})")
                continue
            if use_buf and getattr(v, "shape", None) == tuple(shape):
                if buf is None:
                    buf = np.zeros((len(cells),) + tuple(shape), dtype=v.dtype)
                if v.dtype == buf.dtype:
                    buf[i] = v
                    continue
            if buf is not None:  # an odd row: back to a list (assemble decides, as before)
                out = [None if cc is None or j >= i else buf[j] for j, cc in enumerate(cells)]
                buf = None
            use_buf = False
            out[i] = v
        if buf is not None:
            return buf, problems
        return self.assemble(out), problems

    def transform_cell(self, cell: Any) -> np.ndarray:
        raise NotImplementedError

    def assemble(self, values: list[Any]) -> Any:
        """Stack the per-row values (absent rows zero) when they share a shape, else keep the list."""
        return stack_or_list(values, self.empty_shape())

    def empty_shape(self) -> tuple[int, ...] | None:
        """The fixed shape of one value once fitted (None: variable length)."""
        return None

    # -- state
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> "ColumnLoader":
        self.fitted = True
        return self


class _CellError(ValueError):
    pass


def stack_or_list(values: list[Any], shape: tuple[int, ...] | None = None, dtype=np.float32) -> Any:
    shapes = {v.shape for v in values if v is not None}
    if shape is not None and (not shapes or shapes == {tuple(shape)}):
        ref = next((v for v in values if v is not None), None)
        out = np.zeros((len(values),) + tuple(shape), dtype=ref.dtype if ref is not None else dtype)
        for i, v in enumerate(values):
            if v is not None:
                out[i] = v
        return out
    if len(shapes) == 1:
        s = shapes.pop()
        if len(s) >= 1:
            ref = next(v for v in values if v is not None)
            out = np.zeros((len(values),) + s, dtype=ref.dtype)
            for i, v in enumerate(values):
                if v is not None:
                    out[i] = v
            return out
    return list(values)


def _pos(v: Any) -> Any:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
        raise ValueError(f"expected a positive integer, got {v!r}")
    return v


# ---------------------------------------------------------------------- file loaders
class Cell:
    """A checked file cell: its ``path`` (a string), the table ``row`` and the file's ``(size, mtime_ns, ctime_ns,
    inode)`` (the table cache's key)."""

    __slots__ = ("path", "row", "stat")

    def __init__(self, path: str, row: int, stat: tuple[int, int] = (0, 0)):
        self.path, self.row, self.stat = path, row, stat

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Cell({str(self.path)!r}, row={self.row})"


PATH_CHUNK = 4096  # rows per chunk when packing a streamed column's paths


def pack_path_bytes(enc: list[Any]) -> tuple[np.ndarray, bytes]:
    """(one ``S`` array of encoded paths after their common folder prefix, that prefix); None / b"" = absent."""
    present = [e for e in enc if e]
    prefix = os.path.commonprefix(present) if present else b""
    prefix = prefix[:prefix.rfind(os.sep.encode()) + 1]  # whole folders only
    k = len(prefix)
    out = np.array([e[k:] if e else b"" for e in enc], dtype=bytes)
    if out.dtype.itemsize == 0 or not len(out):
        out = np.zeros(len(enc), dtype="S1")
    return out, prefix


class PathColumn:
    """The checked paths of a streamed file column: ``cells`` one ``S`` array of paths after ``prefix`` (``b""``
    = absent); indexing gives the path as a str, or None for an absent cell."""

    __slots__ = ("cells", "prefix")

    def __init__(self, cells: np.ndarray, prefix: bytes):
        self.cells, self.prefix = cells, prefix

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, i: int) -> str | None:
        b = self.cells[i]
        return os.fsdecode(self.prefix + b) if b else None

    def __setitem__(self, i: int, v: Any) -> None:
        if v is not None:
            raise TypeError("PathColumn: only None (an absent cell) can be assigned")
        self.cells[i] = b""

    def __iter__(self):
        pre, dec = self.prefix, os.fsdecode
        for b in self.cells:
            yield dec(pre + b) if b else None

    def present(self) -> np.ndarray:
        return self.cells != b""


class RowsColumn:
    """Checked cells as one array ``values[N, ...]`` and a ``present`` mask: indexing gives a row, or None for
    an absent / invalid cell (what a list of parsed cells gives), without one Python object per row."""

    __slots__ = ("values", "_present")

    def __init__(self, values: np.ndarray, present: np.ndarray):
        self.values, self._present = values, np.asarray(present, dtype=bool)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> Any:
        return self.values[i] if self._present[i] else None

    def __setitem__(self, i: int, v: Any) -> None:
        if v is None:
            self._present[i] = False
        else:
            self.values[i], self._present[i] = v, True

    def __iter__(self):
        for i in range(len(self.values)):
            yield self[i]

    def present(self) -> np.ndarray:
        return self._present


def cell_path(c: Any) -> Any:
    """A parsed file cell's path (a str or Path; both open alike)."""
    return c.path if isinstance(c, Cell) else c


class ColumnData:
    """A file column decoded once (before fitting): ``fixed`` one array ``[N, *shape]``; ``ragged`` a flat
    array + ``offsets`` (row i = ``flat[offsets[i]:offsets[i+1]]``); ``list`` one value per row. ``present``:
    the rows holding a value. ``extra``: rows kept aside (e.g. images of another size, resized after fitting)."""

    def __init__(self, kind: str, n: int, values: Any = None, offsets: np.ndarray | None = None,
                 present: np.ndarray | None = None, meta: dict | None = None):
        self.kind, self.n, self.values, self.offsets = kind, n, values, offsets
        self.present = np.zeros(n, dtype=bool) if present is None else np.asarray(present, dtype=bool)
        self.meta = dict(meta or {})
        self.extra: dict[int, Any] = {}

    def get(self, i: int) -> Any:
        if i in self.extra:
            return self.extra[i]
        if not self.present[i]:
            return None
        if self.kind == "fixed":
            return np.asarray(self.values[i])
        if self.kind == "ragged":
            return np.asarray(self.values[int(self.offsets[i]):int(self.offsets[i + 1])])
        return self.values[i]

    @classmethod
    def pack(cls, values: list[Any]) -> "ColumnData":
        """One array when every value shares shape and dtype, flat + offsets when only the first axis varies."""
        n = len(values)
        present = np.array([v is not None for v in values], dtype=bool)
        vals = [v for v in values if v is not None]
        if not vals:
            return cls("list", n, list(values), present=present)
        dtypes = {v.dtype for v in vals}
        shapes = {v.shape for v in vals}
        if len(dtypes) == 1 and len(shapes) == 1:
            out = np.zeros((n,) + vals[0].shape, dtype=vals[0].dtype)
            for i, v in enumerate(values):
                if v is not None:
                    out[i] = v
            return cls("fixed", n, out, present=present)
        if len(dtypes) == 1 and all(v.ndim >= 1 for v in vals) and len({s[1:] for s in shapes}) == 1:
            lens = np.array([0 if v is None else len(v) for v in values], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            return cls("ragged", n, np.concatenate(vals, axis=0), offsets, present)
        return cls("list", n, list(values), present=present)

    def cacheable(self) -> bool:
        return self.kind in ("fixed", "ragged") and not self.extra

    def save(self, writer: Any) -> None:
        if "values" not in writer.maps:
            writer.put("values", self.values)
        if self.kind == "ragged":
            writer.put("offsets", self.offsets)
        writer.put("present", self.present)

    @classmethod
    def from_cache(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "ColumnData":
        present = np.asarray(arrays["present"], dtype=bool)
        return cls(meta["kind"], len(present), arrays["values"], arrays.get("offsets"), present, meta)


class FileLoader(ColumnLoader):
    """A column of file paths. Checking decodes each file once (``decode``, independent of the fitted state),
    catching decode errors by row in that same pass; ``fit`` / ``transform`` then use the decoded values.
    ``check_mode = "header"`` only reads each file's header (streaming: rows are decoded on access)."""

    header: Callable[[Path], Any] = staticmethod(lambda p: None)
    check_mode = "decode"
    cache: Any = None  # a table_cache.ColumnCache, set by load_table (None: no on-disk cache)
    data: ColumnData | None = None

    def resolve(self, value, i, row) -> Path:
        return Path(self.resolve_stat(value, i, row)[0])

    def resolve_stat(self, value, i, row) -> tuple[str, os.stat_result]:
        """The checked path of a cell and its ``stat``: one ``lstat`` per file. The confinement to the data roots
        is decided once per folder (its real path, ``..`` and symlinked folders resolved, is cached with the
        verdict); only a file that is itself a symlink gets its own ``realpath``."""
        s = str(value).strip()
        if s.startswith("~"):
            s = os.path.expanduser(s)
        base = self.__dict__.get("_base_str")
        if base is None or self.__dict__.get("_base_of") is not self.base_dir:
            base = self._base_str = str(self.base_dir)
            self._base_of = self.base_dir
            self._dirs = {}
        if self.__dict__.get("_dirs_of") is not self.roots:
            self._dirs, self._dirs_of = {}, self.roots
        full = s if s.startswith(os.sep) else (base.rstrip(os.sep) + os.sep + s if base else s)
        try:
            st = os.lstat(full)
        except OSError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(full)
            except OSError:
                st = None
            if self.roots is not None:
                self._confine(os.path.realpath(full), value, i, row)
        elif self.roots is not None:
            d, _, name = full.rpartition(os.sep)
            d = d or os.sep
            hit = self._dirs.get(d)
            if hit is None:  # once per folder
                real = os.path.realpath(d).rstrip(os.sep) + os.sep
                hit = self._dirs[d] = (real, self._inside(real.rstrip(os.sep) or os.sep))
            if not hit[1] or name in ("..", "."):
                self._confine(os.path.realpath(full), value, i, row)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise _CellError(f"{self.where(i, row)}: file {str(value)!r} not found (looked for {Path(full)}); fix the "
                             "path (relative to the data root) or leave the cell empty if the modality is absent")
        return full, st

    def _inside(self, real: str) -> bool:
        roots = self.__dict__.get("_root_strs")
        if roots is None or self.__dict__.get("_roots_of") is not self.roots:
            roots = self._root_strs = [(str(r), str(r).rstrip(os.sep) + os.sep) for r in self.roots]
            self._roots_of = self.roots
        return any(real == r or real.startswith(pre) for r, pre in roots)

    def _confine(self, real: str, value, i, row) -> None:
        if not self._inside(real):
            raise _CellError(f"{self.where(i, row)}: path {str(value)!r} resolves to {real}, outside the data root "
                             f"{self.roots[0]} (the schema's folder); move the file under it, or set "
                             "`allow_outside_root: true` in the schema if files outside are intended")

    def read_error(self, i: int, row: RowFn, p: Path, exc: BaseException) -> str:
        why = ("it holds pickled (object) data or is not an .npy file, which is never loaded"
               if "pickle" in str(exc) else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return (f"{self.where(i, row)}: cannot read {self.loader_name} file {p} ({why}); replace it "
                f"with a valid {self.loader_name} file (or leave the cell empty if the modality is absent)")

    def check_cell(self, value, i, row, problems):
        p = self.resolve_stat(value, i, row)[0]  # a str: the parsed cells of a streamed column stay small
        try:
            h = type(self).header(p)
        except Exception as exc:  # noqa: BLE001
            raise _CellError(self.read_error(i, row, p, exc)) from None
        self.store_header(i, h)
        return p

    def begin_headers(self, n: int) -> None:
        """Called before the header checks of ``n`` rows (streaming): where :meth:`store_header` keeps them."""

    def store_header(self, i: int, h: Any) -> None:
        """Keep row i's header (streaming); ``None`` headers (nothing learned from them) are not kept."""
        if h is not None:
            self.headers[i] = h

    def check_headers(self, cells, row) -> tuple["PathColumn", list[str]]:
        """Streaming check: each file's path and header, in chunks of rows packed straight into one numpy bytes
        array (:class:`PathColumn`), so the transient memory is one chunk of Python objects, not one per row."""
        col = cells[0] if cells else []
        n = len(col)
        self.begin_headers(n)
        problems: list[str] = []
        base = str(self.base_dir).rstrip(os.sep)
        pre = os.fsencode(base + os.sep) if base else b""
        k = len(pre)
        chunks: list[np.ndarray] = []
        buf: list[bytes] = []
        odd: dict[int, bytes] = {}  # checked paths outside the table's folder (absolute, ~): rare
        for i in range(n):
            v = col[i]
            if not empty(v):
                try:
                    e = os.fsencode(self.check_cell(v, i, row, problems))
                    if k and e.startswith(pre):
                        buf.append(e[k:])
                    else:
                        odd[i] = e
                        buf.append(b"")
                except _CellError as exc:
                    problems.append(str(exc))
                    buf.append(b"")
            else:
                buf.append(b"")
            if len(buf) >= PATH_CHUNK:
                chunks.append(np.array(buf, dtype="S"))
                buf = []
        if buf or not chunks:
            chunks.append(np.array(buf or [b""][:0], dtype="S"))
        arr = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        del chunks
        if odd:  # a common prefix over every path (one list, only in this rare case)
            full = [odd.get(i) or (pre + b if b else None) for i, b in enumerate(arr.tolist())]
            arr, prefix = pack_path_bytes(full)
        else:
            prefix = pre
        if arr.dtype.itemsize == 0:
            arr = np.zeros(n, dtype="S1")
        return PathColumn(arr, prefix), problems

    def check(self, cells, row):
        self.headers: dict[int, Any] = {}
        self.data = None
        if self.check_mode != "decode":
            return self.check_headers(cells, row)
        n = len(cells[0]) if cells else 0
        parsed: list[Any] = []
        problems: list[str] = []
        col = cells[0] if cells else []
        # fast path of resolve_stat for the common cell (a relative path, a regular file in an already-checked
        # folder): one lstat and a dict look-up per row; anything else goes through resolve_stat
        base = str(self.base_dir).rstrip(os.sep)
        prefix = base + os.sep if base else ""
        if self.__dict__.get("_dirs_of") is not self.roots or self.__dict__.get("_base_of") is not self.base_dir:
            self._dirs, self._dirs_of = {}, self.roots
            self._base_str, self._base_of = str(self.base_dir), self.base_dir
        dirs, lstat, isreg, sep, confined = self._dirs, os.lstat, stat.S_ISREG, os.sep, self.roots is not None
        append = parsed.append
        for i in range(n):
            v = col[i]
            if isinstance(v, str):
                t = v.strip()
                if not t:
                    append(None)
                    continue
                if t[0] not in "~" + sep:
                    full = prefix + t
                    d, _, name = full.rpartition(sep)
                    ok = dirs.get(d) if confined else (None, True)
                    if ok is not None and ok[1] and name not in ("..", "."):
                        try:
                            st = lstat(full)
                        except OSError:
                            st = None
                        if st is not None and isreg(st.st_mode):
                            append(Cell(full, i, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)))
                            continue
            elif empty(v):
                append(None)
                continue
            try:
                p, st = self.resolve_stat(v, i, row)
                append(Cell(p, i, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)))
            except _CellError as exc:
                problems.append(str(exc))
                append(None)
        cache = self.cache if not problems else None
        key = None
        if cache is not None:
            key = cache.key(self, parsed, self.decode_params())
            hit = cache.load(key)
            if hit is not None:
                self.data = ColumnData.from_cache(*hit)
                self.after_decode(parsed)
                return parsed, problems
        writer = cache.writer(key) if cache is not None else None
        try:
            self.data = self.decode_all(parsed, row, problems, writer)
            if writer is not None and not problems and self.data.cacheable():
                self.data.meta["kind"] = self.data.kind
                self.data.save(writer)
                hit = writer.commit(self.data.meta)
                if hit is not None:
                    self.data = ColumnData.from_cache(*hit)
            elif writer is not None:
                writer.abort()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        self.after_decode(parsed)
        return parsed, problems

    def decode_params(self) -> dict[str, Any]:
        """What the decoded values depend on besides the files and the options (part of the cache key)."""
        return {}

    def decode(self, path: Path) -> Any:
        raise NotImplementedError

    def decode_one(self, path: Path) -> Any:
        """One file decoded (used to estimate a column's decoded size)."""
        return self.decode(path)

    def decode_all(self, parsed: list[Any], row: RowFn, problems: list[str], writer: Any) -> ColumnData:
        values: list[Any] = [None] * len(parsed)
        for i, c in enumerate(parsed):
            if c is None:
                continue
            try:
                values[i] = self.decode(c.path)
            except Exception as exc:  # noqa: BLE001 - reported with the row, column and file
                problems.append(self.read_error(i, row, c.path, exc))
                parsed[i] = None
        return ColumnData.pack(values)

    def after_decode(self, parsed: list[Any]) -> None:
        """Hook run once the column is decoded (or read from the cache)."""

    def decoded(self, c: Any) -> Any:
        """The decoded value of a parsed cell (None when it was not decoded in this check)."""
        if isinstance(c, Cell) and self.data is not None and c.row < self.data.n:
            return self.data.get(c.row)
        return None

    def release(self) -> None:
        """Drop the decoded values (called once the column's arrays are built)."""
        self.data = None


def _image_header(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        size = im.size
        im.verify()
    return size


class ImageOptions(LoaderOptions):
    size: Optional[list[int]] = None
    channels: Literal[1, 3] = 3

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v):
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v, v]
        if v is not None and not (isinstance(v, (list, tuple)) and len(v) == 2
                                  and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in v)):
            raise ValueError(f"size: expected [height, width] (two positive integers), got {v!r}")
        return v


@COLUMN_LOADERS.register("image")
class ImageLoader(FileLoader):
    """Pillow images -> float32 ``(channels, height, width)`` in [0, 1]; fits the size (when not given)."""

    Options = ImageOptions
    loader_name = "image"
    header = staticmethod(_image_header)

    def _channels(self) -> int:
        return int(self.channels) if self.fitted else int(self.options.channels)

    def _target(self) -> tuple[int, int] | None:
        """The (height, width) files are decoded to: the option, the fitted size, else each file's own."""
        if self.options.size is not None:
            return tuple(self.options.size)
        if self.fitted and getattr(self, "size", None) is not None:
            return tuple(self.size)
        return None

    def decode_params(self):
        return {"size": self._target(), "channels": self._channels()}

    def decode_all(self, parsed, row, problems, writer):
        """Each image opened once and decoded straight into one preallocated array (a memory map when cached)."""
        from PIL import Image

        n, ch = len(parsed), self._channels()
        mode = "L" if ch == 1 else "RGB"
        target = self._target()
        data = ColumnData("fixed", n)
        buf = ref = None
        scale = np.float32(255.0)
        for i, c in enumerate(parsed):
            if c is None:
                continue
            try:
                with Image.open(c.path) as im:
                    native = im.size
                    if im.mode != mode:
                        im = im.convert(mode)
                    hw = target if target is not None else (native[1], native[0])
                    if buf is None:
                        ref = hw
                        shape = (n, ch) + tuple(hw)
                        buf = writer.alloc("values", shape, np.float32) if writer is not None else \
                            np.zeros(shape, dtype=np.float32)
                        data.values = buf
                        data.meta["native"] = list(ref)
                    if hw != ref:  # another size, no size option: resized once the size is fitted
                        data.extra[i] = (np.asarray(im).copy(), native)
                        data.present[i] = True
                        continue
                    if im.size != (hw[1], hw[0]):
                        im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
                    arr = np.asarray(im)  # uint8 (H, W[, C]): no float32 temporary
                # uint8 -> float32 cast in the ufunc's buffer, then / 255 in float32: bit for bit the values of
                # np.asarray(im, dtype=float32) / 255 (a multiply by 1/255 would differ in the last bit)
                np.divide(arr[None] if ch == 1 else arr.transpose(2, 0, 1), scale, out=buf[i], casting="unsafe")
                data.present[i] = True
            except Exception as exc:  # noqa: BLE001 - reported with the row, column and file
                problems.append(self.read_error(i, row, c.path, exc))
                parsed[i] = None
        if buf is None:
            data = ColumnData("list", n, [None] * n)
        return data

    def decode_one(self, path):
        from PIL import Image

        target = self._target()
        with Image.open(path) as im:
            im = im.convert("L" if self._channels() == 1 else "RGB")
            if target is not None and im.size != (target[1], target[0]):
                im = im.resize((target[1], target[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.float32)

    def _native(self, c) -> tuple[int, int]:
        """(width, height) of a training image, from the decode pass when there was one."""
        d = self.data
        if isinstance(c, Cell) and d is not None and c.row < d.n:
            if c.row in d.extra:
                return d.extra[c.row][1]
            if d.kind == "fixed" and "native" in d.meta:
                return (int(d.meta["native"][1]), int(d.meta["native"][0]))
        from PIL import Image

        with Image.open(cell_path(c)) as im:
            return im.size

    def begin_headers(self, n):
        # streaming: each row's (width, height) from its header check, kept as one int32 array (-1: no header)
        self.header_sizes = np.full((n, 2), -1, dtype=np.int32)

    def store_header(self, i, h):
        self.header_sizes[i] = h

    def fit_rows(self, checked: Any, rows: np.ndarray) -> "ImageLoader":
        """Fit on the training rows ``rows`` (a boolean mask) of the checked cells from the sizes read by the
        header check (streaming: no file is reopened); after a decoding check, as :meth:`fit`."""
        hs = getattr(self, "header_sizes", None)
        if self.options.size is not None:
            return self._fit_sizes(None)
        if self.check_mode == "decode" or hs is None or len(hs) != len(checked):
            return self.fit([c for c, tr in zip(checked, rows) if tr and c is not None])
        sel = hs[np.asarray(rows, dtype=bool) & checked.present() & (hs[:, 0] >= 0)]
        return self._fit_sizes({(int(w), int(h)) for w, h in np.unique(sel, axis=0).tolist()} if len(sel) else set())

    def fit(self, cells):
        return self._fit_sizes(None if self.options.size is not None else {self._native(c) for c in cells})

    def _fit_sizes(self, sizes):
        o = self.options
        if o.size is not None:
            self.size = list(o.size)
        else:
            if len(sizes) > 1:
                raise DataError(f"modalities.{self.modality}: training images of column {self.columns[0]!r} have "
                                f"different sizes {sorted(sizes)[:5]}; set 'size: [height, width]' to resize them")
            self.size = None
            if sizes:
                w, h = sizes.pop()
                self.size = [h, w]
        self.channels = int(o.channels)
        self.fitted = True
        return self

    def transform(self, cells, row):
        d = self.data
        want = self.empty_shape()
        if (d is not None and d.kind == "fixed" and want is not None and len(cells) == d.n
                and tuple(d.values.shape[1:]) == tuple(want)
                and all(c is None or (isinstance(c, Cell) and c.row == i) for i, c in enumerate(cells))):
            from PIL import Image

            out = d.values  # decoded in place: no copy
            for i, (u8, _) in d.extra.items():
                im = Image.fromarray(u8).resize((want[2], want[1]), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
                out[i] = arr[None] if self.channels == 1 else arr.transpose(2, 0, 1)
            return out, []
        return super().transform(cells, row)

    def transform_cell(self, path):
        from PIL import Image

        h, w = self.size if self.size is not None else (None, None)
        mode = "L" if self.channels == 1 else "RGB"
        with Image.open(cell_path(path)) as im:
            if im.mode != mode:
                im = im.convert(mode)
            if h is not None and im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im)
        out = np.empty((self.channels,) + arr.shape[:2], dtype=np.float32)
        np.divide(arr[None] if self.channels == 1 else arr.transpose(2, 0, 1), np.float32(255.0), out=out,
                  casting="unsafe")
        return out

    def empty_shape(self):
        return None if self.size is None else (self.channels, *self.size)

    def state_dict(self):
        return {"size": self.size, "channels": self.channels}

    def load_state(self, state):
        self.size = None if state["size"] is None else [int(s) for s in state["size"]]
        self.channels = int(state["channels"])
        self.fitted = True
        return self


def _audio_header(path: Path) -> None:
    import soundfile as sf

    info = sf.info(str(path))
    if info.frames <= 0:
        raise ValueError("the file holds no audio samples")


class AudioOptions(LoaderOptions):
    features: Literal["mfcc", "log_mel"] = "mfcc"
    n_mfcc: int = 13
    n_mels: int = 40
    sample_rate: Optional[int] = 16000
    max_frames: Optional[int] = 100
    normalize: bool = True

    _pos = field_validator("n_mfcc", "n_mels", "sample_rate", "max_frames")(classmethod(lambda cls, v: _pos(v)))

    @model_validator(mode="after")
    def _mfcc_le_mels(self):
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc: n_mfcc ({self.n_mfcc}) cannot exceed n_mels ({self.n_mels})")
        return self


@COLUMN_LOADERS.register("audio")
class AudioLoader(FileLoader):
    """wav / flac / ogg -> float32 ``(frames, features)``; fits the sample rate and the per-feature mean / std."""

    Options = AudioOptions
    loader_name = "audio"
    header = staticmethod(_audio_header)

    def _features(self, path: Path) -> np.ndarray:
        import soundfile as sf

        from .audio import log_mel, mfcc, resample, to_mono

        data, sr = sf.read(str(cell_path(path)), dtype="float64", always_2d=False)
        x, sr = resample(to_mono(data), int(sr), self.sample_rate if self.fitted else self.options.sample_rate)
        if not np.isfinite(x).all():
            raise ValueError("the signal contains NaN or infinite samples")
        o = self.options
        if o.features == "mfcc":
            return mfcc(x, sr, n_mfcc=int(o.n_mfcc), n_mels=int(o.n_mels))
        return log_mel(x, sr, n_mels=int(o.n_mels))

    def fit(self, cells):
        o = self.options
        self.sample_rate = o.sample_rate
        self.n_features = int(o.n_mfcc if o.features == "mfcc" else o.n_mels)
        self.max_frames = o.max_frames
        self.mean = self.std = None
        if o.normalize and self.check_mode == "header":  # streaming: one pass, merged per-file moments
            count, mean, m2 = 0, None, None
            for p in cells:
                try:
                    a = np.asarray(self._features(p), dtype=np.float64)
                except Exception:  # noqa: BLE001 - reported when the row is read
                    continue
                k = len(a)
                if k == 0:
                    continue
                am = a.mean(axis=0)
                a2 = ((a - am) ** 2).sum(axis=0)
                if mean is None:
                    count, mean, m2 = k, am, a2
                else:
                    d = am - mean
                    tot = count + k
                    mean = mean + d * (k / tot)
                    m2 = m2 + a2 + d * d * (count * k / tot)
                    count = tot
            if mean is not None:
                self.mean = mean.astype(np.float32)
                std = np.sqrt(m2 / count).astype(np.float32)
                self.std = np.where(std > 1e-8, std, 1.0)
        elif o.normalize:
            frames = []
            for p in cells:
                a = self.decoded(p)
                if a is not None:
                    frames.append(a)
                    continue
                try:
                    frames.append(self._features(p))
                except Exception:  # noqa: BLE001 - reported by transform with its row
                    continue
            if frames:
                stacked = np.concatenate(frames, axis=0)
                self.mean = stacked.mean(axis=0)
                std = stacked.std(axis=0)
                self.std = np.where(std > 1e-8, std, 1.0)
        self.fitted = True
        return self

    def decode(self, path):
        return self._features(path)

    def transform_cell(self, path):
        a = self.decoded(path)
        a = self._features(path) if a is None else a
        if self.mean is not None:
            a = ((a - self.mean) / self.std).astype(np.float32)
        if self.max_frames is not None:
            frames = int(self.max_frames)
            if len(a) >= frames:
                a = a[:frames]
            else:
                out = np.zeros((frames,) + a.shape[1:], dtype=a.dtype)
                out[: len(a)] = a
                a = out
        return a

    def transform(self, cells, row):
        """Fixed ``max_frames``: every row normalised straight into one preallocated output (float64 arithmetic
        per row, cast on store: the values of :meth:`transform_cell`), no per-row arrays and no stacking copy."""
        if not self.fitted:
            raise DataError(f"column loader of modality {self.modality!r}: transform before fit")
        if self.max_frames is None:
            return super().transform(cells, row)
        F = int(self.max_frames)
        out = None
        problems: list[str] = []
        for i, c in enumerate(cells):
            if c is None:
                continue
            try:
                a = self.decoded(c)
                a = self._features(c) if a is None else a
            except Exception as exc:  # noqa: BLE001 - reported with the row
                problems.append(f"{self.where(i, row)}: decoding {c} failed ({type(exc).__name__}: {exc})")
                continue
            if out is None:
                dt = np.float32 if self.mean is not None else a.dtype
                out = np.zeros((len(cells), F) + a.shape[1:], dtype=dt)
            k = min(len(a), F)
            if self.mean is not None:
                np.divide(np.subtract(a[:k], self.mean), self.std, out=out[i, :k], casting="same_kind")
            else:
                out[i, :k] = a[:k]
        if out is None:
            out = np.zeros((len(cells),) + self.empty_shape(), dtype=np.float32)
        return out, problems

    def assemble(self, values):
        if self.max_frames is None:
            return list(values)
        return stack_or_list(values, self.empty_shape())

    def empty_shape(self):
        return None if self.max_frames is None else (int(self.max_frames), self.n_features)

    def state_dict(self):
        s = {"sample_rate": self.sample_rate, "n_features": self.n_features, "max_frames": self.max_frames,
             "features": self.options.features}
        if self.mean is not None:
            s.update(mean=np.asarray(self.mean), std=np.asarray(self.std))
        return s

    def load_state(self, state):
        self.sample_rate = state["sample_rate"]
        self.n_features = int(state["n_features"])
        self.max_frames = state["max_frames"]
        self.mean = None if state.get("mean") is None else np.asarray(state["mean"])
        self.std = None if state.get("std") is None else np.asarray(state["std"])
        self.fitted = True
        return self


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        raise ValueError("not a single .npy array (an .npz archive?)")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"dtype {arr.dtype} is not numeric")
    return tuple(arr.shape) or (1,), arr.dtype


@COLUMN_LOADERS.register("npy")
class NpyLoader(FileLoader):
    """``np.load(path, allow_pickle=False)``; fits the shape (all axes but the first must match it)."""

    loader_name = "npy"
    header = staticmethod(_npy_header)
    ref_shape: tuple[int, ...] | None = None

    def check(self, cells, row):
        parsed, problems = super().check(cells, row)
        ref = (None, tuple(self.ref_shape)) if self.fitted and self.ref_shape is not None else next(
            ((i, h[0]) for i, h in sorted(self.headers.items()) if h is not None), None)
        if ref is not None:
            ref_i, ref_shape = ref
            for i, h in sorted(self.headers.items()):
                shape = h[0]
                if len(shape) != len(ref_shape) or shape[1:] != ref_shape[1:]:
                    against = f"shape {ref_shape} of {row(ref_i)}" if ref_i is not None else \
                        f"the shape {ref_shape} learned in training"
                    problems.append(f"{self.where(i, row)}: array of shape {shape} does not match {against}; "
                                    f"re-save it with shape {ref_shape} (only the first axis may differ)")
                    parsed[i] = None
        return parsed, problems

    out_dtype: str | None = None  # "float32" | "int64", learned in fit (saved with the pipeline)

    @staticmethod
    def _out_dtype(dtype: np.dtype) -> str:
        return "int64" if dtype.kind in "iu" else "float32"

    def decode(self, path):
        arr = np.load(path, allow_pickle=False)
        if not isinstance(arr, np.ndarray):
            arr.close()
            raise ValueError("not a single .npy array (an .npz archive?)")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"dtype {arr.dtype} is not numeric")
        return arr

    def decode_params(self):
        return {"bank": "out-dtype-1", "dtype": self.out_dtype if self.fitted else None}

    def decode_all(self, parsed, row, problems, writer):
        """Fixed-shape files read straight into one preallocated bank (a memory map when cached) in the column's
        output dtype (float32, or int64 for integer files): the header is parsed, the data ``readinto`` the
        bank's row, so no per-file array and no stacking copy. A file of another shape (variable first axis) or
        an integer file after float ones... switches the column back to the per-file path (``pack``)."""
        n = len(parsed)
        data = ColumnData("fixed", n)
        buf = None
        for i, c in enumerate(parsed):
            if c is None:
                continue
            try:
                if buf is None:
                    a = self.decode(c.path)
                    want = np.dtype(self.out_dtype or ("float32" if a.dtype.kind in "fb" else "int64"))
                    if want.kind in "iu" and a.dtype.kind in "fb":
                        raise ValueError(f"holds floats ({a.dtype}) but the column was fitted on integer arrays "
                                         "(int64); save the file with an integer dtype")
                    shape = (n,) + (tuple(a.shape) or (1,))
                    buf = writer.alloc("values", shape, want) if writer is not None else np.zeros(shape, want)
                    data.values = buf
                    self._put(buf, i, a)
                elif not self._read_into(c.path, buf, i):
                    a = self.decode(c.path)
                    if (tuple(a.shape) or (1,)) != buf.shape[1:] or (buf.dtype.kind in "iu" and a.dtype.kind in "fb"):
                        return self._fallback(parsed, row, problems, data, i, writer)
                    self._put(buf, i, a)
                data.present[i] = True
            except Exception as exc:  # noqa: BLE001 - reported with the row, column and file
                problems.append(self.read_error(i, row, c.path, exc))
                parsed[i] = None
        if buf is None:
            return ColumnData("list", n, [None] * n)
        return data

    @staticmethod
    def _put(buf, i, a):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError("contains NaN or infinite values")
        buf[i] = a.reshape(buf.shape[1:])

    @staticmethod
    def _read_into(path, buf, i) -> bool:
        """Read a C-ordered .npy of ``buf``'s row dtype and shape straight into ``buf[i]`` (False: not that kind)."""
        fmt = np.lib.format
        with open(path, "rb") as f:
            try:
                major, _ = fmt.read_magic(f)
                if major == 1:
                    shape, fortran, dtype = fmt.read_array_header_1_0(f)
                elif major == 2:
                    shape, fortran, dtype = fmt.read_array_header_2_0(f)
                else:
                    return False
            except ValueError:
                return False
            if fortran or dtype != buf.dtype or (tuple(shape) or (1,)) != buf.shape[1:] or dtype.hasobject:
                return False
            dst = buf[i]
            view = memoryview(dst.reshape(-1).view(np.uint8))
            got = f.readinto(view)
            if got != dst.nbytes:
                raise ValueError(f"the file is truncated ({got} of {dst.nbytes} data bytes)")
        if buf.dtype.kind == "f" and not np.isfinite(dst).all():
            raise ValueError("contains NaN or infinite values")
        return True

    def _fallback(self, parsed, row, problems, data, upto, writer):
        """Rows of different shapes / kinds: the per-file values (the bank's rows so far, then each file)."""
        values: list[Any] = [None] * len(parsed)
        for j in range(upto):
            if data.present[j]:
                values[j] = np.array(data.values[j])
        data.values = None
        if writer is not None:  # the bank's memory map is not the column's values: pack() writes them
            writer.maps.pop("values", None)
        for j in range(upto, len(parsed)):
            c = parsed[j]
            if c is None:
                continue
            try:
                values[j] = self.decode(c.path)
            except Exception as exc:  # noqa: BLE001
                problems.append(self.read_error(j, row, c.path, exc))
                parsed[j] = None
        return ColumnData.pack(values)

    def after_decode(self, parsed):
        for c in parsed:
            if c is not None:
                a = self.data.get(c.row)
                if a is not None:  # a banked row is in the output dtype already (float / integer kind kept)
                    self.headers[c.row] = (tuple(a.shape) or (1,), a.dtype)

    def transform(self, cells, row):
        """The decoded bank itself when it already holds every row in the fitted shape and dtype (no copy)."""
        d = self.data
        if (d is not None and d.kind == "fixed" and self.fixed and self.ref_shape is not None and len(cells) == d.n
                and tuple(d.values.shape[1:]) == tuple(self.ref_shape)
                and d.values.dtype == np.dtype(self.out_dtype or "float32")
                and all(c is None or (isinstance(c, Cell) and c.row == i) for i, c in enumerate(cells))):
            return d.values, []
        return super().transform(cells, row)

    def _header_of(self, c):
        a = self.decoded(c)
        return (tuple(a.shape) or (1,), a.dtype) if a is not None else _npy_header(cell_path(c))

    def fit(self, cells):
        headers = [self._header_of(p) for p in cells]
        shapes = [h[0] for h in headers]
        self.ref_shape = tuple(shapes[0]) if shapes else None
        self.fixed = len({s for s in shapes}) <= 1
        kinds = {self._out_dtype(h[1]) for h in headers}
        # integer arrays (e.g. token ids) stay int64; any float file makes the column float32
        self.out_dtype = "float32" if not kinds or "float32" in kinds else "int64"
        self.fitted = True
        return self

    def transform_cell(self, path):
        arr = self.decoded(path)
        arr = np.load(cell_path(path), allow_pickle=False) if arr is None else arr
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError("contains NaN or infinite values")
        want = self.out_dtype or ("float32" if arr.dtype.kind in "fb" else "int64")
        if want == "int64" and arr.dtype.kind == "f":
            raise ValueError(f"holds floats ({arr.dtype}) but the column was fitted on integer arrays (int64); "
                             "save the file with an integer dtype")
        return arr.astype(np.dtype(want))

    def empty_shape(self):
        return tuple(self.ref_shape) if self.fixed and self.ref_shape is not None else None

    def assemble(self, values):
        if not self.fixed:
            return list(values)
        return stack_or_list(values, self.empty_shape(), dtype=np.dtype(self.out_dtype or "float32"))

    def state_dict(self):
        return {"shape": None if self.ref_shape is None else list(self.ref_shape), "fixed": self.fixed,
                "dtype": self.out_dtype}

    def load_state(self, state):
        self.ref_shape = None if state["shape"] is None else tuple(int(s) for s in state["shape"])
        self.fixed = bool(state["fixed"])
        self.out_dtype = state.get("dtype")  # older pipelines: None (from each file's own dtype)
        self.fitted = True
        return self


# ---------------------------------------------------------------------- text and numbers
class TextOptions(LoaderOptions):
    # tokens: word ids from a vocabulary fitted on the training rows (for gru / lstm / transformer encoders);
    # minilm: fixed 384-d MiniLM sentence embeddings (for mlp / identity encoders)
    encoder: Literal["tokens", "minilm"] = "tokens"
    # the tokenizer of a pretrained text encoder: "minilm" or a local model folder; the column then holds that
    # model's own input ids (for the sentence_transformer / hf_auto encoders) instead of vocabulary ids
    tokenizer: Optional[str] = None
    max_tokens: Optional[int] = 64
    max_vocab: Optional[int] = None

    _pos = field_validator("max_tokens")(classmethod(lambda cls, v: _pos(v)))

    @field_validator("max_vocab")
    @classmethod
    def _vocab(cls, v):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 3):
            raise ValueError(f"expected an integer >= 3 or null, got {v!r}")
        return v


@COLUMN_LOADERS.register("text")
class TextLoader(ColumnLoader):
    """Token ids from a word vocabulary fitted on the training rows (0 = pad, 1 = unknown), or MiniLM embeddings."""

    Options = TextOptions
    loader_name = "text"

    def check_cell(self, value, i, row, problems):
        return str(value)

    def fit(self, cells):
        self.encoder = self.options.encoder
        self.vocab: list[str] | None = None
        self.tokenizer_name = self.options.tokenizer
        if self.tokenizer_name is not None and self.encoder != "tokens":
            raise ConfigError(f"modalities.{self.modality}.tokenizer ({self.columns[0]!r}): tokenizer {self.tokenizer_name!r} gives token ids for a pretrained "
                              f"encoder; it does not go with encoder {self.encoder!r} (remove one of them)")
        if self.tokenizer_name is not None:
            self._tokenizer()  # fail early (and offline) if it cannot be loaded
        elif self.encoder == "tokens":
            from .text import build_vocab

            self.vocab = build_vocab(cells, max_size=self.options.max_vocab)
        self.max_tokens = self.options.max_tokens
        self.fitted = True
        return self

    def _tokenizer(self):
        if getattr(self, "_tok", None) is None:
            from .text import pretrained_tokenizer

            self._tok = pretrained_tokenizer(self.tokenizer_name)
        return self._tok

    @property
    def token_kind(self) -> str:
        """What the column gives the model: ``vocab`` ids, ``pretrained:<tokenizer>`` ids or ``embedding``s."""
        if self.encoder != "tokens":
            return "embedding"
        return "vocab" if self.tokenizer_name is None else f"pretrained:{self.tokenizer_name}"

    def transform(self, cells, row):
        if self.encoder == "tokens":
            from .text import encode, pretrained_ids

            texts = ["" if c is None else c for c in cells]
            if self.tokenizer_name is not None:
                ids = pretrained_ids(texts, self._tokenizer(), self.max_tokens)
            else:
                ids = encode(texts, self.vocab, self.max_tokens)
            out = [a if c is not None else None for a, c in zip(ids, cells)]
            if cells and all(c is None for c in cells):  # keep the int64 dtype when no row has text (masked out)
                out = [np.zeros(1, dtype=np.int64) for _ in cells]
            return out, []
        from .text import minilm_embeddings

        emb = np.zeros((len(cells), 384), dtype=np.float32)
        rows = [i for i, c in enumerate(cells) if c is not None]
        if rows:
            emb[rows] = minilm_embeddings([cells[i] for i in rows])
        return emb, []

    def state_dict(self):
        return {"encoder": self.encoder, "vocab": self.vocab, "max_tokens": self.max_tokens,
                "tokenizer": self.tokenizer_name}

    def load_state(self, state):
        self.encoder, self.vocab, self.max_tokens = state["encoder"], state["vocab"], state["max_tokens"]
        self.tokenizer_name, self._tok = state.get("tokenizer"), None
        self.fitted = True
        return self


class CategoricalOptions(LoaderOptions):
    pass


@COLUMN_LOADERS.register("categorical")
class CategoricalLoader(ColumnLoader):
    """Categories of one or more columns -> one float32 one-hot block per column, concatenated:
    ``(sum_j categories_j,)``; the slots of a block are the column's training categories, sorted (numbers
    numerically, then words). A category never found in that column's training rows leaves its block all zero
    (no input: an "unseen" slot would never be trained, so its random weights would shift the prediction by an
    arbitrary amount); ``mmfuse predict --table`` warns about such rows.
    A cell is compared as text after stripping (a Parquet ``3.0`` reads as ``"3"``). An empty cell in any of the
    columns makes the modality absent for that row, as for ``numeric``."""

    Options = CategoricalOptions
    multi_column = True
    loader_name = "categorical"

    def check_cell(self, values, i, row, problems):
        return tuple(label_str(v) for v in values)

    def fit(self, cells):
        found: list[set[str]] = [set() for _ in self.columns]
        for c in cells:
            if c is not None:
                for j, v in enumerate(c):
                    found[j].add(v)
        if not any(found):
            raise DataError(f"modalities.{self.modality}: column(s) {self.columns} hold no category in the train "
                            "rows (every training cell is empty); fill some training cells or drop the modality")
        self.categories = [sorted(f, key=class_key) for f in found]
        self._index()
        self.fitted = True
        return self

    def _index(self) -> None:
        self._lookup = [{v: k for k, v in enumerate(cats)} for cats in self.categories]
        sizes = [len(cats) for cats in self.categories]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)  # each block's first slot
        self.width = int(sum(sizes))

    def indices(self, cell: tuple) -> list[int]:
        """The slot of each column's category in its block (-1 = unseen in training)."""
        return [lk.get(v, -1) for lk, v in zip(self._lookup, cell)]

    def transform(self, cells, row):
        if not self.fitted:
            raise DataError(f"column loader of modality {self.modality!r}: transform before fit")
        out = np.zeros((len(cells), self.width), dtype=np.float32)
        for i, c in enumerate(cells):
            if c is not None:
                k = np.asarray(self.indices(c), dtype=np.int64)
                out[i, (self.offsets + k)[k >= 0]] = 1.0
        return out, []

    def unseen_rows(self, values: Any, present: Any, n: int) -> list[int]:
        """Positions of the present rows holding at least one category never seen in training (an all-zero block)."""
        v = np.asarray(values[:n], dtype=np.float32).reshape(n, -1)
        unseen = (np.add.reduceat(v, self.offsets, axis=1) == 0).any(1) if n else np.zeros(0, dtype=bool)
        if present is not None:
            unseen &= np.asarray(present[:n], dtype=bool)
        return np.flatnonzero(unseen).tolist()

    def empty_shape(self):
        return (self.width,)

    def state_dict(self):
        return {"categories": [list(c) for c in self.categories]}

    def load_state(self, state):
        self.categories = [list(map(str, c)) for c in state["categories"]]
        if len(self.categories) != len(self.columns):
            from ..errors import CheckpointError

            raise CheckpointError(f"table pipeline: modality {self.modality!r} has {len(self.categories)} category "
                                  f"lists for {len(self.columns)} columns; the checkpoint is damaged, retrain it")
        self._index()
        self.fitted = True
        return self


class NumericOptions(LoaderOptions):
    normalize: bool = True


@COLUMN_LOADERS.register("numeric")
class NumericLoader(ColumnLoader):
    """Numbers of one or more columns -> float32 ``(len(columns),)``, standardised with the training mean / std."""

    Options = NumericOptions
    multi_column = True
    loader_name = "numeric"

    def check(self, cells, row):
        """The numbers of every row written into one float64 array (no Python object per row): the same
        per-cell checks and messages, in the same order, as :meth:`check_cell` row by row."""
        n = len(cells[0]) if cells else 0
        k = len(self.columns)
        vals = np.zeros((n, k), dtype=np.float64)
        present = np.zeros(n, dtype=bool)
        problems: list[str] = []
        for i in range(n):
            raw = [c[i] for c in cells]
            if any(empty(v) for v in raw):
                continue
            checked = self.check_cell(raw, i, row, problems)  # the one per-cell rule and message
            if checked is not None:
                vals[i], present[i] = checked, True
        out = vals.astype(np.float32)
        out[~present] = 0
        return RowsColumn(out, present), problems

    def fit_rows(self, checked: "RowsColumn", rows: np.ndarray) -> "NumericLoader":
        """Fit on the training rows ``rows`` (a boolean mask) of the checked cells (a :class:`RowsColumn`)."""
        return self.fit(checked.values[np.asarray(rows, dtype=bool) & checked.present()])

    def check_cell(self, values, i, row, problems):
        out = np.zeros(len(values), dtype=np.float64)
        bad = False
        for j, (c, v) in enumerate(zip(self.columns, values)):
            try:
                f = float(v)
            except (TypeError, ValueError):
                problems.append(f"{self.where(i, row, c)}: {v!r} is not a number; leave the cell empty if the "
                                "value is missing")
                bad = True
                continue
            if not math.isfinite(f):
                problems.append(f"{self.where(i, row, c)}: value is {v!r} (NaN or infinite); leave the cell "
                                "empty if the value is missing")
                bad = True
            out[j] = f
        return None if bad else out.astype(np.float32)

    def fit(self, cells):
        self.mean = self.std = None
        if self.options.normalize and len(cells):
            ref = cells if isinstance(cells, np.ndarray) else np.stack(cells)
            self.mean = ref.mean(axis=0)
            std = ref.std(axis=0)
            self.std = np.where(std > 1e-8, std, 1.0)
        self.fitted = True
        return self

    def transform_cell(self, v):
        if self.mean is not None:
            return ((v - self.mean) / self.std).astype(np.float32)
        return v.astype(np.float32)

    def transform(self, cells, row):
        """Vectorised: the same element-wise arithmetic as :meth:`transform_cell`, on all present rows at once."""
        if not self.fitted:
            raise DataError(f"column loader of modality {self.modality!r}: transform before fit")
        if isinstance(cells, RowsColumn):
            keep = cells.present()
            v = cells.values[keep]
            out = np.zeros((len(cells), len(self.columns)), dtype=np.float32)
            out[keep] = ((v - self.mean) / self.std).astype(np.float32) if self.mean is not None else v
            return out, []
        out = np.zeros((len(cells), len(self.columns)), dtype=np.float32)
        rows = [i for i, c in enumerate(cells) if c is not None]
        if rows:
            v = np.stack([cells[i] for i in rows])
            out[rows] = ((v - self.mean) / self.std).astype(np.float32) if self.mean is not None else v
        return out, []

    def empty_shape(self):
        return (len(self.columns),)

    def state_dict(self):
        return {} if self.mean is None else {"mean": np.asarray(self.mean), "std": np.asarray(self.std)}

    def load_state(self, state):
        self.mean = None if state.get("mean") is None else np.asarray(state["mean"])
        self.std = None if state.get("std") is None else np.asarray(state["std"])
        self.fitted = True
        return self


# ---------------------------------------------------------------------- the target
def label_str(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def class_key(label: str) -> tuple:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: Optional[str] = None
    columns: Optional[list[str]] = None
    task: Literal["multiclass", "multilabel", "regression"] = "multiclass"
    classes: Optional[list[Any]] = Field(default=None, min_length=1)
    separator: str = Field(default="|", min_length=1)


class TargetEncoder:
    """The label column(s): parses labels, fits the class list and order on the training rows."""

    def __init__(self, task: str, columns: list[str], classes: list[str] | None = None, separator: str = "|"):
        self.task, self.columns, self.separator = task, list(columns), separator
        self.given = None if classes is None else [str(c) for c in classes]
        self.class_names: list[str] | None = None
        self.fitted = False
        #: regression: the training rows' mean / std per target column (``data.standardize_target``)
        self.scale = None

    def check(self, cols: dict[str, list], n: int, row: RowFn) -> tuple[list[Any], list[str]]:
        problems: list[str] = []
        if self.task == "regression":
            y = []
            for i in range(n):
                vals = np.zeros(len(self.columns), dtype=np.float32)
                for j, c in enumerate(self.columns):
                    v = cols[c][i]
                    if empty(v):
                        problems.append(f"{row(i)}: target column {c!r} is empty; every row needs a target")
                        continue
                    try:
                        f = float(v)
                    except (TypeError, ValueError):
                        problems.append(f"{row(i)}: target column {c!r} holds {v!r}, not a number")
                        continue
                    if not math.isfinite(f):
                        problems.append(f"{row(i)}: target column {c!r} is {v!r} (NaN or infinite)")
                    vals[j] = f
                y.append(vals)
            return y, problems
        c = self.columns[0]
        labels: list[Any] = []
        # one str object per distinct label, shared by its rows (a table's labels cost a pointer per row, not a
        # new string each: the cells are decoded from bytes row by row)
        interned: dict[str, str] = {}
        for i, v in enumerate(cols[c]):
            if self.task == "multiclass" and empty(v):
                problems.append(f"{row(i)}: target column {c!r} is empty; every row needs a label")
                labels.append(None)
                continue
            s = "" if empty(v) else label_str(v)
            if self.task == "multiclass" and s.lower() in ("nan", "na", "null", "none"):
                problems.append(f"{row(i)}: target column {c!r} is {s!r} (a missing label); every row needs a label")
                labels.append(None)
                continue
            if self.task == "multiclass":
                labels.append(interned.setdefault(s, s))
            else:
                labels.append([interned.setdefault(t, t) for t in (p.strip() for p in s.split(self.separator)) if t])
        if self.given is None and not self.fitted:  # mixed label types: 'seven' among integers
            distinct = set(labels) if self.task == "multiclass" else {lab for v in labels if v for lab in v}
            distinct.discard(None)
            kind = {lab: _is_number(lab) for lab in distinct}  # once per distinct label
            if any(kind.values()) and not all(kind.values()):  # the per-row lists only when reporting
                flat = [(i, lab) for i, v in enumerate(labels) if v is not None
                        for lab in ([v] if self.task == "multiclass" else v)]
                nums = [(i, lab) for i, lab in flat if kind[lab]]
                words = [(i, lab) for i, lab in flat if not kind[lab]]
                odd = words if len(nums) >= len(words) else nums
                shown = ", ".join(f"{row(i)} ({lab!r})" for i, lab in odd[:10])
                more = f" and {len(odd) - 10} more" if len(odd) > 10 else ""
                problems.append(f"target column {c!r} mixes numbers and words: {shown}{more} "
                                f"{'are words among numeric' if odd is words else 'are numbers among word'} labels; "
                                "fix those cells, or list every class in target.classes if both kinds are meant")
        return labels, problems

    def provisional(self, labels: list[Any]) -> list[str]:
        """The classes of all rows (only to stratify a random split)."""
        if self.given is not None:
            return list(self.given)
        return sorted({lab for v in labels if v is not None for lab in ([v] if self.task == "multiclass" else v)},
                      key=class_key)

    def fit(self, labels: list[Any]) -> "TargetEncoder":
        if self.task == "regression":  # the training rows' values (float32 rows [K]): mean / std per column
            from .target_scale import TargetScale

            rows = [v for v in labels if v is not None]
            self.scale = TargetScale.fit(np.stack(rows), self.columns) if rows else None
        else:
            found = {lab for v in labels if v is not None for lab in ([v] if self.task == "multiclass" else v)}
            self.class_names = list(self.given) if self.given is not None else sorted(found, key=class_key)
        self.fitted = True
        return self

    @property
    def num_outputs(self) -> int:
        return len(self.columns) if self.task == "regression" else len(self.class_names or [])

    def transform(self, labels: list[Any], row: RowFn) -> tuple[np.ndarray, list[str]]:
        n = len(labels)
        if self.task == "regression":
            return np.stack(labels).astype(np.float32) if n else np.zeros((0, len(self.columns)), np.float32), []
        problems: list[str] = []
        lookup = {k: j for j, k in enumerate(self.class_names)}
        c = self.columns[0]
        y = np.zeros(n, dtype=np.int64) if self.task == "multiclass" else np.zeros((n, len(lookup)), dtype=np.float32)
        for i, v in enumerate(labels):
            if v is None:
                continue
            for lab in [v] if self.task == "multiclass" else v:
                if lab not in lookup:
                    from ..registry import suggestion

                    problems.append(f"{row(i)}: label {lab!r} in column {c!r} is not one of the classes "
                                    f"{self.class_names} ({suggestion(lab, self.class_names)})")
                elif self.task == "multiclass":
                    y[i] = lookup[lab]
                else:
                    y[i, lookup[lab]] = 1.0
        return y, problems

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task, "columns": self.columns, "separator": self.separator,
                "classes": self.class_names, **({"scale": self.scale.state_dict()} if self.scale is not None else {})}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TargetEncoder":
        t = cls(state["task"], state["columns"], state.get("classes"), state.get("separator", "|"))
        t.class_names = state.get("classes")
        if state.get("scale") is not None:
            from .target_scale import TargetScale

            t.scale = TargetScale.from_state(state["scale"])
        t.fitted = True
        return t
