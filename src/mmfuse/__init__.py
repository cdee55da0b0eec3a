"""mmfuse: multimodal deep learning — which encoder, when and how to fuse, and why.

    >>> import mmfuse
    >>> mmfuse.list_fusions()      # the operators ("how")
    >>> p = mmfuse.Predictor(fusion="gated", max_epochs=5).fit("schema.yaml")   # sklearn-style front object
    >>> p.predict("new.csv")                                                    # rows keyed by their id
    >>> model = mmfuse.build_model({"fusion": {"name": "gated"}}, {"image": (1, 28, 28), "audio": (40, 13)}, 10)
"""

from __future__ import annotations

from . import encoders, fusion, late  # noqa: F401  (fill the registries)
from .encoders import create_encoder, list_encoders, register_encoder
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MissingModalityError,
    MMFuseError,
    ShapeError,
    UnknownNameError,
)
from .fusion import create_fusion, list_fusions, register_fusion
from .late import create_late_combiner, list_late_combiners
from .registry import DATASETS, ENCODERS, FUSIONS, HEADS, IMPUTERS, INTERACTIONS, LATE_COMBINERS, MODELS, SCHEMES, Registry

__version__ = "0.1.0"

# imported on first use (PEP 562), so that `mmfuse --help` / `import mmfuse` do not pay for pydantic & co.
_LAZY = {
    "Collator": "batch", "MultimodalBatch": "batch", "collate": "batch",
    "ExperimentConfig": "config", "load_config": "config", "parse_config": "config",
    "ModelOutput": "models", "MultimodalModel": "models", "build_model": "models",
    "Predictor": "predictor",
}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'mmfuse' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def list_heads() -> list[str]:
    return HEADS.list()


def list_interactions() -> list[str]:
    from . import interaction  # noqa: F401

    return INTERACTIONS.list()


def list_datasets() -> list[str]:
    from .datasets import list_datasets as _ld

    return _ld()


def list_families() -> list[str]:
    """Model families (``model.family``): fusion, intermediate, mea, smil, ngiam, and any registered."""
    from . import families  # noqa: F401

    return MODELS.list()


def list_schemes() -> list[str]:
    """Training schemes (``training.scheme``)."""
    from . import schemes  # noqa: F401

    return SCHEMES.list()


def list_imputers() -> list[str]:
    from . import missing  # noqa: F401

    return IMPUTERS.list()


def list_column_loaders() -> list[str]:
    """Column loaders of a user table's schema (``modalities.<m>.loader``): image, audio, text, numeric, npy, and
    any registered with ``@mmfuse.registry.COLUMN_LOADERS.register(name)``."""
    from . import datasets  # noqa: F401  (fills COLUMN_LOADERS)
    from .registry import COLUMN_LOADERS

    return COLUMN_LOADERS.list()


def family_schemes() -> list[str]:
    """``"<family>=<scheme>|<scheme>..."`` per model family: the training schemes it accepts, its default first."""
    from . import families  # noqa: F401

    out = []
    for fam in MODELS.list():
        info = MODELS.info(fam)
        default = info.get("default_scheme")
        schemes = [default] if default else []
        schemes += [s for s in info.get("schemes", ()) if s != default]
        out.append(f"{fam}={'|'.join(schemes)}" if schemes else fam)
    return out


def catalog() -> dict[str, list[str]]:
    """Everything registered, by kind (what ``mmfuse list`` prints). ``family_schemes``: the training schemes
    each family accepts (``training.scheme``), its default first."""
    return {"families": list_families(), "family_schemes": family_schemes(), "schemes": list_schemes(),
            "encoders": list_encoders(), "fusions": list_fusions(), "late": list_late_combiners(),
            "heads": list_heads(), "interactions": list_interactions(), "imputers": list_imputers(),
            "datasets": list_datasets(), "loaders": list_column_loaders(), "strategies": ["early", "feature", "late"]}


def fit(*args, **kwargs):
    """Train from an ``ExperimentConfig`` (see ``mmfuse.training.fit``)."""
    from .training import fit as _fit

    return _fit(*args, **kwargs)


def load_checkpoint(path):
    from .training import load_checkpoint as _load

    return _load(path)
