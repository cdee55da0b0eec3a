"""Training: :func:`fit` (one Lightning path for every family), checkpoints, :class:`FusionSystem`.

Lightning is imported by ``fit`` when it trains (and by :mod:`.system` / :mod:`.callbacks`), not by this
package: ``load_checkpoint`` (evaluate / predict / explain) does not pay for it.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .fit import RunResult, fit

__all__ = ["FusionSystem", "fit", "RunResult", "load_checkpoint", "save_checkpoint"]


def __getattr__(name: str):
    if name == "FusionSystem":  # a LightningModule: imports Lightning
        from .system import FusionSystem

        return FusionSystem
    raise AttributeError(f"module 'mmfuse.training' has no attribute {name!r}")
