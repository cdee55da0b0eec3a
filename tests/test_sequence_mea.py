"""MEA (mmfuse.sequence): shapes, masking, gradient reversal, HSIC, gradients, state_dict, errors."""

import io

import pytest
import torch

from mmfuse.batch import MultimodalBatch
from mmfuse.errors import ConfigError, DataError, MissingModalityError, ShapeError
from mmfuse.sequence import HCA, MEAModel, PSA, grad_reverse, hsic
from mmfuse.sequence._common import valid_positions

DIMS = {"audio": 3, "text": 4, "video": 2}
LENS = {"audio": 9, "text": 5, "video": 7}   # asynchronous: every modality its own length


def make_model(**kw):
    torch.manual_seed(0)
    kw = {"dim": 8, "heads": 2, **kw}
    return MEAModel(DIMS, 3, **kw).eval()


def make_batch(B=4, seed=1, lengths=True, mask=None):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, LENS[m], f, generator=g) for m, f in DIMS.items()}
    mask = mask or {m: torch.ones(B, dtype=torch.bool) for m in DIMS}
    ln = {}
    if lengths:
        ln = {m: torch.randint(1, LENS[m] + 1, (B,), generator=g) for m in DIMS}
        ln["audio"][0] = 3   # sample 0 padded for sure
        for m in DIMS:
            ln[m] = torch.where(mask[m], ln[m], torch.zeros_like(ln[m]))
            inputs[m] = inputs[m] * (torch.arange(LENS[m])[None, :, None] < ln[m][:, None, None])
    return MultimodalBatch(inputs, mask, torch.randint(0, 3, (B,), generator=g), ln)


def test_shapes_different_lengths_and_psa_hca_keep_own_length():
    model, batch = make_model(), make_batch()
    out = model(batch)
    assert out.logits.shape == (4, 3) and out.fused.shape == (4, 8)
    assert set(out.embeddings) == set(DIMS) and all(e.shape == (4, 8) for e in out.embeddings.values())
    assert out.extras["modality_logits"].shape == (4, 3, 3)
    assert out.extras["edge_weights"].shape == (4, 4, 4)
    assert out.extras["loss.disparity"].dim() == 0 and out.extras["loss.adversarial"].dim() == 0
    seqs = {m: torch.randn(4, LENS[m], 8) for m in DIMS}
    valid = {m: torch.ones(4, LENS[m], dtype=torch.bool) for m in DIMS}
    exc, _ = model.psa(seqs, valid, torch.ones(4, 3, dtype=torch.bool))
    agn = model.hca(seqs, valid)
    assert {m: tuple(x.shape) for m, x in exc.items()} == {m: (4, LENS[m], 8) for m in DIMS}
    assert {m: tuple(x.shape) for m, x in agn.items()} == {m: (4, LENS[m], 8) for m in DIMS}


def test_padding_does_not_leak():
    model, batch = make_model(), make_batch()
    ref = model(batch)
    noisy = {m: x.clone() for m, x in batch.inputs.items()}
    for m in DIMS:
        pad = ~(torch.arange(LENS[m])[None] < batch.lengths[m][:, None])
        noisy[m][pad] = 1e3
    out = model(MultimodalBatch(noisy, batch.mask, batch.target, batch.lengths))
    torch.testing.assert_close(out.logits, ref.logits)
    # extra padding (longer T) changes nothing either
    longer = {m: torch.cat([x, torch.randn(4, 3, DIMS[m])], 1) for m, x in batch.inputs.items()}
    out2 = model(MultimodalBatch(longer, batch.mask, batch.target, batch.lengths))
    torch.testing.assert_close(out2.logits, ref.logits, atol=1e-5, rtol=1e-5)


def test_absent_modality_placeholder_does_not_leak_and_one_present_is_finite():
    model = make_model()
    mask = {"audio": torch.tensor([True, False, True, True]), "text": torch.ones(4, dtype=torch.bool),
            "video": torch.tensor([True, True, False, True])}
    batch = make_batch(mask=mask)
    ref = model(batch)
    junk = {m: x.clone() for m, x in batch.inputs.items()}
    junk["audio"][1] = float("nan")
    junk["video"][2] = 1e4
    out = model(MultimodalBatch(junk, mask, batch.target, batch.lengths))
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.extras["loss.disparity"], ref.extras["loss.disparity"])
    # only one modality present in every sample: finite outputs and losses, finite gradients
    model.train()
    only = {m: torch.full((4,), m == "text") for m in DIMS}
    b1 = make_batch(mask=only)
    b1.inputs["audio"][:] = float("nan")
    o = model(b1)
    assert torch.isfinite(o.logits).all()
    assert torch.isfinite(o.extras["loss.disparity"]) and torch.isfinite(o.extras["loss.adversarial"])
    assert set(o.losses) == {"mea.disparity", "mea.adversarial"}
    loss = torch.nn.functional.cross_entropy(o.logits, b1.target) + sum(o.losses.values())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # edges never point at absent nodes
    assert (o.extras["edge_weights"][:, :, [0, 2]] == 0).all()


