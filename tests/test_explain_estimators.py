"""Shapley estimators on abstract games (no model): oracles from the MM-SHAP spec §7.5."""

import itertools
import math

import pytest
import torch

from mmfuse.errors import ConfigError
from mmfuse.explain.estimators import (
    all_coalitions,
    check_permutations,
    exact_from_values,
    permutation_coalitions,
    permutation_from_values,
    random_permutations,
    shapley_weights,
)


def brute_force(game, n):
    """Shapley values by averaging marginal contributions over all n! orders (independent of the subset formula)."""
    phi = torch.zeros(n, dtype=torch.float64)
    for order in itertools.permutations(range(n)):
        on = torch.zeros(n, dtype=torch.bool)
        prev = game(on.clone().unsqueeze(0))[0]
        for j in order:
            on[j] = True
            cur = game(on.clone().unsqueeze(0))[0]
            phi[j] += cur - prev
            prev = cur
    return phi / math.factorial(n)


def pairwise_game(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, generator=g, dtype=torch.float64)
    b = torch.randn(n, n, generator=g, dtype=torch.float64).triu(1)
    c = 0.3

    def game(z):
        zf = z.to(torch.float64)
        return c + zf @ a + ((zf @ b) * zf).sum(1)

    return game, a, b


def nonlinear_game(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, 3, generator=g, dtype=torch.float64)

    def game(z):
        h = torch.tanh(z.to(torch.float64) @ w)
        return h.prod(1) + torch.sin(h.sum(1))

    return game


def estimate(game, perms, antithetic=True):
    rows = permutation_coalitions(perms, antithetic)
    return permutation_from_values(game(rows), perms, antithetic), game(rows)


def test_weights_sum_to_one_over_subsets():
    n = 5
    w = shapley_weights(n)
    total = sum(math.comb(n - 1, s) * float(w[s]) for s in range(n))
    assert total == pytest.approx(1.0)


def test_exact_enumeration_matches_brute_force_on_nonlinear_game():
    n = 4
    game = nonlinear_game(n)
    phi = exact_from_values(game(all_coalitions(n)), n)
    torch.testing.assert_close(phi, brute_force(game, n), rtol=0, atol=1e-12)


@pytest.mark.parametrize("P", [1, 10])
def test_permutation_estimator_is_exactly_efficient(P):
    n = 7
    game = nonlinear_game(n)
    perms = random_permutations(P, n, torch.Generator().manual_seed(3))
    phi, v = estimate(game, perms)
    assert abs(float(phi.sum()) - float(v[1] - v[0])) < 1e-12


