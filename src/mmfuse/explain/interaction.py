"""Pairwise modality Shapley interaction index (SII, Grabisch & Roubens 1999), exact, from the same
coalition evaluations as the exact modality Shapley values.

Players are modalities, as in :mod:`mmfuse.explain.shapley`: the value v(S) of a coalition S is the
score with every player outside S marked absent through the batch mask. One evaluation of the 2^M
coalitions (:func:`~mmfuse.explain.shapley.coalition_values` over
:func:`~mmfuse.explain.estimators.all_coalitions`) gives both

* the Shapley values  φ_i = Σ_{S ⊆ N∖{i}} |S|!(M−|S|−1)!/M! · [v(S ∪ {i}) − v(S)], and
* the pairwise interaction index, for i ≠ j,

      I_ij = Σ_{S ⊆ N∖{i,j}} |S|!(M−|S|−2)!/(M−1)! · [v(S ∪ {i,j}) − v(S ∪ {i}) − v(S ∪ {j}) + v(S)].

I_ij > 0: the two modalities together add more than each does alone (synergy); I_ij < 0: they are
redundant (either one alone gives most of what both give). For M = 2, I_AB = v(AB) − v(A) − v(B) + v(∅).
For a game v(S) = Σ_{i∈S} a_i + Σ_{i<j ∈ S} b_ij + Σ_{i<j<k ∈ S} c_ijk (any M):
φ_i = a_i + ½ Σ_j b_ij + ⅓ Σ_{triples ∋ i} c, and I_ij = b_ij + ½ Σ_k c_ijk (the SII of a unanimity game
on a coalition T ⊇ {i, j} is 1/(|T| − 1)).

Exact only: above :data:`MAX_MODALITIES` players (2^M coalitions per sample) a ConfigError is raised.
The diagonal of ``interactions`` is 0 (a player does not interact with itself; φ_i is in ``values``).

Shape legend: B samples, M player modalities, K outputs of a multi-output score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..batch import MultimodalBatch
from ..errors import ConfigError
from .estimators import all_coalitions, exact_from_values
from .rows import rows_per_call
from .scoring import as_score_fn, explained_classes
from .shapley import ModalityShapley, cat_or_none, coalition_values, resolve_players

#: Exact enumeration only: at most this many player modalities (2^10 = 1024 coalitions per sample).
MAX_MODALITIES = 10


def pair_name(a: str, b: str) -> str:
    """The key of a modality pair, e.g. ``"audio+image"`` (sorted, as pattern names)."""
    return "+".join(sorted((a, b)))


def interaction_weights(n: int) -> Tensor:
    """SII weights |S|!(n−|S|−2)!/(n−1)! for |S| = 0..n−2 (Tensor[n−1], float64); empty for n < 2."""
    if n < 2:
        return torch.zeros(0, dtype=torch.float64)
    return torch.tensor([math.factorial(s) * math.factorial(n - s - 2) / math.factorial(n - 1) for s in range(n - 1)],
                        dtype=torch.float64)


def interactions_from_values(values: Tensor, n: int) -> Tensor:
    """Pairwise SII Tensor[n, n, *] from the values Tensor[2^n, *] of :func:`all_coalitions` rows (row r has
    player j on iff bit j of r is set); symmetric, zero diagonal."""
    v = values.to(torch.float64)
    if v.shape[0] != 2**n:
        raise ConfigError(f"exact Shapley interactions: expected {2 ** n} coalition values, got {v.shape[0]}")
    out = torch.zeros((n, n) + tuple(v.shape[1:]), dtype=torch.float64)
    if n < 2:
        return out
    rows = torch.arange(2**n, dtype=torch.long)
    sizes = torch.zeros(2**n, dtype=torch.long)
    for j in range(n):
        sizes += (rows >> j) & 1
    w_all = interaction_weights(n)
    tail = (1,) * (v.dim() - 1)
    for i in range(n):
        for j in range(i + 1, n):
            bi, bj = 1 << i, 1 << j
            s = rows[(rows & (bi | bj)) == 0]  # coalitions without i and j
            w = w_all[sizes[s]].view((-1,) + tail)
            out[i, j] = out[j, i] = (w * (v[s | bi | bj] - v[s | bi] - v[s | bj] + v[s])).sum(0)
    return out


@dataclass
class ModalityInteractions:
    """Exact Shapley values and pairwise interactions of the modalities, from one set of evaluations.

    ``values`` Tensor[B, M] (φ, float64; Tensor[B, M, K] for a multi-output score), ``interactions``
    Tensor[B, M, M] (Tensor[B, M, M, K]; symmetric, zero diagonal), ``base`` f(∅) and ``full`` f(N)
    Tensor[B] (Tensor[B, K]), ``modalities`` the sorted players.
    """

    values: Tensor
    interactions: Tensor
    base: Tensor
    full: Tensor
    modalities: list[str]
    n_evaluations: int = 0
    classes: Tensor | None = None
    absent: Tensor | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """The modality pairs (i < j) in sorted order."""
        m = self.modalities
        return [(m[i], m[j]) for i in range(len(m)) for j in range(i + 1, len(m))]

    def pair_values(self) -> dict[str, Tensor]:
        """``{"a+b": Tensor[B]}`` (Tensor[B, K] for a multi-output score) for each pair."""
        idx = {m: k for k, m in enumerate(self.modalities)}
        return {pair_name(a, b): self.interactions[:, idx[a], idx[b]] for a, b in self.pairs()}

    def shapley(self) -> ModalityShapley:
        """The same Shapley values as a :class:`~mmfuse.explain.shapley.ModalityShapley` (method "exact")."""
        return ModalityShapley(self.values, self.base, self.full, list(self.modalities), "exact",
                               n_evaluations=self.n_evaluations, classes=self.classes, absent=self.absent)

    @staticmethod
    def concat(results: Sequence["ModalityInteractions"]) -> "ModalityInteractions":
        if not results:
            raise ConfigError("ModalityInteractions.concat: got no results")
        return ModalityInteractions(
            torch.cat([r.values for r in results]), torch.cat([r.interactions for r in results]),
            torch.cat([r.base for r in results]), torch.cat([r.full for r in results]), list(results[0].modalities),
            sum(r.n_evaluations for r in results),
            cat_or_none([r.classes for r in results]), cat_or_none([r.absent for r in results]))


def modality_interactions(score_fn: Callable, batch: MultimodalBatch, modalities: Sequence[str] | None = None,
                          memory_mb: float = 256.0, max_rows: int | None = None) -> ModalityInteractions:
    """Exact modality Shapley values φ and pairwise Shapley interaction indices I of ``score_fn`` on ``batch``,
    from one evaluation of the 2^M coalitions (see the module docstring).

    ``score_fn``: a :func:`~mmfuse.explain.scoring.make_score_fn` result or any ``f(batch) -> Tensor[B]``;
    ``modalities``: the players (default every modality of the batch; the others stay as they are).
    More than :data:`MAX_MODALITIES` players: a ConfigError (exact enumeration only).
    """
    score_fn = as_score_fn(score_fn)
    players = resolve_players(batch, modalities, "modality_interactions")
    M = len(players)
    if M > MAX_MODALITIES:
        raise ConfigError(f"modality_interactions: {M} modalities need 2^{M} = {2 ** M} model evaluations per sample; "
                          f"the interaction index is computed exactly only for at most {MAX_MODALITIES} modalities: "
                          "pass modalities=[...] with fewer of them")
    limit = rows_per_call(batch, memory_mb, max_rows)
    classes = explained_classes(score_fn, batch)
    coalitions = all_coalitions(M)
    v = coalition_values(score_fn, batch, players, coalitions, classes, limit)  # [2^M, B(, K)]
    phi = exact_from_values(v, M)  # [M, B(, K)]
    inter = interactions_from_values(v, M)  # [M, M, B(, K)]
    nd = inter.dim()
    inter = inter.permute((2, 0, 1) + tuple(range(3, nd))).contiguous()
    return ModalityInteractions(phi.transpose(0, 1).contiguous(), inter, v[0].clone(), v[-1].clone(), players,
                                n_evaluations=int(coalitions.shape[0]) * batch.batch_size, classes=classes,
                                absent=torch.stack([~batch.mask[m].cpu() for m in players], 1))
