"""The explanation split (encode each modality once, fusion + head per coalition / masked copy)
gives the same values as whole-model calls; models where it is not valid fall back."""

import pytest
import torch

from mmfuse.batch import MultimodalBatch
from mmfuse.explain import make_score_fn, mmshap, modality_shapley
from mmfuse.models.build import build_model

B = 5
SHAPES = {"a": (6,), "b": (4, 3), "c": (7,)}


def _batch(shapes=SHAPES, seed=0, var=False):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn((B,) + tuple(8 if s is None else s for s in sh), generator=g)
              for m, sh in shapes.items()}
    mask = {m: torch.ones(B, dtype=torch.bool) for m in shapes}
    mask["a"][1] = False  # absent modalities in some samples
    mask[sorted(shapes)[-1]][3] = False
    lengths = {}
    if var:
        lengths["b"] = torch.tensor([8, 3, 5, 0, 8])
        inputs["b"] = inputs["b"] * (torch.arange(8)[None, :, None] < lengths["b"][:, None, None])
    for m in shapes:
        inputs[m][~mask[m]] = 0
    return MultimodalBatch(inputs, mask, lengths=lengths)


def _model(task="multiclass", outputs=3, shapes=SHAPES, **raw):
    torch.manual_seed(0)
    cfg = {"family": "fusion", **raw}
    return build_model(cfg, shapes, outputs, task).eval()


def _both(fn, sf):
    sf.use_split = True
    fast = fn(sf)
    sf.use_split = False
    slow = fn(sf)
    sf.use_split = True
    return fast, slow


CASES = [
    dict(strategy="feature", fusion={"name": "concat"}),
    dict(strategy="feature", fusion={"name": "tensor"}),
    dict(strategy="feature", fusion={"name": "low_rank", "options": {"rank": 2, "output_dim": 4}}),
    dict(strategy="feature", fusion={"name": "gated", "options": {"dim": 4}}),
    dict(strategy="feature", fusion={"name": "max"}, encoders={m: {"name": "mlp", "options": {"output_dim": 4}}
                                                               for m in ("a", "c")}),
    dict(strategy="feature", fusion={"name": "concat"}, missing={"imputer": "learned_token"}),
    dict(strategy="feature", fusion={"name": "concat"}, missing={"imputer": "cross_modal"}),
    dict(strategy="late", late={"name": "mean_prob"}),
    dict(strategy="late", late={"name": "learned_weights"}),
]


@pytest.mark.parametrize("raw", CASES, ids=lambda r: f"{r['strategy']}-{r.get('late', r.get('fusion'))['name']}"
                         + ("-" + r["missing"]["imputer"] if "missing" in r else ""))
@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_modality_shapley_split_equals_whole_model(raw, task):
    shapes = {"a": (6,), "c": (7,)} if "encoders" in raw else SHAPES
    if raw["strategy"] == "late" and task != "multiclass":
        pytest.skip("late combiners are for class probabilities")
    model = _model(task, 3, shapes, **raw)
    batch = _batch(shapes)
    sf = make_score_fn(model, "predicted", task=task)
    assert sf.split_model() is model
    for method in ("exact", "permutation"):
        fast, slow = _both(lambda s: modality_shapley(s, batch, method=method, n_permutations=3, seed=1), sf)
        assert fast.method == method
        assert (fast.classes is None and slow.classes is None) or torch.equal(fast.classes, slow.classes)
        torch.testing.assert_close(fast.values, slow.values, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fast.base, slow.base, rtol=1e-5, atol=1e-6)
        assert fast.efficiency_gap().abs().max() < 1e-6
        assert (fast.values[1, 0].abs() < 1e-12).all()  # modality a absent in sample 1: a null player


