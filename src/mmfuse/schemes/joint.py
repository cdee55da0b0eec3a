"""``joint``: one optimiser over every parameter, one step per batch on the model's whole loss."""

from ..registry import SCHEMES
from .base import Scheme


@SCHEMES.register("joint")
class JointScheme(Scheme):
    """The default: ``loss = task loss + Σ ModelOutput.losses`` (see ``FusionSystem.compute_loss``)."""
