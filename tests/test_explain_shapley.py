"""Modality-level Shapley values (absent modality = batch mask) and the score functions."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmfuse.batch import MultimodalBatch
from mmfuse.errors import ConfigError, MissingModalityError, ShapeError
from mmfuse.explain import make_score_fn, modality_shapley


def make_batch(names, B=4, seed=0, absent=None):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, 3, generator=g, dtype=torch.float64) + 1.0 for m in names}
    mask = {m: torch.ones(B, dtype=torch.bool) for m in names}
    for m, rows in (absent or {}).items():
        mask[m][rows] = False
        inputs[m][rows] = 0
    return MultimodalBatch(inputs, mask)


def per_modality(batch):
    """Tensor[B, M] of a per-modality summary that is 0 when the modality is absent."""
    return torch.stack([batch.inputs[m].sum(1) * batch.mask[m] for m in batch.modalities], 1)


def nonlinear_score(batch):
    z = per_modality(batch)
    return torch.tanh(z).prod(1) + torch.sin(z.sum(1)) + (z[:, 0] * z[:, -1]) ** 2


def brute_force(score, batch, names):
    """Average marginal contribution over all M! orders, one sample row at a time (no batching)."""
    M, B = len(names), batch.batch_size
    phi = torch.zeros(B, M, dtype=torch.float64)
    for b in range(B):
        one = batch.select([b])

        def value(on):
            return float(score(one.with_mask({m: torch.tensor([m in on]) for m in names}))[0])

        for order in itertools.permutations(names):
            on = set()
            for m in order:
                before = value(on)
                on.add(m)
                phi[b, names.index(m)] += value(on) - before
    return phi / math.factorial(M)


def test_two_modalities_by_hand():
    batch = make_batch(["audio", "image"], B=3)
    r = modality_shapley(nonlinear_score, batch, method="exact")
    f = lambda a, i: nonlinear_score(batch.with_mask({"audio": torch.full((3,), a), "image": torch.full((3,), i)}))  # noqa: E731
    f00, f10, f01, f11 = f(False, False), f(True, False), f(False, True), f(True, True)
    hand_audio = 0.5 * ((f10 - f00) + (f11 - f01))
    hand_image = 0.5 * ((f01 - f00) + (f11 - f10))
    torch.testing.assert_close(r.values, torch.stack([hand_audio, hand_image], 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(r.base, f00)
    torch.testing.assert_close(r.full, f11)


def test_four_modalities_vs_brute_force_and_efficiency():
    names = ["a", "b", "c", "d"]
    batch = make_batch(names, B=3, seed=1)
    r = modality_shapley(nonlinear_score, batch)
    assert r.method == "exact" and r.modalities == names
    torch.testing.assert_close(r.values, brute_force(nonlinear_score, batch, names), rtol=0, atol=1e-12)
    assert r.efficiency_gap().abs().max() < 1e-12


def test_batched_equals_unbatched():
    names = ["a", "b", "c"]
    batch = make_batch(names, B=5, seed=2)
    big = modality_shapley(nonlinear_score, batch, max_rows=4096)
    small = modality_shapley(nonlinear_score, batch, max_rows=1)
    torch.testing.assert_close(big.values, small.values, rtol=0, atol=1e-12)
    perm_big = modality_shapley(nonlinear_score, batch, method="permutation", n_permutations=3, max_rows=4096)
    perm_small = modality_shapley(nonlinear_score, batch, method="permutation", n_permutations=3, max_rows=2)
    torch.testing.assert_close(perm_big.values, perm_small.values, rtol=0, atol=1e-12)


def pairwise_score(batch):
    z = per_modality(batch)
    return 0.5 + z @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64) + z[:, 0] * z[:, 1] - 2 * z[:, 2] * z[:, 3]


@pytest.mark.parametrize("P", [1, 10])
def test_permutation_exact_on_pairwise_and_efficient(P):
    batch = make_batch(["a", "b", "c", "d"], B=4, seed=3)
    exact = modality_shapley(pairwise_score, batch, method="exact")
    perm = modality_shapley(pairwise_score, batch, method="permutation", n_permutations=P, seed=7)
    torch.testing.assert_close(perm.values, exact.values, rtol=0, atol=1e-6)
    assert perm.efficiency_gap().abs().max() < 1e-12
    nonlin = modality_shapley(nonlinear_score, batch, method="permutation", n_permutations=P)
    assert nonlin.efficiency_gap().abs().max() < 1e-12


def test_ignored_modality_and_absent_samples_get_zero():
    batch = make_batch(["a", "b", "c"], B=4, absent={"a": [1]})
    score = lambda b: torch.tanh(per_modality(b)[:, 0]) * per_modality(b)[:, 1]  # ignores c  # noqa: E731
    r = modality_shapley(score, batch)
    assert r.values[:, 2].abs().max() == 0
    assert r.values[1, 0] == 0  # a is absent in sample 1: null player there
    shares = r.shares()
    assert shares[1, 0].isnan()  # absent modality: no share (averages skip it)
    ok = [0, 2, 3]
    assert float(shares[ok, 2].abs().max()) == 0
    torch.testing.assert_close(shares[ok].sum(1), torch.ones(3, dtype=torch.float64))
    assert ((shares[ok] >= 0) & (shares[ok] <= 1)).all()


def test_players_subset_keeps_others():
    batch = make_batch(["a", "b", "c"], B=2)
    r = modality_shapley(nonlinear_score, batch, modalities=["c", "a"])
    assert r.modalities == ["a", "c"]
    torch.testing.assert_close(r.full, nonlinear_score(batch))
    torch.testing.assert_close(r.base, nonlinear_score(batch.with_mask({"a": torch.zeros(2), "c": torch.zeros(2)})))


def test_shares_invariant_to_affine_map():
    batch = make_batch(["a", "b", "c"], B=3, seed=5)
    s1 = modality_shapley(nonlinear_score, batch).shares()
    s2 = modality_shapley(lambda b: -3.0 * nonlinear_score(b) + 7.0, batch).shares()
    torch.testing.assert_close(s1, s2, rtol=0, atol=1e-12)


def test_auto_switches_to_permutations_above_exact_max():
    batch = make_batch(["a", "b", "c"], B=2)
    r = modality_shapley(nonlinear_score, batch, exact_max=2, n_permutations=2)
    assert r.method == "permutation" and r.n_evaluations == (2 + 2 * 2 * 2) * 2
    assert r.efficiency_gap().abs().max() < 1e-12


def test_seeded_permutations_are_deterministic():
    batch = make_batch(["a", "b", "c"], B=2)
    r1 = modality_shapley(nonlinear_score, batch, method="permutation", n_permutations=2, seed=4)
    r2 = modality_shapley(nonlinear_score, batch, method="permutation", n_permutations=2, seed=4)
    assert torch.equal(r1.values, r2.values)


class TinyModel(nn.Module):
    """A 2-modality classifier with its own missing-modality path (mask → contribution dropped)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.ModuleDict({"a": nn.Linear(3, 4), "b": nn.Linear(3, 4)})

    def forward(self, batch):
        h = sum(torch.tanh(self.lin[m](batch.inputs[m].float())) * batch.mask[m].unsqueeze(1) for m in ("a", "b"))
        return SimpleNamespace(logits=h * 3)


