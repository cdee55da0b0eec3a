"""The on-disk cache of a table's decoded file columns: memory-mapped ``.npy`` files, one folder per column.

A column's folder is named by a hash of every file's ``(path, size, mtime_ns, ctime_ns, inode)`` (in row order,
empty cells included), the column loader's name and options, the decode parameters (e.g. the image size decoded
to) and :data:`FORMAT`; touching, replacing (a rename or copy over it: a new inode or a new status-change time)
or resizing one file gives another key. The folder holds
``manifest.json`` (key, format, kind, the arrays' shapes / dtypes / byte sizes) and the arrays
(``values.npy``; ``offsets.npy`` for variable-length rows; ``present.npy``). It is written to a temporary
folder (the values are decoded straight into a memory map there) and renamed into place, so a reader sees a
whole folder or none. A folder that does not match its manifest (truncated, missing file, wrong header) is
reported with a warning, removed and rebuilt. Arrays are opened with ``mmap_mode="c"`` (copy-on-write: pages
are read on access; nothing is written back).

What the key does *not* see: the key is ``(path, size, mtime_ns, ctime_ns, inode)`` of each file plus the
options, never the files' contents (hashing them would cost as much as decoding). A same-size replacement that
restores the modification time (``cp --preserve=timestamps``, ``rsync -t``, ``os.utime``) still changes the
status-change time ``ctime`` (which user code cannot set) and, for a rename or ``rsync``'s temp-file-and-rename,
the inode: it is detected. Not detected: an in-place rewrite of the same bytes count within the file system's
timestamp granularity (ctime and mtime unchanged). Copying or moving the data folder elsewhere (new inodes)
decodes it again once.

Folders of writers that were killed (``.<key>.<pid>.<random>.tmp`` whose process ``pid`` no longer exists)
are removed when a cache root is opened. An unusable root (a regular file, a folder without write
permission) gives a warning naming ``data.options.cache_dir`` and the table is loaded without the cache.

Root: the ``cache_dir`` data option, else ``$MMFUSE_CACHE/tables``, else ``~/.cache/mmfuse/tables``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "mmfuse-table-cache-2"  # 2: npy columns banked in their output dtype
MANIFEST = "manifest.json"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MMFUSE_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "mmfuse") / "tables"


class ColumnCache:
    """Reads and writes decoded columns under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = cache_root(root)
        self.hits = 0
        self.disabled = False
        self.remove_stale()

    def remove_stale(self) -> list[Path]:
        """Remove ``.<key>.<pid>.<random>.tmp`` folders whose writer process is gone; returns them."""
        removed = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return removed
        for e in entries:
            name = e.name
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            parts = name[1:-4].split(".")
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            if _alive(int(parts[1])):
                continue
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(Path(e.path))
        return removed

    def key(self, loader: Any, cells: list[Any], params: dict[str, Any]) -> str:
        rows = [None if c is None else [str(c.path), *(int(x) for x in c.stat)] for c in cells]
        blob = json.dumps({"format": FORMAT, "loader": loader.loader_name,
                           "class": f"{type(loader).__module__}.{type(loader).__qualname__}",
                           "options": loader.options.model_dump(mode="json"), "params": params, "rows": rows},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def load(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        d = self.root / key
        if not d.exists():
            return None
        try:
            man = json.loads((d / MANIFEST).read_text())
            if man.get("format") != FORMAT or man.get("key") != key:
                raise ValueError("the manifest belongs to another key or format")
            arrays = {}
            for name, spec in man["arrays"].items():
                path = d / f"{name}.npy"
                if path.stat().st_size != spec["bytes"]:
                    raise ValueError(f"{path.name} has {path.stat().st_size} bytes, the manifest says {spec['bytes']}")
                a = np.load(path, mmap_mode="c", allow_pickle=False)
                if list(a.shape) != spec["shape"] or str(a.dtype) != spec["dtype"]:
                    raise ValueError(f"{path.name} holds {a.dtype}{list(a.shape)}, the manifest says "
                                     f"{spec['dtype']}{spec['shape']}")
                arrays[name] = a
        except Exception as exc:  # noqa: BLE001 - any damage: rebuild
            warnings.warn(f"mmfuse: the table cache {d} is corrupt or incomplete ({type(exc).__name__}: {exc}); "
                          "removing and rebuilding it", stacklevel=4)
            shutil.rmtree(d, ignore_errors=True)
            return None
        self.hits += 1
        return arrays, man.get("meta", {})

    def writer(self, key: str) -> "CacheWriter | None":
        """A writer for ``key``; None (with one warning, and the cache off for this load) when the root cannot be
        written."""
        if self.disabled:
            return None
        try:
            return CacheWriter(self, key)
        except OSError as exc:
            self.disabled = True
            warnings.warn(f"mmfuse: data.options.cache_dir: cannot write the table cache under {self.root} "
                          f"({type(exc).__name__}: {exc.strerror or exc}); loading without the cache. Set "
                          "data.options.cache_dir to a writable folder (or data.options.cache: false)", stacklevel=4)
            return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class CacheWriter:
    """Arrays of one column written into a temporary folder, renamed into place by :meth:`commit`."""

    def __init__(self, cache: ColumnCache, key: str):
        self.cache, self.key = cache, key
        self.final = cache.root / key
        self.tmp = cache.root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.maps: dict[str, np.ndarray] = {}
        self.failed = False

    def alloc(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A zero-filled memory-mapped array to decode into (an array in RAM, and no cache, if it cannot be made:
        a full disk, a quota)."""
        try:
            m = np.lib.format.open_memmap(self.tmp / f"{name}.npy", mode="w+", dtype=np.dtype(dtype),
                                          shape=tuple(shape))
        except OSError as exc:
            warnings.warn(f"mmfuse: data.options.cache_dir: cannot create the table cache file under {self.tmp} "
                          f"({type(exc).__name__}: {exc}); loading without the cache", stacklevel=4)
            self.failed = True
            return np.zeros(tuple(shape), dtype=np.dtype(dtype))
        self.maps[name] = m
        return m

    def put(self, name: str, array: np.ndarray) -> None:
        if self.failed:
            return
        try:
            np.save(self.tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        except OSError as exc:
            warnings.warn(f"mmfuse: data.options.cache_dir: cannot write the table cache file {name}.npy under "
                          f"{self.tmp} ({type(exc).__name__}: {exc}); loading without the cache", stacklevel=4)
            self.failed = True

    def commit(self, meta: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """Flush, write the manifest, rename the folder into place; the arrays re-opened from the cache."""
        if self.failed:
            self.abort()
            return None
        try:
            for m in self.maps.values():
                m.flush()
            self.maps.clear()
            arrays = {}
            for p in sorted(self.tmp.glob("*.npy")):
                a = np.load(p, mmap_mode="r", allow_pickle=False)
                arrays[p.stem] = {"shape": list(a.shape), "dtype": str(a.dtype), "bytes": p.stat().st_size}
                del a
            man = {"format": FORMAT, "key": self.key, "arrays": arrays, "meta": meta}
            (self.tmp / MANIFEST).write_text(json.dumps(man))
            try:  # a damaged folder was removed by load(); an existing one is another process's whole copy
                os.replace(self.tmp, self.final)
            except OSError:  # another process wrote the same key first: use theirs
                shutil.rmtree(self.tmp, ignore_errors=True)
        except OSError as exc:
            warnings.warn(f"mmfuse: could not write the table cache {self.final} ({exc}); continuing without it",
                          stacklevel=4)
            self.abort()
            return None
        hits = self.cache.hits
        out = self.cache.load(self.key)
        self.cache.hits = hits
        return out

    def abort(self) -> None:
        self.maps.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
