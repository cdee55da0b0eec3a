"""``family: intermediate``: interaction blocks (MMTM, any ``INTERACTIONS`` entry) between encoder stages.

Staged encoders (``cnn1d``, ``cnn2d``, ``cnn3d`` or the user's own with ``stages``) per modality, a
block at each fusion point, one head per stream, summed (or averaged) stream logits. Trained with
``joint`` (default) or MMTM's official ``per_stream`` scheme.
"""

from __future__ import annotations

from typing import Mapping

from ..config import IntermediateModelConfig
from ..errors import ConfigError
from ..models.build import check_modalities, modality_dropout_of, model_encoder
from ..registry import MODELS


@MODELS.register("intermediate", default_scheme="joint", schemes=("joint", "per_stream"),
                 test_options={"encoders": {"image": {"name": "cnn2d", "options": {"channels": [4, 8]}},
                                            "audio": {"name": "cnn2d", "options": {"channels": [4, 8]}}}},
                 test_shapes={"image": (1, 12, 12), "audio": (1, 12, 12)},
                 # the embedding width of each modality's configured encoder that takes output_dim (mmfuse.tuning)
                 search_space={"model.encoders.*.options.output_dim": {"low": 16, "high": 128, "log": True}})
def build_intermediate(cfg: IntermediateModelConfig, input_shapes: Mapping[str, tuple], num_outputs: int, task: str):
    from ..models.intermediate import IntermediateFusionModel

    mods = check_modalities(cfg, input_shapes)
    if cfg.missing.imputer:
        raise ConfigError("model.missing.imputer: imputation replaces per-modality embeddings, which intermediate "
                          "fusion does not have; use family fusion (strategy feature or late), or remove it")
    encoders = {m: model_encoder(m, cfg, tuple(input_shapes[m])) for m in mods}
    hopts = dict(cfg.head.options)
    points = "auto" if cfg.fusion_points is None else cfg.fusion_points
    try:
        return IntermediateFusionModel(
            encoders, points, block=cfg.block, block_options=cfg.block_options, num_outputs=num_outputs,
            head_hidden=hopts.pop("hidden", None) if cfg.head.name == "mlp" else None,
            head_dropout=hopts.pop("dropout", 0.0), combine=cfg.combine, modality_dropout=modality_dropout_of(cfg),
        )
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None
