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
               dict(n_permutations=2, antithetic=False, estimator="interleave")):
        fast, slow = _both(lambda s: mmshap(s, batch, maskers, max_rows=11, **kw), sf)
        assert fast.extra["split"] and not slow.extra["split"]
        assert fast.extra["estimator"] == slow.extra["estimator"] == kw.get("estimator", "exact")
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