def test_nothing_present_is_finite():
    model = make_model()
    b = make_batch(mask={m: torch.zeros(4, dtype=torch.bool) for m in DIMS})
    o = model(b)
    assert torch.isfinite(o.logits).all() and o.losses == {}
    assert torch.isfinite(o.extras["loss.disparity"]) and torch.isfinite(o.extras["loss.adversarial"])
    o = model.train()(b)
    assert all(torch.isfinite(v) for v in o.losses.values()) and set(o.losses) == {"mea.disparity", "mea.adversarial"}


def test_gradient_reversal_flips_sign():
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    (grad_reverse(x, 0.5) * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * w)
    torch.testing.assert_close(grad_reverse(x, 0.5), x)


def test_hsic_oracles():
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    for k in ("rbf", "linear"):
        assert hsic(x, y, k) >= 0
        assert float(hsic(x, torch.ones(16, 3), k)) == pytest.approx(0.0, abs=1e-6)
        assert hsic(x, x, k) > hsic(x, y, k)


def test_gradients_reach_every_parameter_with_extra_losses():
    model = make_model(alpha=1.0, beta=1.0).train()
    batch = make_batch()
    out = model(batch)
    loss = torch.nn.functional.cross_entropy(out.logits, batch.target) + sum(out.losses.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_agnostic_encoder_is_shared_and_reversed():
    model = make_model(alpha=0.0, beta=1.0).train()
    assert isinstance(model.agnostic, torch.nn.Module) and model.hca.layers[0]["fine"] is model.hca.layers[0]["fine"]
    batch = make_batch()
    out = model(batch)
    # the modality-discriminator's own gradient on agnostic codes points the other way than the encoder's
    A = torch.stack([out.extras["agnostic." + m] for m in model.modalities], 1).detach().requires_grad_(True)
    la = model.modality_disc(grad_reverse(A))
    torch.nn.functional.cross_entropy(la.reshape(-1, 3), torch.arange(3).repeat(4)).backward()
    A2 = A.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model.modality_disc(A2).reshape(-1, 3), torch.arange(3).repeat(4)).backward()
    torch.testing.assert_close(A.grad, -A2.grad)


def test_losses_are_weighted_constraints_in_training_only():
    batch = make_batch()
    out = make_model(alpha=0.5, beta=2.0).train()(batch)
    assert set(out.losses) == {"mea.disparity", "mea.adversarial"}
    torch.testing.assert_close(out.losses["mea.disparity"], 0.5 * out.extras["loss.disparity"])
    torch.testing.assert_close(out.losses["mea.adversarial"], 2.0 * out.extras["loss.adversarial"])
    assert float(out.extras["loss.disparity"].detach()) > 0 and float(out.extras["loss.adversarial"].detach()) > 0
    assert make_model(alpha=0.5, beta=2.0).eval()(batch).losses == {}       # evaluation adds no loss
    assert make_model(alpha=0.0, beta=0.0).train()(batch).losses == {}      # the paper's ablation
    only = make_model(alpha=0.0, beta=1.0).train()(batch).losses
    assert set(only) == {"mea.adversarial"}


def test_state_dict_round_trip():
    model, batch = make_model(), make_batch()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(123)
    other = MEAModel(DIMS, 3, dim=8, heads=2).eval()
    other.load_state_dict(torch.load(buf))
    torch.testing.assert_close(other(batch).logits, model(batch).logits)


def test_batch_independence_in_eval():
    model, batch = make_model(), make_batch(B=4)
    full = model(batch).logits
    for i in range(4):
        torch.testing.assert_close(model(batch.select([i])).logits, full[i:i + 1], atol=1e-5, rtol=1e-5)


def test_psa_hca_direct_masks():
    psa, hca = PSA(["a", "b"], 8, 2, 2), HCA(["a", "b"], 8, 2, 1)
    seqs = {"a": torch.randn(2, 5, 8), "b": torch.randn(2, 3, 8)}
    valid = {"a": valid_positions(torch.tensor([5, 2]), torch.ones(2, dtype=torch.bool), 5),
             "b": valid_positions(None, torch.tensor([True, False]), 3)}
    exc, info = psa(seqs, valid, torch.tensor([[True, True], [True, False]]))
    agn = hca(seqs, valid)
    for out in (exc, agn):
        assert (out["a"][1, 2:] == 0).all() and (out["b"][1] == 0).all()
    torch.testing.assert_close(info["weights"][1], torch.tensor([1.0, 0.0]))


