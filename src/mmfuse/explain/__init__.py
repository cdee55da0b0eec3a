"""Why: modality-level Shapley values, MM-SHAP feature-level values and their breakdowns.

* :func:`make_score_fn` — the scalar being explained (predicted-class probability, a chosen
  class's probability, or a logit).
* :func:`modality_shapley` — exact (2^M coalitions) or permutation Shapley values per modality,
  absent modalities expressed through the batch mask.
* :func:`mmshap` — MM-SHAP: antithetic permutation Shapley values over tokens, patches, time
  windows, video cells or vector chunks, and modality shares Φ_m / Σ Φ.
* :func:`explain_dataset` — the dataset-level entry point (CSV + PNG breakdowns) used by
  ``mmfuse explain``; see :mod:`mmfuse.explain.report`.
"""

from .estimators import all_coalitions, exact_from_values, permutation_coalitions, permutation_from_values
from .maskers import (
    MASKERS,
    FeatureLayout,
    FeatureMasker,
    PatchMasker,
    TokenMasker,
    VectorMasker,
    VideoMasker,
    WindowMasker,
    patch_grid_for_tokens,
)
from .interaction import ModalityInteractions, modality_interactions
from .mmshap import FeatureExplanation, MMShapResult, mmshap
from .scoring import ScoreFunction, make_score_fn
from .shapley import ModalityShapley, modality_shapley
from .shares import abs_shares

__all__ = [
    "MASKERS", "FeatureExplanation", "FeatureLayout", "FeatureMasker", "MMShapResult", "ModalityInteractions",
    "ModalityShapley",
    "PatchMasker", "ScoreFunction", "TokenMasker", "VectorMasker", "VideoMasker", "WindowMasker",
    "abs_shares", "all_coalitions", "breakdown", "exact_from_values", "explain_dataset", "make_score_fn",
    "mmshap", "modality_interactions", "modality_shapley", "patch_grid_for_tokens", "permutation_coalitions",
    "permutation_from_values", "shares_frame",
]

# the dataset-level report (pandas, matplotlib) is imported on first use
_REPORT = ("breakdown", "explain_dataset", "shares_frame")


def __getattr__(name: str):
    if name in _REPORT:
        from . import report

        return getattr(report, name)
    raise AttributeError(f"module 'mmfuse.explain' has no attribute {name!r}")