def test_split_with_variable_length_sequence_fusion_and_non_players():
    shapes = {"a": (6,), "b": (None, 3), "c": (7,)}
    raw = dict(strategy="feature", fusion={"name": "cross_attention", "options": {"dim": 8, "heads": 2, "ffn_dim": 8}},
               encoders={"b": {"name": "gru", "options": {"hidden": 8}}})
    model = _model("multiclass", 3, shapes, **raw)
    assert not model.explain_pool()
    batch = _batch(shapes, var=True)
    sf = make_score_fn(model, "class", class_index=torch.tensor([0, 1, 2, 0, 1]))
    for players in (None, ["a", "b"]):  # "c" not a player: keeps its values
        for max_rows in (7, 2):  # 2: sub-batches of 2 samples
            fast, slow = _both(lambda s: modality_shapley(s, batch, players, method="exact", max_rows=max_rows), sf)
            torch.testing.assert_close(fast.values, slow.values, rtol=1e-5, atol=1e-6)
    sf = make_score_fn(model)  # predicted class, sub-batches
    fast, slow = _both(lambda s: modality_shapley(s, batch, method="permutation", max_rows=2), sf)
    torch.testing.assert_close(fast.values, slow.values, rtol=1e-5, atol=1e-6)
    assert torch.equal(fast.classes, slow.classes)


def test_split_when_absent_rows_hold_values():
    """An absent row with non-zero inputs: both paths zero it (with_mask) and agree."""
    model = _model(strategy="feature", fusion={"name": "concat"})
    batch = _batch()
    batch.inputs["a"][1] = 5.0  # mask False, values left in
    sf = make_score_fn(model)
    fast, slow = _both(lambda s: modality_shapley(s, batch, method="exact"), sf)
    torch.testing.assert_close(fast.values, slow.values, rtol=1e-5, atol=1e-6)
    assert torch.equal(fast.classes, slow.classes)


def test_encode_once_counts_rows():
    """Exact over M=3 modalities: each encoder sees the B rows plus one zero row, not 2^3·B rows."""
    model = _model(strategy="feature", fusion={"name": "concat"})
    seen = {m: 0 for m in SHAPES}
    for m, enc in model.encoders.items():
        enc.register_forward_hook(lambda mod, inp, out, m=m: seen.__setitem__(m, seen[m] + inp[0].shape[0]))
    r = modality_shapley(make_score_fn(model), _batch(), method="exact")
    # B + 1 rows per modality for all 8 coalitions; the explained class comes from the full coalition's logits
    assert seen == {m: B + 1 for m in SHAPES}
    assert torch.equal(r.classes, make_score_fn(model).classes(_batch()))
    assert r.n_evaluations == 8 * B


@pytest.mark.parametrize("raw", [dict(strategy="early", early={"modalities": ["a", "c"], "encoder": {"name": "mlp"}}), "intermediate"])
def test_models_without_a_valid_split_fall_back(raw):
    if raw == "intermediate":
        shapes = {"x": (1, 8, 8), "y": (1, 8, 8)}
        torch.manual_seed(0)
        model = build_model({"family": "intermediate", "encoders": {m: {"name": "cnn2d", "options": {"channels": [2, 3]}}
                                                                     for m in shapes}}, shapes, 3, "multiclass").eval()
        batch = MultimodalBatch({m: torch.randn(2, *s) for m, s in shapes.items()},
                                {m: torch.ones(2, dtype=torch.bool) for m in shapes})
    else:
        shapes = {"a": (6,), "c": (6,)}
        model = _model(shapes=shapes, **raw)
        batch = _batch(shapes)
    sf = make_score_fn(model)
    assert sf.split_model() is None
    r = modality_shapley(sf, batch, method="exact")
    assert r.efficiency_gap().abs().max() < 1e-6


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_mmshap_split_equals_whole_model(task):
    shapes = {"a": (6,), "b": (4, 3)}
    model = _model(task, 2, shapes, strategy="feature", fusion={"name": "low_rank", "options": {"rank": 2, "output_dim": 4}})
    batch = _batch(shapes)
    maskers = {"a": {"kind": "vector", "n_chunks": 3}, "b": {"kind": "windows", "n_windows": 2}}
    sf = make_score_fn(model, task=task)
    for kw in (dict(method="exact"), dict(n_permutations=3, seed=2, estimator="walk"),
               dict(n_permutations=2, antithetic=False, estimator="walk"),
               dict(n_permutations=3, seed=2, estimator="interleave"),
               dict(n_permutations=2, antithetic=False, estimator="interleave"),
               dict(n_permutations=8, seed=1, estimator="interleave")):  # with the pilot (reuse="auto")
        fast, slow = _both(lambda s: mmshap(s, batch, maskers, max_rows=11, **kw), sf)
        assert fast.extra["split"] and not slow.extra["split"]
        assert fast.extra["estimator"] == slow.extra["estimator"] == kw.get("estimator", "exact")
        assert fast.extra["orders"] == slow.extra["orders"]  # the same design on both paths
        if kw.get("n_permutations") == 8:
            assert any(o is not None for o in fast.extra["orders"])
        assert max(f.efficiency_gap() for f in fast.samples) < 1e-6
        for f, s in zip(fast.samples, slow.samples):
            torch.testing.assert_close(f.values, s.values, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fast.contributions, slow.contributions, rtol=1e-5, atol=1e-6)
        # fewer encoder rows than masked copies: each modality's distinct masked inputs only
        assert fast.extra["encoded_rows"]["a"] < fast.n_evaluations


