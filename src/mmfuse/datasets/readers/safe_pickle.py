"""A restricted unpickler for the feature pickles the field distributes (MMSA, MultiBench).

``pickle.load`` runs whatever callable a file names, so a pickle from the internet can execute
code. :class:`SafeUnpickler` resolves only the globals needed to rebuild builtin containers and
numpy arrays:

* ``builtins``: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``bytearray``, ``bytes``,
  ``str``, ``int``, ``float``, ``complex``, ``bool``, ``slice``, ``object`` is **not** admitted;
* ``_codecs.encode`` (protocol-2 pickles written by Python 3 store ``bytes`` that way);
* ``collections.OrderedDict``;
* numpy array reconstruction: ``numpy.core.multiarray._reconstruct`` /
  ``numpy._core.multiarray._reconstruct``, ``numpy.core.numeric._frombuffer`` /
  ``numpy._core.numeric._frombuffer`` (protocol 5), ``numpy.ndarray``, ``numpy.dtype`` and
  ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar`` (numpy scalars such as
  a ``np.float32`` label).

Anything else (a class of the writer's code, ``os.system``, ``builtins.eval``, pandas frames...)
raises :class:`~mmfuse.errors.DataError` naming the refused ``module.name`` and the file. Object
arrays are rebuilt from their items, which go through the same check.

``load_pickle(path, sha256=None)`` verifies the optional SHA-256 digest of the file **before**
unpickling, then reads it with ``encoding="latin1"`` (so Python 2 pickles of numpy arrays load).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from ...errors import ConfigError, DataError
from ._common import sha256_of

ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str",
                               "int", "float", "complex", "bool", "slice")]
    + [("__builtin__", n) for n in ("set", "frozenset", "bytearray", "unicode", "str", "int", "float", "long")]
    + [("_codecs", "encode"), ("collections", "OrderedDict")]
    + [(mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name in ("_reconstruct", "scalar")]
    + [(mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
)


class SafeUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose ``find_class`` admits only :data:`ALLOWED` globals."""

    def __init__(self, file: Any, *, source: str = "<pickle>", **kwargs: Any):
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"{self.source}: the pickle wants to load {module}.{name}, which the safe reader "
                        "refuses (only builtin containers and numpy arrays are admitted). Convert the file "
                        "to plain dicts of numpy arrays, or to .npz, where you trust it")

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.source}: the pickle uses persistent ids, which the safe reader refuses")


def check_sha256(path: Path, sha256: str | None, where: str) -> None:
    """Raise DataError when ``sha256`` is given and differs from the file's digest."""
    if sha256 is None:
        return
    if not isinstance(sha256, str) or len(sha256.strip()) != 64:
        raise ConfigError(f"{where}: option 'sha256' must be a 64-hex-digit string, got {sha256!r}")
    got = sha256_of(path)
    if got.lower() != sha256.strip().lower():
        raise DataError(f"{where}: {path} has SHA-256 {got}, not the expected {sha256.strip().lower()}; "
                        "the file is corrupt or not the one you meant")


def load_pickle(path: str | Path, *, sha256: str | None = None, where: str = "pickle") -> Any:
    """Read ``path`` with :class:`SafeUnpickler` after the optional SHA-256 check."""
    path = Path(path)
    check_sha256(path, sha256, where)
    with open(path, "rb") as fh:
        try:
            return SafeUnpickler(fh, source=f"{where}: {path}", encoding="latin1").load()
        except DataError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError,
                ValueError, KeyError) as exc:
            raise DataError(f"{where}: {path} is not a readable pickle ({type(exc).__name__}: {exc})") from None


def loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """:func:`load_pickle` for bytes in memory (no digest)."""
    return SafeUnpickler(io.BytesIO(data), source=source, encoding="latin1").load()


__all__ = ["ALLOWED", "SafeUnpickler", "check_sha256", "load_pickle", "loads"]
