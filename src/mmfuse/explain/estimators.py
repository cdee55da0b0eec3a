"""Shapley estimators on abstract players, shared by the modality-level and feature-level explainers.

A *coalition matrix* is a BoolTensor[K, n] (row k: which of the n players are switched on).
The caller evaluates the game on those rows and hands back values Tensor[K, *] (``*``: any
trailing dims, e.g. one column per sample); these functions turn the values into Shapley values
Tensor[n, *]. Everything is computed in float64.

* Exact enumeration: all 2^n coalitions, ``φ_j = Σ_{S ∌ j} γ(|S|) (v(S ∪ {j}) − v(S))`` with
  the Shapley weight γ(s) = s!(n−s−1)!/n! *multiplying* the marginal difference.
* Antithetic permutation sampling (the estimator of shap's ``PermutationExplainer`` used by
  MM-SHAP): every permutation is walked forward (players switched on one at a time from the
  empty coalition) and backward (switched off in the same order from the full one). The
  forward states are the prefixes ``P_k`` of the permutation, the backward states their
  complements, so one permutation costs 2(n−1) distinct evaluations plus the two endpoints,
  which are shared by every permutation (``P·(2n−2) + 2`` rows in all, against shap's
  ``P·(2n+1)``). Each walk telescopes to ``v(all) − v(none)``, hence efficiency holds for any
  number of permutations; forward + backward is exact for games with at most pairwise
  interactions. ``antithetic=False`` gives the forward-only estimator (captum's
  ``ShapleyValueSampling``), ``P·(n−1) + 2`` rows.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError

#: Above this many players exact enumeration is refused (2^n coalitions).
EXACT_HARD_LIMIT = 20


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``, or a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}; pass e.g. {name}={max(minimum, 10)}")
    return value


def permutation_evaluations(n: int, n_permutations: int, antithetic: bool = True) -> int:
    """Coalition rows the permutation estimator evaluates per sample (:func:`permutation_coalitions`).

    ``2 + P·(n−1)·2`` antithetic, ``2 + P·(n−1)`` forward only; 2 for n ≤ 1.
    """
    if n <= 1:
        return 2
    return 2 + n_permutations * (n - 1) * (2 if antithetic else 1)


def exact_is_cheaper(n: int, n_permutations: int, antithetic: bool = True) -> bool:
    """True when exact enumeration (2^n rows per sample) costs no more than the permutation estimator.

    The ``method="auto"`` rule: enumerate exactly only where it is cheaper than sampling at the asked
    accuracy (``n_permutations``); at equal cost exact wins (it has no sampling error). With the
    default 10 antithetic permutations that is n ≤ 6 (64 ≤ 102 rows; n = 7: 128 > 122).
    """
    return 2**n <= permutation_evaluations(n, n_permutations, antithetic)


def shapley_weights(n: int) -> Tensor:
    """γ(s) = s!(n−s−1)!/n! for s = 0..n−1 (Tensor[n], float64)."""
    if n == 0:
        return torch.zeros(0, dtype=torch.float64)
    return torch.tensor(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)],
        dtype=torch.float64,
    )


def all_coalitions(n: int) -> Tensor:
    """Every coalition of n players as BoolTensor[2^n, n]; row r has player j on iff bit j of r is set."""
    if n > EXACT_HARD_LIMIT:
        raise ConfigError(
            f"exact Shapley enumeration over {n} players needs 2^{n} model evaluations; "
            f"at most {EXACT_HARD_LIMIT} players are allowed: use method='permutation' or fewer features"
        )
    rows = torch.arange(2**n, dtype=torch.long)
    return ((rows.unsqueeze(1) >> torch.arange(n, dtype=torch.long)) & 1).bool()


def exact_from_values(values: Tensor, n: int) -> Tensor:
    """Shapley values Tensor[n, *] from the values Tensor[2^n, *] of :func:`all_coalitions` rows."""
    v = values.to(torch.float64)
    if v.shape[0] != 2**n:
        raise ConfigError(f"exact Shapley: expected {2 ** n} coalition values, got {v.shape[0]}")
    rows = torch.arange(2**n, dtype=torch.long)
    sizes = torch.zeros(2**n, dtype=torch.long)
    for j in range(n):
        sizes += (rows >> j) & 1
    gamma = shapley_weights(n)
    out = torch.zeros((n,) + tuple(v.shape[1:]), dtype=torch.float64)
    tail = (1,) * (v.dim() - 1)
    for j in range(n):
        without = rows[((rows >> j) & 1) == 0]
        w = gamma[sizes[without]].view((-1,) + tail)
        out[j] = (w * (v[without | (1 << j)] - v[without])).sum(0)
    return out


def random_permutations(n_permutations: int, n: int, generator: torch.Generator | None = None) -> Tensor:
    """LongTensor[P, n]: P independent uniform permutations of range(n)."""
    check_count("n_permutations", n_permutations)
    if n == 0:
        return torch.zeros(n_permutations, 0, dtype=torch.long)
    return torch.rand(n_permutations, n, generator=generator).argsort(dim=1)


def check_permutations(perms: Tensor, n: int) -> Tensor:
    """Validate user-given permutations LongTensor[P, n] (each row a permutation of range(n))."""
    p = torch.as_tensor(perms, dtype=torch.long)
    if p.dim() != 2 or p.shape[1] != n or p.shape[0] < 1:
        raise ConfigError(f"permutations must have shape [P >= 1, {n}], got {tuple(p.shape)}")
    if n and not torch.equal(p.sort(dim=1).values, torch.arange(n).expand_as(p)):
        raise ConfigError(f"permutations: every row must be a permutation of 0..{n - 1}")
    return p


def _ranks(perms: Tensor) -> Tensor:
    """rank[p, j] = position of player j in permutation p (LongTensor[P, n])."""
    return perms.argsort(dim=1)


def permutation_coalitions(perms: Tensor, antithetic: bool = True) -> Tensor:
    """Coalition rows BoolTensor[R, n] for the permutation estimator.

    Layout: row 0 = none, row 1 = all, then per permutation the prefixes P_1..P_{n−1}, then
    (antithetic) their complements. R = 2 + P·(n−1)·(2 if antithetic else 1).
    """
    P, n = perms.shape
    ends = torch.stack([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
    if n <= 1:
        return ends
    k = torch.arange(1, n).view(1, -1, 1)  # [1, n-1, 1]
    prefix = _ranks(perms).unsqueeze(1) < k  # [P, n-1, n]
    parts = [prefix, ~prefix] if antithetic else [prefix]
    body = torch.stack(parts, dim=1).reshape(-1, n)  # per permutation: forward block, backward block
    return torch.cat([ends, body])


def permutation_from_values(values: Tensor, perms: Tensor, antithetic: bool = True) -> Tensor:
    """Shapley estimates Tensor[n, *] from the values Tensor[R, *] of :func:`permutation_coalitions`."""
    v = values.to(torch.float64)
    P, n = perms.shape
    tail = tuple(v.shape[1:])
    if n == 0:
        return torch.zeros((0,) + tail, dtype=torch.float64)
    none, full = v[0], v[1]
    if n == 1:
        return (full - none).unsqueeze(0).clone()
    blocks = 2 if antithetic else 1
    body = v[2:].reshape((P, blocks, n - 1) + tail)
    ends_f = (none.expand((P, 1) + tail), full.expand((P, 1) + tail))
    fwd = torch.cat([ends_f[0], body[:, 0], ends_f[1]], dim=1)  # [P, n+1, *]: v(P_0..P_n)
    rank = _ranks(perms)  # [P, n]
    rows = torch.arange(P).unsqueeze(1)
    total = fwd[rows, rank + 1] - fwd[rows, rank]  # [P, n, *] forward marginals
    if antithetic:
        bwd = torch.cat([ends_f[1], body[:, 1], ends_f[0]], dim=1)  # v(all \ P_0 .. all \ P_n)
        total = total + (bwd[rows, rank] - bwd[rows, rank + 1])
    return total.sum(0) / (P * blocks)


# --- permutations of structured players: one order per group (modality), all interleavings at once ---

def interleave_grid_size(sizes: list[int]) -> int:
    """Rows of one draw of :func:`interleave_from_values`: Π_m (n_m + 1)."""
    return math.prod(n + 1 for n in sizes)


def interleave_weights(sizes: list[int], m: int) -> Tensor:
    """See :func:`_interleave_weights` (cached per sizes; the result must not be modified)."""
    return _interleave_weights(tuple(int(n) for n in sizes), int(m))


@functools.lru_cache(maxsize=256)
def _interleave_weights(sizes: tuple[int, ...], m: int) -> Tensor:
    """W_m Tensor[grid with axis m of size n_m, the others n_j + 1] (float64).

    Players come in groups (modalities) of sizes n_1..n_G. A uniform permutation of all N players is a
    uniform order within each group plus a uniform interleaving of the groups. For fixed group orders,
    ``W_m[k−1, l_{−m}]`` is the probability, over the interleavings, that the k-th player of group m is
    switched on when exactly l_j players of every other group j are already on:
    ``C(k−1+L; k−1, l) · C(n_m−k + Σ(n_j−l_j); n_m−k, n−l) / C(N; n_1..n_G)`` (multinomials, L = Σ_j l_j).
    For every k the weights sum to 1.
    """
    G = len(sizes)
    N = sum(sizes)

    def lf(x: Tensor) -> Tensor:
        return torch.lgamma(x + 1.0)

    axes = []
    for i, n in enumerate(sizes):
        shape = [1] * G
        shape[i] = n if i == m else n + 1
        start = 1 if i == m else 0
        axes.append(torch.arange(start, start + shape[i], dtype=torch.float64).view(shape))
    k = axes[m]
    before = k - 1.0
    after = sizes[m] - k
    log_w = -lf(before) - lf(after)
    total_before, total_after = before, after
    for j, (n, a) in enumerate(zip(sizes, axes)):
        if j == m:
            continue
        log_w = log_w - lf(a) - lf(n - a)
        total_before = total_before + a
        total_after = total_after + (n - a)
    log_w = log_w + lf(total_before) + lf(total_after)
    log_w = log_w - (math.lgamma(N + 1) - sum(math.lgamma(n + 1) for n in sizes))
    return log_w.exp()


def interleave_from_values(values: Tensor, orders: list[Tensor], per_draw: bool = False) -> Tensor:
    """Shapley estimates Tensor[N, *] from the grid values of :func:`interleave_coalitions`.

    ``orders[m]``: LongTensor[D, n_m], one order of group m's players per draw (player ids local to the group;
    global id = offset of the group + local id, groups in list order). ``values``: Tensor[D·Π(n_m+1), *], draw-major,
    then the grid row-major over (k_1, .., k_G) where k_m = how many of group m's players (the first k_m of its
    order) are on. Each draw's estimate is the *exact* expectation of the permutation estimator over all
    interleavings of the groups' orders (a Rao–Blackwellised permutation sample): unbiased, and Σ φ = v(all) − v(none)
    for every draw. ``per_draw=True``: each draw's estimate, Tensor[D, N, *] (their mean is the estimate).
    """
    sizes = [int(o.shape[1]) for o in orders]
    D = int(orders[0].shape[0]) if orders else 0
    v = values.to(torch.float64)
    tail = tuple(v.shape[1:])
    grid = v.reshape((D,) + tuple(n + 1 for n in sizes) + tail)
    if per_draw:
        out = torch.zeros((D, sum(sizes)) + tail, dtype=torch.float64)
        rows = torch.arange(D).unsqueeze(1)
    else:
        out = torch.zeros((sum(sizes),) + tail, dtype=torch.float64)
    off = 0
    extra = (1,) * len(tail)
    for m, (n, order) in enumerate(zip(sizes, orders)):
        if n == 0:
            continue
        ax = 1 + m
        delta = grid.narrow(ax, 1, n) - grid.narrow(ax, 0, n)  # [D, ..., n (axis m), ..., *]
        w = interleave_weights(sizes, m).view((1,) + tuple(interleave_weights_shape(sizes, m)) + extra)
        summed = (w * delta).movedim(ax, 1).reshape((D, n, -1) + tail).sum(2)  # [D, n, *]
        if per_draw:
            out[rows, off + order] = summed
        else:
            out.index_add_(0, off + order.reshape(-1), summed.reshape((D * n,) + tail))
        off += n
    return out if per_draw else out / max(D, 1)


def interleave_weights_shape(sizes: list[int], m: int) -> list[int]:
    return [n if i == m else n + 1 for i, n in enumerate(sizes)]


def interleave_coalitions(orders: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The grid of :func:`interleave_from_values` as per-group patterns: for group m, ``patterns[m]``
    BoolTensor[D·(n_m+1), n_m] (row d·(n_m+1) + k: the first k players of draw d's order on) and
    ``index[m]`` LongTensor[D·Π(n_j+1)]: the pattern row of group m for every grid row."""
    sizes = [int(o.shape[1]) for o in orders]
    D = int(orders[0].shape[0]) if orders else 0
    patterns, index = [], []
    dims = [n + 1 for n in sizes]
    for m, (n, order) in enumerate(zip(sizes, orders)):
        ranks = order.argsort(dim=1)  # [D, n]
        k = torch.arange(n + 1).view(1, -1, 1)
        patterns.append((ranks.unsqueeze(1) < k).reshape(D * (n + 1), n))
        shape = [1] * (len(sizes) + 1)
        shape[0], shape[1 + m] = D, n + 1
        idx = (torch.arange(D).view(-1, *([1] * len(sizes))) * (n + 1)
               + torch.arange(n + 1).view(shape[1:]).unsqueeze(0))
        index.append(idx.expand([D] + dims).reshape(-1))
    return patterns, index


