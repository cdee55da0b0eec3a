"""Late-fusion combiners: per-modality head outputs + presence mask -> combined output.

Every combiner is an ``nn.Module`` built with ``(modalities, num_classes, task)`` and called as
``forward(logits: {modality: Tensor[B, C]}, mask: {modality: BoolTensor[B]} | None) -> Tensor[B, C]``.
Absent modalities are ignored (their outputs may hold anything). The output has the meaning of
one head's output for the task, so the task loss and metrics apply to it unchanged:

* ``multiclass``: class logits (``cross_entropy`` / ``argmax``);
* ``multilabel``: one independent logit per label (``binary_cross_entropy_with_logits``,
  label on iff logit > 0); combiners pool each label's sigmoid probability, never a softmax
  across labels;
* ``regression``: the predicted values themselves (``mse``); combiners pool the predictions.

A sample with **no modality present** gets zeros for every task: uniform class probabilities
(multiclass), probability 0.5 for every label (multilabel), the prediction 0 (regression;
targets are usually standardised, so 0 is the mean target). ``C`` is the number of classes,
labels or regression outputs.

Shape legend: B batch, C classes, N modalities.

>>> import torch
>>> from mmfuse.late import create_late_combiner
>>> comb = create_late_combiner("mean_prob", ["audio", "video"], num_classes=3)
>>> comb({"audio": torch.zeros(2, 3), "video": torch.zeros(2, 3)}, None).shape
torch.Size([2, 3])
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .errors import ConfigError, MissingModalityError, ShapeError
from .registry import LATE_COMBINERS, TASKS


class LateCombiner(nn.Module):
    """Base class: validates inputs and hands ``combine`` stacked logits and the mask.

    Subclasses implement ``combine(logits: Tensor[B, N, C], present: BoolTensor[B, N]) -> Tensor[B, C]``;
    absent rows of ``logits`` are already zeroed, and rows with no modality present are
    overwritten with zeros afterwards.
    """

    name = "late"

    def __init__(self, modalities: Sequence[str], num_classes: int, task: str = "multiclass"):
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"late combiner {self.name!r}: task must be one of {list(TASKS)}, got {task!r}")
        self.task = task
        if isinstance(modalities, str) or not isinstance(modalities, Sequence) or len(modalities) == 0:
            raise ConfigError(f"late combiner {self.name!r}: modalities must be a non-empty list of names, got {modalities!r}")
        if len(set(modalities)) != len(modalities) or not all(isinstance(m, str) and m for m in modalities):
            raise ConfigError(f"late combiner {self.name!r}: modalities must be distinct non-empty strings, got {list(modalities)}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ConfigError(f"late combiner {self.name!r}: num_classes must be a positive int, got {num_classes!r}; pass the number of classes (>= 1)")
        self.modalities = sorted(modalities)
        self.num_classes = num_classes

    def extra_repr(self) -> str:
        return f"modalities={self.modalities}, num_classes={self.num_classes}, task={self.task}"

    def _check(self, logits: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> tuple[Tensor, Tensor]:
        cls = type(self).__name__
        missing = [m for m in self.modalities if m not in logits]
        if missing:
            raise MissingModalityError(
                f"{cls}: logits lack modality {missing[0]!r}; it was built for {self.modalities}. "
                "Pass every modality's logits (anything, e.g. zeros, with mask False when absent)"
            )
        first = logits[self.modalities[0]]
        B = first.shape[0] if first.dim() > 0 else -1
        for m in self.modalities:
            x = logits[m]
            if x.dim() != 2 or x.shape != (B, self.num_classes):
                raise ShapeError(
                    f"{cls}: logits[{m!r}] has shape {tuple(x.shape)}, expected ({B}, {self.num_classes}) "
                    "(batch, num_classes); check the modality's head output size"
                )
        present_cols = []
        for m in self.modalities:
            v = None if mask is None else mask.get(m)
            if v is None:
                v = torch.ones(B, dtype=torch.bool, device=first.device)
            if tuple(v.shape) != (B,):
                raise ShapeError(f"{cls}: mask[{m!r}] has shape {tuple(v.shape)}, expected ({B},); give one bool per sample")
            present_cols.append(v.to(device=first.device, dtype=torch.bool))
        present = torch.stack(present_cols, dim=1)  # [B, N]
        stacked = torch.stack([logits[m] for m in self.modalities], dim=1)  # [B, N, C]
        stacked = torch.where(present.unsqueeze(-1), stacked, torch.zeros((), dtype=stacked.dtype, device=stacked.device))
        return stacked, present

    def forward(self, logits: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None) -> Tensor:
        stacked, present = self._check(logits, mask)
        out = self.combine(stacked, present)
        any_present = present.any(dim=1, keepdim=True)
        return torch.where(any_present, out, torch.zeros((), dtype=out.dtype, device=out.device))

    def combine(self, logits: Tensor, present: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _masked_mean_prob(logits: Tensor, present: Tensor) -> Tensor:
    """Mean over present modalities of softmax probabilities: [B, N, C] -> [B, C]."""
    probs = torch.softmax(logits, dim=-1) * present.unsqueeze(-1).to(logits.dtype)
    return probs.sum(dim=1) / present.sum(dim=1, keepdim=True).clamp(min=1).to(logits.dtype)


def _low(dtype: torch.dtype) -> float:
    """The most negative finite value of ``dtype``: stands for log(0) without producing -inf."""
    return torch.finfo(dtype).min


def _masked_logsumexp(terms: Tensor, present: Tensor) -> Tensor:
    """``log Σ_{m present} exp(terms_m)`` over dim 1 of Tensor[B, N, C], finite and with finite gradient.

    Each term is clamped at the lowest finite value first, so a term of -inf (e.g. log_softmax
    of a class whose logit is -inf in every present modality) gives a finite result whose
    gradient is 0 for that term instead of NaN (``logsumexp``'s backward is exp(x − out), NaN
    when x = out = -inf).
    """
    low = _low(terms.dtype)
    terms = torch.where(present.unsqueeze(-1), terms.clamp(min=low), torch.full((), low, dtype=terms.dtype,
                                                                                 device=terms.device))
    return torch.logsumexp(terms, dim=1)


@LATE_COMBINERS.register("mean_prob")
class MeanProbCombiner(LateCombiner):
    """The mean over present modalities of each modality's probabilities (or predictions).

    * multiclass: ``log( mean_m softmax(logits_m) )`` (a log-probability vector, sums to 1 after exp);
    * multilabel: ``logit( mean_m sigmoid(logits_m) )`` per label, computed as
      ``logsumexp_m logsigmoid(z_m) − logsumexp_m logsigmoid(−z_m)`` (exact, no 0/1 clamping needed);
    * regression: ``mean_m pred_m``.

    Stable for confident logits (logsumexp), with finite gradients when a class is -inf in every
    present modality. No parameters.
    """

    name = "mean_prob"

    def combine(self, logits: Tensor, present: Tensor) -> Tensor:
        if self.task == "regression":
            w = present.to(logits.dtype).unsqueeze(-1)
            return (logits * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)
        count = present.sum(dim=1, keepdim=True).clamp(min=1).to(logits.dtype)
        if self.task == "multilabel":
            log_p = _masked_logsumexp(nn.functional.logsigmoid(logits), present)
            log_q = _masked_logsumexp(nn.functional.logsigmoid(-logits), present)
            return log_p - log_q  # the counts cancel: logit(p̄) = log(Σσ(z)) − log(Σσ(−z))
        return _masked_logsumexp(torch.log_softmax(logits, dim=-1), present) - torch.log(count)


@LATE_COMBINERS.register("learned_weights")
class LearnedWeightsCombiner(LateCombiner):
    """A learned convex combination, ``a = softmax(w)`` renormalised over the present modalities.

    * multiclass: ``Σ_m a_m · log_softmax(logits_m)`` (a weighted geometric pool of the
      probabilities; unnormalised log-probabilities, fine as logits);
    * multilabel: ``logit( Σ_m a_m · sigmoid(logits_m) )`` per label (stable, via logsumexp);
    * regression: ``Σ_m a_m · pred_m``.

    ``w`` (one learned scalar per modality, initialised to 0 = equal weights).
    """

    name = "learned_weights"

    def __init__(self, modalities: Sequence[str], num_classes: int, task: str = "multiclass"):
        super().__init__(modalities, num_classes, task)
        self.weight_logits = nn.Parameter(torch.zeros(len(self.modalities)))

    def log_weights(self, present: Tensor) -> Tensor:
        """log a, Tensor[B, N] (the lowest finite value for absent modalities)."""
        w = self.weight_logits.unsqueeze(0).expand(present.shape[0], -1)
        low = torch.full((), _low(w.dtype), dtype=w.dtype, device=w.device)
        return torch.where(present, torch.log_softmax(torch.where(present, w, low), dim=1), low)

    def weights(self, present: Tensor) -> Tensor:
        """The per-sample modality weights [B, N] (0 for absent, rows sum to 1 or 0)."""
        w = self.weight_logits.unsqueeze(0).expand(present.shape[0], -1)
        low = _low(w.dtype)
        a = torch.softmax(torch.where(present, w, torch.full((), low, dtype=w.dtype, device=w.device)), dim=1)
        return torch.where(present, a, torch.zeros((), dtype=a.dtype, device=a.device))

    def combine(self, logits: Tensor, present: Tensor) -> Tensor:
        if self.task == "multilabel":
            log_a = self.log_weights(present).to(logits.dtype).unsqueeze(-1)  # [B, N, 1]
            log_p = _masked_logsumexp(log_a + nn.functional.logsigmoid(logits).clamp(min=_low(logits.dtype) / 2), present)
            log_q = _masked_logsumexp(log_a + nn.functional.logsigmoid(-logits).clamp(min=_low(logits.dtype) / 2), present)
            return log_p - log_q
        a = self.weights(present).to(logits.dtype).unsqueeze(-1)  # [B, N, 1]
        if self.task == "regression":
            return (a * logits).sum(dim=1)
        # -inf log-probabilities are clamped (at half the lowest value, so the weighted sum cannot
        # overflow): their weight gradient would be 0 · (-inf) = NaN otherwise
        logp = torch.log_softmax(logits, dim=-1).clamp(min=_low(logits.dtype) / 2)
        return (a * logp).sum(dim=1)


@LATE_COMBINERS.register("majority_vote", tasks=("multiclass",))
class MajorityVoteCombiner(LateCombiner):
    """Majority vote of the present modalities' argmax classes, ties broken by mean probability.

    Returns ``log(vote_share + ε · mean_prob)`` with ``ε = 1e-4``: the vote share dominates (shares
    differ by at least 1/N), the mean probability only orders tied classes. The vote itself
    carries no gradient (only the tie-break term does). No parameters. Multiclass only (a vote
    needs one class per modality); building it for another task raises a ConfigError.
    """

    name = "majority_vote"
    tie_break = 1e-4

    def __init__(self, modalities: Sequence[str], num_classes: int, task: str = "multiclass"):
        super().__init__(modalities, num_classes, task)
        if task != "multiclass":
            raise ConfigError(f"late combiner 'majority_vote' supports only multiclass tasks, not {task}; "
                              "use 'mean_prob' or 'learned_weights'")

    def combine(self, logits: Tensor, present: Tensor) -> Tensor:
        B, N, C = logits.shape
        votes = nn.functional.one_hot(logits.argmax(dim=-1), C).to(logits.dtype)  # [B, N, C]
        votes = (votes * present.unsqueeze(-1).to(logits.dtype)).sum(dim=1)  # [B, C]
        count = present.sum(dim=1, keepdim=True).clamp(min=1).to(logits.dtype)
        score = votes / count + self.tie_break * _masked_mean_prob(logits, present)
        return torch.log(score.clamp(min=torch.finfo(score.dtype).tiny))


def create_late_combiner(
    name_or_module: str | nn.Module, modalities: Sequence[str], num_classes: int, **options: Any
) -> nn.Module:
    """Build the registered late combiner ``name_or_module``; an ``nn.Module`` is returned unchanged."""
    if isinstance(name_or_module, nn.Module):
        return name_or_module
    return LATE_COMBINERS.create(name_or_module, modalities=modalities, num_classes=num_classes, **options)


def list_late_combiners() -> list[str]:
    """The names of every registered late combiner, sorted."""
    return LATE_COMBINERS.list()


def register_late_combiner(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a late combiner class (or factory ``f(modalities, num_classes, **options)``)."""
    return LATE_COMBINERS.register(name)


__all__ = [
    "LateCombiner",
    "MeanProbCombiner",
    "LearnedWeightsCombiner",
    "MajorityVoteCombiner",
    "create_late_combiner",
    "list_late_combiners",
    "register_late_combiner",
]
