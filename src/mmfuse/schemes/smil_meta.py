"""``smil_meta``: SMIL's Bayesian meta-learning (Ma et al., AAAI 2021) as a training scheme.

Manual optimisation, one optimiser (``training.optimizer``, ``training.lr``,
``training.weight_decay``; the official code uses Adam, 1e-3, 1e-4) over every parameter, θ and ψ.
Per training batch, the rows that have both modalities are D^f and the rows that have the full
modality but lack the reconstructed one are D^m (a training row without the full modality is a
DataError at the start of training, naming ``model.full``; when a batch has no D^m rows, its D^f rows with the modality hidden stand in, as in the
code at η = 100 %):

* warm-up (the first ``warmup_epochs`` epochs; the code's stage 2, "train the fused model on the
  paired subset"): the fused model on the D^f rows with their real features
  (``reconstruct="never"``), loss :meth:`FusionSystem.compute_loss`;
* priors: at the end of the last warm-up epoch (after its last batch), or when training starts if
  ``warmup_epochs == 0``, the reconstructed encoder's features (eval mode, no gradient) of every
  training row that has that modality are clustered (``model.prior``: K-means with
  ``random_state=prior_seed`` or PCA, K = ``model.k``) and written into the model's prior buffer;
* afterwards every batch is one meta step (:func:`mmfuse.missing.meta.smil_meta_step`: inner
  functional SGD on D^m, meta-test on D^f), ``manual_backward`` of the total, one optimiser step,
  and one step of the optional StepLR (``outer_step_size``, ``outer_gamma``). The inner lr
  ``α = inner_lr · inner_lr_gamma^{⌊meta steps / inner_lr_every⌋}`` counts meta steps only.

Tasks: multiclass, multilabel and regression. Every task-loss term (the warm-up loss, the inner
meta-train loss, the meta-test prediction loss and the optional ``real_ce_weight`` term) is the run's
task loss :meth:`FusionSystem.task_loss <mmfuse.training.system.FusionSystem.task_loss>`:
cross-entropy for multiclass (the paper and the code), BCE-with-logits for multilabel, MSE for
regression. The feature-alignment MSEs and the priors (clustered features, no labels) are the same
for every task.

A batch without any D^f row is skipped (nothing to meta-test on). The code's stages 0-1 (unimodal
pre-training of the encoders) are a warm start: ``model.init_from: CHECKPOINT`` copies the encoders
of an earlier run whose parameter names and shapes match. Validation during the warm-up epochs
before the priors exist sees zero priors (reconstructed rows then get the zero feature).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, DataError
from ..registry import SCHEMES
from .base import Scheme

_CODE = {"inner_steps": 1, "second_order": True, "kl_weight": 0.0}  # SMIL_PRESETS["code"], meta-step keys


class SMILMetaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inner_steps: int = Field(_CODE["inner_steps"], ge=0)  # K inner SGD steps (0: no adaptation)
    inner_lr: float = Field(1e-3, ge=0)  # α
    inner_lr_every: int = Field(1000, ge=1)  # α ← α·inner_lr_gamma every this many optimiser steps
    inner_lr_gamma: float = Field(0.1, gt=0)
    # the inner-loop parameter subset: groups full_encoder (image_encoder), missing_encoder (audio_encoder),
    # head, reconstruction, regularizers, or parameter-name prefixes, joined by '+'
    inner_params: str | list[str] = "full_encoder+head"
    second_order: bool = _CODE["second_order"]  # MAML with create_graph=True (the code)
    align_weights: tuple[float, float] = (0.01, 0.01)  # MSE(concat), MSE(hidden) of real vs reconstructed
    kl_weight: float = Field(_CODE["kl_weight"], ge=0)
    real_ce_weight: float = Field(0.0, ge=0)  # task loss (CE for multiclass) of the real-feature path, meta-test
    warmup_epochs: int = Field(1, ge=0)  # epochs of fused training on D^f before the priors and meta steps
    outer_step_size: int | None = Field(5000, ge=1)  # StepLR over meta steps (None: constant lr)
    outer_gamma: float = Field(0.1, gt=0)
    prior_seed: int = 0  # K-means random_state (the code: 0)


def _smil_model(system):
    from ..missing.smil import SMILModel

    if not isinstance(system.model, SMILModel):
        raise ConfigError("training.scheme: smil_meta trains a SMIL model (model.family: smil); this model is "
                          f"{type(system.model).__name__}. Use scheme joint or family smil")
    return system.model


def _train_loader(system):
    loader = system.trainer.train_dataloader
    if isinstance(loader, dict):
        loader = next(iter(loader.values()))
    elif isinstance(loader, (list, tuple)):
        loader = loader[0]
    return loader


@torch.no_grad()
def reconstructed_features(model, loader, device=None) -> torch.Tensor:
    """The reconstructed encoder's features (eval mode) of every row of ``loader`` that has that modality,
    ordered by the rows' dataset index (so the result does not depend on the shuffle) -> Tensor[N, D]."""
    from ..missing.smil import encode_rows

    was = model.training
    model.eval()
    feats, index = [], []
    try:
        for batch in loader:
            batch = batch.to(device) if device is not None else batch
            present = batch.mask[model.missing]
            if not bool(present.any()):
                continue
            rows = present.nonzero(as_tuple=True)[0]
            sub = batch.select(rows)
            h = encode_rows(model.missing_encoder, sub.inputs[model.missing], sub.mask[model.missing],
                            model.missing_dim, sub.lengths.get(model.missing))
            feats.append(h.detach().float().cpu())
            index.append(sub.index.cpu() if sub.index is not None else torch.arange(len(rows)) + sum(map(len, index)))
    finally:
        model.train(was)
    if not feats:
        raise DataError(f"smil_meta: no training sample has modality {model.missing!r}; SMIL's priors are computed "
                        "from the samples that have it (set model.reconstructed to a modality some samples have)")
    order = torch.cat(index).argsort()
    return torch.cat(feats)[order]


