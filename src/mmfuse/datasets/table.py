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
      emb:     {column: npy_path, loader: npy}

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

Rows are numbered from 0 in the order of the table; for CSV files the message also gives the
line number (the header is line 1). ``dataset.ids`` holds each sample's row number.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import suggestion
from .base import SPLITS, ArrayDataset, check_fractions, stratified_split
from .loading import register_dataset

MAX_LISTED = 40
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
TOP_KEYS = {"table", "name", "target", "split", "modalities", "format"}
TARGET_KEYS = {"column", "columns", "task", "classes", "separator"}
SPLIT_KEYS = {"column", "fractions"}
LOADER_KEYS: dict[str, dict[str, Any]] = {
    "image": {"size": None, "channels": 3},
    "audio": {"features": "mfcc", "n_mfcc": 13, "n_mels": 40, "sample_rate": 16000, "max_frames": 100,
              "normalize": True},
    "text": {"encoder": "tokens", "max_tokens": 64, "max_vocab": None},
    "numeric": {"normalize": True},
    "npy": {},
}
FILE_LOADERS = ("image", "audio", "npy")


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


# ---------------------------------------------------------------------- reading the table
def _empty(v: Any) -> bool:
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


def _read_table(path: Path, fmt: str | None) -> tuple[dict[str, list[Any]], int, bool]:
    """Columns as lists of raw cells (CSV: strings), the number of rows, and whether it is a CSV."""
    import pandas as pd

    kind = (fmt or path.suffix.lstrip(".")).lower()
    if kind in ("csv", "tsv", "txt"):
        sep = "\t" if kind == "tsv" else ","
        try:
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"table {path}: cannot parse it as {kind.upper()} ({exc})") from None
        csv = True
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
        except yaml.YAMLError as exc:
            raise ConfigError(f"table schema {path}: invalid YAML ({exc})") from None
        return data, path.resolve().parent, str(path)
    if isinstance(schema, dict):
        return schema, Path(base_dir or ".").resolve(), "table schema"
    raise ConfigError(f"table: schema must be a path to a YAML file or a dict, got {type(schema).__name__}")


# ---------------------------------------------------------------------- schema checks
def _unknown_keys(d: dict, known: set[str], where: str, problems: _Problems) -> None:
    for k in d:
        if k not in known:
            problems.schema.append(f"{where}: unknown key {k!r} ({suggestion(str(k), sorted(known))})")


def _positive_int(v: Any, allow_none: bool = False) -> bool:
    if v is None:
        return allow_none
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0


def _check_options(name: str, loader: str, opts: dict[str, Any], problems: _Problems) -> dict[str, Any]:
    where = f"modalities.{name}"
    o = dict(LOADER_KEYS[loader])
    o.update({k: v for k, v in opts.items() if k not in ("loader", "column", "columns")})
    bad = problems.schema.append
    if loader == "image":
        size = o["size"]
        if size is not None:
            if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
                size = [int(size), int(size)]
            if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_positive_int(s) for s in size)):
                bad(f"{where}.size: expected [height, width] (two positive integers), got {o['size']!r}")
                size = None
            o["size"] = None if size is None else [int(s) for s in size]
        if o["channels"] not in (1, 3):
            bad(f"{where}.channels: expected 1 (grayscale) or 3 (RGB), got {o['channels']!r}")
            o["channels"] = 3
    elif loader == "audio":
        if o["features"] not in ("mfcc", "log_mel"):
            bad(f"{where}.features: expected 'mfcc' or 'log_mel', got {o['features']!r} "
                f"({suggestion(str(o['features']), ['mfcc', 'log_mel'])})")
        for k in ("n_mfcc", "n_mels"):
            if not _positive_int(o[k]):
                bad(f"{where}.{k}: expected a positive integer, got {o[k]!r}")
        if _positive_int(o["n_mfcc"]) and _positive_int(o["n_mels"]) and o["n_mfcc"] > o["n_mels"]:
            bad(f"{where}: n_mfcc ({o['n_mfcc']}) cannot exceed n_mels ({o['n_mels']})")
        for k in ("sample_rate", "max_frames"):
            if not _positive_int(o[k], allow_none=True):
                bad(f"{where}.{k}: expected a positive integer or null, got {o[k]!r}")
        if not isinstance(o["normalize"], bool):
            bad(f"{where}.normalize: expected true or false, got {o['normalize']!r}")
    elif loader == "text":
        if o["encoder"] not in ("tokens", "minilm"):
            bad(f"{where}.encoder: expected 'tokens' or 'minilm', got {o['encoder']!r} "
                f"({suggestion(str(o['encoder']), ['tokens', 'minilm'])})")
        if not _positive_int(o["max_tokens"], allow_none=True):
            bad(f"{where}.max_tokens: expected a positive integer or null, got {o['max_tokens']!r}")
        if not _positive_int(o["max_vocab"], allow_none=True) or (o["max_vocab"] is not None and o["max_vocab"] < 3):
            bad(f"{where}.max_vocab: expected an integer >= 3 or null, got {o['max_vocab']!r}")
    elif loader == "numeric":
        if not isinstance(o["normalize"], bool):
            bad(f"{where}.normalize: expected true or false, got {o['normalize']!r}")
    return o


