"""Missing modalities: modality dropout, imputation and SMIL.

* :class:`ModalityDropout` — per-sample, per-modality dropout of present modalities (training).
* Imputers (registry :data:`IMPUTERS`): ``zero``, ``learned_token``, ``mean``, ``cross_modal``;
  ``forward(embeddings, mask) -> embeddings`` and ``output_mask(mask)`` (imputed modalities are
  "treated as present" by default, ``mark_present=False`` keeps the original mask).
* SMIL (Ma et al., AAAI 2021): :func:`kmeans_priors`, :func:`pca_priors`,
  :class:`ReconstructionNet`, :class:`FeatureRegularizer`, :class:`SMILModel`,
  :func:`smil_meta_step` (trained by ``model.family: smil`` with the ``smil_meta`` scheme).
* The study of SMIL's av-MNIST figure (``mmfuse missing-study CONFIG``): a grid of ``mmfuse compare``
  over η; its table, verdicts and plot are in :mod:`mmfuse.missing.report` (:func:`run_missing_study`).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..registry import IMPUTERS
from .dropout import ModalityDropout
from .imputation import CrossModalImputer, Imputer, LearnedTokenImputer, MeanImputer, ZeroImputer
from .meta import SMIL_PRESETS, resolve_param_subset, smil_meta_step
from .smil import (FeatureRegularizer, LeNetEncoder, ReconstructionNet, SMILModel, SNetEncoder, kmeans_priors,
                   pca_priors, smil_encoders)

IMPUTERS.register("zero", ZeroImputer)
IMPUTERS.register("learned_token", LearnedTokenImputer, test_options={"init_std": 0.5})
IMPUTERS.register("mean", MeanImputer)
IMPUTERS.register("cross_modal", CrossModalImputer, test_options={"hidden": 8})


def create_imputer(name_or_module: Any, input_dims: Any = None, /, **kwargs: Any) -> Imputer:
    """Build a registered imputer, or return an ``nn.Module`` unchanged.

    ``input_dims``: ``{modality: embedding width}`` (the encoders' ``output_dim``). ``zero`` also
    accepts a plain list of modality names (it needs no widths); the others raise a ConfigError.
    """
    from collections.abc import Mapping as _Mapping, Sequence as _Sequence

    from torch import nn

    if isinstance(name_or_module, nn.Module):
        return name_or_module
    if input_dims is not None:
        if isinstance(input_dims, _Mapping):
            kwargs["input_dims"] = dict(input_dims)
        elif isinstance(input_dims, _Sequence) and not isinstance(input_dims, str):
            if name_or_module != "zero":
                raise ConfigError(
                    f"imputer {name_or_module!r} needs the embedding width of each modality: pass "
                    f"input_dims={{modality: encoder.output_dim}}, not the list of names {list(input_dims)}"
                )
        else:
            raise ConfigError(f"imputer {name_or_module!r}: input_dims must map modality names to widths, got {input_dims!r}")
    return IMPUTERS.create(name_or_module, **kwargs)


def list_imputers() -> list[str]:
    return IMPUTERS.list()


def run_missing_study(config: Any, **kwargs: Any):
    """See :func:`mmfuse.missing.report.run_missing_study` (imported lazily: matplotlib)."""
    from .report import run_missing_study as _run

    return _run(config, **kwargs)


__all__ = [
    "IMPUTERS", "create_imputer", "list_imputers",
    "ModalityDropout", "Imputer", "ZeroImputer", "LearnedTokenImputer", "MeanImputer", "CrossModalImputer",
    "kmeans_priors", "pca_priors", "ReconstructionNet", "FeatureRegularizer", "SMILModel", "LeNetEncoder",
    "SNetEncoder", "smil_encoders", "smil_meta_step", "resolve_param_subset", "SMIL_PRESETS",
    "run_missing_study",
]
