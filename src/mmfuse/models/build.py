"""``build_model(config, input_shapes, num_outputs)``: a model from the ``model`` config section."""

from __future__ import annotations

from typing import Mapping

from torch import nn

from ..config import ModelConfig
from ..encoders import create_encoder
from ..errors import ConfigError
from ..registry import FUSIONS, LATE_COMBINERS
from .heads import create_head
from .model import MultimodalModel


def default_encoder(modality: str, shape: tuple) -> str:
    """A sensible built-in encoder for one sample's shape (used when the config names none)."""
    fixed = all(s is not None for s in shape)
    if len(shape) == 1 and fixed:
        return "mlp"
    if len(shape) == 2 and shape[1] is not None:
        return "cnn1d" if fixed else "gru"
    if len(shape) == 3 and fixed:
        return "cnn2d"
    if len(shape) == 4 and fixed:
        return "cnn3d"
    raise ConfigError(
        f"model.encoders.{modality}: no default encoder for one sample of shape {shape}; "
        "name one, e.g. {name: transformer, options: {vocab_size: ...}} for token ids"
    )


def _encoder(modality: str, cfg: ModelConfig, shape: tuple) -> nn.Module:
    comp = cfg.encoders.get(modality)
    name = comp.name if comp else default_encoder(modality, shape)
    try:
        return create_encoder(name, input_shape=shape, **(comp.options if comp else {}))
    except ConfigError as exc:
        raise ConfigError(f"model.encoders.{modality}: {exc}") from None


def _joined_shape(mods: list[str], shapes: Mapping[str, tuple], axis: int) -> tuple:
    ref = list(shapes[mods[0]])
    if not -len(ref) <= axis < len(ref):
        raise ConfigError(f"model.early.axis: {axis} is out of range for per-sample shape {tuple(ref)}")
    axis %= len(ref)
    if any(shapes[m][axis] is None for m in mods):
        raise ConfigError(f"model.early.axis: axis {axis} has a variable size in {[m for m in mods if shapes[m][axis] is None]}; "
                          "early fusion joins fixed-size inputs (pad them in the dataset, or use feature fusion)")
    total = 0
    for m in mods:
        s = list(shapes[m])
        if len(s) != len(ref) or any(a != b for i, (a, b) in enumerate(zip(s, ref)) if i != axis):
            raise ConfigError(
                f"model.early: modality {m!r} (shape {tuple(s)}) cannot be joined with {mods[0]!r} (shape {tuple(ref)}) "
                f"along axis {axis}: every other dim must match"
            )
        total += s[axis]
    ref[axis] = total
    return tuple(ref)


def build_model(
    config: ModelConfig | Mapping | None,
    input_shapes: Mapping[str, tuple],
    num_outputs: int,
    task: str = "multiclass",
) -> nn.Module:
    """Build the model described by the ``model`` config section.

    ``input_shapes``: one sample's shape per modality (None for a variable first axis), as
    ``MultimodalDataset.shapes`` gives it; ``num_outputs``: classes, labels or regression targets.
    """
    cfg = config if isinstance(config, ModelConfig) else ModelConfig.model_validate(dict(config or {}))
    mods = sorted(cfg.modalities) if cfg.modalities else sorted(input_shapes)
    unknown = [m for m in mods if m not in input_shapes]
    if unknown:
        raise ConfigError(f"model.modalities: {unknown[0]!r} is not a modality of the data; the data has {sorted(input_shapes)}")
    extra = [m for m in cfg.encoders if m not in input_shapes]
    if extra:
        raise ConfigError(f"model.encoders.{extra[0]}: not a modality of the data; the data has {sorted(input_shapes)}")
    dropout = _modality_dropout(cfg)
    if cfg.missing.imputer and cfg.strategy in ("early", "intermediate"):
        raise ConfigError(f"model.missing.imputer: imputation replaces per-modality embeddings, which the "
                          f"{cfg.strategy!r} strategy does not have; use strategy feature or late, or remove it")

    if cfg.strategy == "early":
        em = sorted(cfg.early.modalities or mods)
        bad = [m for m in em if m not in input_shapes]
        if bad:
            raise ConfigError(f"model.early.modalities: {bad[0]!r} is not a modality of the data; the data has {sorted(input_shapes)}")
        shape = _joined_shape(em, input_shapes, cfg.early.axis)
        enc = create_encoder(cfg.early.encoder.name, input_shape=shape, **cfg.early.encoder.options)
        head = create_head(cfg.head.name, enc.output_dim, num_outputs, **cfg.head.options)
        return MultimodalModel({"early": enc}, head, "early", early_modalities=em, early_axis=cfg.early.axis,
                               modality_dropout=dropout)

    encoders = {m: _encoder(m, cfg, tuple(input_shapes[m])) for m in mods}
    imputer = None
    if cfg.missing.imputer:
        from ..missing import create_imputer

        try:
            imputer = create_imputer(cfg.missing.imputer, {m: int(e.output_dim) for m, e in encoders.items()})
        except ConfigError as exc:
            raise ConfigError(f"model.missing.imputer: {exc}") from None
    if cfg.strategy == "intermediate":
        from .intermediate import IntermediateFusionModel

        points = cfg.intermediate.fusion_points
        if points is None:  # default: one block after each of the top stages, aligned from the end (paper placement)
            points = "auto"
        hopts = dict(cfg.head.options)
        try:
            return IntermediateFusionModel(
                encoders, points, block=cfg.intermediate.block, block_options=cfg.intermediate.block_options,
                num_outputs=num_outputs, head_hidden=hopts.pop("hidden", None) if cfg.head.name == "mlp" else None,
                head_dropout=hopts.pop("dropout", 0.0), modality_dropout=dropout,
            )
        except ConfigError as exc:
            raise ConfigError(f"model.intermediate: {exc}") from None
    if cfg.strategy == "late":
        heads = {m: create_head(cfg.head.name, e.output_dim, num_outputs, **cfg.head.options) for m, e in encoders.items()}
        combiner = LATE_COMBINERS.create(cfg.late.name, modalities=mods, num_classes=num_outputs, **cfg.late.options)
        return MultimodalModel(encoders, heads, "late", late_combiner=combiner, modality_dropout=dropout, imputer=imputer)
    dims = {m: int(e.output_dim) for m, e in encoders.items()}
    try:
        fusion = FUSIONS.create(cfg.fusion.name, input_dims=dims, **cfg.fusion.options)
    except ConfigError as exc:
        raise ConfigError(f"model.fusion: {exc}") from None
    head = create_head(cfg.head.name, fusion.output_dim, num_outputs, **cfg.head.options)
    return MultimodalModel(encoders, head, "feature", fusion=fusion, modality_dropout=dropout, imputer=imputer)


def _modality_dropout(cfg: ModelConfig):
    md = cfg.missing.modality_dropout
    if (isinstance(md, dict) and any(v > 0 for v in md.values())) or (not isinstance(md, dict) and md > 0):
        from ..missing import ModalityDropout

        try:
            return ModalityDropout(md)
        except ConfigError as exc:
            raise ConfigError(f"model.missing.modality_dropout: {exc}") from None
    return None
