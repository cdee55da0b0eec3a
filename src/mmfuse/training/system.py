"""``FusionSystem``: the Lightning training system around any mmfuse model.

The model stays a plain ``nn.Module`` (Lightning-style separation). The system owns the loss,
the optimiser(s) and the metrics. Schemes:
- ``joint`` (default): one optimiser; loss = task loss on the model's logits, plus
  ``unimodal_loss_weight`` × the mean of per-modality losses where the model returns
  ``unimodal_logits`` (late fusion always trains its per-modality heads this way).
- ``per_stream`` (MMTM's official code): one optimiser per stream over that stream's parameters
  plus the shared interaction blocks, each stepping on its own stream's loss, via Lightning's
  manual optimisation.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from ..batch import MultimodalBatch
from ..config import TrainingConfig
from ..evaluation.metrics import compute_metrics
from .losses import task_loss


def _optimizer(cfg: TrainingConfig, params) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def unimodal_losses(task: str, out, batch: MultimodalBatch) -> dict[str, Tensor]:
    """Per-modality losses over the rows where that modality is present."""
    losses = {}
    for m, logits in (out.unimodal_logits or {}).items():
        rows = out.extras.get("present." + m, batch.mask.get(m))  # after modality dropout
        if rows is None or rows.any():
            sel = slice(None) if rows is None else rows
            index = None if batch.index is None else batch.index[sel]
            losses[m] = task_loss(task, logits[sel], batch.target[sel], index)
    return losses


class FusionSystem(L.LightningModule):
    def __init__(self, model: nn.Module, task: str, training: TrainingConfig):
        super().__init__()
        self.model = model
        self.task = task
        self.cfg = training
        self.history: list[dict[str, float]] = []
        self._val: list[tuple[Tensor, Tensor, Tensor]] = []
        self._train_loss: list[float] = []
        if training.scheme == "per_stream":
            self.automatic_optimization = False

    def forward(self, batch: MultimodalBatch):
        return self.model(batch)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int = 0):
        return batch.to(device) if isinstance(batch, MultimodalBatch) else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _loss(self, batch: MultimodalBatch, out) -> Tensor:
        uni = unimodal_losses(self.task, out, batch)
        late = getattr(self.model, "strategy", None) == "late"
        loss = task_loss(self.task, out.logits, batch.target, batch.index) if out.logits.requires_grad else None
        w = 1.0 if late else self.cfg.unimodal_loss_weight
        if uni and w > 0:
            aux = w * torch.stack(list(uni.values())).mean()
            loss = aux if loss is None else loss + aux
        if loss is None:  # a combiner without gradient and nothing else to train
            loss = out.logits.sum() * 0.0
        return loss

    def training_step(self, batch: MultimodalBatch, batch_idx: int):
        if self.cfg.scheme == "per_stream":
            return self._per_stream_step(batch)
        out = self.model(batch)
        loss = self._loss(batch, out)
        self._train_loss.append(float(loss.detach()))
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.batch_size, on_step=False, on_epoch=True)
        return loss

    def _per_stream_step(self, batch: MultimodalBatch):
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        total = 0.0
        for stream, opt in zip(self._streams, opts):
            out = self.model(batch)
            rows = out.extras.get("present." + stream, batch.mask[stream])
            if not rows.any():
                continue
            index = None if batch.index is None else batch.index[rows]
            loss = task_loss(self.task, out.unimodal_logits[stream][rows], batch.target[rows], index)
            opt.zero_grad()
            self.manual_backward(loss)
            if self.cfg.gradient_clip:
                params = [p for g in opt.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.cfg.gradient_clip)
            opt.step()
            total += float(loss.detach())
        self._train_loss.append(total / max(len(opts), 1))
        self.log("train_loss", total / max(len(opts), 1), prog_bar=True, batch_size=batch.batch_size, on_step=False, on_epoch=True)

    def validation_step(self, batch: MultimodalBatch, batch_idx: int):
        out = self.model(batch)
        self._val.append((out.logits.detach(), batch.target.detach(), task_loss(self.task, out.logits, batch.target, batch.index).detach() * batch.batch_size))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        scores = torch.cat([s for s, _, _ in self._val]).float().numpy()
        target = torch.cat([t for _, t, _ in self._val]).numpy()
        loss = float(sum(float(l) for _, _, l in self._val) / len(scores))
        self._val.clear()
        metrics = {"val_loss": loss, **{f"val_{k}": v for k, v in compute_metrics(self.task, scores, target).items()}}
        for k, v in metrics.items():
            self.log(k, v, prog_bar=k in ("val_loss", "val_accuracy"))
        if not self.trainer.sanity_checking:
            train_loss = float(np.mean(self._train_loss)) if self._train_loss else float("nan")
            self._train_loss.clear()
            self.history.append({"epoch": self.current_epoch, "train_loss": train_loss, **metrics})

    def configure_optimizers(self):
        if self.cfg.scheme == "per_stream":
            from ..models.intermediate import per_stream_param_groups

            groups = per_stream_param_groups(self.model)
            self._streams = sorted(groups)
            return [_optimizer(self.cfg, groups[s]) for s in self._streams]
        return _optimizer(self.cfg, self.model.parameters())

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.cfg.gradient_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.gradient_clip, gradient_clip_algorithm="norm")