def test_bad_input_errors():
    model = make_model()
    b = make_batch()
    with pytest.raises(MissingModalityError, match="video"):
        model(MultimodalBatch({m: b.inputs[m] for m in ("audio", "text")}, {m: b.mask[m] for m in ("audio", "text")}))
    with pytest.raises(ShapeError, match="text"):
        model(MultimodalBatch({**b.inputs, "text": torch.randn(4, 5, 7)}, b.mask))
    with pytest.raises(ShapeError, match="audio"):
        model(MultimodalBatch({**b.inputs, "audio": torch.randn(4, 3)}, b.mask))
    with pytest.raises(ShapeError, match="lengths"):
        model(MultimodalBatch(b.inputs, b.mask, None, {**b.lengths, "video": torch.full((4,), 99)}))
    with pytest.raises(DataError):
        model({"audio": b.inputs["audio"]})
    for kw in ({"dim": 10, "heads": 4}, {"alpha": -1.0}, {"beta": "x"}, {"psa_layers": 0}, {"hsic_kernel": "poly"},
               {"mu": 2.0}, {"graph_rounds": 0}):
        with pytest.raises(ConfigError):
            MEAModel(DIMS, 3, **{"dim": 8, "heads": 2, **kw})
    with pytest.raises(ConfigError):
        MEAModel({"a": 3}, 2)
    with pytest.raises(ConfigError):
        MEAModel({"a": 3, "b.c": 2}, 2)
    with pytest.raises(ConfigError):
        MEAModel({"a": 3, "b": 0}, 2)
    with pytest.raises(ConfigError):
        MEAModel(DIMS, 0)


def test_predictive_map_is_used_from_layer_two():
    psa = PSA(["a", "b"], 8, 2, 2, mu=0.25)
    assert psa.layers[0]["a"].predict is None and psa.layers[1]["a"].predict is not None
    seqs = {"a": torch.randn(2, 5, 8), "b": torch.randn(2, 3, 8)}
    valid = {m: torch.ones(2, x.shape[1], dtype=torch.bool) for m, x in seqs.items()}
    present = torch.ones(2, 2, dtype=torch.bool)
    with_p = psa(seqs, valid, present)[0]["a"]
    for layer in psa.layers:
        layer["a"].mu = 0.0
    without = psa(seqs, valid, present)[0]["a"]
    assert not torch.allclose(with_p, without)


def _same_weights(shapes, **kw):
    """A model reading ``shapes`` through SequenceView and a twin (same weights) reading [B, T, F] directly."""
    torch.manual_seed(0)
    viewed = MEAModel(None, 3, dim=8, heads=2, input_shapes=shapes, **kw).eval()
    plain = MEAModel({m: s[-1] for m, s in shapes.items()}, 3, dim=8, heads=2, **kw).eval()
    plain.load_state_dict(viewed.state_dict())
    return viewed, plain


def test_sequence_view_flattens_leading_dims_vectors_and_scales_lengths():
    shapes = {"img": (1, 4, 5), "vec": (6,), "vid": (None, 2, 3)}
    viewed, plain = _same_weights(shapes)
    g = torch.Generator().manual_seed(3)
    x = {"img": torch.randn(3, 1, 4, 5, generator=g), "vec": torch.randn(3, 6, generator=g),
         "vid": torch.randn(3, 4, 2, 3, generator=g)}
    lengths = {"vid": torch.tensor([4, 2, 1])}
    mask = {m: torch.ones(3, dtype=torch.bool) for m in shapes}
    out = viewed(MultimodalBatch(x, mask, None, lengths))
    # oracle: image rows are time steps, a vector is one step, (T, 2, 3) is 2·T steps of 3 features
    flat = {"img": x["img"].reshape(3, 4, 5), "vec": x["vec"][:, None], "vid": x["vid"].reshape(3, 8, 3)}
    ref = plain(MultimodalBatch(flat, mask, None, {"vid": lengths["vid"] * 2}))
    torch.testing.assert_close(out.logits, ref.logits)
    # the 3rd sample's padding (entries 1.. of the first axis) is ignored
    junk = {**x, "vid": x["vid"].clone()}
    junk["vid"][2, 1:] = 1e3
    torch.testing.assert_close(viewed(MultimodalBatch(junk, mask, None, lengths)).logits, out.logits)
    assert not any(True for _ in viewed.views.parameters())
    with pytest.raises(ShapeError, match="img"):
        viewed(MultimodalBatch({**x, "img": torch.randn(3, 1, 5, 5)}, mask, None, lengths))
    for bad in ({"a": (None,), "b": (3,)}, {"a": (4, None), "b": (3,)}, {"a": (2, 0), "b": (3,)}):
        with pytest.raises(ConfigError):
            MEAModel(None, 3, dim=8, heads=2, input_shapes=bad)


def test_modality_dropout_in_training_equals_absent_modality():
    from mmfuse.missing import ModalityDropout

    model = make_model(modality_dropout=ModalityDropout({"audio": 1.0}))
    batch = make_batch()
    ref = model.eval()(batch.with_mask({"audio": torch.zeros(4, dtype=torch.bool)}))
    torch.testing.assert_close(model(batch).logits, make_model()(batch).logits)   # eval: nothing dropped
    out = model.train()(batch)
    assert not out.extras["present.audio"].any() and out.extras["present.text"].all()
    torch.testing.assert_close(out.logits, ref.logits)
