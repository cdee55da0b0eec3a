"""Models for asynchronous (unaligned) multimodal sequences.

- :class:`MEAModel` — modality-exclusive (PSA) and -agnostic (HCA) representations, a double
  discriminator, and decoupled graph fusion (Yang et al. 2024). See ``mea.py`` for which parts
  are from the paper and which are [inferred].
"""

from ._common import GradientReversal, grad_reverse, hsic
from .graph import GraphFusion
from .hca import HCA, MRU
from .mea import MEAModel
from .psa import PSA, PredictiveSelfAttention, WeightedAttention

__all__ = ["MEAModel", "PSA", "PredictiveSelfAttention", "WeightedAttention", "HCA", "MRU", "GraphFusion",
           "GradientReversal", "grad_reverse", "hsic"]
