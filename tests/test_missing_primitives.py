"""Modality dropout, imputers, and every registered fusion operator under absent modalities."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmfuse.batch import MultimodalBatch
from mmfuse.errors import ConfigError, MissingModalityError, ShapeError, UnknownNameError
from mmfuse.missing import (IMPUTERS, CrossModalImputer, LearnedTokenImputer, MeanImputer,
                            ModalityDropout, ZeroImputer, create_imputer, list_imputers)


def _mask(B, names, p=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(B, generator=g) < p for m in names}


# ---------------------------------------------------------------- ModalityDropout
def test_dropout_never_drops_every_modality_and_keeps_absent_absent():
    md = ModalityDropout(0.9, generator=torch.Generator().manual_seed(1)).train()
    mask = _mask(3000, ["a", "b", "c"], p=0.7)
    out = md(mask)
    stacked_in = torch.stack([mask[m] for m in "abc"], 1)
    stacked = torch.stack([out[m] for m in "abc"], 1)
    had_any = stacked_in.any(1)
    assert bool(stacked[had_any].any(1).all())  # never all dropped where something was present
    assert not bool((stacked & ~stacked_in).any())  # never invents a modality
    assert bool((stacked_in.sum(1) > stacked.sum(1)).any())  # something was dropped
    assert out is not mask and all(out[m] is not mask[m] for m in mask)


def test_dropout_min_present_two():
    md = ModalityDropout(0.8, min_present=2, generator=torch.Generator().manual_seed(2)).train()
    mask = _mask(2000, ["a", "b", "c"], p=1.0)
    out = md(mask)
    assert bool((torch.stack([out[m] for m in "abc"], 1).sum(1) >= 2).all())


def test_dropout_rates_statistically():
    g = torch.Generator().manual_seed(3)
    B = 20000
    md = ModalityDropout({"a": 0.3}, generator=g).train()
    out = md(_mask(B, ["a", "b"]))
    assert abs((~out["a"]).float().mean().item() - 0.3) < 0.02
    assert bool(out["b"].all())
    # two modalities at p each: restoring one when both drop gives p - p^2 / 2
    md2 = ModalityDropout(0.5, generator=g).train()
    out2 = md2(_mask(B, ["a", "b"]))
    for m in "ab":
        assert abs((~out2[m]).float().mean().item() - 0.375) < 0.02


def test_dropout_eval_is_identity_and_batch_input_zeroes_inputs():
    md = ModalityDropout(1.0)
    mask = _mask(8, ["a", "b"], p=0.5, seed=4)
    md.eval()
    out = md(mask)
    assert all(torch.equal(out[m], mask[m]) for m in mask)
    md.train()
    batch = MultimodalBatch({"a": torch.ones(6, 3), "b": torch.ones(6, 2)},
                            {"a": torch.ones(6, dtype=torch.bool), "b": torch.ones(6, dtype=torch.bool)})
    nb = md(batch)
    assert isinstance(nb, MultimodalBatch)
    for m in "ab":
        assert torch.equal(nb.inputs[m][~nb.mask[m]], torch.zeros_like(nb.inputs[m][~nb.mask[m]]))
    assert bool((nb.mask["a"] | nb.mask["b"]).all())


def test_dropout_bad_inputs():
    with pytest.raises(ConfigError):
        ModalityDropout(1.5)
    with pytest.raises(ConfigError):
        ModalityDropout({"a": -0.1})
    with pytest.raises(ConfigError):
        ModalityDropout(0.5, min_present=-1)
    with pytest.raises(ConfigError):
        ModalityDropout({})
    with pytest.raises(MissingModalityError, match="imagee"):
        ModalityDropout({"imagee": 0.5}).train()({"image": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ShapeError):
        ModalityDropout(0.5).train()({"a": torch.ones(3, 2, dtype=torch.bool)})


# ---------------------------------------------------------------- imputers
def _emb(B=6):
    torch.manual_seed(0)
    return {"a": torch.randn(B, 4), "b": torch.randn(B, 3)}


MASK = {"a": torch.tensor([1, 0, 1, 0, 1, 1], dtype=torch.bool), "b": torch.tensor([0, 1, 1, 1, 0, 1], dtype=torch.bool)}


@pytest.mark.parametrize("name", ["zero", "learned_token", "mean", "cross_modal"])
def test_imputers_replace_only_absent_rows(name):
    imp = create_imputer(name, input_dims={"a": 4, "b": 3})
    if name == "learned_token":
        with torch.no_grad():
            for p in imp.tokens.values():
                p.fill_(7.0)
    emb = _emb()
    out = imp.eval()(emb, MASK)
    for m in emb:
        pres = MASK[m]
        assert torch.equal(out[m][pres], emb[m][pres])
        assert not torch.equal(out[m][~pres], emb[m][~pres])
        assert torch.isfinite(out[m]).all()
    if name == "zero":
        assert torch.equal(out["a"][~MASK["a"]], torch.zeros(2, 4))
    if name == "learned_token":
        assert torch.equal(out["b"][~MASK["b"]], torch.full((2, 3), 7.0))


def test_imputer_output_mask_option():
    emb = _emb()
    on = ZeroImputer()
    off = ZeroImputer(mark_present=False)
    _, m_on = on.impute(emb, MASK)
    _, m_off = off.impute(emb, MASK)
    assert all(bool(v.all()) for v in m_on.values())
    assert all(torch.equal(m_off[m], MASK[m]) for m in MASK)
    assert on.output_mask(None) is None


def test_learned_token_gets_gradients():
    imp = LearnedTokenImputer({"a": 4, "b": 3})
    out = imp(_emb(), MASK)
    (out["a"].sum() + out["b"].sum()).backward()
    assert imp.tokens["a"].grad is not None and torch.equal(imp.tokens["a"].grad, torch.full((4,), 2.0))


def test_mean_imputer_tracks_present_rows_in_training_only():
    imp = MeanImputer({"a": 4, "b": 3}).train()
    e1, e2 = _emb(), {k: v + 1 for k, v in _emb().items()}
    imp(e1, MASK)
    imp(e2, MASK)
    want = torch.cat([e1["a"][MASK["a"]], e2["a"][MASK["a"]]]).mean(0)
    assert torch.allclose(imp.running_mean("a"), want, atol=1e-6)
    before = imp.running_mean("a").clone()
    imp.eval()
    out = imp({k: v * 10 for k, v in e1.items()}, MASK)
    assert torch.equal(imp.running_mean("a"), before)
    assert torch.allclose(out["a"][~MASK["a"]], before.expand(2, 4))
    assert "mean_a" in imp.state_dict()


def test_cross_modal_imputer_loss_uses_present_targets():
    imp = CrossModalImputer({"a": 4, "b": 3}, targets=["b"], hidden=8)
    emb = _emb()
    loss = imp.reconstruction_loss(emb, MASK)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in imp.parameters())
    with pytest.raises(MissingModalityError, match="not a target"):
        imp(emb, MASK)  # "a" is absent in some rows but only "b" is a target


def test_imputer_registry_and_errors():
    assert {"zero", "learned_token", "mean", "cross_modal"} <= set(list_imputers())
    with pytest.raises(UnknownNameError, match="mean"):
        IMPUTERS.create("meen", input_dims={"a": 2})
    with pytest.raises(ConfigError):
        LearnedTokenImputer({"a": 0})
    with pytest.raises(ConfigError):
        MeanImputer({"a.b": 2})
    with pytest.raises(ShapeError):
        LearnedTokenImputer({"a": 4, "b": 3})({"a": torch.randn(6, 5), "b": torch.randn(6, 3)}, MASK)
    with pytest.raises(ShapeError):
        ZeroImputer()({"a": torch.randn(6, 4)}, {"a": torch.ones(5, dtype=torch.bool)})
    with pytest.raises(MissingModalityError):
        LearnedTokenImputer({"a": 4})({"a": torch.randn(6, 4), "b": torch.randn(6, 3)}, MASK)
    with pytest.raises(ConfigError):
        ZeroImputer()({}, MASK)


# ---------------------------------------------------------------- every fusion operator, every absence pattern
def _fusion_names():
    try:
        from mmfuse.fusion import list_fusions
    except ImportError:  # pragma: no cover - the fusion package not there yet
        return []
    return list_fusions()


def _make_fusion(name, dims):
    from mmfuse.fusion import create_fusion

    try:
        return create_fusion(name, dims)
    except ConfigError:  # some operators need equal widths
        return create_fusion(name, {m: 4 for m in dims})


@pytest.mark.parametrize("name", _fusion_names())
def test_every_fusion_accepts_any_absence_pattern(name):
    torch.manual_seed(0)
    op = _make_fusion(name, {"a": 4, "b": 6, "c": 5}).eval()
    dims = op.input_dims
    names = sorted(dims)
    patterns = list(itertools.product([True, False], repeat=len(names)))
    B = len(patterns)
    mask = {m: torch.tensor([p[i] for p in patterns]) for i, m in enumerate(names)}
    real = {m: torch.randn(B, d) for m, d in dims.items()}
    zeros = {m: torch.where(mask[m][:, None], real[m], torch.zeros(())) for m in names}
    junk = {m: torch.where(mask[m][:, None], real[m], torch.full((), 1e3)) for m in names}
    with torch.no_grad():
        a, b = op(zeros, mask), op(junk, mask)
    assert a.shape == (B, op.output_dim)
    assert torch.isfinite(a).all() and torch.isfinite(b).all(), f"{name}: NaN/inf for some absence pattern"
    some = torch.stack([mask[m] for m in names], 1).any(1)
    assert torch.allclose(a[some], b[some], atol=1e-4), f"{name}: an absent modality's placeholder leaks"


@pytest.mark.parametrize("name", _fusion_names())
@pytest.mark.parametrize("mark_present", [True, False])
def test_imputed_fusion_model_with_every_fusion(name, mark_present):
    from mmfuse.fusion import create_fusion

    class Enc(torch.nn.Linear):
        @property
        def output_dim(self):
            return self.out_features

    torch.manual_seed(0)
    encs = {"a": Enc(3, 4), "b": Enc(2, 4)}
    fusion = create_fusion(name, {"a": 4, "b": 4})
    from mmfuse.models.model import MultimodalModel

    model = MultimodalModel(encs, torch.nn.Linear(fusion.output_dim, 3), "feature", fusion=fusion,
                            imputer=MeanImputer({"a": 4, "b": 4}, mark_present=mark_present),
                            modality_dropout=ModalityDropout({"b": 0.5}))
    B = 8
    mask = {"a": torch.tensor([1, 1, 1, 1, 0, 0, 1, 1], dtype=torch.bool),
            "b": torch.tensor([1, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)}
    batch = MultimodalBatch({"a": torch.randn(B, 3), "b": torch.randn(B, 2)}, mask, torch.randint(0, 3, (B,)))
    out = model.train()(batch.with_mask(mask))
    torch.nn.functional.cross_entropy(out.logits, batch.target).backward()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch.with_mask(mask)).logits).all()


def test_create_imputer_input_dims_forms():
    assert isinstance(create_imputer("zero", ["a", "b"]), ZeroImputer)
    assert isinstance(create_imputer("mean", {"a": 4}), MeanImputer)
    with pytest.raises(ConfigError, match="output_dim"):
        create_imputer("learned_token", ["a", "b"])
    mod = ZeroImputer()
    assert create_imputer(mod) is mod


def test_imputer_and_dropout_inside_multimodal_model():
    """The lead's MultimodalModel calls imputer.impute(emb, mask) and modality_dropout(mask)."""
    models = pytest.importorskip("mmfuse.models")
    from mmfuse.fusion import create_fusion

    class Enc(torch.nn.Linear):
        @property
        def output_dim(self):
            return self.out_features

    encs = {"a": Enc(3, 4), "b": Enc(2, 4)}
    model = models.MultimodalModel(encs, torch.nn.Linear(8, 3), "feature", fusion=create_fusion("concat", {"a": 4, "b": 4}),
                                   modality_dropout=ModalityDropout(0.5), imputer=LearnedTokenImputer({"a": 4, "b": 4}))
    mask = {"a": torch.tensor([1, 0, 1, 1], dtype=torch.bool), "b": torch.tensor([1, 1, 0, 1], dtype=torch.bool)}
    batch = MultimodalBatch({"a": torch.randn(4, 3), "b": torch.randn(4, 2)}, mask, torch.tensor([0, 1, 2, 0]))
    out = model.train()(batch.with_mask(mask))
    torch.nn.functional.cross_entropy(out.logits, batch.target).backward()
    assert model.imputer.tokens["a"].grad is not None
    assert torch.isfinite(model.eval()(batch.with_mask(mask)).logits).all()
