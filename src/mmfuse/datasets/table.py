"""User datasets: a CSV / TSV / Parquet table plus a YAML schema saying which column is which modality.

Example schema (paths are relative to the schema file; file cells are relative to the table)::

    table: data.csv
    name: my-data                                 # optional, default: the table's file name
    target: {column: label, task: multiclass}     # task: multiclass | multilabel | regression
    split: {column: split}                        # optional; else seeded random split
    modalities:
      photo:   {column: img_path, loader: image, size: [32, 32], channels: 1}
      voice:   {column: wav_path, loader: audio, features: mfcc, n_mfcc: 13, max_frames: 64}
      caption: {column: text, loader: text, max_tokens: 32}
      vitals:  {columns: [hr, bp], loader: numeric}
      site:    {columns: [hospital, ward], loader: categorical}
      emb:     {column: npy_path, loader: npy}

    id: patient_id                                # optional: the column identifying each row

Load it with ``load_dataset("path/schema.yaml")`` or ``load_dataset("table", schema=...)``
(``schema`` is a path or a dict; a dict's relative paths are resolved against ``base_dir``,
default the working directory).

Keys
----
``target``: ``column`` (``columns: [...]`` for several regression outputs), ``task``
(default multiclass), ``classes`` (optional list: fixes the class order and rejects other
labels; default the sorted labels found, numerically when they are all integers), ``separator``
(multilabel, default ``"|"``; an empty multilabel cell means "no label").

``split``: ``column`` whose values are train / val / test (also accepted: validation, valid,
dev; case-insensitive), or ``fractions`` (default ``[0.7, 0.1, 0.2]``) for a random split seeded
by ``load_dataset(seed=...)``, stratified by class for multiclass targets.

Loaders and their keys:

* ``image`` (``column``; ``size: [height, width]``, needed when the images differ in size;
  ``channels`` 1 or 3, default 3): Pillow, float32 ``(channels, height, width)`` in [0, 1].
* ``audio`` (``column``; ``features`` mfcc | log_mel, default mfcc; ``n_mfcc`` 13; ``n_mels``
  40; ``sample_rate`` 16000 (files are resampled to it; None keeps each file's rate);
  ``max_frames`` 100 (crop the end / zero-pad; None keeps variable lengths);
  ``normalize`` true): wav/flac/ogg read with soundfile, features from
  :mod:`mmfuse.datasets.audio` (25 ms windows, 10 ms hop), float32 ``(frames, features)``,
  each feature standardised with the training frames' mean / std when ``normalize``.
* ``text`` (``column``; ``encoder`` tokens | minilm, default tokens; ``max_tokens`` 64;
  ``max_vocab``): token ids (int64, variable length, 0 = pad, 1 = unknown word) from a word
  vocabulary built on the training rows (``dataset.vocabs[modality]``), or 384-d MiniLM
  sentence embeddings.
* ``numeric`` (``columns`` or ``column``; ``normalize`` true): float32 ``(len(columns),)``,
  standardised with the training rows' mean / std.
* ``categorical`` (``columns`` or ``column``): float32 ``(sum_j (1 + categories_j),)``, one one-hot block
  per column whose slot 0 is "unseen"; each column's categories are the sorted distinct cells of the
  training rows (as trimmed text, numbers sorted numerically); a category found only outside the train
  rows maps to the unseen slot (``mmfuse predict --table`` warns with the row ids).
* ``npy`` (``column``): ``np.load(path, allow_pickle=False)``; every file of the column must
  have the same shape, except possibly the first axis (then a variable-length modality).

Missing values: an empty cell means the modality is absent for that row (``None`` in the sample,
mask False); for ``numeric``, any empty cell among the columns makes the modality absent. No
row is ever dropped. In Parquet files a null (or a float NaN) counts as an empty cell; in CSV
files a literal "nan" is an error, not an empty cell.

Validation: before decoding anything, the schema (unknown keys with close matches, loader
options), the columns (a missing one is named with the available ones), the targets (empty,
NaN or unknown labels, by row), the split values, the numeric cells (non-numbers and NaN, by
row and column) and every referenced file (missing, unreadable image / audio / npy header, by
row, column and path) are checked, and *all* problems are raised together in one
:class:`~mmfuse.errors.DataError` (``.problems`` holds the list). When the schema itself is
wrong the error is a :class:`TableSchemaError`, which is both a ``ConfigError`` and a
``DataError``. Errors found while decoding (rare: a file whose header is fine but whose data is
truncated) are also collected and raised together.

Fitted pipeline: every column loader (:mod:`mmfuse.datasets.columns`, registry
:data:`mmfuse.registry.COLUMN_LOADERS`) and the target learn their state (vocabulary, normalisation
statistics, image size, class list and order) on the *train* split only. The fitted
:class:`~mmfuse.datasets.pipeline.TablePipeline` is ``dataset.pipeline``; ``mmfuse train`` saves it in
the checkpoint, and ``load_table(..., pipeline=CHECKPOINT)`` (or ``data.options.pipeline``) reapplies
it unchanged, so a row's arrays depend only on that row. Labels are checked: numbers mixed with
words, a class found only outside the train split (errors) and a class with fewer than 2 training
rows (a warning), each naming the rows and values.

``id``: a column identifying the rows (kept by ``mmfuse predict``; ``dataset.row_ids``).

``sep``: the CSV separator, one character or ``tab`` (default ``,``; a tab for ``.tsv``). A CSV read as one
column whose header, split at ``;`` / tab / ``|``, names the schema's columns is reported with the ``sep`` to set.

Loading (``data.options`` beside ``schema``; validated by :class:`TableLoadOptions`): each file is opened
once, its decoding being the check (a file that cannot be decoded is reported by row, column and path with
the other problems), straight into one preallocated array per file column; the splits hold that array and
an index array (:class:`~mmfuse.datasets.base.Gather`), not copies. ``cache`` (default true) keeps the
decoded file columns as memory-mapped ``.npy`` files under ``cache_dir`` (default ``$MMFUSE_CACHE/tables``
or ``~/.cache/mmfuse/tables``), keyed by every file's path, size and mtime plus the loader's options
(:mod:`mmfuse.datasets.table_cache`): reloading an unchanged table decodes nothing. ``stream`` (true | false
| auto, default auto): file columns decoded on access instead (:mod:`mmfuse.datasets.streaming`, bounded
memory, in the DataLoader workers when ``data.num_workers > 0``), chosen by ``auto`` when rows x the first
row's decoded bytes exceed ``stream_threshold_gb`` (default half the available RAM). Streaming checks each
file's header (an unreadable file is reported when its row is read) and fits the audio statistics in one
pass of merged per-file moments (float64; equal to the in-memory statistics to ~1e-6 relative, not bit for
bit); images, numbers, npy and text give the same arrays in both modes. A streamed table's splits are
:class:`~mmfuse.datasets.streaming.SpooledDataset` s: their per-row arrays (row indices = ids, targets, presence,
paths, numbers) are written to files under the cache root (else the temp folder), unlinked at once and
memory-mapped read-only, and a batch reads them one array at a time, each array's pages leaving the resident
set right after (:class:`~mmfuse.datasets.streaming.RowSpool`): the peak memory of a streamed training is bounded
whatever the number of rows (a few MB more at 100k than at 10k rows: ``benchmarks/README.md``, table loader (d)).

Rows are numbered from 0 in the order of the table; for CSV files the message also gives the
line number (the header is line 1). ``dataset.ids`` holds each sample's row number.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, create_model, field_validator

from ..errors import ConfigError, DataError
from ..registry import COLUMN_LOADERS
from .base import SPLITS, ArrayDataset, Gather, check_fractions, stratified_split
from .columns import (ColumnLoader, FileLoader, TargetEncoder, TargetSpec, class_key, empty as _empty,
                      label_str as _label_str)
from .loading import register_dataset
from .pipeline import TablePipeline

MAX_LISTED = 40
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}

__all__ = ["TableSchemaError", "TableSchema", "load_table", "table_rows", "TablePipeline", "_empty", "_label_str",
           "class_key"]


class TableSchemaError(DataError, ConfigError):
    """The table schema is invalid (also lists any data problems found alongside)."""


class _Problems:
    def __init__(self, where: str):
        self.where = where
        self.schema: list[str] = []
        self.data: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.schema or self.data)

    def raise_if_any(self) -> None:
        if not self:
            return
        items = self.schema + self.data
        shown = items[:MAX_LISTED]
        msg = f"{self.where}: {len(items)} problem(s) found:\n" + "\n".join(f"  - {p}" for p in shown)
        if len(items) > MAX_LISTED:
            msg += f"\n  ... and {len(items) - MAX_LISTED} more (all of them are in the error's .problems)"
        err = (TableSchemaError if self.schema else DataError)(msg)
        err.problems = items
        raise err


# ---------------------------------------------------------------------- the schema (pydantic)
class SplitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: Optional[str] = None
    fractions: Optional[list[float]] = None


class TableSchema(BaseModel):
    """A table schema; modality specs are validated by their loader's ``Options`` (see :func:`modality_spec_model`)."""

    model_config = ConfigDict(extra="forbid")
    table: Optional[str] = None
    name: Optional[str] = None
    format: Optional[str] = None
    # the CSV field separator (default ',' for .csv / .txt, a tab for .tsv); one character, or "tab"
    sep: Optional[str] = None
    id: Optional[str] = None
    target: Optional[TargetSpec] = None
    split: Optional[SplitSpec] = None
    modalities: dict[str, Any] = Field(default_factory=dict)
    # file cells must resolve inside the data root (the schema's folder) unless this is true
    allow_outside_root: bool = False

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, v):
        return {"column": v} if isinstance(v, str) else v

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, v):
        return {"column": v} if isinstance(v, str) else v

    @field_validator("sep", mode="before")
    @classmethod
    def _sep(cls, v):
        return _separator(v)


