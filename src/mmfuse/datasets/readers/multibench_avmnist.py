"""MultiBench's AV-MNIST files, read from the user's local copy (``multibench_avmnist``).

Layout of the folder ``root`` (as distributed by MultiBench, ``datasets/avmnist/get_data.py``)::

    root/image/train_data.npy   [N, 784] (or [N, 28, 28] / [N, 1, 28, 28]) MNIST pixels, 0..255
    root/image/test_data.npy
    root/audio/train_data.npy   [N, 112, 112] (or [N, 12544] / [N, 1, 112, 112]) spectrograms, 0..255
    root/audio/test_data.npy
    root/train_labels.npy       [N] digit 0..9
    root/test_labels.npy

Every file is read with ``np.load(allow_pickle=False)`` and memory-mapped: the arrays stay on
disk and each batch reads only its rows (through :class:`~mmfuse.datasets.base.Gather`), so
the 60,000 x 112 x 112 spectrograms never have to fit in memory (with ``data.num_workers`` > 0
each worker process gets its own copy of the arrays, so keep 0 workers for the full files).

Splits, as in MultiBench: ``val`` is the **last** ``val_size`` (default 5,000) training rows,
``train`` the rows before them (55,000 / 5,000 on the full files), ``test`` the test files
(10,000). When the training file is small (``val_size`` would leave fewer training rows than
validation rows, i.e. ``val_size > N // 2``), ``val`` becomes the last ``max(1, N // 10)`` rows
and a warning says so; pass ``val_size`` to choose.

Modalities: ``"image"`` float32 ``(1, 28, 28)`` and ``"audio"`` float32 ``(1, 112, 112)``,
both divided by 255 when ``normalize=True`` (MultiBench's default ``normalize_image`` /
``normalize_audio``). Task: ``multiclass``, 10 classes "0".."9"; the field reports accuracy.
``dataset.ids`` are the row numbers in the source file.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError
from ..base import ArrayDataset, Gather
from ..loading import register_dataset
from ._common import check_int, existing_path, load_npy

NAME = "multibench_avmnist"
CLASS_NAMES = [str(d) for d in range(10)]
_SHAPES = {"image": (1, 28, 28), "audio": (1, 112, 112)}


def _as_bank(arr: np.ndarray, modality: str, path: Any, where: str) -> np.ndarray:
    want = _SHAPES[modality]
    size = int(np.prod(want))
    if arr.ndim < 2 or int(np.prod(arr.shape[1:])) != size:
        raise DataError(f"{where}: {path} has shape {arr.shape}; expected [N, {size}] or [N, "
                        f"{', '.join(map(str, want))}] ({modality})")
    return arr.reshape((arr.shape[0],) + want)


def _labels(path: Any, where: str, n: int) -> np.ndarray:
    y = np.asarray(load_npy(path, where))
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise DataError(f"{where}: {path} has shape {y.shape}; expected [N] digit labels")
    if len(y) != n:
        raise DataError(f"{where}: {path} has {len(y)} labels but the image/audio files have {n} rows")
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise DataError(f"{where}: {path} holds non-integer labels")
    y = y.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y > 9))
    if len(bad):
        raise DataError(f"{where}: {path}, row {int(bad[0])}: label {int(y[bad[0]])} is not a digit 0..9")
    return y


@register_dataset(NAME, version=1, cache=False, task="multiclass")
def multibench_avmnist(*, seed: int = 0, root: str | None = None, val_size: int = 5000,
                       normalize: bool = True) -> dict[str, ArrayDataset]:
    """MultiBench AV-MNIST from the folder ``root`` (see the module docstring for the layout and splits)."""
    where = f"dataset {NAME!r}"
    base = existing_path(root, "root", where, directory=True)
    val_size = check_int(val_size, "val_size", where, minimum=1)
    if not isinstance(normalize, bool):
        raise ConfigError(f"{where}: option 'normalize' must be true or false, got {normalize!r}")
    scale = 1.0 / 255.0 if normalize else 1.0
    banks: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, np.ndarray] = {}
    for part in ("train", "test"):
        banks[part] = {}
        for m in ("image", "audio"):
            p = base / m / f"{part}_data.npy"
            banks[part][m] = _as_bank(load_npy(p, where), m, p, where)
        n_img, n_aud = len(banks[part]["image"]), len(banks[part]["audio"])
        if n_img != n_aud:
            raise DataError(f"{where}: {base / 'image' / f'{part}_data.npy'} has {n_img} rows but "
                            f"{base / 'audio' / f'{part}_data.npy'} has {n_aud}; they must be paired row by row")
        labels[part] = _labels(base / f"{part}_labels.npy", where, n_img)
    n_train = len(labels["train"])
    if n_train < 2:
        raise DataError(f"{where}: {base / 'train_labels.npy'} has {n_train} rows; need at least 2 "
                        "(training and validation rows)")
    n_val = val_size
    if n_val > n_train // 2:
        n_val = max(1, n_train // 10)
        warnings.warn(f"{where}: val_size={val_size} would leave too few of the {n_train} training rows; "
                      f"using the last {n_val} rows as validation (set val_size to choose)", stacklevel=2)
    rows = {"train": np.arange(n_train - n_val), "val": np.arange(n_train - n_val, n_train),
            "test": np.arange(len(labels["test"]))}
    out = {}
    for split, idx in rows.items():
        part = "test" if split == "test" else "train"
        out[split] = ArrayDataset(
            {m: Gather(banks[part][m], idx, scale=scale) for m in ("image", "audio")},
            labels[part][idx], task="multiclass", num_classes=10, class_names=CLASS_NAMES,
            name=f"{NAME}/{split}", attrs={"source_root": str(base)}, ids=idx)
    return out


__all__ = ["multibench_avmnist"]
