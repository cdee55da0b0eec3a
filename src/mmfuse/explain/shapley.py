"""Modality-level Shapley values: each modality is one player.

The value of a coalition S is ``score_fn`` on the batch with every player modality outside S
marked absent through ``batch.with_mask`` (inputs zeroed, mask False): the model's own
missing-modality path, not a baseline chosen here. Modalities that are not players keep their
values; a modality already absent in a sample is a null player (value 0) for that sample.

All coalitions of a sub-batch are evaluated in big model calls: the batch is stacked once per
coalition along the batch dim, in chunks of at most ``rows_per_call`` rows. When the score
function's model offers the explanation split (``model.explain_split()``: ``MultimodalModel`` with
feature or late fusion, whose encoders each see one modality), each modality is encoded *once*
per sample (plus one zero row: a switched-off modality is its zero input, mask False, exactly
what ``with_mask`` feeds the whole model) and only fusion + head run over the 2^M coalitions;
the values equal the whole-model path's to float rounding. Other models (early fusion,
intermediate fusion / MMTM, whose streams mix before the end, plain callables) take the
whole-model path; ``score_fn.use_split = False`` forces it.

``method="exact"`` enumerates all 2^M coalitions (fine for M ≤ ~10); ``"permutation"`` uses
the antithetic permutation estimator (same permutations for every sample of a call);
``"auto"`` picks exact only where it is cheaper than sampling: 2^M ≤ the permutation estimator's
rows per sample (``2 + n_permutations·(M−1)·2`` antithetic; :func:`~.estimators.exact_is_cheaper`) and
M ≤ ``exact_max``; with the default 10 antithetic permutations, M ≤ 6. Efficiency ``Σ_m φ_m = f(full) − f(empty)``
holds for every method (up to float64 rounding).

Shape legend: B samples, M player modalities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..batch import MultimodalBatch
from ..errors import ConfigError, MissingModalityError
from .estimators import (
    all_coalitions,
    check_count,
    check_permutations,
    exact_from_values,
    exact_is_cheaper,
    permutation_coalitions,
    permutation_from_values,
    random_permutations,
)
from .rows import repeat_batch, rows_per_call, split_coalitions
from .scoring import ScoreFunction, as_score_fn, call_score, explained_classes, split_model_of
from .shares import abs_shares, output_shares

METHODS = ("auto", "exact", "permutation")


@dataclass
class ModalityShapley:
    """``values`` Tensor[B, M] (float64), ``base`` f(empty) Tensor[B], ``full`` f(full) Tensor[B].

    For a multi-output score (multilabel labels, regression outputs) ``values`` is Tensor[B, M, K]
    and ``base`` / ``full`` Tensor[B, K]; :meth:`shares` is then the mean over outputs of the
    per-output shares (:meth:`output_shares`).
    """

    values: Tensor
    base: Tensor
    full: Tensor
    modalities: list[str]
    method: str
    n_evaluations: int = 0
    classes: Tensor | None = None
    absent: Tensor | None = None  # BoolTensor[B, M]: the modality was already absent in the sample
    extra: dict = field(default_factory=dict)

    @property
    def n_outputs(self) -> int | None:
        """K for a multi-output score, None for a scalar one."""
        return self.values.shape[2] if self.values.dim() == 3 else None

    def efficiency_gap(self) -> Tensor:
        """Σ_m φ_m − (f(full) − f(empty)) per sample (and output) (≈ 1e-16)."""
        return self.values.sum(1) - (self.full - self.base)

    def output_shares(self, zero_total: str = "nan") -> Tensor:
        """Per-output shares Tensor[B, M, K] of a multi-output score."""
        if self.values.dim() != 3:
            raise ConfigError("output_shares: this explanation has a single output; use shares()")
        return output_shares(self.values.abs(), zero_total, self.absent)

    def shares(self, zero_total: str = "nan") -> Tensor:
        """|φ_m| / Σ|φ| per sample, Tensor[B, M] (NaN where the modality was absent in the sample);
        see :func:`mmfuse.explain.shares.abs_shares`."""
        return abs_shares(self.values.abs(), zero_total, self.absent)

    def mean_values(self) -> dict[str, float]:
        """Mean signed φ_m over samples (and outputs)."""
        v = self.values.mean(0)
        v = v.mean(1) if v.dim() == 2 else v
        return {m: float(x) for m, x in zip(self.modalities, v)}

    def mean_abs_shares(self, zero_total: str = "nan") -> dict[str, float]:
        return {m: float(v) for m, v in zip(self.modalities, self.shares(zero_total).nanmean(0))}

    @staticmethod
    def concat(results: Sequence["ModalityShapley"]) -> "ModalityShapley":
        """Join the results of several batches (same modalities)."""
        if not results:
            raise ConfigError("ModalityShapley.concat: got no results")
        return ModalityShapley(
            values=torch.cat([r.values for r in results]),
            base=torch.cat([r.base for r in results]),
            full=torch.cat([r.full for r in results]),
            modalities=list(results[0].modalities),
            method=results[0].method,
            n_evaluations=sum(r.n_evaluations for r in results),
            classes=cat_or_none([r.classes for r in results]),
            absent=cat_or_none([r.absent for r in results]),
        )


def cat_or_none(parts: Sequence[Tensor | None]) -> Tensor | None:
    """``torch.cat(parts)``, or None when any part is None (an optional per-sample field of joined results)."""
    return None if any(p is None for p in parts) else torch.cat(list(parts))


def resolve_players(batch: MultimodalBatch, players: Sequence[str] | None, what: str = "modalities") -> list[str]:
    """Sorted player modalities; unknown names raise MissingModalityError listing the batch's modalities."""
    known = batch.modalities
    if players is None:
        return known
    if isinstance(players, str):
        players = [players]
    unknown = [m for m in players if m not in known]
    if unknown:
        raise MissingModalityError(f"{what}: unknown modality {unknown[0]!r}; the batch has {known}: choose among them")
    if len(set(players)) != len(players):
        raise ConfigError(f"{what}: modalities listed twice in {list(players)}")
    if not players:
        raise ConfigError(f"{what}: give at least one modality")
    return sorted(players)


