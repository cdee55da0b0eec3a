"""``family: ngiam``: Ngiam et al. 2011, "Multimodal Deep Learning" (spec 03), through the one training loop.

The model (:class:`NgiamModel`) is a representation of two modalities plus a supervised head:

* inputs: exactly two modalities (``model.modalities``, default all of the data's, sorted); each
  sample is flattened to a vector ``[B, D_m]`` and, with ``standardize``, z-scored per feature with
  training statistics (set by the ``greedy_pretrain`` scheme before pre-training; identity otherwise;
  stored as buffers, so the checkpoint keeps them). A modality absent from a row (mask False) is
  exact zeros *after* standardising (the paper's convention) and is masked inside the
  representation, so its values never reach the output (not even NaN);
* ``model.model`` picks the representation (:mod:`mmfuse.representation`):
  ``dbn`` (:class:`BimodalDBN`: Gaussian RBM per modality + joint binary RBM; an absent modality is
  inferred by ``infer_steps`` mean-field steps), ``bimodal_ae`` (:class:`BimodalDeepAE`) or
  ``video_only_ae`` (:class:`VideoOnlyDeepAE`: the encoder reads ``source`` only and reconstructs both);
* the head (``model.head``, any registered head) reads the shared layer ``[B, shared_dim]``
  (``ModelOutput.fused``).

``model.setting`` (Ngiam Table 1, :func:`mmfuse.representation.head_mask`) decides which modalities
the head's path sees; the representation's unsupervised term always reads both:

* ``fusion``: both at training and at test;
* ``cross_modality``: ``source`` only, at training and at test (the other is masked out always);
* ``shared``: ``source`` only at training; at evaluation the model uses whatever the batch has
  present, so the evaluation pattern holding only the other modality is the paper's "train on A,
  test on V" number.

``source`` (``model.source``) defaults to the first modality in sorted order. For ``video_only_ae``
the encoder reads only ``source`` whatever the setting.

Losses. While training, ``ModelOutput.losses["reconstruction"]`` is ``reconstruction_weight`` × the
squared reconstruction error of both modalities from the (un-hidden) batch, each modality's
error averaged over the rows where it is present (:func:`reconstruction_loss`):

* ``bimodal_ae``: with ``denoising`` on the paper's augmented batch (3B rows: first modality zeroed,
  second zeroed, both present; targets always the originals), else on the batch itself;
* ``video_only_ae``: both modalities reconstructed from ``source`` (rows where ``source`` is present);
* ``dbn``: the deterministic up-down pass of the DBN (``BimodalDBN.reconstruct``, the DBN unrolled as a
  tied-weight autoencoder, Hinton & Salakhutdinov 2006); ``reconstruction_weight: 0`` keeps the
  paper's plain pre-trained features (fine-tuned by the task loss only).

The one training loop adds it to the task loss, so the joint fine-tuning trains representation and head
together; ``freeze_representation: true`` trains only the head on the fixed (pre-trained) features,
the paper's protocol (linear classifier with ``head: {name: linear}``). Default scheme
``greedy_pretrain`` (layer-wise CD-k pre-training, then fine-tuning); ``joint`` skips pre-training.
``model.encoders`` are not used (the representation reads the flattened inputs);
``missing.modality_dropout`` applies to the head's mask in training; ``missing.imputer`` is rejected.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

from ..batch import MultimodalBatch, require_modalities
from ..config import NgiamModelConfig
from ..errors import ConfigError
from ..models.build import check_modalities, modality_dropout_of
from ..models.heads import create_head
from ..models.output import ModelOutput
from ..registry import MODELS, TASKS
from ..representation import BimodalDBN, BimodalDeepAE, VideoOnlyDeepAE, head_mask, reconstruction_loss

PRESENT_KEY = "present."


class NgiamModel(nn.Module):
    """Flattened two-modality inputs -> representation (DBN or deep AE) -> head; see the module doc.

    ``representation``: a :class:`BimodalDBN`, :class:`BimodalDeepAE` or :class:`VideoOnlyDeepAE`
    over ``input_dims``; ``head``: ``[B, shared_dim] -> [B, K]``.
    """

    def __init__(self, kind: str, representation: nn.Module, head: nn.Module, input_dims: Mapping[str, int],
                 setting: str, source: str, reconstruction_weight: float = 1.0, infer_steps: int = 10,
                 standardize: bool = True, modality_dropout: nn.Module | None = None,
                 rbm_options: Mapping[str, float] | None = None):
        super().__init__()
        self.kind = kind
        self.representation = representation
        self.head = head
        self.modalities = sorted(input_dims)
        self.input_dims = {m: int(input_dims[m]) for m in self.modalities}
        self.setting = setting
        self.source = source
        self.reconstruction_weight = float(reconstruction_weight)
        self.infer_steps = int(infer_steps)
        self.standardize = bool(standardize)
        self.modality_dropout = modality_dropout
        self.rbm_options = dict(rbm_options or {})  # sigma, sparsity_target, sparsity_cost of the RBM stack
        for m in self.modalities:  # per-feature z-score: x' = (x − shift) · scale (identity until set)
            self.register_buffer(f"shift_{m}", torch.zeros(self.input_dims[m]))
            self.register_buffer(f"scale_{m}", torch.ones(self.input_dims[m]))
        self.pretrain_history: dict[str, list[float]] = {}  # filled by the greedy_pretrain scheme (not saved)

    @property
    def output_dim(self) -> int:
        return int(self.representation.output_dim)

    def pretrain_dbn(self) -> BimodalDBN:
        """The RBM stack that greedy pre-training trains: the representation itself (``dbn``), or a new
        :class:`BimodalDBN` of the autoencoder's sizes, copied into it afterwards with ``init_from_dbn``."""
        if isinstance(self.representation, BimodalDBN):
            return self.representation
        rep = self.representation
        o = self.rbm_options
        ref = next(rep.parameters())
        return BimodalDBN(rep.input_dims, rep.hidden_dims, rep.shared_dim, sigma=o.get("sigma", 1.0),
                          sparsity_target=o.get("sparsity_target", 0.1), sparsity_cost=o.get("sparsity_cost", 0.0),
                          joint_sparsity_target=o.get("sparsity_target", 0.1),
                          joint_sparsity_cost=o.get("sparsity_cost", 0.0)).to(ref.device)

    # ---------------------------------------------------------------- inputs
    @torch.no_grad()
    def set_input_statistics(self, mean: Mapping[str, Tensor], std: Mapping[str, Tensor]) -> None:
        """Store the per-feature training mean and std: ``x' = (x − mean) / std``."""
        for m in self.modalities:
            s = torch.as_tensor(std[m], dtype=torch.float32)
            if s.shape != (self.input_dims[m],) or not bool((s > 0).all()):
                raise ConfigError(f"NgiamModel: std of {m!r} must be {self.input_dims[m]} positive numbers")
            getattr(self, f"shift_{m}").copy_(torch.as_tensor(mean[m], dtype=torch.float32))
            getattr(self, f"scale_{m}").copy_(1.0 / s)

    def flat(self, batch: MultimodalBatch, standardized: bool = True) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``({m: [B, D_m]}, {m: bool[B]})``: flattened (standardised) inputs, absent rows exact zeros."""
        require_modalities(batch, self.modalities)
        x, mask = {}, {}
        for m in self.modalities:
            v = batch.inputs[m].reshape(batch.batch_size, -1).float()
            if v.shape[1] != self.input_dims[m]:
                raise ConfigError(f"NgiamModel: modality {m!r} has {v.shape[1]} values per sample, the model was "
                                  f"built for {self.input_dims[m]}; use data of the shape the model was trained on")
            present = batch.mask[m]
            if standardized:
                v = (v - getattr(self, f"shift_{m}")) * getattr(self, f"scale_{m}")
            x[m] = torch.where(present.unsqueeze(1), v, torch.zeros_like(v))
            mask[m] = present
        return x, mask

    # ---------------------------------------------------------------- the model
    def encode(self, x: Mapping[str, Tensor], mask: Mapping[str, Tensor]) -> Tensor:
        """The shared layer ``[B, shared_dim]`` of the inputs ``x`` with presence ``mask``."""
        if self.kind == "dbn":
            return self.representation.encode(x, mask, self.infer_steps)
        return self.representation.encode(x, mask)

    def reconstruction(self, x: Mapping[str, Tensor], mask: Mapping[str, Tensor]) -> Tensor:
        """The unweighted reconstruction error of the batch (both modalities; see the module doc)."""
        if self.kind == "dbn":
            return reconstruction_loss(self.representation.reconstruct(x, mask, self.infer_steps), x, mask)
        return self.representation.reconstruction_objective(x, mask)

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        x, mask = self.flat(batch)
        hmask = head_mask(self.setting, self.source, mask, self.training)
        if self.training and self.modality_dropout is not None:
            hmask = self.modality_dropout(hmask)
        z = self.encode(x, hmask)                                   # [B, shared_dim]
        logits = self.head(z)
        losses = {}
        trainable = any(p.requires_grad for p in self.representation.parameters())
        if self.training and self.reconstruction_weight > 0 and trainable:
            losses["reconstruction"] = self.reconstruction_weight * self.reconstruction(x, mask)
        extras = {PRESENT_KEY + m: hmask[m] for m in self.modalities}
        return ModelOutput(logits=logits, fused=z, extras=extras, losses=losses)


def _flat_dims(mods: list[str], input_shapes: Mapping[str, tuple]) -> dict[str, int]:
    dims = {}
    for m in mods:
        shape = tuple(input_shapes[m])
        if any(s is None for s in shape):
            raise ConfigError(f"model.modalities: {m!r} has a variable-length shape {shape}; the ngiam family "
                              "flattens each sample to a fixed-size vector. Give it a fixed size in the dataset "
                              "(e.g. data.options.audio_frames: 40 for avmnist) or use another family")
        dims[m] = int(math.prod(shape)) if shape else 1
    return dims


@MODELS.register("ngiam", default_scheme="greedy_pretrain", schemes=("greedy_pretrain", "joint"), tasks=TASKS,
                 test_options={"model": "bimodal_ae", "hidden_dims": 8, "shared_dim": 6, "head": {"name": "linear"}},
                 test_shapes={"audio": (5, 4), "image": (1, 6, 6)},
                 search_space={"model.shared_dim": {"low": 16, "high": 64, "log": True},
                               "model.reconstruction_weight": {"low": 0.1, "high": 3.0, "log": True}})
def build_ngiam(cfg: NgiamModelConfig, input_shapes: Mapping[str, tuple], num_outputs: int, task: str):
    mods = check_modalities(cfg, input_shapes)
    if len(mods) != 2:
        raise ConfigError(f"model.modalities: the ngiam family models exactly two modalities (audio and video in the "
                          f"paper), got {len(mods)}: {mods}; set model.modalities to two of {sorted(input_shapes)}")
    if cfg.missing.imputer:
        raise ConfigError("model.missing.imputer: the ngiam family has no per-modality embedding to impute (the DBN "
                          "infers an absent modality itself, the autoencoders read zeros); remove it")
    source = cfg.source if cfg.source is not None else mods[0]
    if source not in mods:
        raise ConfigError(f"model.source: {source!r} is not one of the model's modalities {mods}")
    dims = _flat_dims(mods, input_shapes)
    hidden = cfg.hidden_dims
    if isinstance(hidden, dict):
        if sorted(hidden) != mods:
            raise ConfigError(f"model.hidden_dims: needs one size per modality {mods}, got {sorted(hidden)}")
        bad = [m for m, h in hidden.items() if h < 1]
        if bad:
            raise ConfigError(f"model.hidden_dims.{bad[0]}: must be a positive integer, got {hidden[bad[0]]}")
    elif hidden < 1:
        raise ConfigError(f"model.hidden_dims: must be a positive integer, got {hidden}")
    try:
        if cfg.model == "dbn":
            rep = BimodalDBN(dims, hidden, cfg.shared_dim, sigma=cfg.sigma, sparsity_target=cfg.sparsity_target,
                             sparsity_cost=cfg.sparsity_cost, joint_sparsity_target=cfg.sparsity_target,
                             joint_sparsity_cost=cfg.sparsity_cost)
        elif cfg.model == "bimodal_ae":
            rep = BimodalDeepAE(dims, hidden, cfg.shared_dim, output=cfg.output, denoising=cfg.denoising)
        else:
            rep = VideoOnlyDeepAE(dims, source, hidden, cfg.shared_dim, output=cfg.output)
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None
    if cfg.freeze_representation:
        for p in rep.parameters():
            p.requires_grad_(False)
    head = create_head(cfg.head.name, cfg.shared_dim, num_outputs, **cfg.head.options)
    return NgiamModel(cfg.model, rep, head, dims, cfg.setting, source, cfg.reconstruction_weight,
                      cfg.infer_steps, cfg.standardize, modality_dropout_of(cfg),
                      {"sigma": cfg.sigma, "sparsity_target": cfg.sparsity_target, "sparsity_cost": cfg.sparsity_cost})


__all__ = ["NgiamModel", "build_ngiam"]
