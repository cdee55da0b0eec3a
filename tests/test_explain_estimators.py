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
