"""``greedy_pretrain``: greedy layer-wise CD-k pre-training of an RBM stack, then joint fine-tuning.

Ngiam et al. 2011 (spec 03, section 3.3): the bimodal DBN is trained greedily, layer by layer, with
contrastive divergence; the deep autoencoders are initialised from it and fine-tuned by backprop.
For an ``ngiam``-family model, :meth:`GreedyPretrainScheme.on_train_start` (before the first
training step, reading the batches of ``system.trainer.train_dataloader``, as many per epoch as the
trainer runs, so ``limit_train_batches`` applies) does:

1. with ``model.standardize``: one pass for the per-feature mean / std of each modality's flattened
   inputs over the rows where it is present; stored in the model (``std`` is regularised to
   ``sqrt(var + 0.1 · mean(var))`` so near-constant pixels do not blow up);
2. ``epochs`` epochs of CD-k on each first-layer (Gaussian) RBM, on its modality over the training
   rows where it is present (learning rate ``lr``);
3. ``joint_epochs`` epochs of CD-k on the joint (binary) RBM, on ``[E[h_a | a]; E[h_v | v]]`` of the
   rows where both modalities are present (paired rows; learning rate ``joint_lr``);
4. for ``bimodal_ae`` / ``video_only_ae``: the stack is a new DBN of the autoencoder's sizes and the
   autoencoder is initialised from it (``init_from_dbn``: encoders = the RBMs' ``E[h | x]``, decoders
   their transposes).

CD-k updates are manual parameter updates (:meth:`SparseRBM.cd_step`, no autograd, no optimiser);
the sparsity regulariser (``model.sparsity_target`` / ``sparsity_cost``) is part of each RBM.
Afterwards the normal training step (:class:`~mmfuse.schemes.base.Scheme`: task loss + the weighted
reconstruction term in ``ModelOutput.losses``) fine-tunes everything with the one optimiser.
``epochs: 0`` and ``joint_epochs: 0`` skip pre-training (the statistics are still set). The
per-epoch mean reconstruction errors (before each update) are kept in ``scheme.history`` and
``model.pretrain_history`` (``{modality: [...], "joint": [...]}``).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..batch import MultimodalBatch
from ..errors import ConfigError
from ..registry import SCHEMES
from .base import Scheme


class GreedyPretrainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(5, ge=0)  # CD-k epochs of each first-layer RBM
    joint_epochs: int | None = Field(None, ge=0)  # CD-k epochs of the joint RBM (None = epochs)
    lr: float = Field(0.005, gt=0)  # first-layer (Gaussian visible) RBMs
    joint_lr: float = Field(0.05, gt=0)  # joint (binary visible) RBM
    k: int = Field(1, ge=1)  # Gibbs steps of CD-k
    batch_size: int | None = Field(None, ge=1)  # CD mini-batch; None = the training loader's batches
    weight_decay: float = Field(0.0, ge=0)  # L2 on W in the CD update
    sample_visible: bool = False  # sample visible states in the chain (default: their means, Hinton's guide)


Batches = Callable[[], Iterable[MultimodalBatch]]


def _chunks(x: torch.Tensor, size: int | None) -> Iterable[torch.Tensor]:
    if size is None:
        yield x
        return
    for start in range(0, x.shape[0], size):
        yield x[start:start + size]


def pretrain_rbm(rbm, data: Callable[[], Iterable[torch.Tensor]], epochs: int, lr: float, k: int = 1,
                 batch_size: int | None = None, weight_decay: float = 0.0, sample_visible: bool = False,
                 generator: torch.Generator | None = None) -> list[float]:
    """The epoch loop of CD-k: ``epochs`` passes over ``data()`` (an iterable of ``[b, V]`` tensors, a
    fresh one per epoch), one :meth:`SparseRBM.cd_step` per (chunk of a) batch. Returns each epoch's
    mean reconstruction error (row-weighted; measured before each update)."""
    history = []
    for _ in range(epochs):
        total, rows = 0.0, 0
        for v in data():
            for chunk in _chunks(v, batch_size):
                if chunk.shape[0] == 0:
                    continue
                err = rbm.cd_step(chunk, lr=lr, k=k, generator=generator, weight_decay=weight_decay,
                                  sample_visible=sample_visible)
                total += err * chunk.shape[0]
                rows += chunk.shape[0]
        history.append(total / rows if rows else float("nan"))
    return history


@torch.no_grad()
def input_statistics(model, batches: Batches) -> tuple[dict, dict]:
    """Per-feature mean and regularised std of each modality's flattened inputs over its present rows."""
    s1, s2, n = {}, {}, {}
    for batch in batches():
        x, mask = model.flat(batch, standardized=False)
        for m in model.modalities:
            v = x[m][mask[m]].double()
            s1[m] = s1.get(m, 0) + v.sum(0)
            s2[m] = s2.get(m, 0) + (v * v).sum(0)
            n[m] = n.get(m, 0) + v.shape[0]
    mean, std = {}, {}
    for m in model.modalities:
        if not n.get(m):
            raise ConfigError(f"training.scheme: greedy_pretrain found no training row with modality {m!r} present; "
                              "the representation cannot learn it")
        mu = s1[m] / n[m]
        var = (s2[m] / n[m] - mu * mu).clamp_min(0)
        mean[m] = mu.float()
        std[m] = (var + 0.1 * var.mean() + 1e-8).sqrt().float()
    return mean, std


