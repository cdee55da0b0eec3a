"""``family: smil``: SMIL (Ma et al., AAAI 2021), one modality reconstructed from the other.

``model.full`` is the modality present in every training sample (a training row without it is a
DataError at the start of training; default: the first modality in sorted order) and ``model.reconstructed`` the one that may be absent (default: the other). The
builder returns a :class:`~mmfuse.missing.smil.SMILModel`:

* encoders: ``model.encoders.<modality>`` (any registered encoder with an ``output_dim`` and
  vector output); when the config names none, SMIL's own av-MNIST encoders where the shape fits
  (``lenet`` for the full modality: a fixed (H, W) or (C, H, W) of at least 16×16; ``snet`` for
  the reconstructed one: a fixed (H, W) or (C, H, W) of at least 4×4), else the library default
  for the shape;
* ``recon_mode``, ``reg_op``, ``learn_sigma`` left None take the value of ``model.preset``
  (:data:`~mmfuse.missing.meta.SMIL_PRESETS`: "code" or "paper");
* the priors are a buffer of zeros [k, D] (D = the reconstructed encoder's ``output_dim``) in the
  state dict: the ``smil_meta`` scheme fills them (K-means or PCA, ``model.prior``) at the end of its
  warm-up, and a checkpoint restores them.

Trained by the ``smil_meta`` scheme (default; :mod:`mmfuse.schemes.smil_meta`) or ``joint`` (plain
supervised training through the sample-wise switch: real features where present, reconstruction from
the (zero, unless warm-started) priors elsewhere). The staged pre-training of the official code
(unimodal encoders first) is a warm start: ``model.init_from: CHECKPOINT`` copies every parameter
whose name and shape match (e.g. ``full_encoder.*`` from an earlier SMIL run).

Tasks: multiclass, multilabel and regression. The head has ``num_outputs`` raw scores and every
task-loss term of training (``joint``'s loss, the ``smil_meta`` warm-up, inner meta-train and meta-test
losses) is the run's task loss (:meth:`FusionSystem.task_loss
<mmfuse.training.system.FusionSystem.task_loss>`): cross-entropy for multiclass (the paper and the
code), BCE-with-logits for multilabel, MSE for regression. The feature-alignment MSEs of the meta-test
loss and the K-means / PCA priors (clustered features, no labels) do not depend on the task.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..config import SMILModelConfig
from ..errors import ConfigError
from ..models.build import check_modalities, model_encoder
from ..registry import MODELS


def _image_like(shape: tuple, min_side: int) -> bool:
    shp = tuple(shape)
    if len(shp) == 2:
        shp = (1,) + shp
    return len(shp) == 3 and all(isinstance(s, int) and s >= 1 for s in shp) and min(shp[1:]) >= min_side


def _encoder(role: str, modality: str, cfg: SMILModelConfig, shape: tuple):
    from ..encoders import create_encoder

    if modality not in cfg.encoders:
        name = ("lenet", 16) if role == "full" else ("snet", 4)
        if _image_like(shape, name[1]):
            return create_encoder(name[0], input_shape=tuple(shape))
    enc = model_encoder(modality, cfg, tuple(shape))
    dim = getattr(enc, "output_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"model.encoders.{modality}: SMIL needs an encoder with an int output_dim; "
                          f"{type(enc).__name__} has {dim!r}")
    if getattr(enc, "output_kind", "vector") != "vector":
        raise ConfigError(f"model.encoders.{modality}: SMIL needs one vector per sample; this encoder returns a "
                          f"{enc.output_kind!r} (set its option return_sequence: false, or choose another encoder)")
    return enc


def smil_roles(cfg: SMILModelConfig, input_shapes: Mapping[str, tuple]) -> tuple[str, str]:
    """(full, reconstructed) modality names from the config and the data."""
    mods = check_modalities(cfg, input_shapes)
    for key in ("full", "reconstructed"):
        v = getattr(cfg, key)
        if v is not None and v not in mods:
            raise ConfigError(f"model.{key}: {v!r} is not a modality of the model; it uses {mods}")
    full, rec = cfg.full, cfg.reconstructed
    if full is None and rec is None:
        if len(mods) != 2:
            raise ConfigError(f"model: SMIL pairs two modalities but the model uses {len(mods)} ({mods}); "
                              "set model.full and model.reconstructed (or model.modalities to two names)")
        full, rec = mods
    elif full is None:
        others = [m for m in mods if m != rec]
        if len(others) != 1:
            raise ConfigError(f"model.full: choose the modality every sample has among {others}")
        full = others[0]
    elif rec is None:
        others = [m for m in mods if m != full]
        if len(others) != 1:
            raise ConfigError(f"model.reconstructed: choose the modality to reconstruct among {others}")
        rec = others[0]
    if full == rec:
        raise ConfigError(f"model.reconstructed: must differ from model.full (both are {full!r})")
    return full, rec


@MODELS.register(
    "smil", default_scheme="smil_meta", schemes=("smil_meta", "joint"),
    tasks=("multiclass", "multilabel", "regression"),
    test_options={"k": 2, "hidden": 8, "dropout": 0.0,
                  "encoders": {"image": {"name": "lenet", "options": {"channels": [2, 3], "dropout": 0.0}},
                               "audio": {"name": "snet", "options": {"channels": [4, 4, 2], "pool_size": 2,
                                                                     "dropout": 0.0}}}},
    test_shapes={"image": (1, 16, 16), "audio": (8, 6)},
    search_space={"model.hidden": {"low": 32, "high": 128, "log": True}, "model.dropout": {"low": 0.0, "high": 0.6}},
    # φ_c gets no gradient from the plain loss while the priors are still zeros (a fresh model): the
    # reconstruction is then 0 whatever ω is; the smil_meta scheme sets the priors before it trains φ_c
    test_no_grad=("reconstruction.",),
)
def build_smil(cfg: SMILModelConfig, input_shapes: Mapping[str, tuple], num_outputs: int, task: str):
    from ..missing.meta import SMIL_PRESETS
    from ..missing.smil import SMILModel

    if cfg.missing.imputer:
        raise ConfigError("model.missing.imputer: SMIL reconstructs the missing modality itself; remove the imputer")
    md = cfg.missing.modality_dropout
    if (isinstance(md, dict) and any(v > 0 for v in md.values())) or (not isinstance(md, dict) and md > 0):
        raise ConfigError("model.missing.modality_dropout: SMIL's meta step already hides the reconstructed "
                          "modality (its D^m batches); set it to 0")
    full, rec = smil_roles(cfg, input_shapes)
    preset = SMIL_PRESETS[cfg.preset]
    opts = {k: (preset[k] if getattr(cfg, k) is None else getattr(cfg, k)) for k in ("recon_mode", "reg_op", "learn_sigma")}
    enc_full = _encoder("full", full, cfg, tuple(input_shapes[full]))
    enc_rec = _encoder("reconstructed", rec, cfg, tuple(input_shapes[rec]))
    priors = torch.zeros(cfg.k, int(enc_rec.output_dim))
    try:
        return SMILModel(enc_full, enc_rec, priors, int(num_outputs), full=full, missing=rec, hidden=cfg.hidden,
                         dropout=cfg.dropout, regularize=tuple(cfg.regularize), regularize_real=cfg.regularize_real,
                         prior=cfg.prior, **opts)
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None
