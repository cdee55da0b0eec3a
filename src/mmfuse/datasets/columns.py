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
        for i, c in enumerate(cells):
            if c is None:
                continue
            try:
                out[i] = self.transform_cell(c)
            except Exception as exc:  # noqa: BLE001 - reported with the row
                problems.append(f"{self.where(i, row)}: decoding {c} failed ({type(exc).__name__}: {exc})")
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
class FileLoader(ColumnLoader):
    header: Callable[[Path], Any] = staticmethod(lambda p: None)

    def check_cell(self, value, i, row, problems):
        p = Path(str(value).strip()).expanduser()
        p = p if p.is_absolute() else self.base_dir / p
        if self.roots is not None:
            real = p.resolve()
            if not any(real == r or r in real.parents for r in self.roots):
                raise _CellError(f"{self.where(i, row)}: path {str(value)!r} resolves to {real}, outside the data root "
                                 f"{self.roots[0]} (the schema's folder); move the file under it, or set "
                                 "`allow_outside_root: true` in the schema if files outside are intended")
        if not p.is_file():
            raise _CellError(f"{self.where(i, row)}: file {str(value)!r} not found (looked for {p}); fix the path "
                             "(relative to the data root) or leave the cell empty if the modality is absent")
        try:
            self.headers[i] = type(self).header(p)
        except Exception as exc:  # noqa: BLE001
            why = ("it holds pickled (object) data or is not an .npy file, which is never loaded"
                   if "pickle" in str(exc) else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            raise _CellError(f"{self.where(i, row)}: cannot read {self.loader_name} file {p} ({why}); replace it "
                             f"with a valid {self.loader_name} file (or leave the cell empty if the modality is "
                             "absent)") from None
        return p

    def check(self, cells, row):
        self.headers: dict[int, Any] = {}
        return super().check(cells, row)


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

    def fit(self, cells):
        o = self.options
        if o.size is not None:
            self.size = list(o.size)
        else:
            from PIL import Image

            sizes = set()
            for p in cells:
                with Image.open(p) as im:
                    sizes.add(im.size)
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

    def transform_cell(self, path):
        from PIL import Image

        h, w = self.size if self.size is not None else (None, None)
        with Image.open(path) as im:
            im = im.convert("L" if self.channels == 1 else "RGB")
            if h is not None and im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
        return arr[None] if self.channels == 1 else arr.transpose(2, 0, 1).copy()

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

        data, sr = sf.read(str(path), dtype="float64", always_2d=False)
        x, sr = resample(to_mono(data), int(sr), self.sample_rate)
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
        if o.normalize:
            frames = []
            for p in cells:
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

    def transform_cell(self, path):
        a = self._features(path)
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

    def fit(self, cells):
        headers = [_npy_header(p) for p in cells]
        shapes = [h[0] for h in headers]
        self.ref_shape = tuple(shapes[0]) if shapes else None
        self.fixed = len({s for s in shapes}) <= 1
        kinds = {self._out_dtype(h[1]) for h in headers}
        # integer arrays (e.g. token ids) stay int64; any float file makes the column float32
        self.out_dtype = "float32" if not kinds or "float32" in kinds else "int64"
        self.fitted = True
        return self

    def transform_cell(self, path):
        arr = np.load(path, allow_pickle=False)
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


class NumericOptions(LoaderOptions):
    normalize: bool = True


@COLUMN_LOADERS.register("numeric")
class NumericLoader(ColumnLoader):
    """Numbers of one or more columns -> float32 ``(len(columns),)``, standardised with the training mean / std."""

    Options = NumericOptions
    multi_column = True
    loader_name = "numeric"

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
        if self.options.normalize and cells:
            ref = np.stack(cells)
            self.mean = ref.mean(axis=0)
            std = ref.std(axis=0)
            self.std = np.where(std > 1e-8, std, 1.0)
        self.fitted = True
        return self

    def transform_cell(self, v):
        if self.mean is not None:
            return ((v - self.mean) / self.std).astype(np.float32)
        return v.astype(np.float32)

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
            labels.append(s if self.task == "multiclass" else [p.strip() for p in s.split(self.separator) if p.strip()])
        if self.given is None and not self.fitted:  # mixed label types: 'seven' among integers
            flat = [(i, lab) for i, v in enumerate(labels) if v is not None
                    for lab in ([v] if self.task == "multiclass" else v)]
            nums = [(i, lab) for i, lab in flat if _is_number(lab)]
            words = [(i, lab) for i, lab in flat if not _is_number(lab)]
            if nums and words:
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
        if self.task != "regression":
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
                "classes": self.class_names}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TargetEncoder":
        t = cls(state["task"], state["columns"], state.get("classes"), state.get("separator", "|"))
        t.class_names = state.get("classes")
        t.fitted = True
        return t
