"""Multimodal datasets: the contract every builder returns, and an in-memory implementation.

A dataset is a ``torch.utils.data.Dataset`` whose items are *sample dicts*::

    {"image": Tensor[1, 28, 28], "audio": None, "target": 3}

* one key per modality (sorted in :attr:`MultimodalDataset.modalities`); the value is a tensor,
  or ``None`` when the modality is absent for that sample;
* ``"target"``: a Python ``int`` for ``task="multiclass"``; a float32 tensor of shape
  ``(num_classes,)`` holding 0/1 for ``"multilabel"``; a float32 tensor of shape
  ``(num_outputs,)`` for ``"regression"`` (``num_classes`` is then the number of outputs, so
  a batch target is always ``[B]`` or ``[B, num_classes]``).

Batches are made by :attr:`MultimodalDataset.collate_fn`, a :class:`mmfuse.batch.Collator`
knowing the modalities and shapes, so a modality absent from a whole batch still gets a
zero tensor with the right shape and a False mask.

:class:`ArrayDataset` keeps everything in memory: one array per modality (or a list of arrays
whose first axis varies), a boolean presence mask per modality, and the targets. Every
built-in builder returns ``ArrayDataset`` splits, which the cache stores as ``.npz`` files
without pickle.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..batch import Collator, MultimodalBatch, TARGET_KEY, collate
from ..errors import ConfigError, DataError, ShapeError
from ..registry import suggestion

TASKS = ("multiclass", "multilabel", "regression")
SPLITS = ("train", "val", "test")


class MultimodalDataset(Dataset):
    """Base class: a ``Dataset`` of sample dicts with its modality metadata.

    Subclasses set ``modalities`` (sorted names), ``shapes`` (modality -> shape of one sample,
    ``None`` for a variable first axis), ``num_classes``, ``task``, ``class_names`` and ``name``,
    and implement ``__len__`` / ``__getitem__``.
    """

    modalities: list[str]
    shapes: dict[str, tuple]
    num_classes: int
    task: str
    class_names: list[str] | None
    name: str

    @property
    def collate_fn(self) -> Collator:
        """A picklable ``collate_fn`` for ``DataLoader`` producing :class:`MultimodalBatch`."""
        return Collator(self.modalities, self.shapes, {m: self.torch_dtype(m) for m in self.modalities})

    def torch_dtype(self, modality: str) -> torch.dtype:
        """The dtype of a modality's tensors (int64 token ids, float32 otherwise), known even when absent."""
        arrays = getattr(self, "arrays", None)
        if arrays is not None and modality in arrays:
            a = arrays[modality]
            first = next((v for v in a if v is not None), None) if isinstance(a, list) else a
            if first is not None and np.dtype(first.dtype).kind in "iub":
                return torch.int64
        return torch.float32

    def describe(self) -> dict[str, Any]:
        """A short summary: size, task, shapes and (for classification) the class counts."""
        return {"name": self.name, "size": len(self), "task": self.task, "num_classes": self.num_classes,
                "shapes": dict(self.shapes)}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{m}={_fmt_shape(s)}" for m, s in self.shapes.items())
        return (f"{type(self).__name__}({self.name!r}, n={len(self)}, task={self.task}, "
                f"num_classes={self.num_classes}, {shapes})")


def _fmt_shape(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("T" if s is None else str(s) for s in shape) + ")"


class Gather:
    """An array-like view ``bank[rows] * scale``: shares one bank of values between samples.

    Used when many samples point to the same item (e.g. several questions about one image)
    and to keep images as ``uint8`` in memory while serving float32. ``len`` and ``shape``
    behave like the gathered array; indexing with an int or an index array returns float32
    when ``scale`` is set, else the bank's dtype.
    """

    def __init__(self, bank: np.ndarray, rows: np.ndarray, scale: float | None = None):
        self.bank = np.asarray(bank)
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.ndim != 1:
            raise ShapeError(f"Gather: rows must be 1-D, got shape {self.rows.shape}")
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(self.bank)):
            raise ShapeError(f"Gather: rows must index a bank of {len(self.bank)} items")
        self.scale = None if scale is None else float(scale)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows),) + tuple(self.bank.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.scale is not None else self.bank.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: Any) -> np.ndarray:
        out = self.bank[self.rows[idx]]
        if self.scale is not None:
            out = out.astype(np.float32) * np.float32(self.scale)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)

    def take(self, indices: np.ndarray) -> "Gather":
        return Gather(self.bank, self.rows[np.asarray(indices, dtype=np.int64)], self.scale)