def test_interleave_over_all_orders_is_exact_shapley():
    """Every combination of per-group orders, each averaged over all interleavings = the exact Shapley values."""
    import itertools

    from mmfuse.explain.estimators import (all_coalitions, exact_from_values, interleave_coalitions,
                                           interleave_from_values, interleave_weights)

    sizes = [2, 3, 1]
    N = sum(sizes)
    g = torch.Generator().manual_seed(0)
    A, b = torch.randn(N, N, generator=g, dtype=torch.float64), torch.randn(N, generator=g, dtype=torch.float64)

    def game(keep):
        x = keep.double()
        return 2 * torch.tanh((x @ A * x).sum(1)) + x @ b + x[:, 0] * x[:, 3] * x[:, 5]

    for m in range(3):  # for each k the interleaving probabilities sum to 1
        w = interleave_weights(sizes, m).movedim(m, 0).reshape(sizes[m], -1).sum(1)
        torch.testing.assert_close(w, torch.ones(sizes[m], dtype=torch.float64), rtol=0, atol=1e-12)
    orders = [torch.tensor(list(itertools.permutations(range(n)))) for n in sizes]
    combos = list(itertools.product(*[range(o.shape[0]) for o in orders]))
    ords = [torch.stack([orders[m][c[m]] for c in combos]) for m in range(3)]
    pats, idx = interleave_coalitions(ords)
    phi = interleave_from_values(game(torch.cat([pats[m][idx[m]] for m in range(3)], 1)), ords)
    exact = exact_from_values(game(all_coalitions(N)), N)
    torch.testing.assert_close(phi, exact, rtol=0, atol=1e-12)


def test_interleave_estimates_close_to_exact_on_a_model():
    shapes = {"a": (6,), "b": (4, 3)}
    model = _model("multiclass", 3, shapes, strategy="feature", fusion={"name": "tensor"})
    batch = _batch(shapes)
    maskers = {"a": {"kind": "vector", "n_chunks": 3}, "b": {"kind": "windows", "n_windows": 4}}
    sf = make_score_fn(model)
    exact = mmshap(sf, batch, maskers, method="exact")
    il = mmshap(sf, batch, maskers, n_permutations=20, seed=0)
    walk = mmshap(sf, batch, maskers, n_permutations=20, seed=0, estimator="walk")
    assert il.extra["estimator"] == "interleave" and walk.extra["estimator"] == "walk"
    err = lambda r: sum(float((s.values - e.values).abs().sum()) for s, e in zip(r.samples, exact.samples))  # noqa: E731
    scale = sum(float(e.values.abs().sum()) for e in exact.samples)
    assert err(il) < 0.05 * scale
    assert err(il) < err(walk)  # lower variance at the same number of orders


def test_interleave_reuse_keeps_efficiency_and_saves_encodes():
    shapes = {"a": (6,), "b": (4, 3)}
    model = _model("multiclass", 3, shapes, strategy="feature", fusion={"name": "concat"})
    batch = _batch(shapes)
    maskers = {"a": {"kind": "vector", "n_chunks": 3}, "b": {"kind": "windows", "n_windows": 4}}
    sf = make_score_fn(model)
    plain = mmshap(sf, batch, maskers, n_permutations=6, seed=0)
    shared = mmshap(sf, batch, maskers, n_permutations=6, seed=0, reuse={"b": 3})
    assert max(s.efficiency_gap() for s in shared.samples) < 1e-6
    assert shared.extra["encoded_rows"]["b"] < plain.extra["encoded_rows"]["b"]
    assert shared.extra["encoded_rows"]["a"] == plain.extra["encoded_rows"]["a"]
    from mmfuse.errors import ConfigError
    with pytest.raises(ConfigError, match="reuse"):
        mmshap(sf, batch, maskers, reuse={"zz": 2})
    with pytest.raises(ConfigError, match="reuse"):
        mmshap(sf, batch, maskers, reuse={"b": 0})
    with pytest.raises(ConfigError, match="reuse"):
        mmshap(sf, batch, maskers, estimator="walk", reuse={"b": 2})