def _separator(v: Any) -> Any:
    """``sep``: one character; ``tab`` / ``\\t`` (a backslash and t, as YAML single quotes keep it) mean a tab."""
    if v is None:
        return None
    if isinstance(v, str) and v.lower() in ("tab", "\\t"):
        return "\t"
    if not isinstance(v, str) or len(v) != 1 or v in "\"\r\n":
        raise ValueError(f"expected one separator character such as ',', ';', '|' or 'tab', got {v!r}")
    return v


class TableLoadOptions(BaseModel):
    """The loading options of a table (``data.options`` beside ``schema`` / ``pipeline``)."""

    model_config = ConfigDict(extra="ignore")
    cache: StrictBool = True  # keep decoded file columns memory-mapped on disk (mmfuse.datasets.table_cache)
    cache_dir: Optional[str] = None  # default $MMFUSE_CACHE/tables or ~/.cache/mmfuse/tables
    stream: Union[StrictBool, Literal["auto"]] = "auto"  # decode file columns on access (bounded memory)
    stream_threshold_gb: Optional[float] = Field(default=None, ge=0)  # auto: stream above this (default RAM / 2)


def check_table_options(options: Any, prefix: str = "data.options") -> list[str]:
    """One line per invalid loading option (dotted path, what is expected)."""
    if not isinstance(options, dict):
        return []
    try:
        TableLoadOptions.model_validate(options)
    except ValidationError as exc:
        expected = {"cache": "true or false", "cache_dir": "a folder path", "stream": "true, false or auto",
                    "stream_threshold_gb": "a number of GB >= 0, or null (half the available RAM)"}
        out: dict[str, str] = {}
        for e in exc.errors():
            key = str(e["loc"][0]) if e["loc"] else "?"
            out.setdefault(key, f"{prefix}.{key}: got {e.get('input')!r}; expected {expected.get(key, e['msg'])}")
        return list(out.values())
    return []