def _is_ragged(value: Any) -> bool:
    return isinstance(value, (list, tuple))


class ArrayDataset(MultimodalDataset):
    """An in-memory multimodal dataset built from arrays.

    Parameters
    ----------
    arrays:
        ``{modality: values}`` where ``values`` is an array ``[N, *shape]`` (fixed shape), a
        list of ``N`` arrays whose first axis may vary (``shape`` is then ``(None, *rest)``;
        entries of absent samples may be ``None``), or a :class:`Gather`.
    targets:
        ``[N]`` integer class ids (multiclass), ``[N, C]`` 0/1 (multilabel) or ``[N]`` /
        ``[N, K]`` floats (regression).
    present:
        ``{modality: bool[N]}``; True = present. Missing entries mean "always present", except
        for list entries that are ``None``, which are absent.
    task, num_classes, class_names, name:
        Metadata; ``num_classes`` defaults to ``max(target) + 1`` (multiclass) or the width of
        the targets.
    attrs:
        Extra JSON-serialisable metadata (e.g. a text vocabulary); each key also becomes an
        attribute of the dataset (``dataset.vocab``) and is kept by the cache.
    ids:
        ``[N]`` integer identifiers of the samples in their source (e.g. the row of a user's
        table); default ``0..N-1``. Kept by :meth:`subset` and the cache, so predictions can be
        traced back to their source.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray | Sequence[np.ndarray | None] | Gather],
        targets: np.ndarray | Sequence[Any],
        present: Mapping[str, np.ndarray] | None = None,
        *,
        task: str = "multiclass",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "arrays",
        attrs: Mapping[str, Any] | None = None,
        ids: np.ndarray | Sequence[int] | None = None,
    ):
        if task not in TASKS:
            raise ConfigError(f"dataset {name!r}: task must be one of {list(TASKS)}, got {task!r}; "
                              f"{suggestion(str(task), list(TASKS))}")
        if not isinstance(arrays, Mapping) or not arrays:
            raise ConfigError(f"dataset {name!r}: arrays must be a non-empty dict of modality name -> array")
        for m in arrays:
            if not isinstance(m, str) or not m or m == TARGET_KEY:
                raise ConfigError(f"dataset {name!r}: invalid modality name {m!r} "
                                  f"(names must be non-empty strings other than {TARGET_KEY!r}); rename the modality")
        self.name = name
        self.task = task
        self.targets = self._check_targets(targets, task, name)
        n = len(self.targets)
        self.ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(self.ids) != n:
            raise ShapeError(f"dataset {name!r}: {len(self.ids)} ids for {n} samples")
        self.modalities = sorted(arrays)
        self.arrays: dict[str, Any] = {}
        self.present: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple] = {}
        present = dict(present or {})
        unknown = sorted(set(present) - set(arrays))
        if unknown:
            raise ConfigError(f"dataset {name!r}: present has modality {unknown[0]!r} that is not in arrays "
                              f"({self.modalities}); remove it from present or rename it to one of these")
        for m in self.modalities:
            values = arrays[m]
            if _is_ragged(values):
                values = [None if v is None else np.asarray(v) for v in values]
                values = [v.astype(np.float32) if v is not None and v.dtype == np.float64 else v for v in values]
                if len(values) != n:
                    raise ShapeError(f"dataset {name!r}, modality {m!r}: {len(values)} samples but {n} targets; "
                                     "give one target per sample (and one value per sample for every modality)")
                mask = np.array([v is not None for v in values], dtype=bool)
                if m in present:
                    mask &= self._check_mask(present[m], n, m)
                for i, v in enumerate(values):
                    if v is not None and mask[i]:
                        self._check_values(v[None] if v.ndim else v.reshape(1, 1), m, i)
                        if v.ndim and v.shape[0] == 0:
                            raise DataError(
                                f"dataset {name!r}, sample {i}, modality {m!r}: a present sequence of length 0; "
                                "give None (or present False) to mark the modality absent for this sample")
                vals = [v for v, p in zip(values, mask) if p]
                if vals:
                    ref = vals[0]
                    for i, v in enumerate(values):
                        if v is not None and mask[i] and (v.ndim != ref.ndim or v.shape[1:] != ref.shape[1:] or v.ndim == 0):
                            raise ShapeError(
                                f"dataset {name!r}, sample {i}, modality {m!r}: shape {v.shape} is incompatible "
                                f"with {ref.shape} of the first present sample; pad or crop the samples so only the first axis varies")
                    rest = tuple(int(s) for s in ref.shape[1:])
                else:
                    rest = ()
                self.shapes[m] = (None,) + rest
                self.arrays[m] = values
            else:
                if not isinstance(values, Gather):
                    values = np.asarray(values)
                    if values.dtype == object:
                        raise ShapeError(f"dataset {name!r}, modality {m!r}: samples have different shapes; pass a "
                                         "list of arrays (variable first axis) or arrays of one shape")
                    if values.dtype == np.float64:
                        values = values.astype(np.float32)
                if len(values) != n:
                    raise ShapeError(f"dataset {name!r}, modality {m!r}: {len(values)} samples but {n} targets; "
                                     "give one target per sample (and one value per sample for every modality)")
                shape = tuple(int(s) for s in values.shape[1:])
                if len(shape) == 0:  # one number per sample -> a vector of size 1
                    if isinstance(values, Gather):
                        raise ShapeError(f"dataset {name!r}, modality {m!r}: a Gather bank needs at least 2 dims")
                    values = values.reshape(n, 1)
                    shape = (1,)
                mask = self._check_mask(present[m], n, m) if m in present else np.ones(n, dtype=bool)
                if not isinstance(values, Gather):
                    self._check_values(values, m, None, mask)
                self.shapes[m] = shape
                self.arrays[m] = values
            self.present[m] = mask
        if self.task == "multiclass":
            if num_classes is None:
                num_classes = int(self.targets.max()) + 1 if n else (len(class_names) if class_names else 0)
            if n and (self.targets.min() < 0 or self.targets.max() >= num_classes):
                bad = int(np.flatnonzero((self.targets < 0) | (self.targets >= num_classes))[0])
                raise DataError(f"dataset {name!r}, sample {bad}: target {int(self.targets[bad])} is outside "
                                f"[0, {num_classes}); give class ids 0..num_classes-1 (remap the labels) or pass a larger num_classes")
        else:
            width = int(self.targets.shape[1])
            if num_classes is not None and int(num_classes) != width:
                raise ConfigError(f"dataset {name!r}: num_classes={num_classes} but targets have {width} columns")
            num_classes = width
        self.num_classes = int(num_classes)
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if len(class_names) != self.num_classes:
                raise ConfigError(f"dataset {name!r}: {len(class_names)} class_names for {self.num_classes} classes; "
                                  f"give one name per class ({self.num_classes}) or leave class_names out")
        self.class_names = class_names
        self.attrs = dict(attrs or {})
        for k, v in self.attrs.items():
            if k.startswith("_") or hasattr(type(self), k) or k in self.__dict__:
                raise ConfigError(f"dataset {name!r}: attribute name {k!r} is reserved")
            setattr(self, k, v)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_targets(targets: Any, task: str, name: str) -> np.ndarray:
        y = np.asarray(targets)
        if y.dtype == object:
            raise DataError(f"dataset {name!r}: targets must be numbers, got Python objects")
        if task == "multiclass":
            if y.ndim != 1:
                raise ShapeError(f"dataset {name!r}: multiclass targets must be 1-D class ids, got shape {y.shape}")
            if y.dtype.kind == "f":
                bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
                if len(bad):
                    raise DataError(f"dataset {name!r}, sample {int(bad[0])}: target {y[bad[0]]} is not a class id; "
                                    "give whole-number class ids 0..num_classes-1 (round or remap the labels), "
                                    "or use task='regression' for continuous targets")
            elif y.dtype.kind not in "iub":
                raise DataError(f"dataset {name!r}: multiclass targets must be integers, got dtype {y.dtype}")
            # a read-only array (e.g. a streamed table's memory-mapped split) is kept, not copied (no write through it)
            return y.astype(np.int64, copy=y.flags.writeable)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2:
            raise ShapeError(f"dataset {name!r}: {task} targets must have shape [N] or [N, K], got {y.shape}")
        y = y.astype(np.float32, copy=y.flags.writeable)
        bad = np.flatnonzero(~np.isfinite(y).all(axis=1))
        if len(bad):
            raise DataError(f"dataset {name!r}, sample {int(bad[0])}: target contains NaN or infinity; drop or impute these rows")
        if task == "multilabel" and not np.isin(y, (0.0, 1.0)).all():
            bad = int(np.flatnonzero(~np.isin(y, (0.0, 1.0)).all(axis=1))[0])
            raise DataError(f"dataset {name!r}, sample {bad}: multilabel target {y[bad].tolist()} is not 0/1; "
                            "give 0/1 indicator rows (1 = label on), e.g. binarise with (target > 0.5)")
        return y

    def _check_values(self, values: np.ndarray, m: str, row: int | None, mask: np.ndarray | None = None) -> None:
        """Numbers only (no strings, objects or complex) and finite in present rows; errors name the sample."""
        kind = values.dtype.kind
        where = f"dataset {self.name!r}" + ("" if row is None else f", sample {row}") + f", modality {m!r}"
        if kind == "c":
            raise DataError(f"{where}: complex values are not supported (their imaginary part would be dropped); "
                            "pass the real and imaginary parts (or magnitude and phase) as real features")
        if kind not in "biuf":
            raise DataError(f"{where}: values must be numbers, got dtype {values.dtype} ({'str' if kind in 'US' else kind}"
                            "); encode text as token ids (a text column with loader: text) or numbers")
        if kind == "f" and len(values):
            flat = values.reshape(len(values), -1)
            bad = ~np.isfinite(flat).all(1)
            if mask is not None:
                bad &= mask
            if bad.any():
                i = int(np.flatnonzero(bad)[0]) if row is None else row
                raise DataError(f"dataset {self.name!r}, sample {i}, modality {m!r}: contains NaN or infinite values; "
                                "clean or impute them, or mark the modality absent (present False) for this sample")

    def _check_mask(self, mask: Any, n: int, m: str) -> np.ndarray:
        mk = np.asarray(mask)
        if mk.shape != (n,) or mk.dtype != bool:
            raise ShapeError(f"dataset {self.name!r}: present[{m!r}] must be a bool array of shape ({n},), "
                             f"got {mk.dtype} of shape {mk.shape}; pass one bool per sample (True = present), "
                             f"e.g. present[{m!r}] = values.astype(bool)")
        return mk.copy() if mk.flags.writeable else mk  # a read-only mask (memory-mapped) is kept, not copied

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.targets)

    def _value(self, m: str, i: int) -> torch.Tensor | None:
        if not self.present[m][i]:
            return None
        v = self.arrays[m][i]
        return torch.from_numpy(np.ascontiguousarray(v))

    def target(self, i: int) -> Any:
        if self.task == "multiclass":
            return int(self.targets[i])
        return torch.from_numpy(self.targets[i].copy())

    def __getitem__(self, i: int) -> dict[str, Any]:
        if isinstance(i, np.integer) or (isinstance(i, torch.Tensor) and i.dim() == 0 and not i.is_floating_point()):
            i = int(i)
        if not isinstance(i, int):
            raise TypeError(f"dataset {self.name!r}: index must be an int, got {type(i).__name__}")
        n = len(self)
        if i < -n or i >= n:
            raise IndexError(f"dataset {self.name!r}: index {i} out of range for {n} samples")
        i = i % n
        sample: dict[str, Any] = {m: self._value(m, i) for m in self.modalities}
        sample[TARGET_KEY] = self.target(i)
        return sample

    def batch(self, indices: Sequence[int] | np.ndarray | None = None) -> MultimodalBatch:
        """The samples ``indices`` (default: all) as one :class:`MultimodalBatch`, vectorised.

        Equivalent to ``collate_fn([ds[i] for i in indices])`` but much faster for fixed-shape
        modalities (useful for evaluation and cached features).
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            raise DataError(f"dataset {self.name!r}: batch() got no indices")
        inputs, mask, lengths = {}, {}, {}
        for m in self.modalities:
            pres = torch.from_numpy(self.present[m][idx].copy())
            if self.shapes[m][0] is None:
                sub = collate([{m: self._value(m, int(i))} for i in idx], [m], {m: self.shapes[m]},
                              dtypes={m: self.torch_dtype(m)})
                inputs[m], lengths[m] = sub.inputs[m], sub.lengths[m]
            else:
                x = torch.from_numpy(np.ascontiguousarray(self.arrays[m][idx]))
                if x.dtype == torch.float64:
                    x = x.float()
                if not bool(pres.all()):
                    shape = (-1,) + (1,) * (x.dim() - 1)
                    x = torch.where(pres.view(shape), x, torch.zeros((), dtype=x.dtype))
                inputs[m] = x
            mask[m] = pres
        target = torch.from_numpy(self.targets[idx].copy())
        return MultimodalBatch(inputs, mask, target, lengths, torch.from_numpy(idx.copy()))

    # ------------------------------------------------------------------ derived datasets
    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> "ArrayDataset":
        """A new dataset with the samples ``indices`` (same metadata): a :class:`Gather` column gives an index view of
        its bank (no copy of the values); plain arrays are fancy-indexed (a copy), lists give a new list of the same items."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        arrays: dict[str, Any] = {}
        for m, v in self.arrays.items():
            if isinstance(v, list):
                arrays[m] = [v[int(i)] for i in idx]
            elif isinstance(v, Gather):
                arrays[m] = v.take(idx)
            else:
                arrays[m] = v[idx]
        return ArrayDataset(arrays, self.targets[idx], {m: p[idx] for m, p in self.present.items()},
                            task=self.task, num_classes=self.num_classes, class_names=self.class_names,
                            name=name or self.name, attrs=self.attrs, ids=self.ids[idx])

    def with_present(self, present: Mapping[str, np.ndarray], name: str | None = None) -> "ArrayDataset":
        """A copy whose presence masks are AND-ed with ``present`` (e.g. to simulate missing modalities)."""
        unknown = sorted(set(present) - set(self.modalities))
        if unknown:
            raise ConfigError(f"dataset {self.name!r}: unknown modality {unknown[0]!r}; "
                              f"{suggestion(unknown[0], self.modalities)}")
        out = self.subset(np.arange(len(self)), name=name)
        for m, p in present.items():
            out.present[m] = out.present[m] & self._check_mask(p, len(self), m)
        return out

    def class_counts(self) -> dict[str, int] | None:
        if self.task == "regression":
            return None
        names = self.class_names or [str(c) for c in range(self.num_classes)]
        if self.task == "multiclass":
            counts = np.bincount(self.targets, minlength=self.num_classes)
        else:
            counts = self.targets.sum(axis=0).astype(np.int64)
        return {names[c]: int(counts[c]) for c in range(self.num_classes)}

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["present"] = {m: int(p.sum()) for m, p in self.present.items()}
        counts = self.class_counts()
        if counts is not None:
            out["class_counts"] = counts
        return out

    # ------------------------------------------------------------------ (de)serialisation, no pickle
    def to_npz_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Plain arrays (numbers and one JSON string) describing this dataset, for ``np.savez``."""
        out: dict[str, np.ndarray] = {}
        kinds: dict[str, Any] = {}
        for j, m in enumerate(self.modalities):
            v = self.arrays[m]
            key = f"{prefix}m{j}"
            out[f"{key}_present"] = self.present[m]
            if isinstance(v, list):
                rest = self.shapes[m][1:]
                dtype = next((a.dtype for a in v if a is not None), np.dtype(np.float32))
                lens = np.array([-1 if a is None else len(a) for a in v], dtype=np.int64)
                parts = [a.astype(dtype, copy=False) for a in v if a is not None]
                flat = np.concatenate(parts, axis=0) if parts else np.zeros((0,) + tuple(rest), dtype=dtype)
                out[f"{key}_flat"], out[f"{key}_lengths"] = flat, lens
                kinds[m] = {"kind": "ragged", "key": key}
            elif isinstance(v, Gather):
                out[f"{key}_bank"], out[f"{key}_rows"] = v.bank, v.rows
                kinds[m] = {"kind": "gather", "key": key, "scale": v.scale}
            else:
                out[f"{key}_data"] = np.asarray(v)
                kinds[m] = {"kind": "array", "key": key}
        out[f"{prefix}targets"] = self.targets
        out[f"{prefix}ids"] = self.ids
        meta = {"name": self.name, "task": self.task, "num_classes": self.num_classes,
                "class_names": self.class_names, "attrs": self.attrs, "modalities": kinds}
        out[f"{prefix}meta"] = np.array(json.dumps(meta))
        return out

    @classmethod
    def from_npz_dict(cls, data: Mapping[str, np.ndarray], prefix: str = "") -> "ArrayDataset":
        meta = json.loads(str(data[f"{prefix}meta"]))
        arrays: dict[str, Any] = {}
        present: dict[str, np.ndarray] = {}
        for m, info in meta["modalities"].items():
            key = info["key"]
            present[m] = np.asarray(data[f"{key}_present"], dtype=bool)
            if info["kind"] == "ragged":
                flat, lens = data[f"{key}_flat"], data[f"{key}_lengths"]
                ends = np.cumsum(np.maximum(lens, 0))
                starts = ends - np.maximum(lens, 0)
                arrays[m] = [None if ln < 0 else flat[s:e] for s, e, ln in zip(starts, ends, lens)]
            elif info["kind"] == "gather":
                arrays[m] = Gather(data[f"{key}_bank"], data[f"{key}_rows"], info["scale"])
            else:
                arrays[m] = data[f"{key}_data"]
        return cls(arrays, data[f"{prefix}targets"], present, task=meta["task"], num_classes=meta["num_classes"],
                   class_names=meta["class_names"], name=meta["name"], attrs=meta["attrs"],
                   ids=data[f"{prefix}ids"] if f"{prefix}ids" in data else None)