def test_estimator_label_says_when_the_walk_was_used():
    from mmfuse.explain.mmshap import INTERLEAVE_MAX_GRID, _estimator_label

    assert _estimator_label(True, 0, 4, "permutation") == "interleave"
    assert _estimator_label(True, 4, 4, "permutation") == "walk"
    assert _estimator_label(True, 1, 4, "permutation").startswith("interleave (walk for 1 of 4 samples")
    assert str(INTERLEAVE_MAX_GRID) in _estimator_label(True, 1, 4, "permutation")
    assert _estimator_label(False, 0, 4, "exact") == "exact"


class _GameModel(torch.nn.Module):
    """A model with the explanation split whose score is a closed-form game of the masked inputs:
    f(z) = Σ_j a_j z_j + Σ_{j<k} B_jk z_j z_k + c1·z0·z1·z2 (within "a") + c2·z0·z4·z5 (across "a" and "b"),
    z = [x_a, x_b] (masked to 0). Shapley: a_j x_j + Σ_k B_jk x_j x_k / 2 + each triple's product / 3 to its members.
    Encoders: identities through a 64-wide hidden layer for "b" (so "b" costs more to encode than "a")."""

    def __init__(self, c1=1.5, c2=0.05):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(7, generator=g, dtype=torch.float64)
        self.B = torch.randn(7, 7, generator=g, dtype=torch.float64).triu(1) * 0.5
        self.c1, self.c2 = c1, c2
        self.enc = torch.nn.ModuleDict({
            "a": torch.nn.Linear(4, 4, bias=False, dtype=torch.float64),
            "b": torch.nn.Sequential(torch.nn.Linear(3, 64, bias=False, dtype=torch.float64),
                                     torch.nn.Linear(64, 3, bias=False, dtype=torch.float64))})
        with torch.no_grad():
            self.enc["a"].weight.copy_(torch.eye(4))
            self.enc["b"][0].weight.zero_()[:3].copy_(torch.eye(3))
            self.enc["b"][1].weight.zero_()[:, :3].copy_(torch.eye(3))

    def explain_split(self):
        return True

    def explain_pool(self):
        return True

    def encode_modality(self, m, x, lengths=None, pool=True):
        return self.enc[m](x)

    def explain_decode(self, emb, mask, lengths):
        z = torch.cat([emb["a"], emb["b"]], 1)
        f = z @ self.a + ((z @ self.B) * z).sum(1) + self.c1 * z[:, 0] * z[:, 1] * z[:, 2] \
            + self.c2 * z[:, 0] * z[:, 4] * z[:, 5]
        return f.unsqueeze(1)

    def forward(self, batch):
        return self.explain_decode({m: self.encode_modality(m, batch.inputs[m]) for m in ("a", "b")}, batch.mask, {})

    def shapley(self, x):
        """Closed-form Shapley values Tensor[B, 7] for inputs x Tensor[B, 7] (masking = 0)."""
        pair = x.unsqueeze(2) * x.unsqueeze(1) * (self.B + self.B.T)
        phi = x * self.a + pair.sum(2) / 2
        t1 = self.c1 * x[:, 0] * x[:, 1] * x[:, 2] / 3
        t2 = self.c2 * x[:, 0] * x[:, 4] * x[:, 5] / 3
        for j in (0, 1, 2):
            phi[:, j] += t1
        for j in (0, 4, 5):
            phi[:, j] += t2
        return phi


