"""Model families (registry ``MODELS``): one builder per family, ``(config, input_shapes, num_outputs, task)``.

A new method is one file here: its pydantic sub-config (in ``mmfuse.config``, ``FAMILY_CONFIGS``) and
a builder registered with ``@MODELS.register(name, default_scheme=..., schemes=..., tasks=...,
test_options=...)``. The model it builds returns a ``ModelOutput`` whose ``losses`` carry any extra,
already-weighted loss terms; the one training loop (``mmfuse.training``) does the rest.

Built in: ``fusion`` (early / feature / late), ``intermediate`` (MMTM), ``mea``, ``smil``, ``ngiam``.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..registry import MODELS

# every module of this package registers its family on import: a new family is a new file, no edit here
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


def list_families() -> list[str]:
    return MODELS.list()


__all__ = ["MODELS", "list_families"]
