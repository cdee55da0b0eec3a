"""The scalar score an explanation explains, and how the explainers call it.

A *score function* maps a :class:`~mmfuse.batch.MultimodalBatch` of B rows to Tensor[B]. Any
callable with that signature works. :func:`make_score_fn` builds one from a model
(``model(batch)`` returning an object with ``.logits`` Tensor[B, C], or the logits themselves):

* ``target="predicted"``: softmax probability of the class the model predicts on the *full*
  input (MM-SHAP's choice for VQA); the class is fixed per sample before any masking.
* ``target="class"``: softmax probability of ``class_index`` (an int, or LongTensor[B] with one
  class per sample, e.g. the true labels).
* ``target="logit"``: the raw logit of ``class_index`` or, when it is None, of the predicted class.

With a single output column (C = 1, binary), probabilities are ``sigmoid(logit)``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..batch import MultimodalBatch
from ..errors import ConfigError, ShapeError

TARGETS = ("predicted", "class", "logit")


def output_logits(output: Any) -> Tensor:
    """The logits Tensor[B, C] of a model output (an object with ``.logits``, or a Tensor)."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, Tensor):
        raise ShapeError(
            f"explain: the model returned {type(output).__name__}; expected a Tensor[B, C] of logits "
            "or an object with a .logits attribute"
        )
    if logits.dim() == 1:
        logits = logits.unsqueeze(1)
    if logits.dim() != 2:
        raise ShapeError(f"explain: logits must be Tensor[B, C], got shape {tuple(logits.shape)}")
    return logits


class ScoreFunction:
    """``score(batch, classes=None) -> Tensor[B]``; ``classes(batch)`` fixes the explained class per row.

    The explainers call :meth:`classes` once on the unmasked batch and pass the result (repeated
    for every masked copy) to each call, so "predicted" means predicted on the full input.
    """

    def __init__(self, model: Callable[[MultimodalBatch], Any], target: str = "predicted",
                 class_index: int | Tensor | None = None):
        if target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, got {target!r}")
        if target == "class" and class_index is None:
            raise ConfigError("target='class' needs class_index (an int, or one class per sample)")
        if class_index is not None and not isinstance(class_index, (int, Tensor)):
            raise ConfigError(f"class_index must be an int or a LongTensor[B], got {type(class_index).__name__}")
        if isinstance(model, nn.Module):
            model.eval()  # explanations are about the deterministic predictor (no dropout)
        self.model = model
        self.target = target
        self.class_index = class_index

    def logits(self, batch: MultimodalBatch) -> Tensor:
        with torch.no_grad():
            return output_logits(self.model(batch))

    def classes(self, batch: MultimodalBatch, logits: Tensor | None = None) -> Tensor:
        """LongTensor[B]: the class explained for each row of the full ``batch``."""
        B = batch.batch_size
        if self.class_index is not None:
            if isinstance(self.class_index, int):
                return torch.full((B,), self.class_index, dtype=torch.long)
            ci = self.class_index.reshape(-1).long()
            if ci.numel() != B:
                raise ShapeError(f"class_index has {ci.numel()} entries but the batch has {B} rows")
            return ci
        logits = self.logits(batch) if logits is None else logits
        return torch.zeros(B, dtype=torch.long) if logits.shape[1] == 1 else logits.argmax(dim=1).cpu()

    def __call__(self, batch: MultimodalBatch, classes: Tensor | None = None) -> Tensor:
        logits = self.logits(batch)
        C = logits.shape[1]
        if classes is None:
            classes = self.classes(batch, logits)
        cls = classes.to(logits.device).view(-1, 1)
        if int(cls.max()) >= C or int(cls.min()) < 0:
            raise ConfigError(f"class_index out of range: the model has {C} output(s), got {int(cls.max())}")
        if self.target == "logit":
            return logits.gather(1, cls).squeeze(1)
        if C == 1:
            return torch.sigmoid(logits[:, 0])
        wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        return torch.softmax(wide, dim=1).gather(1, cls).squeeze(1)


def make_score_fn(model: Callable[[MultimodalBatch], Any], target: str = "predicted",
                  class_index: int | Tensor | None = None) -> ScoreFunction:
    """The score to explain; see the module docstring for ``target`` and ``class_index``.

    An ``nn.Module`` model is put in eval mode (explanations are about the deterministic predictor).
    """
    return ScoreFunction(model, target, class_index)


def as_score_fn(score_fn_or_model: Any) -> Callable[..., Tensor]:
    """A :class:`ScoreFunction` is used as is; any other callable is a plain ``f(batch) -> Tensor[B]``."""
    if not callable(score_fn_or_model):
        raise ConfigError(f"score_fn must be callable, got {type(score_fn_or_model).__name__}")
    return score_fn_or_model


def explained_classes(score_fn: Callable[..., Tensor], batch: MultimodalBatch) -> Tensor | None:
    """The per-row classes a :class:`ScoreFunction` explains on the full batch (None for plain functions)."""
    return score_fn.classes(batch) if isinstance(score_fn, ScoreFunction) else None


def call_score(score_fn: Callable[..., Tensor], batch: MultimodalBatch, classes: Tensor | None) -> Tensor:
    """Evaluate ``score_fn`` on ``batch`` and check the result is Tensor[B]; returns float64 on CPU."""
    with torch.no_grad():
        out = score_fn(batch, classes) if isinstance(score_fn, ScoreFunction) else score_fn(batch)
    out = output_logits(out) if not isinstance(out, Tensor) else out
    B = batch.batch_size
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (B,):
        raise ShapeError(
            f"score_fn must return Tensor[B] (one score per row); got shape {tuple(out.shape)} for B={B}. "
            "Use make_score_fn(model, target=...) to turn logits into a score"
        )
    return out.detach().to("cpu", torch.float64)
