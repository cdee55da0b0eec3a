"""``family: fusion``: early, feature-level and late fusion (:class:`~mmfuse.models.MultimodalModel`).

* ``strategy: early``: the modalities of ``early.modalities`` joined along ``early.axis`` of one sample,
  one encoder, one head;
* ``strategy: feature``: one encoder per modality, the operator ``fusion``, one head;
* ``strategy: late``: one encoder and head per modality, the combiner ``late`` over their outputs.
"""

from __future__ import annotations

from typing import Mapping

from ..config import FusionModelConfig
from ..encoders import create_encoder
from ..errors import ConfigError
from ..models.build import check_modalities, joined_shape, modality_dropout_of, model_encoder
from ..models.heads import create_head
from ..models.model import MultimodalModel
from ..registry import FUSIONS, LATE_COMBINERS, MODELS


def create_imputer_for(cfg, encoders) -> object | None:
    if not cfg.missing.imputer:
        return None
    from ..missing import create_imputer

    try:
        return create_imputer(cfg.missing.imputer, {m: int(e.output_dim) for m, e in encoders.items()})
    except ConfigError as exc:
        raise ConfigError(f"model.missing.imputer: {exc}") from None


@MODELS.register("fusion", default_scheme="joint", schemes=("joint",),
                 test_options={"strategy": "feature", "fusion": {"name": "concat"}},
                 # the embedding width of each modality's configured encoder that takes output_dim (mmfuse.tuning)
                 search_space={"model.encoders.*.options.output_dim": {"low": 16, "high": 128, "log": True}})
def build_fusion(cfg: FusionModelConfig, input_shapes: Mapping[str, tuple], num_outputs: int, task: str):
    mods = check_modalities(cfg, input_shapes)
    dropout = modality_dropout_of(cfg)
    if cfg.missing.imputer and cfg.strategy == "early":
        raise ConfigError("model.missing.imputer: imputation replaces per-modality embeddings, which the "
                          "'early' strategy does not have; use strategy feature or late, or remove it")
    if cfg.strategy == "early":
        em = sorted(cfg.early.modalities or mods)
        bad = [m for m in em if m not in input_shapes]
        if bad:
            raise ConfigError(f"model.early.modalities: {bad[0]!r} is not a modality of the data; the data has {sorted(input_shapes)}")
        shape = joined_shape(em, input_shapes, cfg.early.axis)
        enc = create_encoder(cfg.early.encoder.name, input_shape=shape, **cfg.early.encoder.options)
        head = create_head(cfg.head.name, enc.output_dim, num_outputs, **cfg.head.options)
        return MultimodalModel({"early": enc}, head, "early", early_modalities=em, early_axis=cfg.early.axis,
                               modality_dropout=dropout)

    encoders = {m: model_encoder(m, cfg, tuple(input_shapes[m])) for m in mods}
    imputer = create_imputer_for(cfg, encoders)
    if cfg.strategy == "late":
        LATE_COMBINERS.check_task(cfg.late.name, task, "model.late.name")
        heads = {m: create_head(cfg.head.name, e.output_dim, num_outputs, **cfg.head.options) for m, e in encoders.items()}
        try:
            combiner = LATE_COMBINERS.create(cfg.late.name, modalities=mods, num_classes=num_outputs, task=task,
                                             **cfg.late.options)
        except ConfigError as exc:
            raise ConfigError(f"model.late: {exc}") from None
        return MultimodalModel(encoders, heads, "late", late_combiner=combiner, modality_dropout=dropout, imputer=imputer)
    dims = {m: int(e.output_dim) for m, e in encoders.items()}
    try:
        fusion = FUSIONS.create(cfg.fusion.name, input_dims=dims, **cfg.fusion.options)
    except ConfigError as exc:
        raise ConfigError(f"model.fusion: {exc}") from None
    head = create_head(cfg.head.name, fusion.output_dim, num_outputs, **cfg.head.options)
    return MultimodalModel(encoders, head, "feature", fusion=fusion, modality_dropout=dropout, imputer=imputer)
