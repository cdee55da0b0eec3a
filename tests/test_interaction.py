"""Pairwise modality Shapley interaction index: closed forms of known games and a cross-check against shapiq."""

from itertools import combinations

import numpy as np
import pytest
import torch

from mmfuse.batch import MultimodalBatch
from mmfuse.errors import ConfigError
from mmfuse.explain.interaction import interactions_from_values, modality_interactions, pair_name
from mmfuse.explain.shapley import modality_shapley


def make_batch(M: int, B: int = 5, seed: int = 0) -> MultimodalBatch:
    g = torch.Generator().manual_seed(seed)
    names = [f"m{i}" for i in range(M)]
    inputs = {m: torch.rand(B, 2, generator=g, dtype=torch.float64) + 0.5 for m in names}
    return MultimodalBatch(inputs, {m: torch.ones(B, dtype=torch.bool) for m in names})


def polynomial_game(a, b, c):
    """A model-free score on a batch: v(S) = Σ_{i∈S} a_i x_i + Σ_{i<j∈S} b_ij x_i x_j + Σ_{i<j<k∈S} c_ijk x_i x_j x_k,
    x_i = the first input column of modality i (0 when masked absent: with_mask zeroes absent inputs)."""
    def score(batch: MultimodalBatch) -> torch.Tensor:
        mods = sorted(batch.inputs)
        x = [batch.inputs[m][:, 0].double() * batch.mask[m] for m in mods]
        out = sum(a[i] * x[i] for i in range(len(mods)))
        for (i, j), w in b.items():
            out = out + w * x[i] * x[j]
        for (i, j, k), w in c.items():
            out = out + w * x[i] * x[j] * x[k]
        return out
    return score


def test_two_modalities_efficiency_and_interaction_closed_form():
    batch = make_batch(2)
    score = polynomial_game([0.7, -0.4], {(0, 1): 1.3}, {})
    res = modality_interactions(score, batch)
    x0, x1 = batch.inputs["m0"][:, 0], batch.inputs["m1"][:, 0]
    full, none = score(batch), torch.zeros(5, dtype=torch.float64)
    only = {m: score(batch.with_mask({o: torch.zeros(5, dtype=torch.bool) for o in batch.inputs if o != m}))
            for m in batch.inputs}
    # efficiency: φ_A + φ_B = f(all) − f(none)
    torch.testing.assert_close(res.values.sum(1), full - none, rtol=0, atol=1e-12)
    # I_AB = v(AB) − v(A) − v(B) + v(∅) = b·x0·x1
    want = full - only["m0"] - only["m1"] + none
    torch.testing.assert_close(res.interactions[:, 0, 1], want, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.interactions[:, 0, 1], 1.3 * x0 * x1, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.interactions[:, 1, 0], res.interactions[:, 0, 1])
    assert torch.all(res.interactions[:, 0, 0] == 0)
    # φ_i = a_i x_i + ½ b x0 x1
    torch.testing.assert_close(res.values[:, 0], 0.7 * x0 + 0.65 * x0 * x1, rtol=0, atol=1e-12)
    assert set(res.pair_values()) == {pair_name("m1", "m0")} == {"m0+m1"}


@pytest.mark.parametrize("M", [3, 4])
def test_known_game_closed_form(M):
    batch = make_batch(M, seed=M)
    rng = np.random.default_rng(M)
    a = rng.normal(size=M).tolist()
    b = {p: float(rng.normal()) for p in combinations(range(M), 2)}
    c = {t: float(rng.normal()) for t in combinations(range(M), 3)}
    res = modality_interactions(polynomial_game(a, b, c), batch)
    x = [batch.inputs[f"m{i}"][:, 0] for i in range(M)]
    prod = lambda idx: torch.stack([x[i] for i in idx]).prod(0)  # noqa: E731
    for i in range(M):
        phi = a[i] * x[i] + sum(0.5 * w * prod(p) for p, w in b.items() if i in p) \
            + sum(w * prod(t) / 3 for t, w in c.items() if i in t)
        torch.testing.assert_close(res.values[:, i], phi, rtol=0, atol=1e-12)
        for j in range(M):
            if i == j:
                continue
            want = b[tuple(sorted((i, j)))] * prod((i, j)) \
                + sum(0.5 * w * prod(t) for t, w in c.items() if i in t and j in t)
            torch.testing.assert_close(res.interactions[:, i, j], want, rtol=0, atol=1e-12)
    # the φ are those of modality_shapley's exact enumeration (same coalition evaluations)
    ref = modality_shapley(polynomial_game(a, b, c), batch, method="exact")
    torch.testing.assert_close(res.values, ref.values, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.shapley().values, ref.values, rtol=0, atol=1e-12)
    assert res.n_evaluations == 2**M * batch.batch_size