def compute_priors(model, features: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """K-means or PCA priors (``model.prior``) with as many centres as the model's prior buffer."""
    from ..missing.smil import kmeans_priors, pca_priors

    k = model.reconstruction.num_priors
    if features.shape[0] < k:
        raise DataError(f"smil_meta: model.k={k} priors need at least {k} training samples with {model.missing!r}, "
                        f"got {features.shape[0]}; lower model.k")
    return kmeans_priors(features, k=k, seed=seed) if model.prior == "kmeans" else pca_priors(features, k=k)


@SCHEMES.register("smil_meta")
class SMILMetaScheme(Scheme):
    Options = SMILMetaOptions
    automatic_optimization = False

    def __init__(self, options=None):
        super().__init__(options)
        self.priors_ready = False
        self.inner_names: list[str] = []
        self.meta_steps = 0  # meta steps taken (the inner-lr schedule counts these)

    @classmethod
    def check(cls, options, training) -> list[str]:
        max_epochs = training.get("max_epochs", 10) if isinstance(training, dict) else training.max_epochs
        if isinstance(max_epochs, int) and options.warmup_epochs > max_epochs:
            return [f"training.scheme_options.warmup_epochs: {options.warmup_epochs} is more than training.max_epochs "
                    f"({max_epochs}); the priors are computed at the end of the warm-up, so lower it or train longer"]
        return []

    def configure_optimizers(self, system):
        from ..missing.meta import resolve_param_subset

        model = _smil_model(system)
        try:
            self.inner_names = resolve_param_subset(model, self.options.inner_params)
        except ConfigError as exc:
            raise ConfigError(f"training.scheme_options.{exc}") from None
        opt = system.make_optimizer(model.parameters())
        if self.options.outer_step_size is None:
            return opt
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=self.options.outer_step_size,
                                                       gamma=self.options.outer_gamma)]

    def on_train_start(self, system) -> None:
        model = _smil_model(system)
        loader = _train_loader(system)
        rows = []  # positions in the train split of the rows without the full modality
        for batch in loader:
            miss = ~batch.mask[model.full]
            if bool(miss.any()):
                idx = batch.index[miss] if batch.index is not None else torch.full((int(miss.sum()),), -1)
                rows += [int(i) for i in idx]
        lacking = len(rows)
        if lacking:  # SMIL reconstructs only the other modality: such rows would be dropped without a word
            from ..explain.rows import sample_ids

            ids = sample_ids(getattr(loader, "dataset", None)) or []
            named = [str(ids[i]) if i < len(ids) else str(i) for i in sorted({i for i in rows if i >= 0})]
            more = ", ..." if len(named) > 10 else ""
            which = f" ({'row' if len(named) == 1 else 'rows'} {', '.join(named[:10])}{more})" if named else ""
            raise DataError(f"model.full: {lacking} training sample(s) lack the full modality {model.full!r}{which}; SMIL needs it "
                            f"in every row and reconstructs only {model.missing!r}. Set model.full to the modality every "
                            f"training row has (and model.reconstructed to the other), or drop those rows")
        max_epochs = system.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0 and self.options.warmup_epochs > max_epochs:
            raise ConfigError(f"training.scheme_options.warmup_epochs: {self.options.warmup_epochs} is more than "
                              f"training.max_epochs ({max_epochs}); the priors are computed at the end of the warm-up")
        if self.options.warmup_epochs == 0:
            self.set_priors(system)

    def set_priors(self, system) -> None:
        model = system.model
        feats = reconstructed_features(model, _train_loader(system), system.device)
        model.set_priors(compute_priors(model, feats, self.options.prior_seed).to(model.reconstruction.priors))
        self.priors_ready = True

    def _step(self, system, loss) -> None:
        opt = system.optimizers()
        opt.zero_grad()
        system.manual_backward(loss)
        system.clip(opt)
        opt.step()

    def training_step(self, system, batch, batch_idx: int):
        from ..missing.meta import smil_meta_step

        model = _smil_model(system)
        o = self.options
        full = batch.mask[model.full]
        rec = batch.mask[model.missing]
        df = (full & rec).nonzero(as_tuple=True)[0]
        dm = (full & ~rec).nonzero(as_tuple=True)[0]
        epoch = system.current_epoch
        if epoch < o.warmup_epochs:
            if len(df):
                sub = batch.select(df)
                loss = system.compute_loss(sub, model(sub, reconstruct="never"))
                self._step(system, loss)
                system.log_train_loss(loss, sub)
            last = batch_idx + 1 >= system.trainer.num_training_batches
            if epoch == o.warmup_epochs - 1 and last:
                self.set_priors(system)
            return None
        if not self.priors_ready:  # e.g. the warm-up's last batch was never reached
            self.set_priors(system)
        if not len(df):
            return None
        bf = batch.select(df)
        bm = batch.select(dm) if len(dm) else bf
        alpha = o.inner_lr * o.inner_lr_gamma ** (self.meta_steps // o.inner_lr_every)
        res = smil_meta_step(model, bm, bf, o.inner_steps, alpha, self.inner_names, o.second_order,
                             o.align_weights, o.kl_weight, o.real_ce_weight,
                             loss_fn=lambda s, t: system.task_loss(s, t))
        self._step(system, res.loss)
        self.meta_steps += 1
        sched = system.lr_schedulers()
        if sched is not None:
            sched.step()
        system.log_train_loss(res.loss, bf)
        system.log_dict({"meta_train_loss": float(res.meta_train_loss.detach()),
                         "meta_test_loss": float(res.meta_test_loss.detach())},
                        batch_size=bf.batch_size, on_step=False, on_epoch=True)
        return None