# --- automatic allocation of orders between modalities (a pilot, then the cost-optimal rule) ---

def pilot_levels(G: int) -> Tensor:
    """LongTensor[K, G]: the pilot's draws as levels (0 / 1 = the first / second of two orders per group).

    Draws ``d1`` = all 0 and ``d2`` = all 1 (ordinary draws), then the *probes* ``h_m`` = e_m
    (only group m at level 1: d1's orders with group m's order from d2) for m < G − 1, and for every m from G = 4
    on. A probe needs no new encodes (its masked inputs are d1's and d2's). With them some pair of draws shares no
    order ((d1, d2)) and, for every group, some pair shares only that group's order ((d2, h_m); for G ≤ 3 the last
    group's by (d1, h_0) (G = 2) or (h_0, h_1) (G = 3)): what :func:`pilot_statistics` needs.
    K = G + 1 for G ≤ 3, G + 2 from G = 4 on."""
    rows = [torch.zeros(G, dtype=torch.long), torch.ones(G, dtype=torch.long)]
    for m in range(G if G >= 4 else G - 1):
        h = torch.zeros(G, dtype=torch.long)
        h[m] = 1
        rows.append(h)
    return torch.stack(rows)


def pilot_statistics(per_draw: Tensor, owner: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
    """Variance components of the interleave estimator from the pilot's per-draw estimates.

    ``per_draw`` Tensor[K, N, *]: one estimate per pilot draw (``levels`` LongTensor[K, G]); ``owner``
    LongTensor[N]: the group of each player. For two draws that share exactly the groups S (same order),
    ``E[½‖φ_d − φ_d'‖²] = V − V_S`` (V: the variance of one draw's estimate, V_S: the part explained by the
    orders of S). Returns ``(V Tensor[G], W Tensor[G, G])`` summed over each group's players (and trailing
    dims): ``V[g]`` from the pairs sharing no order, ``W[m, g]`` = V − V_{m} from the pairs sharing only m's
    order; so the first-order (main-effect) variance of m's order on group g is ``V[g] − W[m, g]``."""
    K, G = levels.shape
    N = per_draw.shape[1]
    a, b = torch.triu_indices(K, K, 1)
    shared = levels[a] == levels[b]  # [pairs, G]
    n_shared = shared.sum(1)
    d = 0.5 * (per_draw[a] - per_draw[b]).to(torch.float64).pow(2).reshape(a.numel(), N, -1).sum(2)  # [pairs, N]
    by_group = torch.zeros(a.numel(), G, dtype=torch.float64).index_add_(1, owner, d)  # [pairs, G]
    none = n_shared == 0
    V = by_group[none].sum(0) / max(int(none.sum()), 1)
    one = (shared & (n_shared == 1).unsqueeze(1)).to(torch.float64)  # [pairs, G]: the one group shared
    W = (one.T @ by_group) / one.sum(0).clamp(min=1).unsqueeze(1)
    return V, W


def allocate_orders(V: Tensor, W: Tensor, n_players: Tensor, order_cost: Tensor, draw_cost: float, draws: int,
                    lowest: int, highest: int) -> list[int]:
    """Distinct orders per group for an interleave design of ``draws`` draws: the cost-optimal (Neyman) rule.

    A design gives group m ``Q_m`` distinct orders (each serving about ``draws / Q_m`` draws). With the first-order
    variances ``V1[m, g] = max(V[g] − W[m, g], 0)`` (see :func:`pilot_statistics`) and the rest
    ``I[g] = max(V[g] − Σ_m V1[m, g], 0)`` (interactions between groups' orders, new in every draw), the variance of
    the mean estimate on group g's players is ``Var_g(Q) = Σ_m V1[m, g] / Q_m + I[g] / draws``, the expected mean
    |error| ∝ ``Σ_g sqrt(n_g · Var_g)`` (``n_g`` = ``n_players[g]``) and the cost
    ``C(Q) = Σ_m order_cost[m] · Q_m + draw_cost · draws``. Returns the Q (integers in [lowest, highest]) with the
    least ``error² · cost`` (the time needed for a given error), found by coordinate descent from Q = highest;
    ties go to the cheaper design. With independent groups (V1 diagonal, no interactions, no draw cost) the
    optimum is Q_m ∝ (sqrt(n_m V_m) / cost_m)^(2/3) (Lagrange; the mean-|error| counterpart of Neyman's
    σ_m / sqrt(cost_m), which minimises the summed variance)."""
    G = V.shape[0]
    V1t = (V.to(torch.float64).unsqueeze(0) - W.to(torch.float64)).clamp(min=0)
    inter = (V.to(torch.float64) - V1t.sum(0)).clamp(min=0).tolist()
    V1, n, c = V1t.tolist(), [float(x) for x in n_players.tolist()], [float(x) for x in order_cost.tolist()]

    def score(q: list[int]) -> tuple[float, float]:  # plain floats: called ~G·(highest − lowest) times a pass
        err = 0.0
        for g in range(G):
            var = sum(V1[m][g] / q[m] for m in range(G)) + inter[g] / draws
            err += math.sqrt(max(n[g] * var, 0.0))
        cost = sum(c[m] * q[m] for m in range(G)) + draw_cost * draws
        return err * err * cost, cost

    q = [highest] * G
    best = score(q)
    for _ in range(8):
        changed = False
        for m in range(G):
            for cand in range(lowest, highest + 1):
                if cand == q[m]:
                    continue
                trial = q[:m] + [cand] + q[m + 1:]
                s = score(trial)
                # a real improvement (not float noise: the same design whatever the rounding of the pilot's values),
                # or an equal score at a lower cost
                if s[0] < best[0] * (1 - 1e-9) or (s[0] <= best[0] * (1 + 1e-9) and s[1] < best[1]):
                    best, q, changed = s, trial, True
        if not changed:
            break
    return q


def balanced_assignment(uses: Tensor, draws: int) -> Tensor:
    """LongTensor[draws]: for each new draw the order (index into ``uses``, LongTensor[Q]: how often each order
    already serves) used least so far (ties: the lowest index); ``uses`` is updated in place."""
    counts = [int(u) for u in uses.tolist()]
    out = []
    for _ in range(draws):
        j = counts.index(min(counts))  # first minimum
        out.append(j)
        counts[j] += 1
    uses.copy_(torch.tensor(counts, dtype=uses.dtype))
    return torch.tensor(out, dtype=torch.long)


def distinct_assignment(sizes: Sequence[int], draws: int, used: int = 2, cap: int = 4096) -> list[Tensor]:
    """For G modalities with ``sizes[j]`` orders each (the first ``used`` already serve draws ``d`` = (d, d, …, d),
    d < used), the order of every modality for each of ``draws`` new draws: list of G LongTensor[draws].
    Per modality the choice is the least used order (as :func:`balanced_assignment`, so every order serves about
    equally often); among the least used, the combination that earlier draws used least (the first in
    lexicographic order; at most ``cap`` looked at). So no combination repeats while the least-used orders still give a new one, and then
    they cycle evenly. With one pattern for every modality, Q = (2, 2) would repeat the pilot's (0, 0), (1, 1)
    for ever; here it draws (0, 1), (1, 0) first. The index map depends on ``sizes`` and
    ``draws`` only, never on values, so each draw still pairs independent uniform orders per modality."""
    G = len(sizes)
    counts = [[1 if i < used else 0 for i in range(int(q))] for q in sizes]
    seen = {(d,) * G: 1 for d in range(used)}  # how often each combination has served
    out: list[list[int]] = [[] for _ in range(G)]
    for _ in range(draws):
        cands = []
        for c in counts:
            low = min(c)
            cands.append([i for i, x in enumerate(c) if x == low])
        pick, best = None, None
        for combo in itertools.islice(itertools.product(*cands), cap):
            k = seen.get(combo, 0)
            if best is None or k < best:
                pick, best = combo, k
                if k == 0:
                    break
        seen[pick] = seen.get(pick, 0) + 1
        for j, i in enumerate(pick):
            out[j].append(i)
            counts[j][i] += 1
    return [torch.tensor(o, dtype=torch.long) for o in out]
