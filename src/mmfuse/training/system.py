"""``FusionSystem``: the one Lightning training system around any mmfuse model.

The model stays a plain ``nn.Module`` (Lightning-style separation). The system owns the loss, the
optimiser factory and the metrics; a registered *scheme* (``mmfuse.schemes``, chosen by
``training.scheme``) decides what one training step does:

* the loss (:meth:`compute_loss`) = task loss on the model's logits
  + ``unimodal_loss_weight`` × the mean of per-modality losses where the model returns
  ``unimodal_logits`` (late fusion always trains its per-modality heads this way, weight 1)
  + every already-weighted term in ``ModelOutput.losses`` (MEA, SMIL, reconstruction losses);
* ``joint``: one optimiser, automatic optimisation; ``per_stream``, ``smil_meta``,
  ``greedy_pretrain``: see their modules.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..batch import MultimodalBatch
from ..config import TrainingConfig
from ..evaluation.metrics import compute_metrics
from .losses import task_loss

# extras of torchmetrics that its import would load when installed, and that no mmfuse training uses
# (BERTScore's transformers models, the metric plots' matplotlib, the audio metrics' scipy.signal)
_UNUSED_TORCHMETRICS_EXTRAS = ("transformers", "matplotlib", "scipy")


def import_lightning():
    """``import lightning``, without letting torchmetrics (which Lightning imports) load transformers,
    matplotlib and scipy.signal for features mmfuse never calls: they cost a third of the import's time.

    torchmetrics decides with ``lightning_utilities``' ``RequirementCache`` flags whether to import those
    extras; while Lightning (hence torchmetrics) is imported for the first time, those flags read "not
    installed". The only effect is inside torchmetrics: its BERTScore with default models, its ``.plot()``
    methods and its PIT with >= 3 speakers report the package as missing. Imported directly
    (``import transformers`` / ``matplotlib``, as mmfuse's ``hf_auto`` encoders and plots do), the packages
    work as usual. When Lightning or torchmetrics is already imported, this is a plain import.
    """
    import sys

    if "lightning" in sys.modules or "torchmetrics" in sys.modules:
        import lightning

        return lightning
    try:
        from lightning_utilities.core import imports as lu

        original, original_available = lu.RequirementCache._check_requirement, lu.package_available
    except (ImportError, AttributeError):  # another lightning_utilities: a plain import
        import lightning

        return lightning

    def check(self) -> None:
        name = str(self.module or self.requirement or "")
        for sep in "<>=!~[; ":
            name = name.split(sep)[0]
        if name.split(".")[0] in _UNUSED_TORCHMETRICS_EXTRAS:
            self.available = False
            self.message = f"{name!r} not imported with torchmetrics by mmfuse (mmfuse.training.system.import_lightning)"
            return
        original(self)

    def available(name: str) -> bool:  # torchmetrics/__init__ asks package_available("scipy") itself
        return False if name.split(".")[0] in _UNUSED_TORCHMETRICS_EXTRAS else original_available(name)

    lu.RequirementCache._check_requirement, lu.package_available = check, available
    try:
        import lightning
    finally:
        lu.RequirementCache._check_requirement, lu.package_available = original, original_available
    return lightning


L = import_lightning()


def make_optimizer(cfg: TrainingConfig, params, lr: float | None = None) -> torch.optim.Optimizer:
    """The one optimiser factory: ``training.optimizer`` over the trainable ``params``."""
    params = [p for p in params if p.requires_grad]
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=cfg.weight_decay, momentum=0.9)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def unimodal_losses(task: str, out, batch: MultimodalBatch, scale=None) -> dict[str, Tensor]:
    """Per-modality losses over the rows where that modality is present."""
    losses = {}
    for m, logits in (out.unimodal_logits or {}).items():
        rows = out.extras.get("present." + m, batch.mask.get(m))  # after modality dropout
        if rows is None or rows.any():
            sel = slice(None) if rows is None else rows
            index = None if batch.index is None else batch.index[sel]
            losses[m] = task_loss(task, logits[sel], batch.target[sel], index, scale)
    return losses


class FusionSystem(L.LightningModule):
    def __init__(self, model: nn.Module, task: str, training: TrainingConfig, family: str = "fusion"):
        super().__init__()
        from ..schemes import create_scheme

        self.model = model
        self.task = task
        self.cfg = training
        self.family = family
        self.scheme = create_scheme(training, family)
        self.automatic_optimization = self.scheme.automatic_optimization
        self.history: list[dict[str, float]] = []
        self._val: list[tuple[Tensor, Tensor, Tensor]] = []
        self._train_loss: list[float] = []
        # regression: the training rows' target mean / std (set on the model by fit, data.standardize_target); the
        # losses compare standardised outputs with standardised targets, the metrics use the original scale
        self.target_scale = getattr(model, "target_scale", None) if task == "regression" else None

    def forward(self, batch: MultimodalBatch):
        return self.model(batch)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int = 0):
        return batch.to(device) if isinstance(batch, MultimodalBatch) else super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ------------------------------------------------------------------ the one loss, optimiser, clip
    def task_loss(self, scores: Tensor, target: Tensor, index: Tensor | None = None) -> Tensor:
        return task_loss(self.task, scores, target, index, self.target_scale)

    def compute_loss(self, batch: MultimodalBatch, out) -> Tensor:
        """Task loss + weighted unimodal losses + every term in ``out.losses`` (already weighted)."""
        uni = unimodal_losses(self.task, out, batch, self.target_scale)
        late = getattr(self.model, "strategy", None) == "late"
        loss = self.task_loss(out.logits, batch.target, batch.index) if out.logits.requires_grad else None
        w = 1.0 if late else self.cfg.unimodal_loss_weight
        terms = []
        if uni and w > 0:
            terms.append(w * torch.stack(list(uni.values())).mean())
        terms += [v for v in (getattr(out, "losses", None) or {}).values()]
        for t in terms:
            loss = t if loss is None else loss + t
        if loss is None:  # a combiner without gradient and nothing else to train
            loss = out.logits.sum() * 0.0
        self.check_finite(loss)
        return loss

    def check_finite(self, loss) -> None:
        """A NaN / inf loss stops training before its backward pass: a DataError naming the epoch and step."""
        from ..guards import check_finite_loss

        attached = self._trainer is not None
        check_finite_loss(loss, self.current_epoch if attached else 0, self.global_step if attached else 0,
                          getattr(self, "_batch_idx", None))

    def make_optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        return make_optimizer(self.cfg, params, lr)

    def clip(self, optimizer) -> None:
        """Gradient clipping for schemes with manual optimisation."""
        if self.cfg.gradient_clip:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.gradient_clip)

    def log_train_loss(self, loss, batch: MultimodalBatch) -> None:
        value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
        self.check_finite(value)
        self._train_loss.append(value)
        self.log("train_loss", value, prog_bar=True, batch_size=batch.batch_size, on_step=False, on_epoch=True)

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self) -> None:
        self.scheme.on_train_start(self)

    def training_step(self, batch: MultimodalBatch, batch_idx: int):
        self._batch_idx = batch_idx
        return self.scheme.training_step(self, batch, batch_idx)

    def validation_step(self, batch: MultimodalBatch, batch_idx: int):
        out = self.model(batch)
        self._val.append((out.logits.detach(), batch.target.detach(), self.task_loss(out.logits, batch.target, batch.index).detach() * batch.batch_size))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        scores = torch.cat([s for s, _, _ in self._val]).float().numpy()
        if self.target_scale is not None:  # metrics on the original scale (val_loss stays on the trained one)
            scores = self.target_scale.invert(scores)
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
        return self.scheme.configure_optimizers(self)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.cfg.gradient_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.gradient_clip, gradient_clip_algorithm="norm")
