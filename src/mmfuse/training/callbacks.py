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
