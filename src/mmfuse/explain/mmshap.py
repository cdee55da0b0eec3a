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
* ``estimator="interleave"`` (the default with the explanation split): P orders per modality, each
  combination averaged exactly over all interleavings of the modalities (see :func:`mmshap`).
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
)
from .maskers import FeatureLayout, FeatureMasker, resolve_masker
from .rows import SplitRows, cat_batches, rows_per_call
from .scoring import as_score_fn, call_score, call_split_score, explained_classes, split_model_of
from .shapley import resolve_players
from .shares import abs_shares, output_shares

METHODS = ("permutation", "exact")
ESTIMATORS = ("auto", "walk", "interleave")
#: largest grid Π(n_m + 1) of one interleave draw (larger: the walk)
INTERLEAVE_MAX_GRID = 8192


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
        self.pending: list[tuple[Any, Tensor | None, Tensor, int]] = []
        self.rows = 0
        self.calls = 0
        self.encoded: dict[str, int] = {}

    def add(self, rows: MultimodalBatch | SplitRows, cls: Tensor | None, out: Tensor, start: int) -> None:
        k = max(x.shape[0] for x in rows.inputs.values()) if self.split else rows.batch_size
        if self.rows + k > self.limit:
            self.flush()
        self.pending.append((rows, cls, out, start))
        self.rows += k
        if self.rows >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        cls = None if self.pending[0][1] is None else torch.cat([p[1] for p in self.pending])
        if self.split:
            big = SplitRows.cat([p[0] for p in self.pending])
            for m, x in big.inputs.items():
                self.encoded[m] = self.encoded.get(m, 0) + int(x.shape[0])
            vals = call_split_score(self.score_fn, big, cls, self.limit)
        else:
            vals = call_score(self.score_fn, cat_batches([p[0] for p in self.pending]), cls)
        self.calls += 1
        o = 0
        for rows, _, out, start in self.pending:
            k = rows.n_rows if self.split else rows.batch_size
            out[start:start + k] = vals[o:o + k]
            o += k
        self.pending, self.rows = [], 0


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


def _orders(n_draws: int, n: int, gen: torch.Generator, reuse: int = 1) -> Tensor:
    """LongTensor[n_draws, n]: uniform orders of n players, each distinct order used for ``reuse`` consecutive draws."""
    if reuse <= 1:
        return random_permutations(n_draws, n, gen)
    base = random_permutations(-(-n_draws // reuse), n, gen)
    return base.repeat_interleave(reuse, dim=0)[:n_draws]


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
    reuse: Mapping[str, int] | None = None,
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
    ``reuse`` (interleave only): ``{modality: r}`` makes each order of that modality serve r consecutive draws
    (P/r distinct orders, so its masked inputs are encoded r times less often). Every draw stays a uniform
    sample (unbiased, efficiency per draw); it pays where a modality is expensive to encode but carries little
    of the error (e.g. many small image patches next to a few strong audio windows). Default: 1 for all.
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
    reuse = dict(reuse or {})
    if reuse and not interleave:
        raise ConfigError("reuse applies to the interleave estimator only (method='permutation' without explicit "
                          "permutations, estimator='interleave', or 'auto' with a model that offers the split)")
    for m, r in reuse.items():
        if m not in names:
            raise ConfigError(f"reuse: {m!r} is not a player modality; the players are {names}")
        check_count(f"reuse[{m!r}]", r)
    packer = _Packer(score_fn, limit, split)
    make_rows = _sample_split_rows if split else _sample_rows
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
                ords = [_orders(n_permutations, k, gen, reuse.get(m, 1)) for m, k in zip(groups, sizes)]
                if antithetic:  # the reversed orders walk the complements of the same prefixes
                    ords = [torch.cat([o, o.flip(1)]) for o in ords]
                pats, gidx = interleave_coalitions(ords)
                K = int(gidx[0].shape[0]) if gidx else 1
                out = torch.empty((K,) + tail, dtype=torch.float64)
                cls_i = None if classes is None else classes[i:i + 1]
                if split:
                    rows = _grid_split_rows(batch, i, mk, layouts, groups, pats, gidx)
                    packer.add(rows, None if cls_i is None else cls_i.expand(K), out, 0)
                else:
                    grid = _grid_keep(groups, offsets, n, pats, gidx)
                    for s0 in range(0, K, limit):
                        keep = grid[s0:s0 + limit]
                        packer.add(_sample_rows(batch, i, mk, layouts, offsets, keep),
                                   None if cls_i is None else cls_i.expand(keep.shape[0]), out, s0)
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
                               "encoded_rows": packer.encoded if split else {}})
