"""SMIL meta-learning under PyTorch Lightning (manual optimisation), for users who want Lightning's
devices, logging and checkpoints. The loop body is :func:`mmfuse.missing.meta.smil_meta_step`, so
the plain :func:`~mmfuse.missing.meta.smil_train` and this module compute the same updates.

    system = SMILSystem(model, inner_lr=1e-3)
    fit_smil_lightning(system, full_loader, missing_loader, steps=400)

Each training batch is ``{"full": D^f batch, "missing": D^m batch}`` (a ``CombinedLoader`` in
``max_size_cycle`` mode cycles the shorter loader).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import lightning as L
import torch
from torch.nn import functional as F

from ..batch import MultimodalBatch
from ..errors import ConfigError
from .meta import resolve_param_subset, smil_meta_step
from .smil import SMILModel


class SMILSystem(L.LightningModule):
    """LightningModule running SMIL's meta step with manual optimisation (Adam + StepLR on θ and ψ)."""

    def __init__(
        self,
        model: SMILModel,
        inner_steps: int = 1,
        inner_lr: float = 1e-3,
        outer_lr: float = 1e-3,
        weight_decay: float = 1e-4,
        inner_params: str | Sequence[str] = "image_encoder+head",
        second_order: bool = True,
        align_weights: Sequence[float] = (0.01, 0.01),
        kl_weight: float = 0.0,
        real_ce_weight: float = 0.0,
        inner_lr_every: int = 1000,
        inner_lr_gamma: float = 0.1,
        outer_step_size: int = 5000,
        outer_gamma: float = 0.1,
    ):
        super().__init__()
        if not isinstance(model, SMILModel):
            raise ConfigError(f"SMILSystem: expected a SMILModel, got {type(model).__name__}")
        self.automatic_optimization = False
        self.model = model
        self.inner_names = resolve_param_subset(model, inner_params)
        self.hp = dict(inner_steps=inner_steps, inner_lr=inner_lr, outer_lr=outer_lr, weight_decay=weight_decay,
                       second_order=second_order, align_weights=tuple(align_weights), kl_weight=kl_weight,
                       real_ce_weight=real_ce_weight,
                       inner_lr_every=inner_lr_every, inner_lr_gamma=inner_lr_gamma,
                       outer_step_size=outer_step_size, outer_gamma=outer_gamma)

    def forward(self, batch: MultimodalBatch, **kwargs: Any):
        return self.model(batch, **kwargs)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int = 0):
        if isinstance(batch, dict):
            return {k: (v.to(device) if isinstance(v, MultimodalBatch) else v) for k, v in batch.items()}
        if isinstance(batch, MultimodalBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch, batch_idx: int):
        if not isinstance(batch, dict) or "full" not in batch or "missing" not in batch:
            raise ConfigError("SMILSystem: training batches must be {'full': D^f batch, 'missing': D^m batch}")
        hp = self.hp
        step = self.global_step
        alpha = hp["inner_lr"] * hp["inner_lr_gamma"] ** (step // max(int(hp["inner_lr_every"]), 1))
        res = smil_meta_step(self.model, batch["missing"], batch["full"], hp["inner_steps"], alpha, self.inner_names,
                             hp["second_order"], hp["align_weights"], hp["kl_weight"], hp["real_ce_weight"])
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(res.loss)
        opt.step()
        self.lr_schedulers().step()
        self.log_dict({"meta_train_loss": res.meta_train_loss.detach(), "meta_test_loss": res.meta_test_loss.detach()},
                      prog_bar=True, batch_size=batch["full"].batch_size)
        return res.loss.detach()

    def validation_step(self, batch: MultimodalBatch, batch_idx: int):
        out = self.model(batch)
        acc = (out.logits.argmax(1) == batch.target.long()).float().mean()
        self.log("val_acc", acc, prog_bar=True, batch_size=batch.batch_size)
        self.log("val_loss", F.cross_entropy(out.logits, batch.target.long()), batch_size=batch.batch_size)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.parameters(), lr=self.hp["outer_lr"], weight_decay=self.hp["weight_decay"])
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(int(self.hp["outer_step_size"]), 1),
                                                gamma=self.hp["outer_gamma"])
        return [opt], [sched]


def fit_smil_lightning(system: SMILSystem, full_loader: Iterable[MultimodalBatch],
                       missing_loader: Iterable[MultimodalBatch], steps: int, val_loader: Iterable | None = None,
                       **trainer_kwargs: Any) -> L.Trainer:
    """Meta-train with a Lightning ``Trainer(max_steps=steps, ...)``; returns the trainer."""
    from lightning.pytorch.utilities import CombinedLoader

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"fit_smil_lightning: steps must be a positive int, got {steps!r}")
    kw = dict(max_steps=steps, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0)
    kw.update(trainer_kwargs)
    trainer = L.Trainer(**kw)
    train = CombinedLoader({"full": full_loader, "missing": missing_loader}, mode="max_size_cycle")
    trainer.fit(system, train_dataloaders=train, val_dataloaders=val_loader)
    return trainer
