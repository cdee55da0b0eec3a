"""MM-IMDb (Arevalo et al., 2017) from ``multimodal_imdb.hdf5`` (``mmimdb``; needs ``h5py``).

The released file (a Fuel ``H5PYDataset``) holds, one row per movie (25,959 rows):

* ``"features"`` float ``[N, 300]``: the plot as the mean of its word2vec vectors (text);
* ``"images"`` uint8 ``[N, 3, 256, 160]``: the poster; ``"vgg_features"`` ``[N, 4096]``: its VGG-16
  features;
* ``"sequences"`` (optional): word indices of the plot;
* ``"genres"`` 0/1 ``[N, 23]``: the labels; ``"imdb_ids"`` ``[N]`` (optional).

Split: the file's Fuel ``split`` attribute (rows with ``split`` = ``train`` / ``dev`` (or ``val`` /
``valid``) / ``test`` and ``start`` / ``stop``) when present; otherwise the option ``ranges``,
by default MultiBench's ``[0, 15552)`` train, ``[15552, 18160)`` val, ``[18160, 25959)`` test.
Ranges beyond the file raise a DataError.

Modalities: ``"text"`` float32 ``(D,)`` from the dataset named by ``text`` (default ``"features"``);
``"image"`` from ``image``: ``"images"`` (float32 ``(3, H, W)``, kept as uint8 in memory and served
divided by 255) or ``"vgg_features"`` (float32 ``(4096,)``), or ``None`` for text only.

Task: ``multilabel`` over the 23 genres; ``class_names`` are the file's ``genre_names`` attribute
when it has one, else ``GENRES`` (the genres in the order of the paper's table; the released
file stores no names, so check the column order against your copy or pass ``genre_names``).
The field reports micro, macro and samples F1 (``f1_micro``, ``f1_macro``, ``f1_samples`` of
:func:`mmfuse.evaluation.compute_metrics`). ``dataset.ids`` are the rows in the file;
``dataset.imdb_ids`` (when the file has them) holds every row's id, so
``dataset.imdb_ids[dataset.ids[i]]`` is the IMDb id of sample ``i``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...errors import ConfigError, DataError
from ..base import ArrayDataset, Gather
from ..loading import register_dataset
from ._common import existing_path

GENRES = ["Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation",
          "Musical", "Western", "Sport", "Short", "Film-Noir"]
DEFAULT_RANGES = {"train": [0, 15552], "val": [15552, 18160], "test": [18160, 25959]}
_SPLIT_ALIASES = {"train": "train", "dev": "val", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _h5py(where: str):
    try:
        import h5py
    except ImportError:
        raise ConfigError(f"{where}: reading .hdf5 needs h5py; install mmfuse with the 'datasets' extra "
                          "(pip install 'mmfuse[datasets]') or pip install h5py") from None
    return h5py


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _fuel_splits(f: Any, where: str) -> dict[str, tuple[int, int]] | None:
    if "split" not in f.attrs:
        return None
    table = f.attrs["split"]
    names = getattr(table.dtype, "names", None) or ()
    if not {"split", "start", "stop"} <= set(names):
        raise DataError(f"{where}: the file's 'split' attribute has fields {list(names)}; expected Fuel's "
                        "'split', 'source', 'start', 'stop'")
    out: dict[str, tuple[int, int]] = {}
    for row in table:
        split = _SPLIT_ALIASES.get(_text(row["split"]).lower())
        if split is None:
            continue
        rng = (int(row["start"]), int(row["stop"]))
        if rng[1] <= rng[0]:
            raise DataError(f"{where}: the 'split' attribute gives split {split!r} the empty range {list(rng)} "
                            "(Fuel index lists are not supported); pass ranges: {train: [a, b], val: [..], test: [..]}")
        if split in out and out[split] != rng:
            raise DataError(f"{where}: the 'split' attribute gives split {split!r} two ranges {out[split]} and {rng}")
        out[split] = rng
    missing = [s for s in ("train", "val", "test") if s not in out]
    if missing:
        raise DataError(f"{where}: the 'split' attribute has no {missing[0]!r} rows")
    return out


def _check_ranges(ranges: Any, where: str) -> dict[str, tuple[int, int]]:
    if not isinstance(ranges, dict) or set(ranges) != {"train", "val", "test"}:
        raise ConfigError(f"{where}: option 'ranges' must map train, val and test to [start, stop] row ranges, "
                          f"got {ranges!r}")
    out = {}
    for k, v in ranges.items():
        if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                      for x in v) or not 0 <= v[0] < v[1]:
            raise ConfigError(f"{where}: ranges[{k!r}] must be [start, stop] with 0 <= start < stop, got {v!r}")
        out[k] = (int(v[0]), int(v[1]))
    return out


@register_dataset("mmimdb", version=1, cache=False, task="multilabel")
def mmimdb(*, seed: int = 0, path: str | None = None, text: str = "features", image: str | None = "images",
           ranges: dict[str, Sequence[int]] | None = None,
           genre_names: Sequence[str] | None = None) -> dict[str, ArrayDataset]:
    """MM-IMDb from ``multimodal_imdb.hdf5`` at ``path`` (see the module docstring)."""
    where = "dataset 'mmimdb'"
    file = existing_path(path, "path", where, directory=False)
    h5py = _h5py(where)
    fwhere = f"{where}: {file}"
    try:
        f = h5py.File(file, "r")
    except OSError as exc:
        raise DataError(f"{fwhere} is not a readable HDF5 file ({exc})") from None
    with f:
        for key in [text, "genres"] + ([image] if image else []):
            if not isinstance(key, str) or key not in f:
                raise DataError(f"{fwhere} has no dataset {key!r}; it has {sorted(f.keys())}")
        genres = f["genres"]
        n = int(genres.shape[0])
        if genres.ndim != 2:
            raise DataError(f"{fwhere}: 'genres' has shape {genres.shape}; expected [N, 23] 0/1 labels")
        fuel = _fuel_splits(f, fwhere)
        splits = fuel if fuel is not None and ranges is None else _check_ranges(ranges or DEFAULT_RANGES, where)
        for k, (a, b) in splits.items():
            if b > n:
                raise DataError(f"{fwhere}: split {k!r} = rows [{a}, {b}) but the file has {n} rows; pass "
                                "ranges: {train: [..], val: [..], test: [..]} that fit the file")
        names = list(genre_names) if genre_names is not None else (
            [_text(g) for g in f.attrs["genre_names"]] if "genre_names" in f.attrs else None)
        if names is None:
            names = GENRES if genres.shape[1] == len(GENRES) else [f"genre{j}" for j in range(genres.shape[1])]
        if len(names) != genres.shape[1]:
            raise ConfigError(f"{where}: {len(names)} genre names for {genres.shape[1]} genre columns")
        imdb_ids = f["imdb_ids"][()] if "imdb_ids" in f else None
        all_ids = None if imdb_ids is None else [_text(v) for v in np.asarray(imdb_ids).reshape(-1)]
        out = {}
        for split, (a, b) in splits.items():
            y = np.asarray(genres[a:b])
            if not np.isin(y, (0, 1)).all():
                bad = int(np.flatnonzero(~np.isin(y, (0, 1)).all(1))[0])
                raise DataError(f"{fwhere}: 'genres' row {a + bad} is not 0/1 indicators")
            t = np.asarray(f[text][a:b])
            if t.ndim < 2 or t.dtype.kind not in "fiu":
                raise DataError(f"{fwhere}: {text!r} has shape {f[text].shape} and dtype {t.dtype}; expected [N, D] numbers")
            arrays: dict[str, Any] = {"text": t.astype(np.float32)}
            if image:
                im = np.asarray(f[image][a:b])
                if im.dtype.kind not in "fiu" or im.ndim < 2:
                    raise DataError(f"{fwhere}: {image!r} has dtype {im.dtype} and shape {im.shape}; expected numbers")
                if image == "images":
                    if im.ndim != 4:
                        raise DataError(f"{fwhere}: 'images' has shape {f[image].shape}; expected [N, 3, H, W]")
                    arrays["image"] = Gather(im, np.arange(len(im)), scale=1.0 / 255.0 if im.dtype == np.uint8 else 1.0)
                else:
                    arrays["image"] = im.astype(np.float32)
            attrs: dict[str, Any] = {"source_file": str(file)}
            if imdb_ids is not None:
                attrs["imdb_ids"] = all_ids
            out[split] = ArrayDataset(arrays, y.astype(np.float32), task="multilabel", num_classes=len(names),
                                      class_names=names, name=f"mmimdb/{split}", attrs=attrs, ids=np.arange(a, b))
    return out


__all__ = ["mmimdb", "GENRES", "DEFAULT_RANGES"]
