"""The contract of a training scheme: hooks that the one LightningModule calls.

``mmfuse.training.system.FusionSystem`` is the only ``LightningModule``. It owns the loss
(:meth:`FusionSystem.compute_loss`: task loss + the already-weighted terms in
``ModelOutput.losses``), the optimiser factory (:meth:`FusionSystem.make_optimizer`) and the metrics. A
scheme decides what one training step does. Override only the hooks you need:

* ``Options``: a pydantic model of the scheme's options (``training.scheme_options``), validated
  with the rest of the config before any data loads;
* ``automatic_optimization``: False for schemes that step optimisers themselves (Lightning's
  manual optimisation: ``system.manual_backward(loss)``, ``opt.step()``);
* ``configure_optimizers(system)``; ``on_train_start(system)`` (e.g. greedy pre-training, priors);
  ``training_step(system, batch, batch_idx) -> loss | None``.

Register a scheme with ``@SCHEMES.register("name")``. A model family names its default scheme
at registration (``MODELS.register(..., default_scheme="...")``); ``training.scheme: auto`` uses it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ..batch import MultimodalBatch


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scheme:
    Options: type[BaseModel] = NoOptions
    automatic_optimization = True

    def __init__(self, options: BaseModel | dict | None = None):
        self.options = options if isinstance(options, BaseModel) else self.Options.model_validate(dict(options or {}))

    @classmethod
    def check(cls, options: BaseModel, training: Any) -> list[str]:
        """Problems between the scheme's options and the rest of ``training`` (a TrainingConfig or raw dict),
        one line each with its dotted path; checked with the whole config, before any data loads."""
        return []

    def configure_optimizers(self, system) -> Any:
        return system.make_optimizer(system.model.parameters())

    def on_train_start(self, system) -> None:
        pass

    def training_step(self, system, batch: MultimodalBatch, batch_idx: int):
        out = system.model(batch)
        loss = system.compute_loss(batch, out)
        system.log_train_loss(loss, batch)
        return loss
