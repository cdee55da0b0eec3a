"""Writing a file whole or not at all: the one helper every cache, run record and checkpoint file uses."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], *, mode: int = 0o644,
                 fsync: bool = False) -> Path:
    """``write(tmp)`` fills a temporary file next to ``path`` (same file system), which is then renamed onto
    ``path`` with ``os.replace``: readers see the old file or the new one, never half of one. The temporary file
    is removed when ``write`` fails; the parent folder is created. ``mode``: the file's permissions (mkstemp
    makes 0600); ``fsync``: flush the data to disk before the rename (records that must survive a power cut)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