def test_auto_reuse_is_unbiased_efficient_and_deterministic_on_a_closed_form_game():
    """reuse="auto" (pilot + cost-optimal orders per modality, the default with the split): the mean over many seeds
    converges to the closed-form Shapley values (|z| small for every sample and feature), Σφ = f(all) − f(none) for
    every sample and seed, the same seed gives the same values, and the expensive modality whose order carries
    little variance ("b": its players only interact pairwise, which antithetic draws get exactly) gets fewer
    distinct orders than "a" (a strong 3-way interaction inside "a")."""
    model = _GameModel().double()
    g = torch.Generator().manual_seed(1)
    B = 4
    x = torch.rand(B, 7, generator=g, dtype=torch.float64) + 0.5
    batch = MultimodalBatch({"a": x[:, :4], "b": x[:, 4:]}, {m: torch.ones(B, dtype=torch.bool) for m in "ab"})
    sf = make_score_fn(model, target="logit", class_index=0)
    maskers = {"a": "vector", "b": "vector"}
    exact = model.shapley(x)
    enum = torch.stack([s.values for s in mmshap(sf, batch, maskers, method="exact").samples])
    torch.testing.assert_close(enum, exact, rtol=0, atol=1e-12)  # the closed form is the Shapley value
    S = 150
    for P in (6, 5):  # 6: pilot + allocated orders; 5: no pilot (one rotated order per draw)
        runs = []
        for seed in range(S):
            r = mmshap(sf, batch, maskers, n_permutations=P, seed=seed)
            assert max(s.efficiency_gap() for s in r.samples) < 1e-12
            runs.append(torch.stack([s.values for s in r.samples]))
        if P == 6:
            assert r.extra["orders"][0] is not None
            assert all(o["b"] < o["a"] for o in r.extra["orders"])
        runs = torch.stack(runs)
        sd = runs.std(0)
        assert float(sd.max()) > 1e-3  # a real sampling estimator (not exact by construction)
        z = (runs.mean(0) - exact) / (sd / S ** 0.5).clamp(min=1e-9)  # players without 3-way terms: exact each draw
        assert float(z.abs().max()) < 4.5, (P, z)
        again = mmshap(sf, batch, maskers, n_permutations=P, seed=S - 1)
        assert torch.equal(torch.stack([s.values for s in again.samples]), runs[-1])
    # fewer distinct "b" orders than one new order per draw (reuse=None, the plain design), never more encodes
    plain = mmshap(sf, batch, maskers, n_permutations=6, seed=0, reuse=None)
    auto = mmshap(sf, batch, maskers, n_permutations=6, seed=0)
    assert plain.extra["orders"] == [None] * B
    assert all(o["b"] < 6 for o in auto.extra["orders"])
    assert auto.extra["encoded_rows"]["b"] <= plain.extra["encoded_rows"]["b"]
    # below twice the pilot's draws (3 for two modalities) there is no pilot: the plain design
    assert mmshap(sf, batch, maskers, n_permutations=5, seed=0).extra["orders"] == [None] * B
    with pytest.raises(Exception, match="reuse must be"):
        mmshap(sf, batch, maskers, reuse="sometimes")


def test_rotated_orders_are_permutations_with_stratified_positions():
    from mmfuse.explain.mmshap import _rotated_orders

    g = torch.Generator().manual_seed(0)
    o = _rotated_orders(11, 4, g)  # a block of 4 rotations, another of 4, then 3
    assert o.shape == (11, 4)
    assert torch.equal(o.sort(1).values, torch.arange(4).expand(11, 4))
    for block in (o[:4], o[4:8]):  # within a full block every player takes every position once
        pos = block.argsort(1)
        assert torch.equal(pos.sort(0).values, torch.arange(4).view(4, 1).expand(4, 4))
    assert not torch.equal(o[0], o[4])  # a new uniform order per block
    assert _rotated_orders(3, 0, g).shape == (3, 0)


def test_row_cost_cache_sees_an_encoder_resized_in_place():
    """split_row_costs caches per model; an encoder resized in place (same model object) must not reuse the old
    costs: they equal a fresh score function's, and the resized modality's cost doubles with its hidden width."""
    model = _model(strategy="feature", fusion={"name": "concat"})
    sf, batch = make_score_fn(model, "predicted"), _batch()
    before = sf.split_row_costs(batch)
    torch.manual_seed(1)
    model.encoders["a"].net[0] = torch.nn.Linear(6, 128)
    model.encoders["a"].net[3] = torch.nn.Linear(128, 64)
    after = sf.split_row_costs(batch)
    assert after == make_score_fn(model, "predicted").split_row_costs(batch)
    assert after["a"] > 1.9 * before["a"] and after["b"] == before["b"]