def test_absent_modality_is_a_null_player_and_limit():
    batch = make_batch(3)
    batch = batch.with_mask({"m2": torch.tensor([False, True, True, True, True])})
    res = modality_interactions(polynomial_game([1.0, 1.0, 1.0], {(0, 2): 2.0, (1, 2): -1.0}, {}), batch)
    assert res.interactions[0, 0, 2] == 0 and res.interactions[0, 1, 2] == 0 and res.values[0, 2] == 0
    with pytest.raises(ConfigError, match="at most 10 modalities"):
        modality_interactions(lambda bt: torch.zeros(bt.batch_size), make_batch(11, B=1))
    with pytest.raises(ConfigError, match="expected 8"):
        interactions_from_values(torch.zeros(4), 3)


@pytest.mark.parametrize("M", [3, 4])
def test_matches_shapiq_exact_computer(M):
    shapiq = pytest.importorskip("shapiq", reason="shapiq is not installed (pip install -c .venv/constraints.txt shapiq)")
    batch = make_batch(M, B=1, seed=10 + M)
    rng = np.random.default_rng(10 + M)
    a = rng.normal(size=M).tolist()
    b = {p: float(rng.normal()) for p in combinations(range(M), 2)}
    c = {t: float(rng.normal()) for t in combinations(range(M), 3)}
    score = polynomial_game(a, b, c)
    res = modality_interactions(score, batch)
    names = sorted(batch.inputs)

    def game(coalitions: np.ndarray) -> np.ndarray:  # the same game, evaluated through the batch mask
        out = []
        for row in np.asarray(coalitions, dtype=bool):
            keep = batch.with_mask({m: torch.tensor([bool(row[i])]) for i, m in enumerate(names)})
            out.append(float(score(keep)[0]))
        return np.array(out)

    exact = shapiq.ExactComputer(game, n_players=M)
    sv = exact("SV", order=1)
    sii = exact("SII", order=2)
    for i in range(M):
        assert sv[(i,)] == pytest.approx(float(res.values[0, i]), abs=1e-10)
        for j in range(i + 1, M):
            assert sii[(i, j)] == pytest.approx(float(res.interactions[0, i, j]), abs=1e-10)


def test_explain_dataset_writes_interactions(tmp_path):
    import json

    import pandas as pd

    from mmfuse.explain import explain_dataset

    batch = make_batch(2, B=6)
    batch.target = torch.tensor([0, 1, 0, 1, 0, 1])
    game = polynomial_game([0.5, 0.2], {(0, 1): 2.0}, {})
    model = lambda bt: torch.stack([game(bt), -game(bt)], 1)  # noqa: E731  logit 0 = the game
    summ = explain_dataset(model, batch, out_dir=tmp_path, target="logit", class_index=0, plots=False)
    want = 2.0 * batch.inputs["m0"][:, 0] * batch.inputs["m1"][:, 0]
    per = pd.read_csv(tmp_path / "per_sample.csv")
    np.testing.assert_allclose(per["interaction_m0+m1"], want.numpy(), atol=1e-9)
    table = pd.read_csv(tmp_path / "interactions.csv")
    allrow = table[(table.group == "all") & (table.pair == "m0+m1")].iloc[0]
    assert allrow["mean"] == pytest.approx(float(want.mean()), abs=1e-9) and allrow["n"] == 6
    doc = json.loads((tmp_path / "interactions.json").read_text())
    assert doc == summ["interactions"]
    assert doc["by_class"]["1"]["m0+m1"] == pytest.approx(float(want[1::2].mean()), abs=1e-9)
    none = explain_dataset(model, batch, out_dir=tmp_path / "off", target="logit", class_index=0, plots=False,
                           interactions=False)
    assert "interactions" not in none and not (tmp_path / "off" / "interactions.csv").exists()
