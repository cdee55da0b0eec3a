"""``build_model(config, input_shapes, num_outputs)``: a model from the ``model`` config section."""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel
from torch import nn

from ..config import parse_model_config
from ..encoders import create_encoder
from ..errors import ConfigError
from ..registry import MODELS


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


def model_encoder(modality: str, cfg, shape: tuple) -> nn.Module:
    """The encoder ``model.encoders.<modality>`` names, or the default for its shape."""
    comp = cfg.encoders.get(modality)
    name = comp.name if comp else default_encoder(modality, shape)
    try:
        return create_encoder(name, input_shape=shape, **(comp.options if comp else {}))
    except ConfigError as exc:
        raise ConfigError(f"model.encoders.{modality}: {exc}") from None


def joined_shape(mods: list[str], shapes: Mapping[str, tuple], axis: int) -> tuple:
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
    config: Any,
    input_shapes: Mapping[str, tuple],
    num_outputs: int,
    task: str = "multiclass",
) -> nn.Module:
    """Build the model described by the ``model`` config section: the builder its ``family`` registered.

    ``config``: a family sub-config (``FusionModelConfig``, ``MEAModelConfig``, ...) or a raw dict
    (``family`` defaults to ``fusion``); ``input_shapes``: one sample's shape per modality (None for a
    variable first axis), as ``MultimodalDataset.shapes`` gives it; ``num_outputs``: classes, labels or
    regression targets; ``task``: multiclass | multilabel | regression.
    """
    cfg = parse_model_config(config if isinstance(config, BaseModel) else dict(config or {}))
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
        raise ConfigError(f"build_model: num_outputs (classes, labels or regression targets) must be a positive int, "
                          f"got {num_outputs!r}; check the data's targets (a dataset with no classes?)")
    MODELS.check_task(cfg.family, task, "model.family")
    check_modalities(cfg, input_shapes)
    return MODELS.get(cfg.family)(cfg, input_shapes, num_outputs, task)


def check_modalities(cfg, input_shapes: Mapping[str, tuple]) -> list[str]:
    """The modalities a model uses (``model.modalities`` or all, sorted); unknown names raise ConfigError."""
    mods = sorted(cfg.modalities) if cfg.modalities else sorted(input_shapes)
    unknown = [m for m in mods if m not in input_shapes]
    if unknown:
        raise ConfigError(f"model.modalities: {unknown[0]!r} is not a modality of the data; the data has "
                          f"{sorted(input_shapes)}: remove it or fix its name")
    extra = [m for m in cfg.encoders if m not in input_shapes]
    if extra:
        raise ConfigError(f"model.encoders.{extra[0]}: not a modality of the data; the data has "
                          f"{sorted(input_shapes)}: remove or rename this entry")
    return mods


def modality_dropout_of(cfg):
    md = cfg.missing.modality_dropout
    if (isinstance(md, dict) and any(v > 0 for v in md.values())) or (not isinstance(md, dict) and md > 0):
        from ..missing import ModalityDropout

        try:
            return ModalityDropout(md)
        except ConfigError as exc:
            raise ConfigError(f"model.missing.modality_dropout: {exc}") from None
    return None
