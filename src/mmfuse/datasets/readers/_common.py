"""Helpers shared by the readers of standard formats: paths, safe ``.npy`` loading, caches."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError


def existing_path(value: Any, option: str, where: str, *, directory: bool | None = None) -> Path:
    """``value`` as an existing path (``~`` expanded) or a ConfigError naming ``option``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ConfigError(f"{where}: option {option!r} is required: the path of your local copy of the data")
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{where}: option {option!r} must be a path, got {type(value).__name__}")
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"{where}: {option}={str(path)!r} does not exist; give the path of your local copy")
    if directory is True and not path.is_dir():
        raise ConfigError(f"{where}: {option}={str(path)!r} must be a directory")
    if directory is False and not path.is_file():
        raise ConfigError(f"{where}: {option}={str(path)!r} must be a file")
    return path


def load_npy(path: Path, where: str) -> np.ndarray:
    """``np.load(path, allow_pickle=False)`` with a DataError naming the file when it is not a plain array."""
    if not path.is_file():
        raise DataError(f"{where}: expected file {path} is missing")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise DataError(f"{where}: {path} is not a plain numeric .npy array ({exc}); object arrays "
                        "(pickled) are refused") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read {path} as .npy ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: {path} holds dtype {getattr(arr, 'dtype', '?')}; expected numbers")
    return arr


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_key(path: Path, *extra: Any) -> str:
    """A short key from a file's resolved path, size and modification time (plus ``extra``)."""
    st = path.stat()
    blob = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|" + "|".join(map(str, extra))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_int(value: Any, option: str, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{where}: option {option!r} must be an integer >= {minimum}, got {value!r}")
    return int(value)