def test_make_score_fn_targets():
    model = TinyModel()
    batch = make_batch(["a", "b"], B=4)
    logits = model(batch).logits
    pred = logits.argmax(1)
    sf = make_score_fn(model, "predicted")
    torch.testing.assert_close(sf(batch).float(), logits.softmax(1)[torch.arange(4), pred])
    assert torch.equal(sf.classes(batch), pred)
    r = modality_shapley(sf, batch)
    torch.testing.assert_close(r.full.float(), logits.softmax(1)[torch.arange(4), pred])
    # the predicted class is fixed on the full input: the empty coalition scores that same class
    empty = model(batch.with_mask({"a": torch.zeros(4), "b": torch.zeros(4)})).logits.softmax(1)
    torch.testing.assert_close(r.base.float(), empty[torch.arange(4), pred])
    torch.testing.assert_close(make_score_fn(model, "class", 2)(batch), logits.softmax(1)[:, 2])
    torch.testing.assert_close(make_score_fn(model, "logit", 1)(batch), logits[:, 1])
    torch.testing.assert_close(make_score_fn(model, "logit")(batch), logits.max(1).values)


def test_bad_inputs():
    batch = make_batch(["a", "b"], B=2)
    with pytest.raises(MissingModalityError, match="unknown modality 'x'.*\\['a', 'b'\\]"):
        modality_shapley(nonlinear_score, batch, modalities=["a", "x"])
    with pytest.raises(ConfigError, match="n_permutations"):
        modality_shapley(nonlinear_score, batch, method="permutation", n_permutations=0)
    with pytest.raises(ConfigError, match="method"):
        modality_shapley(nonlinear_score, batch, method="kernel")
    with pytest.raises(ShapeError, match="Tensor\\[B\\]"):
        modality_shapley(lambda b: per_modality(b), batch)
    with pytest.raises(ConfigError, match="class_index"):
        make_score_fn(TinyModel(), "class")
    with pytest.raises(ConfigError, match="target"):
        make_score_fn(TinyModel(), "probability")
    with pytest.raises(ConfigError, match="out of range"):
        make_score_fn(TinyModel(), "class", 9)(batch)
