"""The dataset registry, ``load_dataset`` and the on-disk cache of processed arrays.

Builders are registered in :data:`DATASETS` with :func:`register_dataset`. A builder is a
function ``f(*, seed: int, **options) -> dict[str, ArrayDataset]`` returning the splits
"train", "val" and "test"; its keyword arguments (after ``seed``) are the dataset's options.

``load_dataset(name, seed=0, cache_dir=None, **options)`` checks the options against the
builder's signature (unknown ones raise :class:`~mmfuse.errors.ConfigError` with the closest
known names), then returns the cached splits when a cache file exists for
``(name, options with defaults filled in, seed, builder version)``, else builds and caches them.

Cache: ``cache_dir`` or ``$MMFUSE_CACHE`` or ``~/.cache/mmfuse``; one ``.npz`` file per key,
written to a temporary file and moved into place with ``os.replace`` (so concurrent readers
never see a half-written file) and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._io import atomic_write
from ..errors import ConfigError
from ..registry import DATASETS, suggestion
from .base import SPLITS, ArrayDataset, MultimodalDataset


def register_dataset(name: str, *, version: int | str = 1, cache: bool = True,
                     task: str | Callable[..., str | None] | None = None) -> Callable:
    """Decorator registering a builder in :data:`DATASETS`.

    ``version`` is part of the cache key: bump it whenever the builder's output changes.
    ``cache=False`` for builders whose inputs live outside mmfuse (user tables).
    ``task``: the task the builder's splits have, or ``f(**options) -> task`` (None when it depends on
    the data), so that a config can be checked against it before any data loads.
    """

    def deco(fn: Callable) -> Callable:
        fn.dataset_name = name
        fn.cache_version = version
        fn.cacheable = cache
        DATASETS.register(name, fn, task=task)
        return fn

    return deco


def dataset_task(name: str, options: dict | None = None) -> str | None:
    """The task of dataset ``name`` with ``options`` when its registration says so without loading, else None."""
    if not isinstance(name, str) or name not in DATASETS:
        return None
    task = DATASETS.info(name).get("task")
    if callable(task):
        try:
            return task(**dict(options or {}))
        except (TypeError, ValueError):
            return None
    return task


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return DATASETS.list()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$MMFUSE_CACHE``, else ``~/.cache/mmfuse``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MMFUSE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mmfuse"


def builder_options(name: str, builder: Callable, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the builder's defaults filled in; unknown keys raise ConfigError."""
    params = {k: p for k, p in inspect.signature(builder).parameters.items()
              if k != "seed" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = [k for k in options if k not in params]
    if unknown:
        lines = [f"{k!r} ({suggestion(k, list(params))})" for k in unknown]
        raise ConfigError(f"dataset {name!r}: unknown option(s) " + "; ".join(lines)
                          + f". Options of {name!r}: {sorted(params)}")
    out = {}
    for k, p in params.items():
        if k in options:
            out[k] = options[k]
        elif p.default is not inspect.Parameter.empty:
            out[k] = p.default
        else:
            raise ConfigError(f"dataset {name!r}: option {k!r} is required")
    return out


def cache_path(name: str, options: dict[str, Any], seed: int, version: int | str,
               cache_dir: str | os.PathLike | None = None) -> Path:
    blob = json.dumps({"name": name, "options": options, "seed": seed, "version": version},
                      sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return cache_root(cache_dir) / f"{safe}-{digest}.npz"


def save_splits(path: Path, splits: dict[str, ArrayDataset]) -> None:
    """Write ``splits`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, np.ndarray] = {"splits": np.array(json.dumps(list(splits)))}
    for k, ds in splits.items():
        payload.update(ds.to_npz_dict(prefix=f"{k}__"))
    write_npz(path, payload)


def write_npz(path: Path, payload: dict[str, np.ndarray]) -> None:
    """``np.savez`` written whole or not at all (read back with ``allow_pickle=False``)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare path
            np.savez(fh, **payload)

    atomic_write(path, write)


def load_splits(path: Path) -> dict[str, ArrayDataset]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    names = json.loads(str(arrays["splits"]))
    return {k: ArrayDataset.from_npz_dict(arrays, prefix=f"{k}__") for k in names}


def load_dataset(name: str, *, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                 cache: bool = True, **options: Any) -> dict[str, MultimodalDataset]:
    """Build (or read from the cache) the train/val/test splits of a registered dataset.

    ``name`` is a registered name (see :func:`list_datasets`) or the path of a ``.yaml`` /
    ``.yml`` table schema (shorthand for ``load_dataset("table", schema=path)``).
    ``seed`` fixes every random choice (splits, pairings, noise): the same seed and options
    give identical arrays. ``cache=False`` bypasses the cache (neither read nor written).
    """
    if not isinstance(name, str):
        raise ConfigError(f"load_dataset: name must be a string, got {type(name).__name__}")
    if name.lower().endswith((".yaml", ".yml")) and "table" in DATASETS:
        options = {"schema": name, **options}
        name = "table"
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"load_dataset({name!r}): seed must be an integer, got {seed!r}")
    builder = DATASETS.get(name)
    if "cache" in inspect.signature(builder).parameters and "cache" not in options:
        options = {**options, "cache": cache}  # a builder with its own cache (user tables: decoded columns)
    opts = builder_options(name, builder, options)
    use_cache = cache and getattr(builder, "cacheable", False)
    path = None
    if use_cache:
        try:
            json.dumps(opts)
        except TypeError:
            use_cache = False  # options that are objects (e.g. arrays): no stable key
    if use_cache:
        path = cache_path(name, opts, int(seed), getattr(builder, "cache_version", 1), cache_dir)
        if path.exists():
            try:
                cached = load_splits(path)
                return {k: cached[k] for k in SPLITS}
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                warnings.warn(f"mmfuse: ignoring unreadable dataset cache {path} ({exc}); rebuilding it",
                              stacklevel=2)
    splits = builder(seed=int(seed), **opts)
    missing = [k for k in SPLITS if k not in splits]
    if missing:
        raise ConfigError(f"dataset builder {name!r} returned no {missing[0]!r} split")
    if use_cache and path is not None and all(isinstance(d, ArrayDataset) for d in splits.values()):
        try:
            save_splits(path, splits)
        except OSError as exc:
            warnings.warn(f"mmfuse: could not write dataset cache {path} ({exc}); continuing without it",
                          stacklevel=2)
    return {k: splits[k] for k in SPLITS}