def greedy_pretrain(model, batches: Batches, options: GreedyPretrainOptions | dict | None = None,
                    generator: torch.Generator | None = None) -> dict[str, list[float]]:
    """Greedy layer-wise pre-training of ``model`` (an ``ngiam``-family :class:`NgiamModel`); see the module doc.

    ``batches``: returns a fresh iterable of training :class:`MultimodalBatch` es (one epoch) per call.
    Returns ``{modality: per-epoch errors, ..., "joint": [...]}``.
    """
    o = options if isinstance(options, GreedyPretrainOptions) else GreedyPretrainOptions.model_validate(dict(options or {}))
    if not callable(getattr(model, "pretrain_dbn", None)):
        raise ConfigError(f"training.scheme: greedy_pretrain pre-trains the RBM stack of an ngiam-family model; "
                          f"this model is {type(model).__name__}. Use training.scheme joint or model.family ngiam")
    if model.standardize:
        model.set_input_statistics(*input_statistics(model, batches))
    dbn = model.pretrain_dbn()
    kw = dict(k=o.k, batch_size=o.batch_size, weight_decay=o.weight_decay, sample_visible=o.sample_visible,
              generator=generator)
    history: dict[str, list[float]] = {}

    def present_rows(m: str):
        def data():
            for batch in batches():
                x, mask = model.flat(batch)
                yield x[m][mask[m]]
        return data

    for m in dbn.modalities:
        history[m] = pretrain_rbm(dbn.first[m], present_rows(m), o.epochs, o.lr, **kw)

    def joint_rows():
        for batch in batches():
            x, mask = model.flat(batch)
            both = torch.stack([mask[m] for m in dbn.modalities]).all(0)
            with torch.no_grad():
                yield torch.cat([dbn.first[m].transform(x[m][both]) for m in dbn.modalities], dim=1)

    joint_epochs = o.epochs if o.joint_epochs is None else o.joint_epochs
    history["joint"] = pretrain_rbm(dbn.joint, joint_rows, joint_epochs, o.joint_lr, **kw)
    if dbn is not model.representation and (o.epochs or joint_epochs):
        model.representation.init_from_dbn(dbn)
    model.pretrain_history = history
    return history


@SCHEMES.register("greedy_pretrain")
class GreedyPretrainScheme(Scheme):
    """Layer-wise CD-k pre-training in ``on_train_start``, then the default training step (fine-tuning)."""

    Options = GreedyPretrainOptions

    def on_train_start(self, system) -> None:
        trainer = system.trainer
        loader = trainer.train_dataloader
        limit = trainer.num_training_batches
        device = system.device

        def batches():
            for i, batch in enumerate(loader):
                if i >= limit:
                    break
                yield batch.to(device)

        self.history = greedy_pretrain(system.model, batches, self.options)


__all__ = ["GreedyPretrainScheme", "GreedyPretrainOptions", "greedy_pretrain", "pretrain_rbm", "input_statistics"]
