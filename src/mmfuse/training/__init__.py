from .checkpoint import load_checkpoint, save_checkpoint
from .fit import RunResult, fit
from .system import FusionSystem

__all__ = ["FusionSystem", "fit", "RunResult", "load_checkpoint", "save_checkpoint"]