_SPEC_MODELS: dict[type, type[BaseModel]] = {}


def modality_spec_model(klass: type[ColumnLoader]) -> type[BaseModel]:
    """The pydantic model of one ``modalities.<name>`` entry: the loader's options plus loader / column(s)."""
    if klass not in _SPEC_MODELS:
        cols = {"columns": (Optional[Union[list[str], str]], None)} if klass.multi_column else {}
        _SPEC_MODELS[klass] = create_model(f"{klass.__name__}Spec", __base__=klass.Options,
                                           loader=(str, ...), column=(Optional[str], None), **cols)
    return _SPEC_MODELS[klass]


def _schema_lines(exc: ValidationError, root: type[BaseModel], prefix: tuple) -> list[str]:
    from ..config import format_validation_error

    lines = []
    for err, line in zip(exc.errors(), format_validation_error(exc, root=root, prefix=prefix)):
        if err["type"] == "extra_forbidden":
            line = line.replace(": unknown key", f": unknown key {str(err['loc'][-1])!r}", 1)
        lines.append("schema." + line if not prefix else line)
    return lines


# ---------------------------------------------------------------------- reading the table
class RowNumbers:
    """The row ids of a table without an ``id`` column: its row numbers, as ints (no list of n ints held)."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        i = int(i)
        if not -self.n <= i < self.n:
            raise IndexError(f"row {i} out of range ({self.n} rows)")
        return i % self.n

    def __iter__(self):
        return iter(range(self.n))

    def __eq__(self, other: Any) -> bool:
        return list(self) == list(other) if isinstance(other, (list, RowNumbers)) else NotImplemented

    __hash__ = None

    def tolist(self) -> list[int]:
        return list(range(self.n))


CSV_CHUNK = 8192  # rows per chunk when reading a CSV


class TextColumn:
    """A CSV column as numpy bytes arrays (UTF-8, ``S`` dtype), one per chunk of ``chunk`` rows as read (never
    concatenated: no second copy); a cell is decoded to a str when read, so a table's cells cost their bytes, not
    a Python string each, and the check of one row holds one row's strings. (An ``S`` array drops trailing NUL
    bytes, which a CSV text cell does not hold.)"""

    __slots__ = ("parts", "chunk", "n")

    def __init__(self, parts: list[np.ndarray], chunk: int):
        self.parts, self.chunk = parts, int(chunk)
        self.n = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> str:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"row {i} out of range ({self.n} rows)")
        return self.parts[i // self.chunk][i % self.chunk].decode("utf-8", "surrogatepass")

    def __iter__(self):
        for p in self.parts:
            for b in p:
                yield b.decode("utf-8", "surrogatepass")

    def tolist(self) -> list[str]:
        return list(self)


def _read_table(path: Path, fmt: str | None, sep: str | None = None) -> tuple[dict[str, list[Any]], int, bool]:
    """Columns as lists of raw cells (CSV: strings), the number of rows, and whether it is a CSV. ``sep``: the
    CSV separator (default a tab for .tsv, else ',')."""
    import pandas as pd

    kind = (fmt or path.suffix.lstrip(".")).lower()
    if kind in ("csv", "tsv", "txt"):
        sep = sep or ("\t" if kind == "tsv" else ",")
        try:  # in chunks, each column packed as UTF-8 bytes: no Python string per cell held (see TextColumn)
            names: list[str] | None = None
            parts: dict[str, list[np.ndarray]] = {}
            size = CSV_CHUNK
            for chunk in pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                                     chunksize=size):
                if names is None:
                    names = [str(c) for c in chunk.columns]
                    parts = {c: [] for c in names}
                for c, name in zip(chunk.columns, names):
                    parts[name].append(np.array([v.encode("utf-8", "surrogatepass") for v in chunk[c].tolist()],
                                                dtype="S"))
                del chunk
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"table {path}: cannot parse it as {kind.upper()} ({exc})") from None
        cols = {c: TextColumn(p, size) for c, p in parts.items()}
        return cols, (len(next(iter(cols.values()))) if cols else 0), True
    elif kind in ("parquet", "pq"):
        try:
            df = pd.read_parquet(path)
        except ImportError as exc:
            raise ConfigError(f"table {path}: reading Parquet needs pyarrow or fastparquet ({exc}); "
                              "install one with: pip install pyarrow, or save the table as CSV") from None
        except Exception as exc:  # pyarrow raises its own types
            raise DataError(f"table {path}: cannot read it as Parquet ({type(exc).__name__}: {exc})") from None
        csv = False
    else:
        raise ConfigError(f"table {path}: unknown table format {kind!r}; use a .csv, .tsv or .parquet file "
                          "(or set 'format: csv' in the schema)")
    df.columns = [str(c) for c in df.columns]
    cols = {c: df[c].tolist() for c in df.columns}
    return cols, len(df), csv


def _load_schema(schema: Any, base_dir: str | os.PathLike | None) -> tuple[dict, Path, str]:
    if isinstance(schema, (str, os.PathLike)):
        path = Path(schema).expanduser()
        if not path.is_file():
            raise ConfigError(f"table schema {path} does not exist; give the path of a YAML schema file "
                              "(see mmfuse.datasets.table for the format)")
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"table schema {path}: not a UTF-8 text file; give the path of a YAML schema") from None
        except yaml.YAMLError as exc:  # position and problem only: never a snippet of the file's contents
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"table schema {path}: invalid YAML{at} ({problem}); fix the YAML syntax there "
                              "(or give the path of another YAML schema file)") from None
        return data, path.resolve().parent, str(path)
    if isinstance(schema, dict):
        return schema, Path(base_dir or ".").resolve(), "table schema"
    raise ConfigError(f"table: schema must be a path to a YAML file or a dict, got {type(schema).__name__}")


def column_hint(name: str, columns: list[str], named: list[str] | None = None) -> str:
    """For a column the table lacks: the close matches (difflib, cutoff 0.6, case-insensitive) among the table's
    columns the schema does *not* name (a column the schema already uses is never the intended one); else those
    unused columns."""
    import difflib

    used = set(named or [])
    unused = [c for c in columns if c not in used]
    lowered = {c.lower(): c for c in unused}
    hits = [lowered[h] for h in difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.6)]
    if hits:
        return "did you mean " + " or ".join(map(repr, hits)) + "?"
    if not unused:
        return "every column of the table is already used by the schema"
    shown = ", ".join(map(repr, unused[:MAX_LISTED])) + (" ..." if len(unused) > MAX_LISTED else "")
    return f"columns the schema does not use: {shown}"


def _parse_modality(name: Any, spec: Any, columns: list[str], problems: _Problems,
                    named: list[str] | None = None) -> ColumnLoader | None:
    where = f"modalities.{name}"
    if not isinstance(name, str) or not name or name == "target":
        problems.schema.append(f"{where}: invalid modality name {name!r}")
        return None
    if not isinstance(spec, dict):
        problems.schema.append(f"{where}: expected a mapping with 'column' and 'loader', got {spec!r}")
        return None
    loader = spec.get("loader")
    known = COLUMN_LOADERS.list()
    if loader not in COLUMN_LOADERS:
        from ..registry import close_matches

        hits = [] if loader is None else close_matches(str(loader), known)
        problems.schema.append(f"{where}.loader: {'is required' if loader is None else repr(loader) + ' is unknown'}"
                               f"; choose one of {known}"
                               + (f" (did you mean {' or '.join(map(repr, hits))}?)" if hits else ""))
        return None
    klass = COLUMN_LOADERS.get(loader)
    try:
        parsed = modality_spec_model(klass)(**spec)
    except ValidationError as exc:
        problems.schema.extend(_schema_lines(exc, modality_spec_model(klass), ("modalities", name)))
        return None
    if klass.multi_column:
        cols = parsed.columns if parsed.columns is not None else parsed.column
        if parsed.columns is not None and parsed.column is not None:
            problems.schema.append(f"{where}: give either 'column' or 'columns', not both")
        cols = [cols] if isinstance(cols, str) else cols
        if not cols:
            problems.schema.append(f"{where}: 'columns' must be a non-empty list of column names, got {cols!r}")
            return None
    else:
        if not parsed.column:
            problems.schema.append(f"{where}: 'column' (the table column holding this modality) is required")
            return None
        cols = [parsed.column]
    missing = [c for c in cols if c not in columns]
    for c in missing:
        problems.schema.append(f"{where}: column {c!r} is not in the table ({column_hint(c, columns, named)}); "
                               f"available columns: {columns}")
    if missing:
        return None
    options = klass.Options(**{k: v for k, v in spec.items() if k not in ("loader", "column", "columns")})
    return klass(name, cols, options)


# ---------------------------------------------------------------------- the loader
def load_table(schema: str | os.PathLike | dict | None = None, *, seed: int = 0,
               base_dir: str | os.PathLike | None = None, pipeline: Any = None,
               table: str | os.PathLike | None = None, split: str | None = None,
               cache: bool = True, cache_dir: str | os.PathLike | None = None,
               stream: Union[bool, str] = "auto", stream_threshold_gb: float | None = None,
               ) -> dict[str, ArrayDataset] | ArrayDataset:
    """Train/val/test :class:`ArrayDataset` splits of a user table (see the module docstring).

    ``pipeline``: a fitted :class:`TablePipeline` or a checkpoint folder holding one; it is reapplied
    unchanged (nothing is fitted) and its schema is used when ``schema`` is None. ``table`` replaces
    the schema's table file. ``split="none"`` returns one dataset of every row in table order (labels
    then optional: without the target column, targets are zeros and ``dataset.has_labels`` is False).

    Speed and memory: each file is opened once (decoding it is the check), straight into one preallocated
    array per column; splits are index views of it. ``cache`` (default True) keeps decoded file columns
    memory-mapped on disk under ``cache_dir`` (see :mod:`mmfuse.datasets.table_cache`), so reloading an
    unchanged table costs almost nothing. ``stream``: ``True`` decodes file columns on access
    (:mod:`mmfuse.datasets.streaming`; bounded memory), ``False`` never, ``"auto"`` (default) when the
    estimated decoded size (rows x the first row's decoded bytes) exceeds ``stream_threshold_gb`` (default
    half the available RAM).
    """
    bad = check_table_options({"cache": cache, "cache_dir": None if cache_dir is None else str(cache_dir),
                               "stream": stream, "stream_threshold_gb": stream_threshold_gb})
    if bad:
        raise ConfigError("; ".join(bad))
    if isinstance(pipeline, (str, os.PathLike)):
        from ..training.checkpoint import load_pipeline

        pipeline = load_pipeline(pipeline)
    if schema is None:
        if pipeline is None:
            raise ConfigError("load_table: give a schema (a YAML path or a dict) or a fitted pipeline")
        raw, schema_dir, where = dict(pipeline.schema), Path(pipeline.schema_dir), "table schema (from the checkpoint)"
    else:
        raw, schema_dir, where = _load_schema(schema, base_dir)
    problems = _Problems(where)
    if not isinstance(raw, dict):
        raise TableSchemaError(f"{where}: expected a mapping with keys 'table', 'target', 'modalities', "
                               f"got {type(raw).__name__}")
    if table is not None:
        raw = {**raw, "table": str(Path(table).expanduser().resolve())}
    whole = split == "none"
    sch = None
    try:
        sch = TableSchema.model_validate(raw)
    except ValidationError as exc:
        problems.schema.extend(_schema_lines(exc, TableSchema, ()))
        bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
        try:  # keep checking the rest of the schema, without its invalid keys
            sch = TableSchema.model_validate({k: v for k, v in raw.items() if k not in bad})
        except ValidationError:
            sch = None
    required = ("table", "modalities") if (pipeline is not None or whole) else ("table", "target", "modalities")
    for key in required:
        if key not in raw:
            problems.schema.append(f"schema: required key {key!r} is missing")
    if isinstance(raw.get("modalities"), dict) and not raw["modalities"] and pipeline is None:
        problems.schema.append("schema.modalities: expected a mapping of modality name -> {column, loader, ...}")
    if "table" not in raw or not isinstance(raw.get("table"), str):
        problems.raise_if_any()
    table_path = Path(str(raw["table"])).expanduser()
    if not table_path.is_absolute():
        table_path = schema_dir / table_path
    if not table_path.is_file():
        problems.schema.append(f"schema.table: file {raw['table']!r} not found (looked for {table_path}); "
                               "give the table's path relative to the schema's folder, or an absolute path")
        problems.raise_if_any()
    cols, n, is_csv = _read_table(table_path, raw.get("format") if isinstance(raw.get("format"), str) else None,
                                  sch.sep if sch is not None else None)
    where = f"table {table_path}"
    problems.where = where
    columns = list(cols)
    table_dir = table_path.parent
    named = _named_columns(raw, sch, pipeline)
    if named and columns and not set(named) & set(columns):  # not this schema's table: never echo its contents
        other = _other_separator(columns, named) if is_csv else None
        if other is not None:
            shown = {"\t": "tab", ",": "','"}.get(other, repr(other))
            msg = (f"schema.table: {str(raw['table'])!r} was read as CSV with separator "
                   f"{_sep_name(sch.sep if sch is not None else None, table_path, raw)} but its header seems to use "
                   f"{shown} as separator (split at {shown} it holds the columns the schema names); add "
                   f"`sep: {'tab' if other == chr(9) else repr(other)}` to the schema")
        else:
            msg = (f"schema.table: {str(raw['table'])!r} has none of the columns the schema names "
                   f"({', '.join(map(repr, named[:8]))}); check that `table` points at the right CSV / "
                   "Parquet file (its contents are not shown)")
        if problems:  # with the schema's other problems (an invalid `sep`, ...)
            problems.schema.append(msg)
            problems.raise_if_any()
        raise TableSchemaError(msg)
    # file cells resolve inside the data root: the schema's folder (and, for a table given with `table=`, its folder)
    outside_ok = bool(raw.get("allow_outside_root")) if isinstance(raw.get("allow_outside_root"), bool) else False
    roots = None if outside_ok else [Path(schema_dir).resolve()] + ([table_dir.resolve()] if table is not None else [])

    def row(i: int) -> str:
        return f"row {i} (line {i + 2})" if is_csv else f"row {i}"

    if n == 0:
        problems.data.append("the table has no rows (only a header); add data rows under the header")

    # ---- row ids
    id_col = (sch.id if sch is not None else None) or (pipeline.id_column if pipeline is not None else None)
    row_ids: Any = RowNumbers(n)
    if id_col is not None:
        if id_col not in cols:
            problems.schema.append(f"schema.id: column {id_col!r} is not in the table ({column_hint(id_col, columns, named)}); "
                                   f"available columns: {columns}")
        else:
            row_ids = [None if _empty(v) else _label_str(v) for v in cols[id_col]]
            seen: dict[Any, int] = {}
            for i, v in enumerate(row_ids):
                if v is None:
                    problems.data.append(f"{row(i)}: id column {id_col!r} is empty; every row needs an id")
                elif v in seen:
                    problems.data.append(f"{row(i)}: id {v!r} in column {id_col!r} repeats {row(seen[v])}; ids must "
                                         "be unique")
                else:
                    seen[v] = i

    # ---- target
    tspec = sch.target if sch is not None else None
    target: TargetEncoder | None = None
    labels: list[Any] | None = None
    if pipeline is not None:
        target = pipeline.target
    elif tspec is not None:
        t_cols = tspec.columns if tspec.columns is not None else ([tspec.column] if tspec.column else [])
        if not t_cols:
            problems.schema.append("schema.target: 'column' (the label column) is required")
        elif len(t_cols) > 1 and tspec.task != "regression":
            problems.schema.append("schema.target: several 'columns' are only allowed for task: regression")
        classes = None if tspec.classes is None else [str(c) for c in tspec.classes]
        if classes is not None and len(set(classes)) != len(classes):
            problems.schema.append("schema.target.classes: contains duplicates")
        target = TargetEncoder(tspec.task, t_cols, classes, tspec.separator)
    if target is not None:
        absent = [c for c in target.columns if c not in cols]
        if absent and whole:
            target_present = False
        else:
            target_present = True
            for c in absent:
                problems.schema.append(f"schema.target: column {c!r} is not in the table "
                                       f"({column_hint(c, columns, named)}); "
                                       f"available columns: {columns}")
        if target_present and not absent and target.columns:
            labels, probs = target.check(cols, n, row)
            problems.data.extend(probs)

    # ---- split
    split_of: np.ndarray | None = None
    fractions: tuple[float, ...] = (0.7, 0.1, 0.2)
    sspec = sch.split if sch is not None and not whole else None
    if sspec is not None:
        if sspec.column is not None and sspec.fractions is not None:
            problems.schema.append("schema.split: give either 'column' or 'fractions', not both")
        if sspec.fractions is not None:
            try:
                fractions = check_fractions(sspec.fractions, "schema.split.fractions")
            except ConfigError as exc:
                problems.schema.append(str(exc))
        if sspec.column is not None:
            sc = sspec.column
            if sc not in cols:
                problems.schema.append(f"schema.split: column {sc!r} is not in the table "
                                       f"({column_hint(str(sc), columns, named)}); available columns: {columns}")
            else:
                split_of = np.empty(n, dtype=object)
                for i, v in enumerate(cols[sc]):
                    key = "" if _empty(v) else str(v).strip().lower()
                    if key not in SPLIT_ALIASES:
                        problems.data.append(f"{row(i)}: split column {sc!r} holds {'' if _empty(v) else v!r}"
                                             f"{'an empty cell' if _empty(v) else ''}; expected train, val or test")
                    split_of[i] = SPLIT_ALIASES.get(key, "train")

    # ---- modalities: loaders and per-cell checks
    loaders: dict[str, ColumnLoader] = {}
    if pipeline is not None:
        for name, ld in pipeline.loaders.items():
            miss = [c for c in ld.columns if c not in cols]
            for c in miss:
                problems.schema.append(f"modalities.{name}: column {c!r} (read by the checkpoint's {ld.loader_name!r} "
                                       f"loader) is not in the table ({column_hint(c, columns, named)}); add it (empty cells "
                                       f"mean the modality is absent); available columns: {columns}")
            if not miss:
                loaders[name] = ld
    elif sch is not None:
        for name, spec in sch.modalities.items():
            ld = _parse_modality(name, spec, columns, problems, named)
            if ld is not None:
                loaders[name] = ld
    parsed: dict[str, list[Any]] = {}
    col_cache = None
    if cache:
        from .table_cache import ColumnCache

        col_cache = ColumnCache(cache_dir)
    streamed = _choose_streaming(loaders, cols, n, stream, stream_threshold_gb, table_dir, roots) \
        if not problems else set()
    order = list(loaders)
    for j, (name, ld) in enumerate(loaders.items()):
        ld.base_dir = table_dir
        ld.roots = roots
        if isinstance(ld, FileLoader):
            ld.cache = col_cache
            ld.check_mode = "header" if name in streamed else "decode"
        parsed[name], probs = ld.check([cols[c] for c in ld.columns], row)
        problems.data.extend(probs)
        later = {c for m in order[j + 1:] for c in loaders[m].columns}
        for c in ld.columns:  # the raw cells are not needed any more: drop them before the next column's check
            if c not in later:
                cols.pop(c, None)
    cols.clear()  # every check is done: the raw cells are dropped (ids, labels and splits were parsed above)
    problems.raise_if_any()

    # ---- split indices
    if whole:
        parts = [np.arange(n)]
    elif split_of is not None:
        parts = [np.flatnonzero(split_of == k) for k in SPLITS]
    else:
        strat = None
        if target is not None and target.task == "multiclass" and labels is not None:
            lookup = {k: j for j, k in enumerate(target.class_names or target.provisional(labels))}
            strat = np.fromiter((lookup.get(v, 0) for v in labels), dtype=np.int64, count=len(labels))
        rng = np.random.default_rng([seed, 5])
        parts = stratified_split(strat, n, fractions, rng)
    is_train = np.zeros(n, dtype=bool)
    is_train[parts[0]] = True
    if not whole and not is_train.any():
        raise DataError(f"{where}: no row is in the train split; mark some rows 'train' in the split column")

    # ---- fit on the train rows (only without a fitted pipeline)
    if pipeline is None:
        if target is not None and labels is not None:
            target.fit(v for v, tr in zip(labels, is_train) if tr)  # one pass, no list of the training labels
            if target.task != "regression":
                _check_label_coverage(target, labels, is_train, row, problems)
                problems.raise_if_any()
        for name, ld in loaders.items():
            try:
                if hasattr(ld, "fit_rows") and hasattr(parsed[name], "present"):  # packed cells (no per-row list)
                    ld.fit_rows(parsed[name], is_train)
                else:
                    ld.fit([c for c, tr in zip(parsed[name], is_train) if tr and c is not None])
            except DataError as exc:
                problems.schema.append(str(exc))
        problems.raise_if_any()
        pipeline = TablePipeline(raw, str(schema_dir), loaders, target, id_col)

    # ---- transform (fitted state only; all errors collected)
    arrays: dict[str, Any] = {}
    presence: dict[str, np.ndarray] = {}
    for name, ld in loaders.items():
        presence[name] = parsed[name].present().copy() if hasattr(parsed[name], "present") else \
            np.array([c is not None for c in parsed[name]], dtype=bool)
        if name in streamed and ld.empty_shape() is not None:
            from .streaming import StreamColumn

            dtype = getattr(ld, "out_dtype", None) or "float32"
            ld.headers = {}
            ld.header_sizes = None
            # the paths as one numpy bytes array (no Python object per row: see mmfuse.datasets.streaming)
            arrays[name] = StreamColumn(ld, parsed[name], np.arange(n), ld.empty_shape(), dtype, is_csv)
            parsed[name] = None
            continue
        arrays[name], probs = ld.transform(parsed[name], row)
        problems.data.extend(probs)
        if isinstance(arrays[name], np.ndarray) and arrays[name].ndim >= 2:
            arrays[name] = Gather(arrays[name], np.arange(n))  # splits are index views of this one array
        if isinstance(ld, FileLoader):
            ld.release()
    has_labels = target is not None and labels is not None
    if has_labels:
        targets, probs = target.transform(labels, row)
        problems.data.extend(probs)
    elif target is not None and target.task == "multiclass":
        targets = np.zeros(n, dtype=np.int64)
    else:
        targets = np.zeros((n, target.num_outputs if target is not None else 1), dtype=np.float32)
    if target is not None and target.task != "regression" and not target.class_names:
        problems.data.append(f"target column {target.columns[0]!r} holds no label")
    problems.raise_if_any()

    attrs: dict[str, Any] = {"source": str(table_path), "pipeline": pipeline, "row_ids": row_ids,
                             "has_labels": has_labels}
    vocabs = {m: ld.vocab for m, ld in loaders.items() if getattr(ld, "vocab", None) is not None}
    if vocabs:
        attrs["vocabs"] = vocabs
    class_names = None if target is None else target.class_names
    task = "multiclass" if target is None else target.task
    ds_name = str(raw.get("name") or table_path.stem)
    meta = dict(task=task, class_names=class_names, attrs=attrs,
                num_classes=(len(class_names) if class_names is not None else
                             (target.num_outputs if target is not None else None)))
    if streamed and not whole:
        from .table_cache import cache_root

        del labels, parsed
        return _spooled_splits(arrays, targets, presence, parts, ds_name, meta,
                               cache_root(cache_dir) if cache else None)
    full = ArrayDataset(arrays, targets, presence, name=ds_name, **meta)
    if whole:
        return full
    return {k: full.subset(idx, name=f"{ds_name}/{k}") for k, idx in zip(SPLITS, parts)}


def _spooled_splits(arrays: dict[str, Any], targets: np.ndarray, presence: dict[str, np.ndarray],
                    parts: list[np.ndarray], ds_name: str, meta: dict[str, Any], root: Any) -> dict[str, Any]:
    """The splits of a streamed table, as ``ArrayDataset(arrays, targets, presence, **meta).subset(part)`` gives
    them (same rows, order, values and types; the full dataset is not built), with
    their per-row arrays (each split's row indices, which are also its ids and the file / numeric columns' rows;
    targets; presence masks; the paths and the numeric values of all rows) in a
    :class:`~mmfuse.datasets.streaming.RowSpool`: memory-mapped read-only, out of the process's anonymous memory,
    and taken out of its resident set again after each batch read (so the peak memory of a streamed training
    does not grow with the number of rows by these arrays). Each array is written from the full one split by
    split; no O(rows) copy is held beside the mapped ones. ``root``: the folder of the spool's (at once unlinked)
    files, the table cache's root when the cache is on, else the system's temp folder. The file and numeric
    columns index their rows by the identity (``load_table`` builds them so), so a split's row indices are its
    rows in each of them and its ids. Afterwards the C heap's free pages are handed back to the system
    (``malloc_trim``: the check's transient arrays leave freed but resident pages behind otherwise)."""
    from .streaming import RowSpool, SpooledDataset, SpooledGather, StreamColumn, trim_heap

    spool = RowSpool(root)
    try:
        shared: dict[str, Any] = {}  # per modality: the mapped full-table values (paths / bank) of all rows
        for m, v in arrays.items():
            if isinstance(v, StreamColumn):
                shared[m] = spool.put(v.cells)
            elif isinstance(v, Gather):
                shared[m] = spool.put(v.bank)
        out: dict[str, Any] = {}
        for k, idx in zip(SPLITS, parts):
            rows = spool.put(np.asarray(idx, dtype=np.int64))
            split: dict[str, Any] = {}
            for m, v in arrays.items():
                if isinstance(v, StreamColumn):
                    split[m] = StreamColumn(v.loader, shared[m], rows, v.item_shape, v.dtype, v.csv, v.prefix,
                                             spool)
                elif isinstance(v, Gather):
                    split[m] = SpooledGather(shared[m], rows, v.scale)
                elif isinstance(v, list):
                    split[m] = [v[int(i)] for i in idx]
                else:
                    split[m] = spool.put(np.asarray(v)[idx])
            present = {m: spool.put(p[idx]) for m, p in presence.items()}
            out[k] = SpooledDataset(split, spool.put(np.asarray(targets)[idx]), present, name=f"{ds_name}/{k}",
                                    ids=rows, **meta)
            out[k].spool = spool
    finally:
        spool.finish()
    spool.drop()  # the construction's checks read every page once
    trim_heap()
    return out


def _choose_streaming(loaders: dict[str, ColumnLoader], cols: dict[str, list], n: int, stream: Any,
                      threshold_gb: float | None, table_dir: Path, roots: Any) -> set[str]:
    """The file columns decoded on access: all of them (``stream: true``), none (``false``), or with ``auto``
    all of them when rows x the first present row's decoded bytes, summed over file columns, exceeds the
    threshold (``stream_threshold_gb``, default half the available RAM). ``auto`` decodes one file per column
    to estimate (the only file opened twice)."""
    files = [m for m, ld in loaders.items() if isinstance(ld, FileLoader)]
    if stream is False or not files:
        return set()
    if stream is True:
        return set(files)
    from .columns import _CellError, empty
    from .streaming import available_memory

    limit = available_memory() * 0.5 if threshold_gb is None else float(threshold_gb) * 1e9
    total = 0
    for m in files:
        ld = loaders[m]
        col = cols[ld.columns[0]]
        first, count = -1, 0  # the first present row and the number of present rows (no list of rows)
        for i, v in enumerate(col):
            if not empty(v):
                count += 1
                if first < 0:
                    first = i
        if first < 0:
            continue
        ld.base_dir, ld.roots = table_dir, roots
        try:
            p = ld.resolve(col[first], first, str)
            one = ld.decode_one(p)
        except (_CellError, Exception):  # noqa: BLE001 - reported by the check with its row
            continue
        total += int(np.asarray(one).nbytes) * count
    return set(files) if total > limit else set()


def _other_separator(columns: list[str], named: list[str]) -> str | None:
    """The separator (';', tab, '|' or ',') that splits the header read as ``columns`` into names the schema uses."""
    want = set(named)
    for sep in (";", "\t", "|", ","):
        parts = {p.strip().strip('"') for c in columns for p in c.split(sep)}
        if any(sep in c for c in columns) and parts & want:
            return sep
    return None


def _sep_name(sep: str | None, path: Path, raw: dict) -> str:
    fmt = raw.get("format") if isinstance(raw.get("format"), str) else path.suffix.lstrip(".")
    sep = sep or ("\t" if str(fmt).lower() == "tsv" else ",")
    return "tab" if sep == "\t" else repr(sep)


def _named_columns(raw: dict, sch: "TableSchema | None", pipeline: Any) -> list[str]:
    """Every column the schema (or a fitted pipeline) names: target, modalities, split, id."""
    out: list[str] = []
    if pipeline is not None:
        for ld in pipeline.loaders.values():
            out += list(ld.columns)
        if pipeline.target is not None:
            out += list(pipeline.target.columns)
    if sch is not None:
        if sch.target is not None:
            out += list(sch.target.columns or []) + ([sch.target.column] if sch.target.column else [])
        if sch.split is not None and sch.split.column:
            out.append(sch.split.column)
        if sch.id:
            out.append(sch.id)
    for spec in (raw.get("modalities") or {}).values() if isinstance(raw.get("modalities"), dict) else []:
        if isinstance(spec, dict):
            c = spec.get("columns", spec.get("column"))
            out += [c] if isinstance(c, str) else [x for x in (c or []) if isinstance(x, str)]
    return [str(c) for c in dict.fromkeys(out)]


def _check_label_coverage(target: TargetEncoder, labels: list[Any], is_train: np.ndarray, row, problems) -> None:
    """A class found only outside the train split is an error; a class with < 2 training rows a warning."""
    first: dict[str, list[int]] = {}  # the first 8 rows of each label (all a message shows) and its row count
    total: dict[str, int] = {}
    train_count: dict[str, int] = {}
    multiclass = target.task == "multiclass"
    for i, v in enumerate(labels):
        for lab in () if v is None else ((v,) if multiclass else v):
            t = total.get(lab, 0)
            total[lab] = t + 1
            if t < 8:
                first.setdefault(lab, []).append(i)
            if is_train[i]:
                train_count[lab] = train_count.get(lab, 0) + 1
    col = target.columns[0]
    known = set(target.class_names or [])
    for lab in known - set(total):
        warnings.warn(f"table: class {lab!r} of target.classes has no row in the table", stacklevel=3)
    for lab, rows in sorted(first.items(), key=lambda kv: class_key(kv[0])):
        if target.given is not None and lab not in known:
            continue  # an unknown label: reported by the target's transform, by row
        k = train_count.get(lab, 0)
        shown = ", ".join(row(i) for i in rows) + (f" and {total[lab] - 8} more" if total[lab] > 8 else "")
        if k == 0 and target.given is None:
            problems.data.append(f"label {lab!r} in column {col!r} appears only outside the train split ({shown}); "
                                 "the model could never predict it: move some of those rows to train, fix the label, "
                                 "or drop the rows")
        elif k < 2:
            warnings.warn(f"table: label {lab!r} in column {col!r} has {k} training row(s) ({shown}); a class needs "
                          "at least 2 training rows to be learned", stacklevel=3)


def table_rows(ds: ArrayDataset) -> list[Any]:
    """Each sample's id in the source table (the schema's ``id`` column, else its row number)."""
    rid = getattr(ds, "row_ids", None)
    return [rid[int(i)] for i in ds.ids] if rid is not None else [int(i) for i in ds.ids]


@register_dataset("table", cache=False)
def table(*, seed: int = 0, schema: Any = None, base_dir: str | None = None,
          pipeline: str | None = None, cache: bool = True, cache_dir: str | None = None,
          stream: Union[bool, str] = "auto", stream_threshold_gb: float | None = None) -> dict[str, ArrayDataset]:
    """A user table (CSV / Parquet) described by a YAML schema: ``load_dataset("table", schema=path)``.

    ``pipeline``: a checkpoint folder whose fitted table pipeline is reapplied instead of fitting one.
    """
    if schema is None and pipeline is None:
        raise ConfigError("dataset 'table': option 'schema' is required (the path of a YAML schema file or a dict); "
                          "see mmfuse.datasets.table for the format")
    return load_table(schema, seed=seed, base_dir=base_dir, pipeline=pipeline, cache=cache, cache_dir=cache_dir,
                      stream=stream, stream_threshold_gb=stream_threshold_gb)
