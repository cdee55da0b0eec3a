"""Model families (registry ``MODELS``): one builder per family, ``(config, input_shapes, num_outputs, task)``.

A new method is one file here: its pydantic sub-config (in ``mmfuse.config``, ``FAMILY_CONFIGS``) and
a builder registered with ``@MODELS.register(name, default_scheme=..., schemes=..., tasks=...,
test_options=...)``. The model it builds returns a ``ModelOutput`` whose ``losses`` carry any extra,
already-weighted loss terms; the one training loop (``mmfuse.training``) does the rest.

Built in: ``fusion`` (early / feature / late), ``intermediate`` (MMTM), ``mea``, ``smil``, ``ngiam``.
"""

from __future__ import annotations

import importlib

from ..registry import MODELS
from . import fusion, intermediate  # noqa: F401

for _mod in ("mea", "smil", "ngiam"):
    try:
        importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as exc:  # pragma: no cover - a family file still being written
        if _mod not in str(exc):
            raise


def list_families() -> list[str]:
    return MODELS.list()


__all__ = ["MODELS", "list_families"]
