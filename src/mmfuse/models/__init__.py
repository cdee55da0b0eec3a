"""Models: ``MultimodalModel`` (early / feature / late), intermediate fusion, heads, ``build_model``."""

from .build import build_model, default_encoder
from .heads import MLPHead, create_head
from .model import STRATEGIES, MultimodalModel
from .output import ModelOutput

__all__ = ["MultimodalModel", "ModelOutput", "build_model", "create_head", "default_encoder", "MLPHead", "STRATEGIES"]