# ---------------------------------------------------------------------- splitting helpers
def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer sizes summing to ``n`` in the given proportions (largest remainder rounding)."""
    f = np.asarray(fractions, dtype=np.float64)
    raw = f / f.sum() * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    for k in order[: n - counts.sum()]:
        counts[k] += 1
    return [int(c) for c in counts]


def check_fractions(fractions: Any, where: str) -> tuple[float, ...]:
    try:
        f = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: split fractions must be 3 numbers (train, val, test), got {fractions!r}") from None
    if len(f) != 3 or any(not np.isfinite(x) or x < 0 for x in f) or f[0] <= 0 or sum(f) <= 0:
        raise ConfigError(f"{where}: split fractions must be 3 non-negative numbers (train, val, test) with "
                          f"train > 0, e.g. [0.7, 0.1, 0.2]; got {fractions!r}")
    return f


def stratified_split(
    labels: np.ndarray | None, n: int, fractions: Sequence[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint sorted index arrays in the given proportions; per class when ``labels`` is given."""
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for g in groups:
        perm = g[rng.permutation(len(g))]
        start = 0
        for k, c in enumerate(split_counts(len(g), fractions)):
            parts[k].append(perm[start:start + c])
            start += c
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


def choice(option: str, value: Any, allowed: Iterable[str], where: str) -> str:
    """Validate a string option against ``allowed`` with a close-match suggestion."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{where}: option {option}={value!r} is not one of {allowed}; "
                          f"{suggestion(str(value), allowed)}")
    return value


def check_fraction(value: Any, option: str, where: str) -> float:
    """A float in [0, 1) (e.g. ``val_fraction``), or a ConfigError naming the option."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {option} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{where}: {option} must be in [0, 1), got {value}")
    return value


