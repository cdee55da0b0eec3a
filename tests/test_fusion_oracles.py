"""Oracles for the fusion operators: each result is checked against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmfuse.fusion import create_fusion


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def rand(dims, batch=4, dtype=torch.float32):
    return {m: torch.randn(batch, d, dtype=dtype) for m, d in dims.items()}


def bools(*values):
    return torch.tensor(values, dtype=torch.bool)


# --------------------------------------------------------------------------------------------
# TFN
# --------------------------------------------------------------------------------------------

TFN_DIMS = {"a": 2, "b": 3, "c": 1}


def test_tfn_dim_and_full_outer_product():
    op = create_fusion("tensor", TFN_DIMS)
    assert op.output_dim == 3 * 4 * 2
    x = rand(TFN_DIMS)
    out = op(x)
    one = torch.ones(4, 1)
    za, zb, zc = (torch.cat([one, x[m]], dim=1) for m in "abc")
    # row-major, first modality slowest: idx = (i_a·(d_b+1) + i_b)·(d_c+1) + i_c
    expected = torch.einsum("bi,bj,bk->bijk", za, zb, zc).reshape(4, -1)
    assert torch.allclose(out, expected, atol=1e-6)
    i_a, i_b, i_c = 2, 1, 1
    assert torch.allclose(out[:, (i_a * 4 + i_b) * 2 + i_c], x["a"][:, 1] * x["b"][:, 0] * x["c"][:, 0])


def test_tfn_constant_and_unimodal_slices():
    op = create_fusion("tensor", TFN_DIMS)
    x = rand(TFN_DIMS)
    t = op(x).reshape(4, 3, 4, 2)
    assert torch.equal(op(x)[:, 0], torch.ones(4))
    assert torch.equal(t[:, 1:, 0, 0], x["a"])
    assert torch.equal(t[:, 0, 1:, 0], x["b"])
    assert torch.equal(t[:, 0, 0, 1:], x["c"])


def test_tfn_scaling_one_modality_scales_exactly_its_entries():
    op = create_fusion("tensor", TFN_DIMS)
    x = rand(TFN_DIMS, dtype=torch.float64)
    base = op(x).reshape(4, 3, 4, 2)
    scaled = op({**x, "b": 2.5 * x["b"]}).reshape(4, 3, 4, 2)
    assert torch.allclose(scaled[:, :, 1:, :], 2.5 * base[:, :, 1:, :], rtol=1e-12)
    assert torch.equal(scaled[:, :, 0, :], base[:, :, 0, :])


def test_tfn_absent_modality_keeps_only_its_constant_slot():
    op = create_fusion("tensor", TFN_DIMS)
    x = rand(TFN_DIMS)
    mask = {"a": bools(1, 1, 1, 1), "b": bools(0, 1, 0, 1), "c": bools(1, 1, 1, 1)}
    out = op(x, mask)
    zeroed = op({**x, "b": x["b"] * mask["b"].unsqueeze(1)})
    assert torch.equal(out, zeroed)
    t = out.reshape(4, 3, 4, 2)
    assert torch.all(t[0, :, 1:, :] == 0) and torch.any(t[1, :, 1:, :] != 0)


def test_tfn_commutes_with_modality_order_up_to_index_permutation():
    x = rand(TFN_DIMS)
    out = create_fusion("tensor", TFN_DIMS)(x).reshape(4, 3, 4, 2)
    # rename so that the sorted order becomes c, a, b
    renamed = {"y": x["a"], "z": x["b"], "x": x["c"]}
    out2 = create_fusion("tensor", {"y": 2, "z": 3, "x": 1})(renamed).reshape(4, 2, 3, 4)
    assert torch.allclose(out2.permute(0, 2, 3, 1), out, rtol=1e-6, atol=1e-7)  # products in another order


# --------------------------------------------------------------------------------------------
# LMF
# --------------------------------------------------------------------------------------------

LMF_DIMS = {"a": 2, "b": 3, "c": 2}


def _lmf(rank=3, out=4):
    op = create_fusion("low_rank", LMF_DIMS, rank=rank, output_dim=out).double()
    with torch.no_grad():
        op.bias.normal_()  # zero at init; make it count
    return op


@pytest.mark.parametrize("with_mask", [False, True])
def test_lmf_equals_low_rank_weight_times_tfn(with_mask):
    op = _lmf()
    x = rand(LMF_DIMS, batch=5, dtype=torch.float64)
    mask = {"a": bools(1, 0, 1, 1, 0), "b": bools(1, 1, 0, 1, 0), "c": bools(1, 1, 1, 0, 0)} if with_mask else None
    Wa, Wb, Wc = (op.factors[m] for m in "abc")  # [R, D_m + 1, H]
    w = op.rank_weights[0]
    full = torch.einsum("r,rih,rjh,rkh->hijk", w, Wa, Wb, Wc).reshape(op.output_dim, -1)  # Σ_i w_i ⊗_m W_m^(i)
    tfn = create_fusion("tensor", LMF_DIMS)(x, mask)
    expected = tfn @ full.T + op.bias
    assert torch.allclose(op(x, mask), expected, rtol=1e-10, atol=1e-12)


def test_lmf_rank_one_is_product_of_affine_maps():
    op = _lmf(rank=1)
    with torch.no_grad():
        op.rank_weights.fill_(1.0)
        op.bias.zero_()
    x = rand(LMF_DIMS, dtype=torch.float64)
    expected = 1
    for m in "abc":
        W = op.factors[m][0]  # [D_m + 1, H]
        expected = expected * (x[m] @ W[1:] + W[0])
    assert torch.allclose(op(x), expected, rtol=1e-12)


def test_lmf_parameters_shapes_init_and_count():
    r, h = 3, 4
    op = create_fusion("low_rank", LMF_DIMS, rank=r, output_dim=h)
    n = sum(p.numel() for p in op.parameters())
    assert n == r * sum(d + 1 for d in LMF_DIMS.values()) * h + r + h
    assert {m: tuple(op.factors[m].shape) for m in LMF_DIMS} == {m: (r, d + 1, h) for m, d in LMF_DIMS.items()}
    assert tuple(op.rank_weights.shape) == (1, r)
    assert torch.equal(op.bias, torch.zeros(h))
    assert op(rand(LMF_DIMS)).shape == (4, h)


def test_lmf_every_factor_is_registered_and_trained():
    """MultiBench kept the factors in a plain list: they were neither saved nor optimised."""
    op = create_fusion("low_rank", LMF_DIMS, rank=2, output_dim=3)
    state = op.state_dict()
    for m in LMF_DIMS:
        assert f"factors.{m}" in state
    assert "rank_weights" in state and "bias" in state
    op(rand(LMF_DIMS)).pow(2).sum().backward()
    for m in LMF_DIMS:
        g = op.factors[m].grad
        assert g is not None and g.abs().sum() > 0
    trained = {id(p) for p in op.parameters()}  # what an optimiser would receive
    assert all(id(op.factors[m]) in trained for m in LMF_DIMS)


# --------------------------------------------------------------------------------------------
# MultConcat
# --------------------------------------------------------------------------------------------


def _projected(op, x, m):
    lin = op.proj[m]
    return torch.relu(x[m] @ lin.weight.T + lin.bias)


def test_multconcat_layout_and_values():
    dims = {"a": 3, "b": 5}
    op = create_fusion("multconcat", dims, dim=4)
    assert op.output_dim == 3 * 4
    x = rand(dims)
    out = op(x)
    oa, ob = _projected(op, x, "a"), _projected(op, x, "b")
    assert torch.allclose(out[:, :4], oa) and torch.allclose(out[:, 4:8], ob)
    assert torch.allclose(out[:, 8:], oa * ob)
    assert torch.all(out >= 0)


def test_multconcat_permuting_modalities_permutes_blocks_and_keeps_product():
    dims = {"a": 3, "b": 5, "c": 2}
    op = create_fusion("multconcat", dims, dim=4)
    # cyclic renaming a->c, b->a, c->b changes the sorted order of the same three inputs
    rename = {"a": "c", "b": "a", "c": "b"}
    op2 = create_fusion("multconcat", {rename[m]: d for m, d in dims.items()}, dim=4)
    for m in dims:
        op2.proj[rename[m]].load_state_dict(op.proj[m].state_dict())
    x = rand(dims)
    out = op(x)
    out2 = op2({rename[m]: v for m, v in x.items()})
    block = {m: out[:, 4 * i : 4 * i + 4] for i, m in enumerate(sorted(dims))}
    block2 = {m: out2[:, 4 * i : 4 * i + 4] for i, m in enumerate(sorted(rename.values()))}
    for m in dims:
        assert torch.equal(block2[rename[m]], block[m])
    assert torch.allclose(out2[:, 12:], out[:, 12:], rtol=1e-6)


def test_multconcat_dead_modality_zeroes_product_and_masking():
    dims = {"a": 3, "b": 5}
    op = create_fusion("multconcat", dims, dim=4)
    x = rand(dims)
    with torch.no_grad():
        op.proj["a"].weight.zero_()
        op.proj["a"].bias.fill_(-1.0)  # ReLU -> out_a == 0
    assert torch.all(op(x)[:, 8:] == 0)

    op = create_fusion("multconcat", dims, dim=4)
    mask = {"a": bools(1, 0, 1, 0), "b": bools(1, 1, 0, 0)}
    out = op(x, mask)
    oa, ob = _projected(op, x, "a"), _projected(op, x, "b")
    assert torch.all(out[1, :4] == 0) and torch.allclose(out[1, 8:], ob[1])  # absent a: product of b only
    assert torch.all(out[2, 4:8] == 0) and torch.allclose(out[2, 8:], oa[2])
    assert torch.all(out[3] == 0)  # none present: C blocks and Z all zero


# --------------------------------------------------------------------------------------------
# Gated (GMU)
# --------------------------------------------------------------------------------------------


def test_gmu_two_modalities_is_the_sigmoid_gmu():
    dims = {"t": 3, "v": 5}
    op = create_fusion("gated", dims, dim=4)
    x = rand(dims, batch=6)
    h1 = torch.tanh(x["t"] @ op.hidden["t"].weight.T)
    h2 = torch.tanh(x["v"] @ op.hidden["v"].weight.T)
    g = (torch.cat([x["t"], x["v"]], dim=1) @ op.gate.weight.T).view(6, 2, 4)
    z = torch.sigmoid(g[:, 0] - g[:, 1])  # σ(W_z [x_1; x_2]) with W_z = W_z1 − W_z2
    out = op(x)
    assert torch.allclose(out, z * h1 + (1 - z) * h2, atol=1e-6)
    lo, hi = torch.minimum(h1, h2), torch.maximum(h1, h2)
    assert torch.all(out >= lo - 1e-6) and torch.all(out <= hi + 1e-6)
    assert torch.all(out.abs() < 1)
    assert torch.all((z > 0) & (z < 1))


def test_gmu_gates_renormalise_over_present_modalities():
    dims = {"a": 2, "b": 3, "c": 4}
    op = create_fusion("gated", dims, dim=3, bias=True)
    x = rand(dims)
    mask = {"a": bools(1, 1, 0, 0), "b": bools(1, 0, 0, 0), "c": bools(1, 1, 1, 0)}
    xs, present = op._check(x, mask)
    h, z = op.parts(xs, present)
    assert torch.allclose(z.sum(dim=1)[:3], torch.ones(3, 3)) and torch.all(z[3] == 0)
    assert torch.all(z[~present] == 0)
    out = op(x, mask)
    hc = torch.tanh(op.hidden["c"](x["c"]))
    assert torch.allclose(out[2], hc[2], atol=1e-6)  # only c present: output is h_c
    assert torch.all(out[3] == 0)  # none present
    full = op(x)  # all present: between the smallest and largest h_m, elementwise
    hf, _ = op.parts(*op._check(x, None))
    lo, hi = hf.amin(dim=1), hf.amax(dim=1)
    assert torch.all(full >= lo - 1e-6) and torch.all(full <= hi + 1e-6)
    assert torch.all(hf.amax(dim=1) - hf.amin(dim=1) > 0)  # non-trivial bounds


# --------------------------------------------------------------------------------------------
# Element-wise operators: masked semantics against a per-row hand computation
# --------------------------------------------------------------------------------------------

EQ_DIMS = {"a": 3, "b": 3, "c": 3}
MASK = {"a": bools(1, 1, 0, 0, 1), "b": bools(1, 0, 1, 0, 0), "c": bools(1, 1, 0, 0, 0)}


def _by_hand(name, x, mask, row):
    vals = [x[m][row] for m in sorted(x) if mask[m][row]]
    if not vals:
        return torch.zeros(3)
    stacked = torch.stack(vals)
    return {"sum": stacked.sum(0), "mean": stacked.mean(0), "max": stacked.amax(0), "product": stacked.prod(0)}[name]


@pytest.mark.parametrize("name", ["sum", "mean", "max", "product"])
def test_elementwise_masked_semantics(name):
    op = create_fusion(name, EQ_DIMS)
    assert not hasattr(op, "proj") and op.output_dim == 3  # equal widths: no projection
    x = rand(EQ_DIMS, batch=5)
    out = op(x, MASK)
    for row in range(5):
        assert torch.allclose(out[row], _by_hand(name, x, MASK, row), atol=1e-6), (name, row)


def test_max_of_negative_values_ignores_absent_zeros():
    op = create_fusion("max", {"a": 2, "b": 2})
    x = {"a": -torch.ones(1, 2), "b": torch.zeros(1, 2)}
    assert torch.equal(op(x, {"a": bools(1), "b": bools(0)}), -torch.ones(1, 2))


@pytest.mark.parametrize("name", ["sum", "mean", "max", "product"])
def test_elementwise_projects_when_widths_differ_or_dim_given(name):
    dims = {"a": 2, "b": 4}
    op = create_fusion(name, dims)
    assert op.output_dim == 4 and set(op.proj) == {"a", "b"}
    x = rand(dims, batch=5)
    mask = {"a": bools(1, 1, 0, 0, 1), "b": bools(1, 0, 1, 0, 1)}
    projected = {m: op.proj[m](x[m]) for m in dims}
    out = op(x, mask)
    for row in range(5):
        vals = [projected[m][row] for m in dims if mask[m][row]]
        ref = torch.zeros(4) if not vals else {
            "sum": sum(vals), "mean": sum(vals) / len(vals), "max": torch.stack(vals).amax(0),
            "product": math.prod(vals),
        }[name]
        assert torch.allclose(out[row], ref, atol=1e-6)
    op = create_fusion(name, {"a": 3, "b": 3}, dim=5)
    assert op.output_dim == 5 and hasattr(op, "proj")


def test_concat_zero_slots_for_absent():
    dims = {"a": 2, "b": 3}
    op = create_fusion("concat", dims)
    x = rand(dims)
    mask = {"a": bools(1, 0, 1, 0), "b": bools(1, 1, 0, 0)}
    out = op(x, mask)
    assert op.output_dim == 5
    assert torch.equal(out[0], torch.cat([x["a"][0], x["b"][0]]))
    assert torch.equal(out[1], torch.cat([torch.zeros(2), x["b"][1]]))
    assert torch.equal(out[3], torch.zeros(5))


# --------------------------------------------------------------------------------------------
# Cross-attention
# --------------------------------------------------------------------------------------------

CA_DIMS = {"audio": 3, "text": 5, "video": 2}


def _ca(**kw):
    return create_fusion("cross_attention", CA_DIMS, dim=8, heads=2, ffn_dim=8, **kw).eval()


def test_cross_attention_padding_does_not_leak_and_equals_truncated_sequence():
    op = _ca()
    B, T = 3, 5
    lengths = torch.tensor([2, 5, 3])
    x = {"audio": torch.randn(B, 3), "text": torch.randn(B, T, 5), "video": torch.randn(B, 4, 2)}
    tm = {"text": torch.arange(T)[None] < lengths[:, None], "video": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]).bool()}
    with torch.no_grad():
        out = op(x, None, token_mask=tm)
        noisy = {**x, "text": torch.where(tm["text"][..., None], x["text"], 100 * torch.randn(B, T, 5))}
        assert torch.allclose(op(noisy, None, token_mask=tm), out, atol=1e-5)
        for b in range(B):  # one sample at a time, cut to its real tokens, no mask at all
            single = {"audio": x["audio"][b : b + 1], "text": x["text"][b : b + 1, : lengths[b]],
                      "video": x["video"][b : b + 1, tm["video"][b]]}
            assert torch.allclose(op(single, None), out[b : b + 1], atol=1e-5)
        assert torch.allclose(op(x, None, lengths={"text": lengths}, token_mask={"video": tm["video"]}), out)


def test_cross_attention_vector_is_a_length_one_sequence():
    op = _ca()
    x = rand(CA_DIMS)
    with torch.no_grad():
        assert torch.allclose(op(x), op({**x, "text": x["text"].unsqueeze(1)}), atol=1e-6)


def test_cross_attention_matches_reference_attention():
    """The hand-masked attention equals torch's scaled_dot_product_attention with a bool mask."""
    op = _ca()
    block = op.blocks["audio"]
    B, Tq, K, D, H = 2, 3, 4, 8, 2
    q_tok, keys = torch.randn(B, Tq, D), torch.randn(B, K, D)
    key_mask = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]]).bool()
    with torch.no_grad():
        got = block(q_tok, keys, key_mask)
        split = lambda t: t.view(B, -1, H, D // H).transpose(1, 2)  # noqa: E731
        k = torch.cat([block.k(keys), block.null_key.expand(B, 1, D)], dim=1)
        v = torch.cat([block.v(keys), torch.zeros(B, 1, D)], dim=1)  # the null key's value is 0
        allowed = torch.cat([key_mask, torch.ones(B, 1, dtype=torch.bool)], dim=1)[:, None, None, :]
        ctx = F.scaled_dot_product_attention(split(block.q(q_tok)), split(k), split(v), attn_mask=allowed)
        x1 = block.norm1(q_tok + block.out(ctx.transpose(1, 2).reshape(B, Tq, D)))
        ref = block.norm2(x1 + block.ffn(x1))
    assert torch.allclose(got, ref, atol=1e-5)


def test_cross_attention_without_other_modalities_is_residual_only():
    op = _ca()
    x = rand(CA_DIMS, batch=2)
    mask = {"audio": bools(1, 1), "text": bools(0, 1), "video": bools(0, 1)}
    with torch.no_grad():
        out = op(x, mask)
        block = op.blocks["audio"]
        t = op.proj["audio"](x["audio"]) + op.modality_embedding[0]
        x1 = block.norm1(t)  # no attention update at all
        expected = block.norm2(x1 + block.ffn(x1))
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, :8], expected[0], atol=1e-6)
    assert not torch.allclose(out[1, :8], expected[1], atol=1e-3)  # with context the update is used
    assert torch.all(out[0, 8:] == 0)  # absent text and video blocks are zero


def test_cross_attention_absent_sequence_and_empty_rows_are_safe():
    op = _ca()
    x = {"audio": torch.randn(2, 3), "text": torch.randn(2, 4, 5), "video": torch.randn(2, 2)}
    tm = {"text": torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0]]).bool()}
    x["audio"].requires_grad_(True)
    out = op(x, {"audio": bools(1, 0), "text": bools(1, 1), "video": bools(0, 0)}, token_mask=tm)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x["audio"].grad).all()
    assert torch.all(out[0, 8:16] == 0)  # present but zero real tokens: pooled block is 0
