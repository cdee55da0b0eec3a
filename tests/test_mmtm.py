"""MMTM block: the spec's oracles (shared/specs/01-mmtm.md §1.7) and the common module checks."""

from __future__ import annotations

import pytest
import torch

from mmfuse.errors import ConfigError, MissingModalityError, ShapeError
from mmfuse.interaction import MMTM, squeeze
from mmfuse.registry import INTERACTIONS


def feats(B=3, seed=0, **shapes):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn((B,) + tuple(s), generator=g) for k, s in shapes.items()}


def positive_feats(B=3, seed=0, **shapes):
    """Features bounded away from zero, so that out / in is well defined."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand((B,) + tuple(s), generator=g) + 0.5 for k, s in shapes.items()}


# ---------------------------------------------------------------- oracles
@pytest.mark.parametrize("shape_a,shape_b", [((8,), (4,)), ((8, 5), (4, 7)), ((8, 5, 6), (4, 3)), ((8, 2, 5, 6), (4, 11))])
def test_identity_oracle_paper_gate_is_exactly_identity(shape_a, shape_b):
    torch.manual_seed(0)
    m = MMTM({"a": 8, "b": 4}, preset="paper", init="identity")
    x = feats(a=shape_a, b=shape_b)
    out = m(x)
    for k in x:
        assert out[k].shape == x[k].shape
        assert torch.equal(out[k], x[k])


def test_identity_oracle_code_gate_is_exactly_half():
    torch.manual_seed(0)
    m = MMTM({"a": 8, "b": 4}, preset="code", init="identity")
    x = feats(a=(8, 5, 6), b=(4, 9))
    out = m(x)
    for k in x:
        assert torch.equal(out[k], 0.5 * x[k])


def test_identity_init_with_explicit_gate_scale():
    m = MMTM({"a": 3, "b": 5}, preset="code", gate_scale=2, init="identity")
    x = feats(a=(3, 4), b=(5,))
    assert all(torch.equal(m(x)[k], x[k]) for k in x)


@pytest.mark.parametrize("preset,scale", [("paper", 2.0), ("code", 1.0)])
def test_gate_ratio_constant_over_positions_and_in_range(preset, scale):
    torch.manual_seed(1)
    m = MMTM({"a": 6, "b": 5}, preset=preset)
    # large excitation weights push gates towards the ends of the range
    with torch.no_grad():
        for fc in m.excitation.values():
            fc.weight.mul_(5)
    x = positive_feats(B=4, a=(6, 3, 4, 5), b=(5, 7))
    out = m(x)
    for k in x:
        ratio = out[k] / x[k]
        flat = ratio.flatten(2)
        assert torch.allclose(flat, flat[:, :, :1].expand_as(flat), rtol=1e-5, atol=1e-6)
        assert (ratio > 0).all() and (ratio < scale).all()
        g = m.gates(x)[k]
        assert torch.allclose(flat[:, :, 0], g, rtol=1e-5, atol=1e-6)


def test_permuting_positions_permutes_output_and_keeps_gates():
    torch.manual_seed(2)
    m = MMTM({"a": 6, "b": 5})
    x = feats(B=2, a=(6, 4, 5), b=(5, 9))
    perm = torch.randperm(20)
    xa = x["a"].flatten(2)[:, :, perm].reshape(x["a"].shape)
    xb_perm = torch.randperm(9)
    y = {"a": xa, "b": x["b"][:, :, xb_perm]}
    g0, g1 = m.gates(x), m.gates(y)
    for k in x:
        assert torch.allclose(g0[k], g1[k], atol=1e-6)
    out0, out1 = m(x), m(y)
    assert torch.allclose(out0["a"].flatten(2)[:, :, perm].reshape(x["a"].shape), out1["a"], atol=1e-6)
    assert torch.allclose(out0["b"][:, :, xb_perm], out1["b"], atol=1e-6)


def test_nearest_upsampling_keeps_gates():
    torch.manual_seed(3)
    m = MMTM({"a": 6, "b": 5, "c": 3})
    x = feats(B=2, a=(6, 4, 5), b=(5, 9), c=(3, 2, 3, 3))
    y = dict(x)
    y["a"] = torch.nn.functional.interpolate(x["a"], scale_factor=3, mode="nearest")
    y["b"] = torch.nn.functional.interpolate(x["b"], scale_factor=2, mode="nearest")
    y["c"] = torch.nn.functional.interpolate(x["c"], scale_factor=(2, 2, 2), mode="nearest")
    g0, g1 = m.gates(x), m.gates(y)
    for k in x:
        assert torch.allclose(g0[k], g1[k], atol=1e-6)


def test_batch_independence():
    torch.manual_seed(4)
    m = MMTM({"a": 6, "b": 5}).eval()
    x = feats(B=5, a=(6, 3, 3), b=(5, 4))
    full = m(x)
    for rows in ([0], [1, 3], [4, 2, 0]):
        part = m({k: v[rows] for k, v in x.items()})
        for k in x:
            assert torch.allclose(part[k], full[k][rows], atol=1e-6)


@pytest.mark.parametrize("C,C2,d", [(64, 32, 24), (8, 4, 3), (5, 7, 1)])
def test_parameter_count_formula(C, C2, d):
    m = MMTM({"x": C, "y": C2}, joint_dim=d)
    n = sum(p.numel() for p in m.parameters())
    assert n == (C + C2) * d + d + d * C + C + d * C2 + C2


def test_preset_joint_widths_and_overrides():
    assert MMTM({"a": 64, "b": 32}).joint_dim == 24  # paper: (C+C')/4
    assert MMTM({"a": 64, "b": 32}, preset="code").joint_dim == 48  # code: int(2(C+C')/4)
    assert MMTM({"a": 64, "b": 33}, preset="code").joint_dim == int(2 * 97 / 4)
    assert MMTM({"a": 64, "b": 32}, reduction=8).joint_dim == 12
    assert MMTM({"a": 64, "b": 32}, reduction=8, joint_dim=5).joint_dim == 5
    assert MMTM({"a": 1, "b": 1}).joint_dim == 1  # never 0
    m = MMTM({"a": 4, "b": 4})
    assert m.gate_scale == 2.0 and m.relu
    m = MMTM({"a": 4, "b": 4}, preset="code")
    assert m.gate_scale == 1.0 and m.relu
    assert not MMTM({"a": 4, "b": 4}, relu=False).relu


def test_relu_switch_changes_output():
    torch.manual_seed(5)
    a = MMTM({"a": 6, "b": 5}, relu=True)
    b = MMTM({"a": 6, "b": 5}, relu=False)
    b.load_state_dict(a.state_dict())
    x = feats(a=(6, 3), b=(5,))
    assert not torch.allclose(a(x)["a"], b(x)["a"])
    # manual computation of the relu-free form
    s = torch.cat([squeeze(x["a"]), x["b"]], 1)
    z = b.joint(s)
    gate = 2 * torch.sigmoid(b.excitation["a"](z))
    assert torch.allclose(b(x)["a"], x["a"] * gate[:, :, None], atol=1e-6)


def test_streams_of_rank_2_3_4_5_and_different_sizes():
    torch.manual_seed(6)
    m = MMTM({"v5": 64, "s3": 32, "i4": 16, "e2": 8})
    x = feats(B=2, v5=(64, 8, 14, 14), s3=(32, 40), i4=(16, 7, 9), e2=(8,))
    out = m(x)
    assert set(out) == set(x)
    for k in x:
        assert out[k].shape == x[k].shape


def test_two_streams_of_spec_example():
    m = MMTM({"rgb": 64, "pose": 32})
    x = feats(B=2, rgb=(64, 8, 14, 14), pose=(32, 40))
    out = m(x)
    assert out["rgb"].shape == (2, 64, 8, 14, 14) and out["pose"].shape == (2, 32, 40)


def test_three_streams_use_one_joint_fc_and_three_excitations():
    torch.manual_seed(7)
    m = MMTM({"rgb": 8, "depth": 4, "flow": 4}, init="identity")
    assert m.joint.in_features == 16 and m.joint_dim == 4
    assert sorted(m.excitation) == ["depth", "flow", "rgb"]
    x = feats(rgb=(8, 2, 3, 3), depth=(4, 2, 3, 3), flow=(4, 5))
    assert all(torch.equal(m(x)[k], x[k]) for k in x)
    # every stream's gate depends on every stream's squeeze
    m2 = MMTM({"rgb": 8, "depth": 4, "flow": 4})
    y = dict(x)
    y["flow"] = x["flow"] + 1.0
    g0, g1 = m2.gates(x), m2.gates(y)
    assert not torch.allclose(g0["rgb"], g1["rgb"]) and not torch.allclose(g0["depth"], g1["depth"])


def test_vector_squeeze_is_itself():
    x = torch.randn(3, 5)
    assert squeeze(x) is x
    y = torch.randn(3, 5, 2, 4)
    assert torch.allclose(squeeze(y), y.flatten(2).mean(-1))


# ---------------------------------------------------------------- common checks
def test_gradient_reaches_every_parameter():
    torch.manual_seed(8)
    m = MMTM({"a": 6, "b": 5}, joint_dim=8)  # wide enough that some ReLU unit is active
    x = feats(B=6, a=(6, 3, 3), b=(5, 4))
    for v in x.values():
        v.requires_grad_(True)
    out = m(x)
    (out["a"].pow(2).sum() + out["b"].pow(3).sum()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in x.values())


def test_state_dict_round_trip_gives_identical_outputs():
    torch.manual_seed(9)
    a = MMTM({"a": 6, "b": 5}, absent="learned")
    with torch.no_grad():
        for p in a.absent_token.values():
            p.normal_()
    torch.manual_seed(123)
    b = MMTM({"a": 6, "b": 5}, absent="learned")
    b.load_state_dict(a.state_dict())
    x = feats(a=(6, 3, 3), b=(5, 4))
    mask = {"a": torch.tensor([True, False, True]), "b": torch.tensor([True, True, False])}
    for k in x:
        assert torch.equal(a(x)[k], b(x)[k])
        assert torch.equal(a(x, mask)[k], b(x, mask)[k])


def test_same_seed_same_output():
    x = feats(a=(6, 3, 3), b=(5, 4))
    torch.manual_seed(10)
    a = MMTM({"a": 6, "b": 5})
    torch.manual_seed(10)
    b = MMTM({"a": 6, "b": 5})
    for k in x:
        assert torch.equal(a(x)[k], b(x)[k])


def test_registered_in_interactions():
    assert "mmtm" in INTERACTIONS
    m = INTERACTIONS.create("mmtm", channels={"a": 4, "b": 4}, preset="code")
    assert isinstance(m, MMTM) and m.gate_scale == 1.0


# ---------------------------------------------------------------- absent streams
@pytest.mark.parametrize("absent", ["zero", "learned"])
def test_absent_stream_placeholder_does_not_leak(absent):
    torch.manual_seed(11)
    m = MMTM({"a": 6, "b": 5, "c": 4}, absent=absent)
    x = feats(B=4, a=(6, 3, 3), b=(5, 4), c=(4,))
    mask = {"a": torch.ones(4, dtype=torch.bool), "b": torch.tensor([True, False, True, False]),
            "c": torch.ones(4, dtype=torch.bool)}
    out = m(x, mask)
    # the absent rows of b pass through unchanged
    assert torch.equal(out["b"][~mask["b"]], x["b"][~mask["b"]])
    # changing b's placeholder values where b is absent changes nothing anywhere
    y = dict(x)
    yb = x["b"].clone()
    yb[~mask["b"]] = torch.randn_like(yb[~mask["b"]]) * 100
    y["b"] = yb
    out2 = m(y, mask)
    for k in ("a", "c"):
        assert torch.equal(out[k], out2[k])
    assert torch.equal(out2["b"][~mask["b"]], yb[~mask["b"]])
    # present rows of b are still gated, and the others still work (finite, different from input)
    assert torch.equal(out["b"][mask["b"]], out2["b"][mask["b"]])
    assert torch.isfinite(out["a"]).all() and not torch.allclose(out["a"], x["a"])


def test_absent_zero_equals_zero_squeeze():
    """With absent='zero', an absent stream acts as if its squeeze were 0 (no rescaling)."""
    torch.manual_seed(12)
    m = MMTM({"a": 6, "b": 5})
    x = feats(B=2, a=(6, 3), b=(5, 4))
    mask = {"b": torch.tensor([False, False])}
    zeroed = {"a": x["a"], "b": torch.zeros_like(x["b"])}
    assert torch.allclose(m(x, mask)["a"], m(zeroed)["a"], atol=0)


def test_all_present_mask_equals_no_mask_and_partial_mask_keys():
    torch.manual_seed(13)
    m = MMTM({"a": 6, "b": 5})
    x = feats(a=(6, 3), b=(5, 4))
    mask = {"a": torch.ones(3, dtype=torch.bool), "b": torch.ones(3, dtype=torch.bool)}
    for k in x:
        assert torch.equal(m(x, mask)[k], m(x)[k])
        assert torch.equal(m(x, {"a": mask["a"]})[k], m(x)[k])


def test_learned_absent_token_gets_gradient_and_adds_parameters():
    m = MMTM({"a": 6, "b": 5}, joint_dim=3, absent="learned")
    n = sum(p.numel() for p in m.parameters())
    assert n == 11 * 3 + 3 + 3 * 6 + 6 + 3 * 5 + 5 + 11
    x = feats(a=(6, 3), b=(5, 4))
    mask = {"b": torch.tensor([True, False, False])}
    m(x, mask)["a"].sum().backward()
    assert m.absent_token["b"].grad.abs().sum() > 0
    assert m.absent_token["a"].grad is None or m.absent_token["a"].grad.abs().sum() == 0


# ---------------------------------------------------------------- errors
def test_constructor_errors():
    with pytest.raises(ConfigError, match="at least 2"):
        MMTM({"a": 4})
    with pytest.raises(ConfigError, match=r"channels\['b'\]"):
        MMTM({"a": 4, "b": 0})
    with pytest.raises(ConfigError, match=r"channels\['b'\]"):
        MMTM({"a": 4, "b": 2.5})
    with pytest.raises(ConfigError, match="preset"):
        MMTM({"a": 4, "b": 4}, preset="papr")
    with pytest.raises(ConfigError, match="init"):
        MMTM({"a": 4, "b": 4}, init="zeros")
    with pytest.raises(ConfigError, match="reduction"):
        MMTM({"a": 4, "b": 4}, reduction=0)
    with pytest.raises(ConfigError, match="joint_dim"):
        MMTM({"a": 4, "b": 4}, joint_dim=0)
    with pytest.raises(ConfigError, match="gate_scale"):
        MMTM({"a": 4, "b": 4}, gate_scale=-1)
    with pytest.raises(ConfigError, match="absent"):
        MMTM({"a": 4, "b": 4}, absent="mean")


def test_forward_errors_name_the_stream():
    m = MMTM({"audio": 4, "image": 6})
    good = feats(audio=(4, 5), image=(6, 2, 2))
    with pytest.raises(ShapeError, match=r"'image' has 5 channels"):
        m({"audio": good["audio"], "image": torch.randn(3, 5, 2, 2)})
    with pytest.raises(MissingModalityError, match="unknown stream 'video'"):
        m({**good, "video": torch.randn(3, 2)})
    with pytest.raises(MissingModalityError, match="lack stream 'image'"):
        m({"audio": good["audio"]})
    with pytest.raises(ShapeError, match="rank 1"):
        m({"audio": torch.randn(3), "image": good["image"]})
    with pytest.raises(ShapeError, match="batch size"):
        m({"audio": good["audio"], "image": torch.randn(2, 6, 2, 2)})
    with pytest.raises(ShapeError, match=r"mask\['audio'\]"):
        m(good, {"audio": torch.ones(3)})
    with pytest.raises(MissingModalityError, match="unknown stream 'text'"):
        m(good, {"text": torch.ones(3, dtype=torch.bool)})


def test_custom_squeeze_and_gate_gradients_match_autograd():
    from mmfuse.interaction.mmtm import channel_gate

    g = torch.Generator().manual_seed(14)
    for shape in [(2, 3, 4), (2, 3, 2, 3), (2, 2, 2, 2, 3)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
        gate = torch.rand(shape[:2], generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: squeeze(a), (x,))
        assert torch.autograd.gradcheck(channel_gate, (x, gate))
        assert torch.autograd.gradgradcheck(channel_gate, (x, gate))
        assert torch.autograd.gradgradcheck(lambda a: squeeze(a), (x,))
        # the whole block against a plain re-implementation
        m = MMTM({"a": shape[1], "b": 4}, joint_dim=3).double()
        xb = torch.randn(shape[0], 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
        out = m({"a": x, "b": xb})
        s = torch.cat([x.flatten(2).mean(-1), xb.mean(-1)], 1)
        z = torch.relu(m.joint(s))
        ref_a = x * (2 * torch.sigmoid(m.excitation["a"](z))).view(shape[:2] + (1,) * (len(shape) - 2))
        ref_b = xb * (2 * torch.sigmoid(m.excitation["b"](z)))[:, :, None]
        w1, w2 = torch.randn_like(ref_a), torch.randn_like(ref_b)
        got = torch.autograd.grad((out["a"] * w1).sum() + (out["b"] * w2).sum(), [x, xb, *m.parameters()])
        want = torch.autograd.grad((ref_a * w1).sum() + (ref_b * w2).sum(), [x, xb, *m.parameters()])
        for a, b in zip(got, want):
            assert torch.allclose(a, b, atol=1e-10)


def _reference_mmtm(m: MMTM, x: dict) -> dict:
    """The equations of shared/specs/01-mmtm.md §1.1 written out with plain ops (no custom autograd)."""
    s = torch.cat([x[k].reshape(x[k].shape[0], x[k].shape[1], -1).mean(-1) for k in m.streams], 1)
    z = m.joint(s)
    z = torch.relu(z) if m.relu else z
    out = {}
    for k in m.streams:
        g = m.gate_scale * torch.sigmoid(m.excitation[k](z))
        out[k] = x[k] * g.reshape(g.shape + (1,) * (x[k].dim() - 2))
    return out


@pytest.mark.parametrize("kw", [{}, {"preset": "code"}, {"relu": False, "gate_scale": 1.5, "joint_dim": 4}])
def test_fused_block_matches_plain_reference_values_and_gradients(kw):
    """The fused no-mask block (one autograd function, hand-written backward) against the plain equations in
    float64: outputs, input gradients and every parameter gradient, for 3 streams of ranks 2, 4 and 5, with one
    output unused (its gradient None) and one input that needs no gradient."""
    torch.manual_seed(21)
    m = MMTM({"a": 5, "b": 4, "c": 3}, **kw).double()
    g = torch.Generator().manual_seed(22)
    x = {"a": torch.randn(3, 5, 4, 6, generator=g, dtype=torch.float64),
         "b": torch.randn(3, 4, generator=g, dtype=torch.float64),
         "c": torch.randn(3, 3, 2, 2, 3, generator=g, dtype=torch.float64)}
    for k in ("a", "b"):
        x[k].requires_grad_(True)
    got, want = m(x), _reference_mmtm(m, x)
    for k in x:
        assert torch.allclose(got[k], want[k], rtol=0, atol=1e-13)
    w = {k: torch.randn(got[k].shape, generator=g, dtype=torch.float64) for k in ("a", "c")}  # "b" unused
    params = list(m.parameters())
    ga = torch.autograd.grad(sum((got[k] * w[k]).sum() for k in w), [x["a"], x["b"], *params], allow_unused=True)
    gb = torch.autograd.grad(sum((want[k] * w[k]).sum() for k in w), [x["a"], x["b"], *params], allow_unused=True)
    for t, a, b in zip([x["a"], x["b"], *params], ga, gb):  # None: unused (stream b's excitation FC) = 0
        a = torch.zeros_like(t) if a is None else a
        b = torch.zeros_like(t) if b is None else b
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_fused_block_double_backward_and_mask_path_agree():
    """Higher derivatives through the fused block are exact (gradgradcheck), and the masked path with an
    all-True mask gives bitwise the same outputs and allclose gradients as the fused one."""
    torch.manual_seed(23)
    m = MMTM({"a": 3, "b": 2}, joint_dim=2).double()
    g = torch.Generator().manual_seed(24)
    xa = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    xb = torch.randn(2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def f(a, b):
        out = m({"a": a, "b": b})
        return out["a"], out["b"]

    assert torch.autograd.gradcheck(f, (xa, xb))
    assert torch.autograd.gradgradcheck(f, (xa, xb))
    mask = {"a": torch.ones(2, dtype=torch.bool), "b": torch.ones(2, dtype=torch.bool)}
    fused, masked = m({"a": xa, "b": xb}), m({"a": xa, "b": xb}, mask)
    for k in fused:
        assert torch.equal(fused[k], masked[k])
    g1 = torch.autograd.grad(fused["a"].sum() + fused["b"].pow(2).sum(), [xa, xb, *m.parameters()])
    g2 = torch.autograd.grad(masked["a"].sum() + masked["b"].pow(2).sum(), [xa, xb, *m.parameters()])
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-13)


def test_row_kernels_equal_the_plain_formulas(monkeypatch):
    """The backward's per-row kernels (batch norm's on a (1, B*C, N) view) compute sum_p grad * x and
    grad * g + shift exactly as the plain ops do, up to float rounding, in float32 and float64."""
    import mmfuse.interaction.mmtm as mmtm_mod
    from mmfuse.interaction.mmtm import _row_affine, _row_dots, _row_kernels_apply

    # by default only feature maps of >= 2 MiB with rows of >= 32 positions take them (measured faster there)
    big = torch.zeros(2, 64, 64, 64)
    assert _row_kernels_apply(big, big, torch.ones(2, 64))
    assert not _row_kernels_apply(big[:, :, :32].contiguous(), big[:, :, :32].contiguous(), torch.ones(2, 64))
    assert not _row_kernels_apply(big.view(2, 64 * 4096 // 16, 16), big.view(2, 64 * 4096 // 16, 16), torch.ones(2, 1024))
    monkeypatch.setattr(mmtm_mod, "ROW_KERNEL_MIN_BYTES", 0)
    monkeypatch.setattr(mmtm_mod, "ROW_KERNEL_MIN_LENGTH", 1)
    g = torch.Generator().manual_seed(31)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x = torch.randn(3, 4, 5, 6, generator=g, dtype=dtype)
        gr = torch.randn(3, 4, 5, 6, generator=g, dtype=dtype)
        scale, shift = torch.rand(3, 4, generator=g, dtype=dtype), torch.randn(3, 4, generator=g, dtype=dtype)
        assert _row_kernels_apply(gr, x, scale)
        assert torch.allclose(_row_dots(gr, x), (gr * x).flatten(2).sum(-1), rtol=tol, atol=tol)
        assert torch.allclose(_row_affine(gr, scale, shift), gr * scale[:, :, None, None] + shift[:, :, None, None],
                              rtol=tol, atol=tol)
        # a (sample, channel) row that is all zeros gives exactly 0; a unit gate and zero shift give grad itself
        x2 = x.clone()
        x2[1, 2] = 0
        assert _row_dots(gr, x2)[1, 2] == 0
        assert torch.equal(_row_affine(gr, torch.ones_like(scale), torch.zeros_like(shift)), gr)
    # layouts and dtypes the kernels do not take: the plain ops are used instead
    x = torch.randn(2, 3, 4, 4)
    assert not _row_kernels_apply(torch.ones(()).expand(2, 3, 4, 4), x, torch.ones(2, 3))
    assert not _row_kernels_apply(x, x.to(memory_format=torch.channels_last), torch.ones(2, 3))
    assert not _row_kernels_apply(x.half(), x.half(), torch.ones(2, 3).half())
    assert not _row_kernels_apply(x[:, :, :0], x[:, :, :0], torch.ones(2, 3))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "expanded_grad"])
def test_fused_backward_paths_match_reference(layout, monkeypatch):
    """Both backward paths of the fused block (the one-pass row kernels for contiguous tensors, the product +
    sum for any other layout) give the float64 reference's input and parameter gradients, and the path taken
    is the one intended."""
    import mmfuse.interaction.mmtm as mmtm_mod

    calls = []
    real = mmtm_mod._row_dots
    monkeypatch.setattr(mmtm_mod, "_row_dots", lambda gr, x: calls.append(x.shape) or real(gr, x))
    monkeypatch.setattr(mmtm_mod, "ROW_KERNEL_MIN_BYTES", 0)  # tiny tensors, so that both paths run here
    monkeypatch.setattr(mmtm_mod, "ROW_KERNEL_MIN_LENGTH", 1)
    torch.manual_seed(32)
    m = MMTM({"a": 4, "b": 3}, joint_dim=3).double()
    g = torch.Generator().manual_seed(33)
    xa = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    xb = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    if layout == "channels_last":
        xa = xa.to(memory_format=torch.channels_last)
    xa.requires_grad_(True)
    xb.requires_grad_(True)
    got, want = m({"a": xa, "b": xb}), _reference_mmtm(m, {"a": xa, "b": xb})
    params = [xa, xb, *m.parameters()]
    if layout == "expanded_grad":  # .sum() sends a stride-0 gradient
        ga = torch.autograd.grad(got["a"].sum() + got["b"].sum(), params)
        gb = torch.autograd.grad(want["a"].sum() + want["b"].sum(), params)
    else:
        w = {k: torch.randn(got[k].shape, generator=g, dtype=torch.float64) for k in got}
        ga = torch.autograd.grad(sum((got[k] * w[k]).sum() for k in w), params)
        gb = torch.autograd.grad(sum((want[k] * w[k]).sum() for k in w), params)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    expected = {"contiguous": [(2, 4, 3, 5), (2, 3, 7)], "channels_last": [(2, 3, 7)], "expanded_grad": []}[layout]
    assert [tuple(s) for s in calls] == expected
    # the masked path's gate gradient (_ChannelGate) takes the same kernel where it applies
    calls.clear()
    mask = {"a": torch.tensor([True, False]), "b": torch.ones(2, dtype=torch.bool)}
    got = m({"a": xa, "b": xb}, mask)
    s = torch.cat([xa.flatten(2).mean(-1) * mask["a"][:, None], xb.mean(-1)], 1)
    z = torch.relu(m.joint(s))
    ga_ = torch.where(mask["a"][:, None], 2 * torch.sigmoid(m.excitation["a"](z)), torch.ones(()))
    want = {"a": xa * ga_[:, :, None, None], "b": xb * (2 * torch.sigmoid(m.excitation["b"](z)))[:, :, None]}
    w = {k: torch.randn(got[k].shape, generator=g, dtype=torch.float64) for k in got}
    ga = torch.autograd.grad(sum((got[k] * w[k]).sum() for k in w), params)
    gb = torch.autograd.grad(sum((want[k] * w[k]).sum() for k in w), params)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert sorted(tuple(s) for s in calls) == sorted([(2, 3, 7)] + ([] if layout == "channels_last" else [(2, 4, 3, 5)]))