def from_arrays(
    arrays: Mapping[str, np.ndarray | Sequence[np.ndarray | None]],
    targets: np.ndarray | Sequence[Any],
    *,
    present: Mapping[str, np.ndarray] | None = None,
    task: str = "multiclass",
    class_names: Sequence[str] | None = None,
    split: Sequence[str] | np.ndarray | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    standardize: bool | Iterable[str] = False,
    name: str = "arrays",
) -> dict[str, ArrayDataset]:
    """Train/val/test datasets from numpy arrays held by the user.

    ``arrays`` maps modality names to ``[N, *shape]`` arrays or lists of ``N`` arrays (variable
    first axis, ``None`` = absent). ``split`` gives each sample's split name ("train", "val"
    or "test"); without it, a seeded random split in ``fractions`` (stratified by class for
    multiclass). Rows with NaN in a present modality are rejected (mark them absent instead).
    ``standardize``: True (or a list of modality names) to standardise fixed-shape float
    modalities with per-feature mean/std of the train split.

    Multiclass ``targets`` may be class ids or labels of any type (then mapped to ids in sorted
    order, recorded as ``class_names``).
    """
    where = f"from_arrays({name!r})"
    y = np.asarray(targets)
    n = len(y)
    if task == "multiclass" and (y.dtype.kind in "USO" or (class_names is None and y.dtype.kind == "b")):
        labels = [str(v) for v in y]
        names = sorted(set(labels))
        if class_names is not None:
            unknown = [i for i, v in enumerate(labels) if v not in class_names]
            if unknown:
                raise DataError(f"{where}: sample {unknown[0]} has label {labels[unknown[0]]!r} that is not in "
                                f"class_names {list(class_names)}")
            names = [str(c) for c in class_names]
        lookup = {c: k for k, c in enumerate(names)}
        y = np.array([lookup[v] for v in labels], dtype=np.int64)
        class_names = names
    for m, v in arrays.items():
        if len(v) != n:
            raise ShapeError(f"{where}: modality {m!r} has {len(v)} samples but there are {n} targets")
    if split is None:
        f = check_fractions(fractions, where)
        rng = np.random.default_rng(seed)
        parts = stratified_split(y if task == "multiclass" else None, n, f, rng)
    else:
        s = np.asarray([str(v) for v in split])
        if len(s) != n:
            raise ShapeError(f"{where}: split has {len(s)} entries but there are {n} samples")
        bad = np.flatnonzero(~np.isin(s, SPLITS))
        if len(bad):
            raise DataError(f"{where}: sample {int(bad[0])} has split {s[bad[0]]!r}; use one of {list(SPLITS)}")
        parts = [np.flatnonzero(s == k) for k in SPLITS]
    full = ArrayDataset(arrays, y, present, task=task, class_names=class_names, name=name,
                        num_classes=(len(class_names) if task == "multiclass" and class_names else None))
    for m in full.modalities:
        v = full.arrays[m]
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            rows = np.flatnonzero(full.present[m] & ~np.isfinite(v.reshape(n, -1)).all(axis=1))
        elif isinstance(v, list):
            rows = [i for i, a in enumerate(v)
                    if full.present[m][i] and a.dtype.kind == "f" and not np.isfinite(a).all()]
        else:
            rows = []
        if len(rows):
            raise DataError(f"{where}: sample {int(rows[0])}, modality {m!r} contains NaN or infinity; "
                            "clean it or mark the modality absent (present[...] = False) for that sample")
    out = {k: full.subset(p, name=f"{name}/{k}") for k, p in zip(SPLITS, parts)}
    if standardize:
        mods = full.modalities if standardize is True else list(standardize)
        for m in mods:
            if m not in full.modalities:
                raise ConfigError(f"{where}: standardize names unknown modality {m!r}; "
                                  f"{suggestion(m, full.modalities)}")
            tr = out["train"]
            v = tr.arrays[m]
            if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
                raise ConfigError(f"{where}: modality {m!r} is not a fixed-shape float array; cannot standardise it")
            sel = v[tr.present[m]]
            mean = sel.mean(axis=0) if len(sel) else 0.0
            std = sel.std(axis=0) if len(sel) else 1.0
            std = np.where(std > 1e-8, std, 1.0)
            for ds in out.values():
                ds.arrays[m] = ((ds.arrays[m] - mean) / std).astype(np.float32)
    return out
