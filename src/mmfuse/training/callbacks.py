"""Callbacks: keep the best weights in memory (no pickled checkpoints) by a monitored metric."""

from __future__ import annotations

import math

import lightning as L


class BestWeights(L.Callback):
    """Copies the model's state dict whenever ``monitor`` improves; ``restore`` loads the best copy."""

    def __init__(self, monitor: str = "val_loss", mode: str | None = None):
        self.monitor = monitor
        self.mode = mode or ("min" if "loss" in monitor or monitor.endswith(("mae", "mse")) else "max")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.state: dict | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end runs after the module's on_validation_epoch_end has logged this epoch's metrics
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        v = float(value)
        if (v < self.best) if self.mode == "min" else (v > self.best):
            self.best, self.best_epoch = v, trainer.current_epoch
            self.state = {k: t.detach().clone() for k, t in pl_module.model.state_dict().items()}

    def restore(self, model) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


class EpochCheckpoints(L.Callback):
    """After every epoch: the resumable ``last`` checkpoint (weights + optimiser, scheduler, RNG, data-order,
    scheme and callback state; :mod:`mmfuse.training.resume`) and, when the monitor improved, ``best``.

    Also the safe point of SIGTERM / SIGINT (:mod:`mmfuse.training.signals`): checked after every training
    batch and after the epoch's checkpoint; it raises :class:`~mmfuse.training.signals.TrainingInterrupted`.
    ``resume``: (state document, tensors, weights) restored at the start of the first epoch of this fit.
    """

    def __init__(self, out, best: BestWeights, early, save_fn, resume=None):
        self.out = out
        self.best = best
        self.early = early
        self.save_fn = save_fn  # save_fn(folder, weights, metrics, extra) writes one checkpoint folder; None: no writes
        self.resume = resume
        self.saved_epoch = -1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.resume is not None:
            from .resume import restore

            doc, tensors, weights = self.resume
            self.resume = None
            restore(trainer, pl_module, self.best, self.early, doc, tensors, weights)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check_signal(trainer, during=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from .checkpoint import state_of
        from .resume import BEST, LAST, capture, write_state

        epoch = trainer.current_epoch
        if self.save_fn is None or not trainer.is_global_zero:  # fit(save=False) / ddp rank > 0: only the signal check
            self._check_signal(trainer, during=False)
            return
        from ..guards import check_finite_weights

        check_finite_weights(pl_module.model, epoch)  # NaN / inf weights are never saved, not even as `last`
        if self.best.best_epoch == epoch and self.best.state is not None:
            check_finite_weights(self.best.state, epoch)
        doc, tensors = capture(trainer, pl_module, self.best, self.early)
        metrics = {"val": pl_module.history[-1] if pl_module.history else {}}
        self.save_fn(self.out / LAST, state_of(pl_module.model), metrics, lambda tmp: write_state(tmp, doc, tensors))
        if self.best.best_epoch == epoch and self.best.state is not None:
            self.save_fn(self.out / BEST, {k: t.contiguous().cpu() for k, t in self.best.state.items()},
                         metrics, None)
        self.saved_epoch = epoch
        self._check_signal(trainer, during=False)

    def _check_signal(self, trainer, during: bool) -> None:
        from .signals import TrainingInterrupted, requested, signal_name

        sig = requested()
        if sig is None:
            return
        epoch = trainer.current_epoch
        where = f"during epoch {epoch + 1}" if during else f"after epoch {epoch + 1}"
        if self.save_fn is None:
            saved = "nothing was saved (save=False)"
        elif self.saved_epoch >= 0:
            saved = (f"epoch 1 is saved in {self.out / 'last'}" if self.saved_epoch == 0 else
                     f"epochs 1-{self.saved_epoch + 1} are saved in {self.out / 'last'}")
        else:
            saved = "no epoch had finished, so --resume starts from the beginning"
        raise TrainingInterrupted(sig, f"interrupted by {signal_name(sig)} {where}; {saved}")


def encoder_groups(model) -> dict:
    """``{modality: [trainable parameters of its encoder]}`` from the model's ``encoders`` ModuleDict (the first
    one found, nearest the root); {} for a model without per-modality encoders."""
    import torch.nn as nn

    found = [(name, mod) for name, mod in model.named_modules()
             if isinstance(mod, nn.ModuleDict) and name.split(".")[-1] == "encoders"]
    if not found:
        return {}
    _, encs = min(found, key=lambda x: x[0].count("."))
    return {m: [p for p in enc.parameters() if p.requires_grad] for m, enc in encs.items()}


class GradNormMonitor(L.Callback):
    """Per epoch, the L2 norm of the gradients of each modality's encoder parameters (√Σ‖g‖² over the encoder),
    taken just before each optimiser step (after the backward pass Lightning already ran: no extra backward;
    before clipping), averaged over the epoch's steps. Written into the run's history entry of the epoch as
    ``grad_norm[<modality>]`` (``mmfuse.diagnostics.grad_norm_summary`` turns it into ratios to the largest).
    A modality whose encoder is frozen (no trainable parameter) or got no gradient is not recorded.

    Put it before :class:`EpochCheckpoints` in the callback list so the resumable ``last`` state holds it.
    """

    KEY = "grad_norm[{}]"

    def __init__(self, groups: dict | None = None):
        self.groups = groups
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.epochs: list[dict] = []  # {"epoch": e, "norm": {m: mean norm}} per finished epoch

    def on_train_start(self, trainer, pl_module) -> None:
        if self.groups is None:
            self.groups = encoder_groups(getattr(pl_module, "model", pl_module))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.sums, self.counts = {}, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        import torch

        for m, params in (self.groups or {}).items():
            grads = [p.grad.detach() for p in params if p.grad is not None]
            if not grads:
                continue
            sq = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]).pow(2).sum()
            self.sums[m] = self.sums.get(m, 0.0) + float(sq.sqrt())
            self.counts[m] = self.counts.get(m, 0) + 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        norms = {m: self.sums[m] / self.counts[m] for m in self.sums if self.counts.get(m)}
        epoch = trainer.current_epoch
        self.epochs.append({"epoch": epoch, "norm": norms})
        history = getattr(pl_module, "history", None)
        if norms and history and history[-1].get("epoch") == epoch:
            history[-1].update({self.KEY.format(m): v for m, v in norms.items()})
