"""MM-SHAP (Parcalabescu & Frank, ACL 2023) at feature level, for any number of modalities.

Players are the *features* of the explained modalities (tokens, image patches, time windows,
video cells, vector chunks; see :mod:`mmfuse.explain.maskers`). The value of a coalition is
``score_fn`` on the sample with every feature outside it replaced by its masker's baseline;
modalities that are not players (``players``: e.g. a *pair* of modalities, as in the HS-code
use case) keep their values, and presence masks and lengths are never changed.

Estimators:

* ``method="permutation"`` (default, the reference's): ``n_permutations`` (default 10) random
  orders per sample, each walked forward and backward (antithetic); shared endpoints, so a
  sample costs ``P·(2n−2) + 2`` evaluations. ``Σ_j φ_j = f(all) − f(none)`` holds for any P.
* ``estimator="interleave"`` (the default with the explanation split): orders per modality, each
  combination averaged exactly over all interleavings of the modalities (see :func:`mmshap`); with
  ``reuse="auto"`` (default) a pilot measures each modality's share of the variance and its encode cost,
  and the modalities get distinct orders by the cost-optimal rule (an image encoder that costs much and
  carries little of the error gets few orders; the draws stay uniform: same expectation).
* ``method="exact"``: enumeration of the 2^n coalitions (n ≤ ``exact_max``), for tests and
  tiny inputs.

Every masked copy of a sample is built in one vectorised step and evaluated in big model calls;
copies of several samples are packed together up to ``rows_per_call`` rows. When the model offers
the explanation split (``model.explain_split()``: ``MultimodalModel`` with feature or late fusion),
each modality's masked input is built and encoded once per *distinct* on/off pattern of that
modality's features (a permutation walk changes one feature of one modality per step, so the
other modalities' inputs repeat), and only fusion + head run on every coalition row; the values
equal the whole-model path's to float rounding (``score_fn.use_split = False`` forces the latter).

Modality contributions ``Φ_m = Σ_{j∈m} |φ_j|`` and shares ``Φ_m / Σ_k Φ_k`` (T-SHAP/V-SHAP for
text/image); see :mod:`mmfuse.explain.shares` for zero totals and absent modalities.

Multi-output scores (multilabel without ``class_index``: each label's sigmoid; regression: each
output) are explained for every output at once: φ is Tensor[n, O], Φ Tensor[B, M, O], and the
shares are per output then averaged over outputs (see :mod:`mmfuse.explain.shares`).

Shape legend: B samples, M player modalities, n features of one sample, K coalitions, O outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..batch import MultimodalBatch
from ..errors import ConfigError, MissingModalityError
from .estimators import (
    EXACT_HARD_LIMIT,
    all_coalitions,
    check_count,
    check_permutations,
    exact_from_values,
    permutation_coalitions,
    interleave_coalitions,
    interleave_from_values,
    interleave_grid_size,
    permutation_from_values,
    random_permutations,
    allocate_orders,
    distinct_assignment,
    pilot_levels,
    pilot_statistics,
)
from .maskers import FeatureLayout, FeatureMasker, resolve_masker
from .rows import SplitRows, cat_batches, rows_per_call
from .scoring import ScoreFunction, as_score_fn, call_score, call_split_score, explained_classes, split_model_of
from .shapley import resolve_players
from .shares import abs_shares, output_shares

METHODS = ("permutation", "exact")
ESTIMATORS = ("auto", "walk", "interleave")
#: largest grid Π(n_m + 1) of one interleave draw (larger: the walk)
INTERLEAVE_MAX_GRID = 8192
#: reuse="auto" runs its pilot only when n_permutations >= PILOT_FACTOR x the pilot's draws
PILOT_FACTOR = 2.0


@dataclass
class FeatureExplanation:
    """One sample: ``values`` Tensor[n] (float64), ``owner`` LongTensor[n] (index into ``modalities``).

    For an O-output score ``values`` is Tensor[n, O] and ``base`` / ``full`` are Tensor[O].
    """

    values: Tensor
    owner: Tensor
    modalities: list[str]
    layouts: dict[str, FeatureLayout]
    base: float | Tensor
    full: float | Tensor
    explained_class: int | None = None
    n_evaluations: int = 0

    def values_of(self, modality: str) -> Tensor:
        """φ of the features of ``modality`` (Tensor[n_m], feature-id order)."""
        return self.values[self.owner == self.modalities.index(modality)]

    def contributions(self) -> Tensor:
        """Φ_m = Σ_{j∈m} |φ_j|, Tensor[M] (Tensor[M, O] for an O-output score)."""
        out = torch.zeros((len(self.modalities),) + tuple(self.values.shape[1:]), dtype=torch.float64)
        return out.index_add_(0, self.owner, self.values.abs())

    def efficiency_gap(self) -> float:
        """Σ_j φ_j − (f(all) − f(none)) (the largest over outputs for a multi-output score)."""
        gap = self.values.sum(0) - (torch.as_tensor(self.full, dtype=torch.float64) - torch.as_tensor(self.base, dtype=torch.float64))
        return float(gap.abs().max()) if gap.dim() else float(gap)

    def value_map(self, modality: str) -> Tensor:
        """φ spread over the sample's elements (Tensor with the modality's sample shape; NaN = never masked);
        for a multi-output score, the mean of φ over outputs."""
        lay = self.layouts[modality]
        own = self.values_of(modality)
        own = own.mean(1) if own.dim() == 2 else own
        vals = torch.cat([own, torch.tensor([float("nan")], dtype=torch.float64)])
        return vals[torch.where(lay.fmap < 0, lay.n, lay.fmap)]


@dataclass
class MMShapResult:
    """Per-sample explanations plus ``contributions`` Φ Tensor[B, M] (Tensor[B, M, O] for an O-output
    score) and ``absent`` BoolTensor[B, M]."""

    samples: list[FeatureExplanation]
    modalities: list[str]
    method: str
    n_permutations: int
    contributions: Tensor
    absent: Tensor
    base: Tensor
    full: Tensor
    classes: Tensor | None = None
    extra: dict = field(default_factory=dict)

    def shares(self, zero_total: str = "nan") -> Tensor:
        """share_m = Φ_m / Σ_k Φ_k per sample, Tensor[B, M] (NaN for modalities absent in a sample);
        for a multi-output score the mean over outputs of the per-output shares."""
        return abs_shares(self.contributions, zero_total, self.absent)

    def output_shares(self, zero_total: str = "nan") -> Tensor:
        """Per-output shares Tensor[B, M, O] of a multi-output score."""
        if self.contributions.dim() != 3:
            raise ConfigError("output_shares: this explanation has a single output; use shares()")
        return output_shares(self.contributions, zero_total, self.absent)

    def mean_shares(self, zero_total: str = "nan") -> dict[str, float]:
        return {m: float(v) for m, v in zip(self.modalities, self.shares(zero_total).nanmean(0))}

    @property
    def n_evaluations(self) -> int:
        return sum(s.n_evaluations for s in self.samples)

    @staticmethod
    def concat(results: Sequence["MMShapResult"]) -> "MMShapResult":
        if not results:
            raise ConfigError("MMShapResult.concat: got no results")
        cls = [r.classes for r in results]
        return MMShapResult(
            samples=[s for r in results for s in r.samples],
            modalities=list(results[0].modalities),
            method=results[0].method,
            n_permutations=results[0].n_permutations,
            contributions=torch.cat([r.contributions for r in results]),
            absent=torch.cat([r.absent for r in results]),
            base=torch.cat([r.base for r in results]),
            full=torch.cat([r.full for r in results]),
            classes=None if any(c is None for c in cls) else torch.cat(cls),
        )


class _Packer:
    """Accumulates masked rows of several samples and evaluates them in calls of ≤ ``limit`` rows.

    Rows are :class:`MultimodalBatch` copies (whole-model calls) or, when the model offers the
    explanation split, :class:`SplitRows` (each modality's distinct masked inputs encoded once)."""

    def __init__(self, score_fn: Callable, limit: int, split: bool = False):
        self.score_fn, self.limit, self.split = score_fn, limit, split
        self.pending: list[tuple[Any, Tensor | None, Tensor, int, Any, dict | None]] = []
        self.rows = 0
        self.calls = 0
        self.encoded: dict[str, int] = {}
        #: tag -> {modality: embeddings of the part's distinct inputs} for parts added with a tag (split only)
        self.kept: dict[Any, dict[str, Tensor]] = {}

    def add(self, rows: MultimodalBatch | SplitRows, cls: Tensor | None, out: Tensor, start: int, tag: Any = None,
            pre: dict[str, Tensor] | None = None) -> None:
        """Queue ``rows``; their values go to ``out[start:]``. Split only: ``tag`` keeps the part's embeddings in
        :attr:`kept`; ``pre`` = embeddings of distinct inputs encoded before (see ``ScoreFunction.split_logits``)."""
        k = max(x.shape[0] for x in rows.inputs.values()) if self.split else rows.batch_size
        if self.rows + k > self.limit:
            self.flush()
        self.pending.append((rows, cls, out, start, tag, pre))
        self.rows += k
        if self.rows >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        cls = None if self.pending[0][1] is None else torch.cat([p[1] for p in self.pending])
        if self.split:
            if any(p[5] for p in self.pending):
                big, pre = _cat_pre([(p[0], p[5]) for p in self.pending])
            else:
                big, pre = SplitRows.cat([p[0] for p in self.pending]), None
            for m, x in big.inputs.items():
                self.encoded[m] = self.encoded.get(m, 0) + int(x.shape[0])
            keep = {} if any(p[4] is not None for p in self.pending) else None
            vals = call_split_score(self.score_fn, big, cls, self.limit, pre=pre, keep=keep)
            if keep is not None:  # tagged parts never carry ``pre``: their inputs are consecutive in ``big``
                off = {m: 0 if pre is None or m not in pre else pre[m].shape[0] for m in big.inputs}
                for rows, *_, tag, _pre in self.pending:
                    if tag is not None:
                        self.kept[tag] = {m: keep[m][off[m]:off[m] + x.shape[0]] for m, x in rows.inputs.items()}
                    for m, x in rows.inputs.items():
                        off[m] += x.shape[0]
        else:
            vals = call_score(self.score_fn, cat_batches([p[0] for p in self.pending]), cls)
        self.calls += 1
        o = 0
        for rows, _, out, start, *_ in self.pending:
            k = rows.n_rows if self.split else rows.batch_size
            out[start:start + k] = vals[o:o + k]
            o += k
        self.pending, self.rows = [], 0


def _cat_pre(parts: list[tuple[SplitRows, dict[str, Tensor] | None]]) -> tuple[SplitRows, dict[str, Tensor]]:
    """Join split parts whose distinct rows are ``[pre[m]; inputs[m]]`` each: the joined distinct rows are every
    part's ``pre`` rows, then every part's ``inputs`` rows; indices and lengths are moved accordingly."""
    first = parts[0][0]
    inputs, lengths, index, pre = {}, {}, {}, {}
    for m in first.inputs:
        u0 = [0 if not p or m not in p else int(p[m].shape[0]) for _, p in parts]
        total = sum(u0)
        idx, po, no = [], 0, 0
        for (rows, _), k in zip(parts, u0):
            i = rows.index[m]
            idx.append(torch.where(i < k, po + i, total + no + i - k))
            po += k
            no += int(rows.inputs[m].shape[0])
        index[m] = torch.cat(idx)
        inputs[m] = torch.cat([rows.inputs[m] for rows, _ in parts])
        if total:
            pre[m] = torch.cat([p[m] for (_, p), k in zip(parts, u0) if k])
        if m in first.lengths:
            lengths[m] = torch.cat([rows.lengths[m][:k] for (rows, _), k in zip(parts, u0)]
                                   + [rows.lengths[m][k:] for (rows, _), k in zip(parts, u0)])
    mask = {m: torch.cat([rows.mask[m] for rows, _ in parts]) for m in first.mask}
    return SplitRows(inputs, lengths, index, mask), pre


def _reuse_split_rows(batch: MultimodalBatch, i: int, maskers: dict[str, FeatureMasker],
                      layouts: dict[str, FeatureLayout], groups: list[str], patterns: list[Tensor],
                      index: list[Tensor], done: dict[str, tuple[Tensor, Tensor]]) -> tuple[SplitRows, dict]:
    """:func:`_grid_split_rows` where some patterns were encoded before: ``done[m]`` = (distinct patterns
    BoolTensor[U0, n_m], their embeddings). Returns the rows (distinct inputs = the new patterns only, after the
    U0 earlier ones) and ``pre`` (the earlier embeddings) for ``ScoreFunction.split_logits``."""
    K = int(index[0].shape[0]) if index else 1
    inputs, lengths, idx, pre = {}, {}, {}, {}
    for m, x in batch.inputs.items():
        xi = x[i]
        u0 = 0
        if m in groups and m in done:
            j = groups.index(m)
            old, emb = done[m]
            u0 = old.shape[0]
            allp, inv = _unique_rows(torch.cat([old, patterns[j]]))
            row_ids = inv[u0:][index[j]]  # each grid row's pattern, as an id among allp
            pos = torch.full((allp.shape[0],), -1, dtype=torch.long)
            pos[inv[:u0]] = torch.arange(u0)
            needed = torch.unique(row_ids)
            new = needed[pos[needed] < 0]
            pos[new] = u0 + torch.arange(new.numel())
            inputs[m], idx[m], pre[m] = maskers[m].apply(xi, layouts[m], allp[new]), pos[row_ids], emb
        elif m in groups:
            j = groups.index(m)
            uniq, inv = _unique_rows(patterns[j])
            inputs[m], idx[m] = maskers[m].apply(xi, layouts[m], uniq), inv[index[j]]
        else:
            inputs[m], idx[m] = xi.unsqueeze(0), torch.zeros(K, dtype=torch.long)
        if m in batch.lengths:
            lengths[m] = batch.lengths[m][i].expand(u0 + inputs[m].shape[0])
    mask = {m: v[i].expand(K) for m, v in batch.mask.items()}
    return SplitRows(inputs, lengths, idx, mask), pre


def _sample_rows(batch: MultimodalBatch, i: int, maskers: dict[str, FeatureMasker], layouts: dict[str, FeatureLayout],
                 offsets: dict[str, int], keep: Tensor) -> MultimodalBatch:
    """K masked copies of sample i (keep BoolTensor[K, n]) as a MultimodalBatch of K rows."""
    k = keep.shape[0]
    inputs = {}
    for m, x in batch.inputs.items():
        xi = x[i]
        if m in layouts:
            lay = layouts[m]
            inputs[m] = maskers[m].apply(xi, lay, keep[:, offsets[m]:offsets[m] + lay.n])
        else:
            inputs[m] = xi.unsqueeze(0).expand((k,) + tuple(xi.shape))
    mask = {m: v[i].expand(k) for m, v in batch.mask.items()}
    lengths = {m: v[i].expand(k) for m, v in batch.lengths.items()}
    return MultimodalBatch(inputs, mask, None, lengths)


def _sample_split_rows(batch: MultimodalBatch, i: int, maskers: dict[str, FeatureMasker],
                       layouts: dict[str, FeatureLayout], offsets: dict[str, int], keep: Tensor) -> SplitRows:
    """The rows of :func:`_sample_rows` as :class:`SplitRows`: a modality's masked input is built (and later
    encoded) once per *distinct* on/off pattern of its own features. In a permutation walk consecutive
    coalitions differ in one feature of one modality, so the other modalities' inputs repeat."""
    k = keep.shape[0]
    inputs, lengths, index = {}, {}, {}
    for m, x in batch.inputs.items():
        xi = x[i]
        if m in layouts:
            lay = layouts[m]
            uniq, inv = _unique_rows(keep[:, offsets[m]:offsets[m] + lay.n])
            inputs[m], index[m] = maskers[m].apply(xi, lay, uniq), inv
        else:
            inputs[m], index[m] = xi.unsqueeze(0), torch.zeros(k, dtype=torch.long)
        if m in batch.lengths:
            lengths[m] = batch.lengths[m][i].expand(inputs[m].shape[0])
    mask = {m: v[i].expand(k) for m, v in batch.mask.items()}
    return SplitRows(inputs, lengths, index, mask)


def _rotated_orders(k: int, n: int, gen: torch.Generator) -> Tensor:
    """LongTensor[k, n]: k orders of n players, in blocks of ≤ n *rotations* of one uniform order (shifts spread
    evenly over 0..n−1). Each order is uniform (a rotation of a uniform order is one), so every estimate made from
    one of them keeps its expectation; within a block each player takes evenly spread positions (stratified by
    position), which lowers the variance of the mean at no cost."""
    if n == 0 or k == 0:
        return torch.zeros(k, n, dtype=torch.long)
    out = []
    while len(out) < k:
        base = random_permutations(1, n, gen)[0]
        b = min(k - len(out), n)
        out += [torch.roll(base, (j * n) // b) for j in range(b)]
    return torch.stack(out)


def _orders(n_draws: int, n: int, gen: torch.Generator, reuse: int = 1) -> Tensor:
    """LongTensor[n_draws, n]: uniform orders of n players (:func:`_rotated_orders`), each distinct order used for
    ``reuse`` consecutive draws."""
    base = _rotated_orders(-(-n_draws // max(reuse, 1)), n, gen)
    return base if reuse <= 1 else base.repeat_interleave(reuse, dim=0)[:n_draws]


def _unique_rows(keep: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of BoolTensor[K, n] and each row's index among them (bit-packed keys for n ≤ 62)."""
    n = keep.shape[1]
    if n == 0:
        return keep[:1], torch.zeros(keep.shape[0], dtype=torch.long)
    if n > 62:
        uniq, inv = torch.unique(keep, dim=0, return_inverse=True)
        return uniq, inv.reshape(-1)
    keys = (keep.long() << torch.arange(n, dtype=torch.long)).sum(1)
    ukeys, inv = torch.unique(keys, return_inverse=True)
    return ((ukeys.unsqueeze(1) >> torch.arange(n, dtype=torch.long)) & 1).bool(), inv


def _grid_split_rows(batch: MultimodalBatch, i: int, maskers: dict[str, FeatureMasker],
                     layouts: dict[str, FeatureLayout], groups: list[str], patterns: list[Tensor],
                     index: list[Tensor]) -> SplitRows:
    """The interleave grid of sample i as :class:`SplitRows`: each group's distinct prefix patterns are masked
    (and encoded) once; the grid rows only combine them."""
    K = int(index[0].shape[0]) if index else 1
    inputs, lengths, idx = {}, {}, {}
    for m, x in batch.inputs.items():
        xi = x[i]
        if m in groups:
            j = groups.index(m)
            uniq, inv = _unique_rows(patterns[j])
            inputs[m], idx[m] = maskers[m].apply(xi, layouts[m], uniq), inv[index[j]]
        else:
            inputs[m], idx[m] = xi.unsqueeze(0), torch.zeros(K, dtype=torch.long)
        if m in batch.lengths:
            lengths[m] = batch.lengths[m][i].expand(inputs[m].shape[0])
    mask = {m: v[i].expand(K) for m, v in batch.mask.items()}
    return SplitRows(inputs, lengths, idx, mask)


def _grid_keep(groups: list[str], offsets: dict[str, int], n: int, patterns: list[Tensor],
               index: list[Tensor]) -> Tensor:
    """The interleave grid of a sample as a keep matrix BoolTensor[K, n] (whole-model path)."""
    K = int(index[0].shape[0]) if index else 1
    keep = torch.ones(K, n, dtype=torch.bool)
    for j, m in enumerate(groups):
        keep[:, offsets[m]:offsets[m] + patterns[j].shape[1]] = patterns[j][index[j]]
    return keep


def _resolve_maskers(batch: MultimodalBatch, players: list[str], maskers: Mapping[str, Any] | None) -> dict:
    maskers = dict(maskers or {})
    unknown = [m for m in maskers if m not in batch.inputs]
    if unknown:
        raise MissingModalityError(f"maskers: unknown modality {unknown[0]!r}; the batch has {batch.modalities}")
    return {m: resolve_masker(maskers.get(m), batch.inputs[m][0], m in batch.lengths, m) for m in players}


def _sample_layouts(batch, i, players, maskers) -> tuple[dict[str, FeatureLayout], dict[str, int], int]:
    context: dict[str, Any] = {}
    order = sorted(players, key=lambda m: (maskers[m].kind != "tokens", m))  # tokens first: n_text_tokens
    layouts: dict[str, FeatureLayout] = {}
    for m in order:
        if not bool(batch.mask[m][i]):
            continue
        length = int(batch.lengths[m][i]) if m in batch.lengths else None
        layouts[m] = maskers[m].layout(batch.inputs[m][i], length, context, m)
    offsets, n = {}, 0
    for m in players:
        if m in layouts:
            offsets[m] = n
            n += layouts[m].n
    return layouts, offsets, n


def _antithetic(ords: list[Tensor], antithetic: bool) -> list[Tensor]:
    """Each draw's orders followed by the reversed ones (they walk the complements of the same prefixes)."""
    return [torch.cat([o, o.flip(1)]) for o in ords] if antithetic else ords


def _allocate_and_run(plans: list, score_fn, batch: MultimodalBatch, packer: _Packer, add_grid: Callable,
                      gen: torch.Generator, n_permutations: int, antithetic: bool) -> tuple[list, list]:
    """After the pilots ran: per sample, the number of distinct orders of each modality for the remaining
    ``n_permutations − pilot`` draws (:func:`~mmfuse.explain.estimators.allocate_orders`, costs from
    :meth:`~mmfuse.explain.scoring.ScoreFunction.split_row_costs`, variances from the *other* samples' pilots),
    then those draws. Returns the plans with every pilot sample's draws joined (one equal-weight interleave
    estimate over all its draws) and the allocation per sample ({modality: distinct orders}, None if none)."""
    costs = score_fn.split_row_costs(batch)
    stats: dict[int, tuple[dict, dict]] = {}
    for i, (layouts, _, _, plan, out) in enumerate(plans):
        if not (isinstance(plan, tuple) and plan[0] == "pilot"):
            continue
        _, ords, groups, _, levels = plan
        per = interleave_from_values(out, ords, per_draw=True)
        if antithetic:  # one draw = an order and its reverse
            k = levels.shape[0]
            per = (per[:k] + per[k:]) / 2
        owner = torch.cat([torch.full((layouts[m].n,), j, dtype=torch.long) for j, m in enumerate(groups)])
        V, W = pilot_statistics(per, owner, levels)
        stats[i] = ({g: float(V[j]) for j, g in enumerate(groups)},
                    {(m, g): float(W[a, j]) for a, m in enumerate(groups) for j, g in enumerate(groups)})
    sums: dict = {}
    for v, w in stats.values():
        for key, x in list(v.items()) + list(w.items()):
            tot, cnt = sums.get(key, (0.0, 0))
            sums[key] = (tot + x, cnt + 1)

    def others(i: int, key) -> float | None:  # mean over the other samples' pilots (leave one out)
        tot, cnt = sums.get(key, (0.0, 0))
        own = stats[i][0].get(key, stats[i][1].get(key))
        return None if cnt <= 1 else (tot - own) / (cnt - 1)

    allocation: list[dict[str, int] | None] = [None] * len(plans)
    main: dict[int, list[Tensor]] = {}
    ab = 2 if antithetic else 1
    for i in sorted(stats):
        layouts, offsets, n, (_, ords, groups, base, levels), _ = plans[i]
        G = len(groups)
        draws = n_permutations
        extra_draws = draws - 2  # the pilot's d1 and d2 are ordinary draws; its probes only inform the design
        V = [others(i, g) for g in groups]
        W = [[others(i, (m, g)) for g in groups] for m in groups]
        sizes = [layouts[m].n for m in groups]
        highest = 2 + extra_draws
        if any(x is None for x in V) or any(x is None for row in W for x in row):
            q = [highest] * G  # nothing to go by: every draw gets new orders
        else:
            q = allocate_orders(torch.tensor(V, dtype=torch.float64), torch.tensor(W, dtype=torch.float64),
                                torch.tensor(sizes), torch.tensor([costs[m] * max(k - 1, 0) * ab
                                                                   for m, k in zip(groups, sizes)]),
                                costs[""] * interleave_grid_size(sizes) * ab, draws, 2, highest)
        new = []
        # which of its q[j] orders each modality uses in each extra draw: least used first, combinations distinct
        # across modalities (no repeat of d1's or d2's pair while a new one is left), from q alone
        picks = distinct_assignment(q, extra_draws, used=2)
        for j, (m, k) in enumerate(zip(groups, sizes)):
            pool = torch.cat([base[j], _rotated_orders(q[j] - 2, k, gen)]) if q[j] > 2 else base[j]
            new.append(pool[picks[j]])
        main[i] = _antithetic(new, antithetic)
        allocation[i] = dict(zip(groups, q))
    outs = {}
    for i in sorted(main):
        layouts, offsets, n, (_, ords, groups, _, _), _ = plans[i]
        pats, _ = interleave_coalitions(ords)  # the pilot's distinct patterns, in the order they were encoded
        kept = packer.kept.pop(i, {})
        done = {m: (_unique_rows(pats[j])[0], kept[m]) for j, m in enumerate(groups) if m in kept}
        outs[i] = add_grid(i, layouts, offsets, n, groups, main[i], done=done)
    packer.flush()
    for i, extra in outs.items():
        layouts, offsets, n, (_, ords, groups, _, levels), out = plans[i]
        K = levels.shape[0]
        keep = [0, 1] + ([K, K + 1] if antithetic else [])  # d1, d2 (and their reverses); not the probes
        cells = interleave_grid_size([layouts[m].n for m in groups])
        kept = out.view((-1, cells) + tuple(out.shape[1:]))[keep].reshape((-1,) + tuple(out.shape[1:]))
        joined = [torch.cat([a[keep], b]) for a, b in zip(ords, main[i])]
        plans[i] = (layouts, offsets, n, ("interleave", joined), torch.cat([kept, extra]))
    return plans, allocation


def _estimator_label(interleave: bool, fallback: int, n_samples: int, method: str) -> str:
    """What ran: "exact", "walk", "interleave", or "interleave (walk for k of B samples: grid > ...)"."""
    if not interleave:
        return "walk" if method == "permutation" else "exact"
    if fallback == 0:
        return "interleave"
    if fallback == n_samples:
        return "walk"
    return (f"interleave (walk for {fallback} of {n_samples} samples: their interleave grid exceeds "
            f"{INTERLEAVE_MAX_GRID} rows)")


def mmshap(
    score_fn: Callable,
    batch: MultimodalBatch,
    maskers: Mapping[str, FeatureMasker | str | dict | None] | None = None,
    players: Sequence[str] | None = None,
    method: str = "permutation",
    n_permutations: int = 10,
    seed: int = 0,
    generator: torch.Generator | None = None,
    permutations: Tensor | Sequence[Tensor] | None = None,
    antithetic: bool = True,
    exact_max: int = 14,
    memory_mb: float = 256.0,
    max_rows: int | None = None,
    estimator: str = "auto",
    reuse: Mapping[str, int] | str | None = "auto",
) -> MMShapResult:
    """Feature-level Shapley values and modality shares for every sample of ``batch``.

    ``maskers``: per modality a :class:`FeatureMasker`, a registered name ("tokens", "patches",
    "windows", "video", "vector"), a dict ``{"kind": ..., **kwargs}`` or None (default by shape).
    ``players``: the modalities whose features are players (default all; two names = pair mode).
    ``permutations``: explicit orders, one LongTensor[P, n] for every sample or a list with one per
    sample (overrides ``n_permutations``/``seed``; used to match other libraries' sampling; always walked).
    ``estimator`` (``method="permutation"``): ``"walk"`` walks each of the P permutations forward (and
    backward, antithetic), as shap's PermutationExplainer; ``"interleave"`` draws P orders *per modality*
    (and their reverses, antithetic) and averages the permutation estimator exactly over every interleaving
    of the modalities' orders (:func:`~mmfuse.explain.estimators.interleave_from_values`): the same expectation
    (the Shapley values), a lower variance, efficiency per draw; its Π(n_m+1) grid rows per draw combine
    each modality's n_m+1 masked inputs, so with the explanation split only Σ(n_m+1) inputs per draw are
    encoded. ``"auto"`` (default): interleave when the model offers the split and the grid has at most
    ``INTERLEAVE_MAX_GRID`` rows, else walk.
    ``reuse`` (interleave only): how many distinct orders each modality gets. ``"auto"`` (default): with the
    explanation split, ≥ 2 samples and ``n_permutations`` at least twice the pilot's draws (≥ 6 for 2
    modalities, 8 for 3, 12 for 4: below, the pilot's overhead is not repaid), each sample first runs a *pilot*:
    two ordinary draws d1, d2 plus probes (d1 with one modality's order from d2: no new encodes, only
    fusion + head rows; not part of the estimate), which measure how much of the estimator's variance each
    modality's order carries
    (:func:`~mmfuse.explain.estimators.pilot_statistics`; a modality's two pilot orders are rotations of one
    uniform order by n_m/2, as in the other draws, so these are the variances of that stratified pair: a proxy);
    the remaining draws then give modality m ``Q_m`` distinct orders by the cost-optimal rule for the expected
    mean |error| (Neyman-type: for independent modalities Q_m ∝ (σ_m / cost_m)^(2/3); :func:`~mmfuse.explain.
    estimators.allocate_orders`; cost = floating-point operations of one encoded row, counted, not timed, so the
    design is deterministic). A sample's design is chosen from the *other* samples'
    pilots, so its own draws stay uniform and independent of it: the estimate (``n_permutations`` draws: d1, d2
    and the allocated ones, equally weighted) keeps the Shapley values as its expectation, and efficiency holds per
    draw. Q depends on floating-point pilot values, and those on how rows are packed (``memory_mb`` /
    ``max_rows``): at a near-tie a different packing can flip the design and so every later draw for the same
    seed (same expectation, different values). ``extra["orders"]`` lists each sample's Q. Elsewhere "auto" = one new order per draw. ``{modality: r}``
    (by hand) makes each order of that modality serve r consecutive draws (P/r distinct orders); None: one new
    order per draw for every modality (the estimator before "auto").
    A modality's orders within a sample are rotations of uniform orders (blocks of ≤ n_m rotations with evenly
    spread shifts): each order is uniform, so the expectation is unchanged, and every player takes evenly spread
    positions (lower variance; the rotations' and their reverses' prefixes also repeat, so fewer encodes).
    """
    score_fn = as_score_fn(score_fn)
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    check_count("n_permutations", n_permutations)
    check_count("exact_max", exact_max, minimum=0)
    if exact_max > EXACT_HARD_LIMIT:
        raise ConfigError(f"exact_max must be at most {EXACT_HARD_LIMIT}, got {exact_max}")
    names = resolve_players(batch, players, "players")
    mk = _resolve_maskers(batch, names, maskers)
    limit = rows_per_call(batch, memory_mb, max_rows)
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    classes = explained_classes(score_fn, batch)
    B = batch.batch_size
    if permutations is not None and not isinstance(permutations, Tensor) and len(permutations) != B:
        raise ConfigError(f"permutations: give one tensor for all samples or a list of {B}, got {len(permutations)}")
    tail: tuple[int, ...] = ()
    if getattr(score_fn, "multi_output", False):  # one output per label / regression output: (O,)
        tail = tuple(call_score(score_fn, batch.select(slice(0, 1)), None).shape[1:])
    split = split_model_of(score_fn) is not None
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}; choose one of them")
    interleave = method == "permutation" and permutations is None and (
        estimator == "interleave" or (estimator == "auto" and split))
    auto_reuse = isinstance(reuse, str) and reuse == "auto"
    if isinstance(reuse, str) and not auto_reuse:
        raise ConfigError(f"reuse must be 'auto', None or a mapping {{modality: r}}, got {reuse!r}")
    reuse = {} if auto_reuse else dict(reuse or {})
    if reuse and not interleave:
        raise ConfigError("reuse applies to the interleave estimator only (method='permutation' without explicit "
                          "permutations, estimator='interleave', or 'auto' with a model that offers the split)")
    for m, r in reuse.items():
        if m not in names:
            raise ConfigError(f"reuse: {m!r} is not a player modality; the players are {names}")
        check_count(f"reuse[{m!r}]", r)
    packer = _Packer(score_fn, limit, split)
    make_rows = _sample_split_rows if split else _sample_rows
    # reuse="auto": a pilot per sample, then each modality's number of distinct orders by the cost-optimal rule,
    # from the *other* samples' pilots (so a sample's design does not depend on its own draws: unbiased)
    # (decided by the model offering the split, not by use_split: both paths give the same values)
    auto = auto_reuse and interleave and B >= 2 and isinstance(score_fn, ScoreFunction) \
        and score_fn.offers_split() is not None

    def add_grid(i, layouts, offsets, n, groups, ords, tag=None, done=None) -> Tensor:
        """Queue the interleave grid of sample i for the orders ``ords``; returns the tensor its values go to.
        Split only: ``tag`` keeps the embeddings (packer.kept), ``done`` reuses embeddings (_reuse_split_rows)."""
        pats, gidx = interleave_coalitions(ords)
        K = int(gidx[0].shape[0]) if gidx else 1
        out = torch.empty((K,) + tail, dtype=torch.float64)
        cls_i = None if classes is None else classes[i:i + 1]
        if split:
            pre = None
            if done:
                rows, pre = _reuse_split_rows(batch, i, mk, layouts, groups, pats, gidx, done)
            else:
                rows = _grid_split_rows(batch, i, mk, layouts, groups, pats, gidx)
            packer.add(rows, None if cls_i is None else cls_i.expand(K), out, 0, tag, pre)
        else:
            grid = _grid_keep(groups, offsets, n, pats, gidx)
            for s0 in range(0, K, limit):
                keep = grid[s0:s0 + limit]
                packer.add(_sample_rows(batch, i, mk, layouts, offsets, keep),
                           None if cls_i is None else cls_i.expand(keep.shape[0]), out, s0)
        return out

    plans = []
    fallback = 0  # samples whose interleave grid was too large (they use the walk)
    for i in range(B):
        layouts, offsets, n = _sample_layouts(batch, i, names, mk)
        if method == "exact":
            if n > exact_max:
                raise ConfigError(
                    f"sample {i}: method='exact' over {n} features needs 2^{n} evaluations (exact_max={exact_max}); "
                    "use method='permutation', coarser maskers, or raise exact_max"
                )
            perms, coalitions = None, all_coalitions(n)
        elif interleave:
            groups = [m for m in names if m in layouts and layouts[m].n > 0]
            sizes = [layouts[m].n for m in groups]
            if interleave_grid_size(sizes) <= INTERLEAVE_MAX_GRID:
                levels = pilot_levels(len(groups)) if auto else None
                if levels is not None and len(groups) >= 2 and n_permutations >= PILOT_FACTOR * levels.shape[0]:
                    # the pilot: two ordinary draws (part of the estimate) and probes that recombine their orders
                    # (no new encodes), from which every modality's share of the variance is read (pilot_statistics)
                    base = [_rotated_orders(2, k, gen) for k in sizes]
                    ords = _antithetic([b[levels[:, j]] for j, b in enumerate(base)], antithetic)
                    out = add_grid(i, layouts, offsets, n, groups, ords, tag=i)
                    plans.append((layouts, offsets, n, ("pilot", ords, groups, base, levels), out))
                    continue
                ords = _antithetic([_orders(n_permutations, k, gen, reuse.get(m, 1))
                                    for m, k in zip(groups, sizes)], antithetic)
                out = add_grid(i, layouts, offsets, n, groups, ords)
                plans.append((layouts, offsets, n, ("interleave", ords), out))
                continue
            fallback += 1  # grid too large: the walk for this sample (reported in extra["estimator"])
            perms = random_permutations(n_permutations, n, gen)
            coalitions = permutation_coalitions(perms, antithetic)
        else:
            if permutations is not None:
                given = permutations if isinstance(permutations, Tensor) else permutations[i]
                perms = check_permutations(given, n)
            else:
                perms = random_permutations(n_permutations, n, gen)
            coalitions = permutation_coalitions(perms, antithetic)
        out = torch.empty((coalitions.shape[0],) + tail, dtype=torch.float64)
        cls_i = None if classes is None else classes[i:i + 1]
        for s in range(0, coalitions.shape[0], limit):
            keep = coalitions[s:s + limit]
            rows = make_rows(batch, i, mk, layouts, offsets, keep)
            packer.add(rows, None if cls_i is None else cls_i.expand(keep.shape[0]), out, s)
        plans.append((layouts, offsets, n, perms, out))
    packer.flush()
    allocation: list[dict[str, int] | None] = [None] * B
    if any(isinstance(p[3], tuple) and p[3][0] == "pilot" for p in plans):
        plans, allocation = _allocate_and_run(plans, score_fn, batch, packer, add_grid, gen, n_permutations,
                                              antithetic)

    samples, M = [], len(names)
    contributions = torch.zeros((B, M) + tail, dtype=torch.float64)
    absent = torch.zeros(B, M, dtype=torch.bool)
    base, full = torch.empty((B,) + tail, dtype=torch.float64), torch.empty((B,) + tail, dtype=torch.float64)
    for i, (layouts, offsets, n, perms, v) in enumerate(plans):
        if perms is None:
            phi, b, f = exact_from_values(v, n), v[0], v[-1]
        elif isinstance(perms, tuple):  # interleave: draw 0's grid corners are none / all
            ords = perms[1]
            phi, b, f = interleave_from_values(v, ords), v[0], v[interleave_grid_size([o.shape[1] for o in ords]) - 1]
        else:
            phi, b, f = permutation_from_values(v, perms, antithetic), v[0], v[1]
        owner = torch.cat([torch.full((layouts[m].n,), j, dtype=torch.long)
                           for j, m in enumerate(names) if m in layouts] or [torch.zeros(0, dtype=torch.long)])
        b_, f_ = (float(b), float(f)) if not tail else (b.clone(), f.clone())
        ex = FeatureExplanation(phi, owner, names, layouts, b_, f_,
                                None if classes is None else int(classes[i]), int(v.shape[0]))
        samples.append(ex)
        contributions[i] = ex.contributions()
        absent[i] = torch.tensor([m not in layouts or layouts[m].n == 0 for m in names])
        base[i], full[i] = b, f
    used_p = 0 if method == "exact" else (n_permutations if permutations is None else -1)
    return MMShapResult(samples, names, method, used_p, contributions, absent, base, full, classes,
                        extra={"model_calls": packer.calls, "split": split,
                               "estimator": _estimator_label(interleave, fallback, B, method),
                               "encoded_rows": packer.encoded if split else {},
                               "orders": allocation})
