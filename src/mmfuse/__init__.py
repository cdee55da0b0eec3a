"""mmfuse: multimodal deep learning — which encoder, when and how to fuse, and why.

    >>> import mmfuse
    >>> mmfuse.list_fusions()      # the operators ("how")
    >>> model = mmfuse.build_model({"fusion": {"name": "gated"}}, {"image": (1, 28, 28), "audio": (40, 13)}, 10)
"""

from __future__ import annotations

from . import encoders, fusion, late  # noqa: F401  (fill the registries)
from .batch import Collator, MultimodalBatch, collate
from .config import ExperimentConfig, load_config, parse_config
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
from .models import ModelOutput, MultimodalModel, build_model
from .registry import DATASETS, ENCODERS, FUSIONS, HEADS, IMPUTERS, INTERACTIONS, LATE_COMBINERS, MODELS, SCHEMES, Registry

__version__ = "0.1.0"


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


def catalog() -> dict[str, list[str]]:
    """Everything registered, by kind (what ``mmfuse list`` prints)."""
    return {"families": list_families(), "schemes": list_schemes(), "encoders": list_encoders(),
            "fusions": list_fusions(), "late": list_late_combiners(), "heads": list_heads(),
            "interactions": list_interactions(), "imputers": list_imputers(), "datasets": list_datasets(),
            "strategies": ["early", "feature", "late"]}


def fit(*args, **kwargs):
    """Train from an ``ExperimentConfig`` (see ``mmfuse.training.fit``)."""
    from .training import fit as _fit

    return _fit(*args, **kwargs)


def load_checkpoint(path):
    from .training import load_checkpoint as _load

    return _load(path)