def coalition_values(score_fn: Callable, batch: MultimodalBatch, players: list[str], coalitions: Tensor,
                     classes: Tensor | None, max_rows: int) -> Tensor:
    """Values Tensor[K, B] (Tensor[K, B, O] for an O-output score) of the K coalitions (BoolTensor[K, M])."""
    B, K = batch.batch_size, coalitions.shape[0]
    device = next(iter(batch.mask.values())).device
    out = None
    step_b = min(B, max_rows)
    if split_model_of(score_fn) is not None:  # encode once per sample, fusion + head per coalition
        return _split_values(score_fn, batch, players, coalitions, classes, max_rows)[0]
    for s0 in range(0, B, step_b):
        sub = batch.select(slice(s0, s0 + step_b))
        b = sub.batch_size
        cls = None if classes is None else classes[s0:s0 + b]
        per = max(1, max_rows // b)
        for k0 in range(0, K, per):
            cm = coalitions[k0:k0 + per].to(device)
            k = cm.shape[0]
            rep = repeat_batch(sub, k)
            mask = {m: cm[:, i].repeat_interleave(b) for i, m in enumerate(players)}
            vals = call_score(score_fn, rep.with_mask(mask), None if cls is None else cls.repeat(k))
            if out is None:
                out = torch.empty((K, B) + tuple(vals.shape[1:]), dtype=torch.float64)
            out[k0:k0 + k, s0:s0 + b] = vals.view((k, b) + tuple(vals.shape[1:]))
    return out


def _split_values(score_fn: ScoreFunction, batch: MultimodalBatch, players: list[str], coalitions: Tensor,
                  classes: Tensor | None, max_rows: int, full_row: int | None = None) -> tuple[Tensor, Tensor | None]:
    """:func:`coalition_values` through the model's explanation split: per sub-batch of ≤ ``max_rows`` samples
    each modality is encoded once (its B rows + one zero row), then fusion + head run on the K·B coalition rows.

    ``full_row``: the index of the all-players coalition; when given (and ``classes`` is None), the explained
    classes are read from that coalition's logits (the batch's own prediction) instead of a separate model call.
    Returns (values Tensor[K, B(, O)], classes)."""
    B, K = batch.batch_size, coalitions.shape[0]
    out, got = None, []
    step_b = min(B, max_rows)
    for s0 in range(0, B, step_b):
        sub = batch.select(slice(s0, s0 + step_b))
        b = sub.batch_size
        logits = score_fn.split_logits(split_coalitions(sub, players, coalitions), max_rows)
        if full_row is not None and classes is None:
            cls = score_fn.classes(sub, logits[full_row * b:(full_row + 1) * b])
            got.append(cls)
        else:
            cls = None if classes is None else classes[s0:s0 + b]
        vals = score_fn.score_logits(logits, None if cls is None else cls.repeat(K))
        if vals.dim() == 2 and vals.shape[1] == 1:
            vals = vals[:, 0]
        vals = vals.detach().to("cpu", torch.float64)
        if out is None:
            out = torch.empty((K, B) + tuple(vals.shape[1:]), dtype=torch.float64)
        out[:, s0:s0 + b] = vals.view((K, b) + tuple(vals.shape[1:]))
    if got and got[0] is not None:
        classes = torch.cat(got)
    return out, classes


def _absent_rows_are_zero(batch: MultimodalBatch) -> bool:
    """True when every absent row's input is zero (as collate makes it): the batch's own prediction is then
    the all-players coalition's (``with_mask`` zeroes absent rows)."""
    for m, x in batch.inputs.items():
        v = batch.mask[m]
        if not bool(v.all()) and bool(x[~v].any()):
            return False
    return True


def modality_shapley(
    score_fn: Callable,
    batch: MultimodalBatch,
    modalities: Sequence[str] | None = None,
    method: str = "auto",
    n_permutations: int = 10,
    exact_max: int = 10,
    seed: int = 0,
    generator: torch.Generator | None = None,
    permutations: Tensor | None = None,
    antithetic: bool = True,
    memory_mb: float = 256.0,
    max_rows: int | None = None,
) -> ModalityShapley:
    """Modality-level Shapley values of ``score_fn`` on ``batch``.

    ``score_fn``: a :func:`~mmfuse.explain.scoring.make_score_fn` result or any ``f(batch) -> Tensor[B]``.
    ``modalities``: the players (default every modality of the batch; others stay as they are).
    ``permutations``: explicit LongTensor[P, M] orders (override ``n_permutations`` and the seed).
    Returns :class:`ModalityShapley` with values Tensor[B, M] in sorted modality order
    (Tensor[B, M, K] for a multi-output score: multilabel / regression without ``class_index``).
    """
    score_fn = as_score_fn(score_fn)
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}; choose one of them")
    check_count("n_permutations", n_permutations)
    check_count("exact_max", exact_max, minimum=0)
    players = resolve_players(batch, modalities)
    M = len(players)
    limit = rows_per_call(batch, memory_mb, max_rows)
    use_exact = method == "exact" or (method == "auto" and permutations is None and M <= exact_max
                                      and exact_is_cheaper(M, n_permutations, antithetic))
    split = split_model_of(score_fn) is not None
    # with the split, the explained classes come from the all-players coalition's logits (no extra model call)
    derive = (split and score_fn.class_index is None and not score_fn.multi_output  # the predicted class
              and _absent_rows_are_zero(batch))
    classes = None if derive else explained_classes(score_fn, batch)

    def values_of(coalitions: Tensor, full_row: int) -> Tensor:
        nonlocal classes
        if not split:
            return coalition_values(score_fn, batch, players, coalitions, classes, limit)
        v, classes = _split_values(score_fn, batch, players, coalitions, classes, limit, full_row if derive else None)
        return v

    if use_exact:
        coalitions = all_coalitions(M)
        v = values_of(coalitions, coalitions.shape[0] - 1)
        values = exact_from_values(v, M)
        base, full = v[0], v[-1]
        used = "exact"
    else:
        if permutations is not None:
            perms = check_permutations(permutations, M)
        else:
            gen = generator if generator is not None else torch.Generator().manual_seed(seed)
            perms = random_permutations(n_permutations, M, gen)
        coalitions = permutation_coalitions(perms, antithetic)
        v = values_of(coalitions, 1)
        values = permutation_from_values(v, perms, antithetic)
        base, full = v[0], v[1]
        used = "permutation"
    return ModalityShapley(values.transpose(0, 1).contiguous(), base.clone(), full.clone(), players, used,
                           n_evaluations=int(coalitions.shape[0]) * batch.batch_size, classes=classes,
                           absent=torch.stack([~batch.mask[m].cpu() for m in players], 1))