def _columns_of(name: str, spec: dict, loader: str, columns: list[str], problems: _Problems) -> list[str]:
    where = f"modalities.{name}"
    if loader == "numeric":
        cols = spec.get("columns", spec.get("column"))
        if "columns" in spec and "column" in spec:
            problems.schema.append(f"{where}: give either 'column' or 'columns', not both")
        if isinstance(cols, str):
            cols = [cols]
        if not (isinstance(cols, list) and cols and all(isinstance(c, str) for c in cols)):
            problems.schema.append(f"{where}: 'columns' must be a non-empty list of column names, got {cols!r}")
            return []
    else:
        if "columns" in spec:
            problems.schema.append(f"{where}: the {loader!r} loader reads one 'column', not 'columns'")
        col = spec.get("column")
        if not isinstance(col, str) or not col:
            problems.schema.append(f"{where}: 'column' (the table column holding this modality) is required")
            return []
        cols = [col]
    ok = []
    for c in cols:
        if c in columns:
            ok.append(c)
        else:
            problems.schema.append(f"{where}: column {c!r} is not in the table ({suggestion(c, columns)}); "
                                   f"available columns: {columns}")
    return ok if len(ok) == len(cols) else []


# ---------------------------------------------------------------------- file checks and decoding
def _check_image(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        size = im.size
        im.verify()
    return size


def _check_audio(path: Path) -> None:
    import soundfile as sf

    info = sf.info(str(path))
    if info.frames <= 0:
        raise ValueError("the file holds no audio samples")


def _check_npy(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        raise ValueError("not a single .npy array (an .npz archive?)")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"dtype {arr.dtype} is not numeric")
    return tuple(arr.shape) or (1,), arr.dtype


def _decode_image(path: Path, size: list[int] | None, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()


def _decode_audio(path: Path, o: dict[str, Any]) -> np.ndarray:
    import soundfile as sf

    from .audio import log_mel, mfcc, resample, to_mono

    data, sr = sf.read(str(path), dtype="float64", always_2d=False)
    x, sr = resample(to_mono(data), int(sr), o["sample_rate"])
    if not np.isfinite(x).all():
        raise ValueError("the signal contains NaN or infinite samples")
    if o["features"] == "mfcc":
        return mfcc(x, sr, n_mfcc=int(o["n_mfcc"]), n_mels=int(o["n_mels"]))
    return log_mel(x, sr, n_mels=int(o["n_mels"]))


def _decode_npy(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("contains NaN or infinite values")
        arr = arr.astype(np.float32)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.float32)
    else:
        arr = arr.astype(np.int64)
    return arr


CHECKERS: dict[str, Callable[[Path], Any]] = {"image": _check_image, "audio": _check_audio, "npy": _check_npy}


# ---------------------------------------------------------------------- the loader
def load_table(schema: str | os.PathLike | dict, *, seed: int = 0,
               base_dir: str | os.PathLike | None = None) -> dict[str, ArrayDataset]:
    """Train/val/test :class:`ArrayDataset` splits of a user table (see the module docstring)."""
    raw, schema_dir, where = _load_schema(schema, base_dir)
    problems = _Problems(where)
    if not isinstance(raw, dict):
        raise TableSchemaError(f"{where}: expected a mapping with keys 'table', 'target', 'modalities', "
                               f"got {type(raw).__name__}")
    _unknown_keys(raw, TOP_KEYS, "schema", problems)
    for key in ("table", "target", "modalities"):
        if key not in raw:
            problems.schema.append(f"schema: required key {key!r} is missing")
    if "table" not in raw:
        problems.raise_if_any()
    table_path = Path(str(raw["table"])).expanduser()
    if not table_path.is_absolute():
        table_path = schema_dir / table_path
    if not table_path.is_file():
        problems.schema.append(f"schema.table: file {raw['table']!r} not found (looked for {table_path})")
        problems.raise_if_any()
    cols, n, is_csv = _read_table(table_path, raw.get("format"))
    where = f"table {table_path}"
    problems.where = where
    columns = list(cols)
    table_dir = table_path.parent

    def row(i: int) -> str:
        return f"row {i} (line {i + 2})" if is_csv else f"row {i}"

    if n == 0:
        problems.data.append("the table has no rows")

    # ---- target
    target_spec = raw.get("target") or {}
    if isinstance(target_spec, str):
        target_spec = {"column": target_spec}
    if not isinstance(target_spec, dict):
        problems.schema.append(f"schema.target: expected a mapping like {{column: label, task: multiclass}}, "
                               f"got {target_spec!r}")
        target_spec = {}
    _unknown_keys(target_spec, TARGET_KEYS, "schema.target", problems)
    task = target_spec.get("task", "multiclass")
    if task not in ("multiclass", "multilabel", "regression"):
        problems.schema.append(f"schema.target.task: expected multiclass, multilabel or regression, got {task!r} "
                               f"({suggestion(str(task), ['multiclass', 'multilabel', 'regression'])})")
        task = "multiclass"
    t_cols = target_spec.get("columns", target_spec.get("column"))
    if isinstance(t_cols, str):
        t_cols = [t_cols]
    if not (isinstance(t_cols, list) and t_cols and all(isinstance(c, str) for c in t_cols)):
        if "target" in raw:
            problems.schema.append("schema.target: 'column' (the label column) is required")
        t_cols = []
    elif len(t_cols) > 1 and task != "regression":
        problems.schema.append("schema.target: several 'columns' are only allowed for task: regression")
    for c in t_cols:
        if c not in cols:
            problems.schema.append(f"schema.target: column {c!r} is not in the table ({suggestion(c, columns)}); "
                                   f"available columns: {columns}")
    t_cols = [c for c in t_cols if c in cols]
    classes = target_spec.get("classes")
    if classes is not None and not (isinstance(classes, list) and classes):
        problems.schema.append(f"schema.target.classes: expected a non-empty list, got {classes!r}")
        classes = None
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            problems.schema.append("schema.target.classes: contains duplicates")
    separator = target_spec.get("separator", "|")
    if not isinstance(separator, str) or not separator:
        problems.schema.append(f"schema.target.separator: expected a non-empty string, got {separator!r}")
        separator = "|"

    targets: Any = None
    class_names: list[str] | None = None
    if t_cols:
        if task == "regression":
            y = np.zeros((n, len(t_cols)), dtype=np.float32)
            for j, c in enumerate(t_cols):
                for i, v in enumerate(cols[c]):
                    if _empty(v):
                        problems.data.append(f"{row(i)}: target column {c!r} is empty; every row needs a target")
                        continue
                    try:
                        f = float(v)
                    except (TypeError, ValueError):
                        problems.data.append(f"{row(i)}: target column {c!r} holds {v!r}, not a number")
                        continue
                    if not math.isfinite(f):
                        problems.data.append(f"{row(i)}: target column {c!r} is {v!r} (NaN or infinite)")
                    y[i, j] = f
            targets = y
        else:
            c = t_cols[0]
            labels: list[Any] = []
            for i, v in enumerate(cols[c]):
                if task == "multiclass" and _empty(v):
                    problems.data.append(f"{row(i)}: target column {c!r} is empty; every row needs a label")
                    labels.append(None)
                    continue
                s = "" if _empty(v) else _label_str(v)
                if task == "multiclass" and s.lower() in ("nan", "na", "null", "none"):
                    problems.data.append(f"{row(i)}: target column {c!r} is {s!r} (a missing label); every row "
                                         "needs a label")
                    labels.append(None)
                    continue
                if task == "multiclass":
                    labels.append(s)
                else:
                    labels.append([p.strip() for p in s.split(separator) if p.strip()])
            found = sorted({lab for v in labels if v is not None for lab in ([v] if task == "multiclass" else v)},
                           key=_class_key)
            if classes is None:
                class_names = found
            else:
                class_names = classes
                known = set(classes)
                for i, v in enumerate(labels):
                    if v is None:
                        continue
                    for lab in [v] if task == "multiclass" else v:
                        if lab not in known:
                            problems.data.append(f"{row(i)}: label {lab!r} in column {c!r} is not one of the "
                                                 f"classes {classes} ({suggestion(lab, classes)})")
            lookup = {k: j for j, k in enumerate(class_names)}
            if task == "multiclass":
                targets = np.array([lookup.get(v, 0) if v is not None else 0 for v in labels], dtype=np.int64)
            else:
                targets = np.zeros((n, len(class_names)), dtype=np.float32)
                for i, v in enumerate(labels):
                    for lab in v or []:
                        if lab in lookup:
                            targets[i, lookup[lab]] = 1.0
            if not class_names:
                problems.data.append(f"target column {c!r} holds no label")

    # ---- split
    split_spec = raw.get("split")
    split_of: np.ndarray | None = None
    fractions: tuple[float, ...] = (0.7, 0.1, 0.2)
    if split_spec is not None:
        if isinstance(split_spec, str):
            split_spec = {"column": split_spec}
        if not isinstance(split_spec, dict):
            problems.schema.append(f"schema.split: expected a mapping like {{column: split}}, got {split_spec!r}")
            split_spec = {}
        _unknown_keys(split_spec, SPLIT_KEYS, "schema.split", problems)
        if "column" in split_spec and "fractions" in split_spec:
            problems.schema.append("schema.split: give either 'column' or 'fractions', not both")
        if "fractions" in split_spec:
            try:
                fractions = check_fractions(split_spec["fractions"], "schema.split.fractions")
            except ConfigError as exc:
                problems.schema.append(str(exc))
        if "column" in split_spec:
            sc = split_spec["column"]
            if sc not in cols:
                problems.schema.append(f"schema.split: column {sc!r} is not in the table "
                                       f"({suggestion(str(sc), columns)}); available columns: {columns}")
            else:
                split_of = np.empty(n, dtype=object)
                for i, v in enumerate(cols[sc]):
                    key = "" if _empty(v) else str(v).strip().lower()
                    if key not in SPLIT_ALIASES:
                        problems.data.append(f"{row(i)}: split column {sc!r} holds {'' if _empty(v) else v!r}"
                                             f"{'an empty cell' if _empty(v) else ''}; expected train, val or test")
                    split_of[i] = SPLIT_ALIASES.get(key, "train")

    # ---- modalities: schema, columns, cells and file headers
    mods = raw.get("modalities")
    plan: dict[str, dict[str, Any]] = {}
    if mods is not None and (not isinstance(mods, dict) or not mods):
        problems.schema.append("schema.modalities: expected a mapping of modality name -> {column, loader, ...}")
        mods = {}
    for name, spec in (mods or {}).items():
        where_m = f"modalities.{name}"
        if not isinstance(name, str) or not name or name == "target":
            problems.schema.append(f"{where_m}: invalid modality name {name!r}")
            continue
        if not isinstance(spec, dict):
            problems.schema.append(f"{where_m}: expected a mapping with 'column' and 'loader', got {spec!r}")
            continue
        loader = spec.get("loader")
        if loader not in LOADER_KEYS:
            problems.schema.append(f"{where_m}.loader: {'is required' if loader is None else repr(loader) + ' is unknown'}"
                                   f"; expected one of {sorted(LOADER_KEYS)}"
                                   + ("" if loader is None else f" ({suggestion(str(loader), sorted(LOADER_KEYS))})"))
            continue
        known = set(LOADER_KEYS[loader]) | {"loader", "column"} | ({"columns"} if loader == "numeric" else set())
        _unknown_keys(spec, known, where_m, problems)
        opts = _check_options(name, loader, spec, problems)
        mcols = _columns_of(name, spec, loader, columns, problems)
        plan[name] = {"loader": loader, "opts": opts, "columns": mcols}
        if not mcols:
            continue
        present = np.ones(n, dtype=bool)
        if loader == "numeric":
            values = np.zeros((n, len(mcols)), dtype=np.float32)
            for i in range(n):
                cells = [cols[c][i] for c in mcols]
                if any(_empty(v) for v in cells):
                    present[i] = False
                    continue
                for j, (c, v) in enumerate(zip(mcols, cells)):
                    try:
                        f = float(v)
                    except (TypeError, ValueError):
                        problems.data.append(f"{row(i)}, column {c!r} (modality {name!r}): {v!r} is not a number; "
                                             "leave the cell empty if the value is missing")
                        continue
                    if not math.isfinite(f):
                        problems.data.append(f"{row(i)}, column {c!r} (modality {name!r}): value is {v!r} (NaN or "
                                             "infinite); leave the cell empty if the value is missing")
                    values[i, j] = f
            plan[name]["values"] = values
        elif loader == "text":
            texts = []
            for i, v in enumerate(cols[mcols[0]]):
                if _empty(v):
                    present[i] = False
                    texts.append("")
                else:
                    texts.append(str(v))
            plan[name]["values"] = texts
        else:
            c = mcols[0]
            paths: list[Path | None] = []
            headers: list[Any] = []
            for i, v in enumerate(cols[c]):
                if _empty(v):
                    present[i] = False
                    paths.append(None)
                    headers.append(None)
                    continue
                p = Path(str(v).strip()).expanduser()
                p = p if p.is_absolute() else table_dir / p
                paths.append(p)
                headers.append(None)
                if not p.is_file():
                    problems.data.append(f"{row(i)}, column {c!r} (modality {name!r}): file {str(v)!r} not found "
                                         f"(looked for {p})")
                    continue
                try:
                    headers[i] = CHECKERS[loader](p)
                except Exception as exc:  # noqa: BLE001 - any failure is reported with its cause
                    problems.data.append(f"{row(i)}, column {c!r} (modality {name!r}): cannot read {loader} file "
                                         f"{p} ({type(exc).__name__}: {exc})")
            plan[name]["paths"] = paths
            if loader == "image" and opts["size"] is None:
                sizes = {h for h in headers if h is not None}
                if len(sizes) > 1:
                    problems.schema.append(f"{where_m}: images of column {c!r} have different sizes "
                                           f"{sorted(sizes)[:5]}; set 'size: [height, width]' to resize them")
            if loader == "npy":
                ref = next(((i, h) for i, h in enumerate(headers) if h is not None), None)
                if ref is not None:
                    ref_i, (ref_shape, _) = ref
                    for i, h in enumerate(headers):
                        if h is None:
                            continue
                        shape = h[0]
                        if len(shape) != len(ref_shape) or shape[1:] != ref_shape[1:]:
                            problems.data.append(
                                f"{row(i)}, column {c!r} (modality {name!r}): array of shape {shape} does not match "
                                f"shape {ref_shape} of {row(ref_i)}; only the first axis may differ")
        plan[name]["present"] = present
    problems.raise_if_any()

    # ---- split indices
    if split_of is not None:
        parts = [np.flatnonzero(split_of == k) for k in SPLITS]
    else:
        rng = np.random.default_rng([seed, 5])
        parts = stratified_split(targets if task == "multiclass" else None, n, fractions, rng)
    is_train = np.zeros(n, dtype=bool)
    is_train[parts[0]] = True
    if not is_train.any():
        raise DataError(f"{where}: no row is in the train split; mark some rows 'train' in the split column")

    # ---- decoding (all errors collected)
    arrays: dict[str, Any] = {}
    presence: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {"source": str(table_path)}
    vocabs: dict[str, list[str]] = {}
    for name, p in plan.items():
        loader, o, present = p["loader"], p["opts"], p["present"]
        c = p["columns"][0]
        if loader == "numeric":
            values = p["values"]
            if o["normalize"]:
                values = _standardise(values, present & is_train, axis=0)
            values[~present] = 0.0
            arrays[name] = values.astype(np.float32)
        elif loader == "text":
            if o["encoder"] == "tokens":
                from .text import build_vocab, encode

                vocab = build_vocab([t for t, tr in zip(p["values"], present & is_train) if tr],
                                    max_size=o["max_vocab"])
                vocabs[name] = vocab
                ids = encode(p["values"], vocab, o["max_tokens"])
                arrays[name] = [a if ok else None for a, ok in zip(ids, present)]
            else:
                from .text import minilm_embeddings

                emb = np.zeros((n, 384), dtype=np.float32)
                rows = np.flatnonzero(present)
                if len(rows):
                    emb[rows] = minilm_embeddings([p["values"][i] for i in rows])
                arrays[name] = emb
        else:
            out: list[np.ndarray | None] = [None] * n
            for i, path in enumerate(p["paths"]):
                if path is None:
                    continue
                try:
                    if loader == "image":
                        out[i] = _decode_image(path, o["size"], o["channels"])
                    elif loader == "audio":
                        out[i] = _decode_audio(path, o)
                    else:
                        out[i] = _decode_npy(path)
                except Exception as exc:  # noqa: BLE001
                    problems.data.append(f"{row(i)}, column {c!r} (modality {name!r}): decoding {path} failed "
                                         f"({type(exc).__name__}: {exc})")
            if loader == "audio":
                if o["normalize"]:
                    train_frames = [a for a, tr in zip(out, is_train) if a is not None and tr]
                    if train_frames:
                        stacked = np.concatenate(train_frames, axis=0)
                        mean, std = stacked.mean(axis=0), stacked.std(axis=0)
                        std = np.where(std > 1e-8, std, 1.0)
                        out = [None if a is None else ((a - mean) / std).astype(np.float32) for a in out]
                if o["max_frames"] is None:  # variable length, whatever the files hold
                    arrays[name] = out
                    presence[name] = present
                    continue
                out = [None if a is None else _fit_frames(a, int(o["max_frames"])) for a in out]
            if loader == "image" and all(a is None for a in out) and o["size"] is not None:
                out = np.zeros((n, o["channels"], *o["size"]), dtype=np.float32)  # no image at all: keep the shape
            arrays[name] = out if isinstance(out, np.ndarray) else _stack_or_list(out)
        presence[name] = present
    problems.raise_if_any()
    if vocabs:
        attrs["vocabs"] = vocabs
    ds_name = str(raw.get("name") or table_path.stem)
    full = ArrayDataset(arrays, targets, presence, task=task, class_names=class_names,
                        num_classes=len(class_names) if class_names is not None else None, name=ds_name,
                        attrs=attrs)
    return {k: full.subset(idx, name=f"{ds_name}/{k}") for k, idx in zip(SPLITS, parts)}


def _label_str(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _class_key(label: str) -> tuple:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _standardise(values: np.ndarray, rows: np.ndarray, axis: int = 0) -> np.ndarray:
    ref = values[rows]
    if len(ref) == 0:
        return values
    mean, std = ref.mean(axis=axis), ref.std(axis=axis)
    return ((values - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


def _fit_frames(a: np.ndarray, frames: int) -> np.ndarray:
    if len(a) >= frames:
        return a[:frames]
    out = np.zeros((frames,) + a.shape[1:], dtype=a.dtype)
    out[: len(a)] = a
    return out


def _stack_or_list(values: list[np.ndarray | None]) -> Any:
    """A stacked array (absent rows zero) when all present values share a shape, else a list."""
    shapes = {v.shape for v in values if v is not None}
    if len(shapes) == 1:
        shape = shapes.pop()
        if len(shape) >= 1:
            ref = next(v for v in values if v is not None)
            out = np.zeros((len(values),) + shape, dtype=ref.dtype)
            for i, v in enumerate(values):
                if v is not None:
                    out[i] = v
            return out
    if not shapes:
        return [None] * len(values)
    return values


@register_dataset("table", cache=False)
def table(*, seed: int = 0, schema: Any = None, base_dir: str | None = None) -> dict[str, ArrayDataset]:
    """A user table (CSV / Parquet) described by a YAML schema: ``load_dataset("table", schema=path)``."""
    if schema is None:
        raise ConfigError("dataset 'table': option 'schema' is required (the path of a YAML schema file or a dict); "
                          "see mmfuse.datasets.table for the format")
    return load_table(schema, seed=seed, base_dir=base_dir)
