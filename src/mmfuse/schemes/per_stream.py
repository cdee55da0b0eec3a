"""``per_stream``: MMTM's official two-optimiser scheme (Joze et al. 2020, official code).

One optimiser per stream, over that stream's encoder and head plus every shared interaction block.
For each stream in sorted order: forward, the loss on that stream's logits over the rows where the
stream is present, ``manual_backward``, step that stream's optimiser. Needs a model with
``unimodal_logits`` per stream and ``per_stream_param_groups`` (the ``intermediate`` family).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import SCHEMES
from .base import Scheme


def stream_param_groups(model) -> dict:
    from ..models.intermediate import IntermediateFusionModel, per_stream_param_groups

    if not isinstance(model, IntermediateFusionModel):
        raise ConfigError("training.scheme: per_stream trains one optimiser per stream of an intermediate-family "
                          f"model (MMTM); this model is {type(model).__name__}. Use scheme joint or family intermediate")
    return per_stream_param_groups(model)


@SCHEMES.register("per_stream")
class PerStreamScheme(Scheme):
    automatic_optimization = False

    def configure_optimizers(self, system):
        groups = stream_param_groups(system.model)
        self.streams = sorted(groups)
        return [system.make_optimizer(groups[s]) for s in self.streams]

    def training_step(self, system, batch, batch_idx: int):
        opts = system.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        total = 0.0
        for stream, opt in zip(self.streams, opts):
            out = system.model(batch)
            rows = out.extras.get("present." + stream, batch.mask[stream])
            if not rows.any():
                continue
            loss = system.task_loss(out.unimodal_logits[stream][rows], batch.target[rows],
                                    None if batch.index is None else batch.index[rows])
            opt.zero_grad()
            system.manual_backward(loss)
            system.clip(opt)
            opt.step()
            total += float(loss.detach())
        system.log_train_loss(total / max(len(opts), 1), batch)