@pytest.mark.parametrize("P", [1, 3])
def test_antithetic_is_exact_for_pairwise_interactions(P):
    n = 6
    game, a, b = pairwise_game(n)
    perms = random_permutations(P, n, torch.Generator().manual_seed(P))
    phi, _ = estimate(game, perms)
    exact = exact_from_values(game(all_coalitions(n)), n)
    torch.testing.assert_close(phi, exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(exact, a + 0.5 * (b + b.T).sum(1), rtol=0, atol=1e-10)


def test_forward_only_is_efficient_but_not_exact():
    n = 6
    game, _, _ = pairwise_game(n)
    perms = random_permutations(1, n, torch.Generator().manual_seed(0))
    phi, v = estimate(game, perms, antithetic=False)
    assert abs(float(phi.sum()) - float(v[1] - v[0])) < 1e-12
    assert not torch.allclose(phi, exact_from_values(game(all_coalitions(n)), n), atol=1e-6)


def test_row_counts_share_endpoints():
    perms = random_permutations(10, 5, torch.Generator().manual_seed(0))
    assert permutation_coalitions(perms).shape == (2 + 10 * 2 * 4, 5)
    assert permutation_coalitions(perms, antithetic=False).shape == (2 + 10 * 4, 5)


def test_one_and_zero_players():
    game = lambda z: 2.0 + 3.0 * z.to(torch.float64).sum(1)  # noqa: E731
    perms = random_permutations(4, 1, torch.Generator().manual_seed(0))
    phi, _ = estimate(game, perms)
    assert phi.tolist() == [3.0]
    perms0 = random_permutations(2, 0)
    phi0, _ = estimate(game, perms0)
    assert phi0.shape == (0,)
    assert exact_from_values(game(all_coalitions(0)), 0).shape == (0,)


def test_trailing_dims_are_independent_games():
    n = 4
    g1, g2 = nonlinear_game(n, 1), nonlinear_game(n, 2)
    perms = random_permutations(3, n, torch.Generator().manual_seed(0))
    rows = permutation_coalitions(perms)
    both = permutation_from_values(torch.stack([g1(rows), g2(rows)], 1), perms)
    torch.testing.assert_close(both[:, 0], permutation_from_values(g1(rows), perms))
    torch.testing.assert_close(both[:, 1], permutation_from_values(g2(rows), perms))


def test_bad_inputs():
    with pytest.raises(ConfigError, match="n_permutations"):
        random_permutations(0, 3)
    with pytest.raises(ConfigError, match="permutation of 0..2"):
        check_permutations(torch.tensor([[0, 0, 1]]), 3)
    with pytest.raises(ConfigError, match="shape"):
        check_permutations(torch.tensor([[0, 1]]), 3)
    with pytest.raises(ConfigError, match="at most 20 players"):
        all_coalitions(21)


def test_auto_picks_exact_only_where_it_is_cheaper_than_sampling():
    """method="auto": exact iff 2^M <= the permutation estimator's rows per sample, for M = 2..10."""
    from mmfuse.batch import MultimodalBatch
    from mmfuse.explain import modality_shapley
    from mmfuse.explain.estimators import exact_is_cheaper, permutation_evaluations

    # the estimator's own count: the rows permutation_coalitions builds
    for M in range(1, 11):
        for P in (1, 3, 10):
            for anti in (True, False):
                rows = permutation_coalitions(random_permutations(P, M, torch.Generator().manual_seed(0)), anti)
                assert permutation_evaluations(M, P, anti) == rows.shape[0]
    # default budget (10 antithetic permutations: 2 + 10·(M−1)·2 rows): exact up to M = 6 only
    assert [M for M in range(2, 11) if exact_is_cheaper(M, 10)] == [2, 3, 4, 5, 6]
    assert permutation_evaluations(10, 10) == 182 and 2**10 == 1024  # the numbers
    assert [M for M in range(2, 11) if exact_is_cheaper(M, 1)] == [2]  # 4 <= 4; M = 3: 8 > 6
    assert [M for M in range(2, 11) if exact_is_cheaper(M, 30)] == list(range(2, 9))  # 256 <= 422; 512 > 482
    assert [M for M in range(2, 11) if exact_is_cheaper(M, 10, antithetic=False)] == [2, 3, 4, 5]

    def score(batch):  # a non-additive game, so the two methods give different numbers
        xs = [batch.inputs[m][:, 0] for m in sorted(batch.inputs)]
        return torch.stack(xs, 1).prod(1) + torch.stack(xs, 1).sum(1)

    for M in range(2, 11):
        names = [f"m{i}" for i in range(M)]
        B = 2
        batch = MultimodalBatch({m: torch.rand(B, 1) + 0.5 for m in names},
                                {m: torch.ones(B, dtype=torch.bool) for m in names}, None)
        for P in (1, 10):
            r = modality_shapley(score, batch, n_permutations=P)
            want_exact = 2**M <= 2 + P * (M - 1) * 2
            assert r.method == ("exact" if want_exact else "permutation"), (M, P)
            assert r.n_evaluations == B * (2**M if want_exact else permutation_evaluations(M, P))
    # exact_max still caps the choice, and an explicit method wins
    assert modality_shapley(score, batch, exact_max=1).method == "permutation"
    assert modality_shapley(score, batch, method="exact").method == "exact"


# --- reuse="auto": the pilot's variance components and the cost-optimal allocation ---


@pytest.mark.parametrize("G", [2, 3, 4, 5])
def test_pilot_levels_identify_every_group(G):
    """Some pair of pilot draws shares no order, and for every group some pair shares only that group's order."""
    from mmfuse.explain.estimators import pilot_levels

    lv = pilot_levels(G)
    assert lv.shape == (G + 1 if G <= 3 else G + 2, G)
    shared = [frozenset((lv[a] == lv[b]).nonzero().flatten().tolist())
              for a in range(lv.shape[0]) for b in range(a + 1, lv.shape[0])]
    assert frozenset() in shared
    assert all(frozenset([m]) in shared for m in range(G))


def test_pilot_statistics_separate_additive_order_effects():
    """Per-draw estimates = μ + α(order of group 0) + β(order of group 1), α on group 0's players and β on group 1's:
    V = ½‖α0−α1‖² + ½‖β0−β1‖² per group, and V − W[m] = the part of group m's order (closed form)."""
    from mmfuse.explain.estimators import pilot_levels, pilot_statistics

    g = torch.Generator().manual_seed(0)
    owner = torch.tensor([0, 0, 0, 1, 1])
    alpha = torch.randn(2, 5, generator=g, dtype=torch.float64) * (owner == 0)  # group 0's order moves its players
    beta = torch.randn(2, 5, generator=g, dtype=torch.float64) * (owner == 1)
    lv = pilot_levels(2)
    per = torch.stack([1.0 + alpha[lv[d, 0]] + beta[lv[d, 1]] for d in range(lv.shape[0])])
    V, W = pilot_statistics(per, owner, lv)
    va = 0.5 * (alpha[0] - alpha[1]).pow(2)
    vb = 0.5 * (beta[0] - beta[1]).pow(2)
    torch.testing.assert_close(V, torch.stack([va[:3].sum(), vb[3:].sum()]))
    first = V.unsqueeze(0) - W  # [m, g]: the first-order variance of m's order on group g
    torch.testing.assert_close(first, torch.diag(V), rtol=0, atol=1e-12)


def test_allocation_is_the_cost_optimal_rule():
    """Independent groups (each group's error from its own orders only), no draw cost: minimising
    (Σ_g sqrt(n_g V_g / Q_g))² · Σ_g c_g Q_g gives Q_g ∝ (sqrt(n_g V_g) / c_g)^(2/3) (Lagrange):
    V = (729, 1), equal costs -> Q = 9 : 1; and the coordinate descent equals brute force on a 3-group case."""
    import itertools

    from mmfuse.explain.estimators import allocate_orders

    V = torch.tensor([729.0, 1.0], dtype=torch.float64)
    W = V.unsqueeze(0) - torch.diag(V)  # first-order variance of m on g: V[g] on the diagonal only
    q = allocate_orders(V, W, torch.tensor([1, 1]), torch.tensor([1.0, 1.0]), 0.0, 9, 1, 9)
    assert q == [9, 1]
    # expensive group 0: costs (27, 1) with V = (729, 1): (27 / 27)^(2/3) : 1 -> equal orders
    q = allocate_orders(V, W, torch.tensor([1, 1]), torch.tensor([27.0, 1.0]), 0.0, 6, 1, 6)
    assert q[0] == q[1]

    g = torch.Generator().manual_seed(1)
    V3 = torch.rand(3, generator=g, dtype=torch.float64) + 0.1
    W3 = V3.unsqueeze(0) - torch.rand(3, 3, generator=g, dtype=torch.float64) * V3 / 3
    n, cost, dc = torch.tensor([4, 9, 2]), torch.tensor([1.0, 20.0, 3.0]), 5.0

    def objective(q):
        V1 = (V3.unsqueeze(0) - W3).clamp(min=0)
        inter = (V3 - V1.sum(0)).clamp(min=0)
        var = (V1 / torch.tensor(q, dtype=torch.float64).unsqueeze(1)).sum(0) + inter / 8
        return float((n * var).sqrt().sum()) ** 2 * (float((cost * torch.tensor(q)).sum()) + dc * 8)

    best = min(itertools.product(range(2, 9), repeat=3), key=objective)
    got = allocate_orders(V3, W3, n, cost, dc, 8, 2, 8)
    assert objective(got) == pytest.approx(objective(list(best)), rel=1e-12)


def test_balanced_assignment_fills_the_least_used_orders():
    from mmfuse.explain.estimators import balanced_assignment

    uses = torch.tensor([1, 2, 0, 0])
    out = balanced_assignment(uses, 6)
    assert out.tolist() == [2, 3, 0, 2, 3, 0]
    assert uses.tolist() == [3, 2, 2, 2]


def test_distinct_assignment_does_not_repeat_the_pilot_pairs():
    from mmfuse.explain.estimators import distinct_assignment

    # Q = (2, 2): one pattern for both modalities would give (0, 0), (1, 1), (0, 0), ... (the pilot's pairs)
    a, b = distinct_assignment([2, 2], 6)
    pairs = list(zip(a.tolist(), b.tolist()))
    assert pairs[:2] == [(0, 1), (1, 0)]  # the two pairs the pilot did not draw, first
    assert sorted(pairs) == [(0, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, 1)]  # then the 4 pairs cycle evenly
    # a modality's orders stay balanced (least used first), and no combination repeats while one is new
    sizes, draws = [3, 2, 4], 20
    picks = distinct_assignment(sizes, draws)
    combos = [(0, 0, 0), (1, 1, 1)] + list(zip(*(p.tolist() for p in picks)))
    assert len(set(combos)) == len(combos)  # 22 draws < 3*2*4 = 24 combinations: all distinct
    for q, p in zip(sizes, picks):
        uses = torch.bincount(p, minlength=q) + (torch.arange(q) < 2)
        assert int(uses.max() - uses.min()) <= 1
    assert [p.tolist() for p in distinct_assignment(sizes, draws)] == [p.tolist() for p in picks]  # deterministic


def test_interleave_per_draw_estimates_average_to_the_estimate():
    from mmfuse.explain.estimators import interleave_coalitions, interleave_from_values

    sizes = [2, 3]
    game = nonlinear_game(5, 3)
    g = torch.Generator().manual_seed(0)
    ords = [random_permutations(4, k, g) for k in sizes]
    pats, idx = interleave_coalitions(ords)
    v = game(torch.cat([pats[m][idx[m]] for m in range(2)], 1))
    per = interleave_from_values(v, ords, per_draw=True)
    assert per.shape == (4, 5)
    torch.testing.assert_close(per.mean(0), interleave_from_values(v, ords), rtol=0, atol=1e-14)
    full_minus_none = v.view(4, -1)[:, -1] - v.view(4, -1)[:, 0]
    torch.testing.assert_close(per.sum(1), full_minus_none, rtol=0, atol=1e-12)  # efficiency per draw
