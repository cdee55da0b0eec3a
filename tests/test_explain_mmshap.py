"""MM-SHAP at feature level: oracles of spec §7.5 on hand-written text+image models."""

import pytest
import torch

from mmfuse.batch import MultimodalBatch
from mmfuse.errors import ConfigError, MissingModalityError, ShapeError, UnknownNameError
from mmfuse.explain import (
    PatchMasker,
    TokenMasker,
    VectorMasker,
    VideoMasker,
    WindowMasker,
    mmshap,
    patch_grid_for_tokens,
)

T, H, G = 5, 7, 2  # tokens, image side, grid → 4 patches of 3x3, remainder row/col 6 never masked


def text_image_batch(B=3, seed=0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(1, 20, (B, T), generator=g)
    image = torch.rand(B, 1, H, H, generator=g, dtype=torch.float64) + 0.5
    batch = MultimodalBatch({"text": text, "image": image}, {"image": torch.ones(B, dtype=torch.bool),
                                                             "text": torch.ones(B, dtype=torch.bool)})
    if lengths is not None:
        for b, L in enumerate(lengths):
            text[b, L:] = 0
        batch.lengths["text"] = torch.tensor(lengths)
    return batch


def indicators(batch, grid=G):
    """z Tensor[B, T + grid²]: token present (id ≠ 0), then mean of each image patch."""
    zt = (batch.inputs["text"] != 0).double()
    p = H // grid
    img = batch.inputs["image"][:, 0, : grid * p, : grid * p]
    zi = img.reshape(-1, grid, p, grid, p).mean((2, 4)).reshape(-1, grid * grid)
    return torch.cat([zt, zi], 1)


MASKERS = {"image": PatchMasker(grid=G)}


def additive(a, c=0.7):
    return lambda b: c + indicators(b) @ a + 5.0 * b.inputs["image"][:, 0, 6, :].sum(1)  # remainder row: constant


def random_nonlinear(seed=0):
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(20, 4, generator=g, dtype=torch.float64)
    W = torch.randn(H * H, 4, generator=g, dtype=torch.float64)

    def f(b):
        t = E[b.inputs["text"]].mean(1)
        i = torch.tanh(b.inputs["image"].flatten(1) @ W)
        return torch.sin((t * i).sum(1)) + torch.tanh(t.sum(1)) * i.prod(1)

    return f


def pairwise(seed=0):
    g = torch.Generator().manual_seed(seed)
    n = T + G * G
    a = torch.randn(n, generator=g, dtype=torch.float64)
    Bm = torch.randn(n, n, generator=g, dtype=torch.float64).triu(1)
    return lambda b: 0.2 + indicators(b) @ a + ((indicators(b) @ Bm) * indicators(b)).sum(1)


@pytest.mark.parametrize("P", [1, 10])
def test_efficiency_is_exact_for_any_number_of_permutations(P):
    batch = text_image_batch()
    r = mmshap(random_nonlinear(), batch, MASKERS, n_permutations=P, seed=1)
    for s in r.samples:
        assert s.values.numel() == T + G * G
        assert abs(s.efficiency_gap()) < 1e-12
    torch.testing.assert_close(r.full, random_nonlinear()(batch))


@pytest.mark.parametrize("P", [1, 10])
def test_additive_model_gives_coefficients_and_tshap(P):
    a = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.25, 1.5, -0.5, 0.75, 3.0], dtype=torch.float64)
    batch = text_image_batch()
    # image of ones inside the grid: patch mean indicator = 1 when kept, 0 when masked
    batch.inputs["image"][:, :, :6, :6] = 1.0
    r = mmshap(additive(a), batch, MASKERS, n_permutations=P)
    for s in r.samples:
        torch.testing.assert_close(s.values_of("text"), a[:T], rtol=0, atol=1e-12)
        torch.testing.assert_close(s.values_of("image"), a[T:], rtol=0, atol=1e-12)
        torch.testing.assert_close(s.values, torch.cat([a[T:], a[:T]]), rtol=0, atol=1e-12)  # sorted modalities
    tshap = float(a[:T].abs().sum() / a.abs().sum())
    assert r.modalities == ["image", "text"]
    torch.testing.assert_close(r.shares()[:, 1], torch.full((3,), tshap, dtype=torch.float64))
    torch.testing.assert_close(r.shares().sum(1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("P", [1, 4])
def test_exact_enumeration_equals_antithetic_on_pairwise_model(P):
    batch = text_image_batch(seed=2)
    f = pairwise()
    ex = mmshap(f, batch, MASKERS, method="exact")
    pe = mmshap(f, batch, MASKERS, n_permutations=P, seed=3)
    for e, p in zip(ex.samples, pe.samples):
        torch.testing.assert_close(p.values, e.values, rtol=0, atol=1e-6)
        assert abs(e.efficiency_gap()) < 1e-12
    assert ex.samples[0].n_evaluations == 2 ** (T + G * G)
    assert pe.samples[0].n_evaluations == 2 + P * 2 * (T + G * G - 1)


def test_null_and_special_tokens_get_zero():
    a = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # token 0 ignored
    batch = text_image_batch()
    r = mmshap(additive(a), batch, MASKERS, n_permutations=3)
    assert all(s.values_of("text")[0] == 0 for s in r.samples)
    kept = mmshap(random_nonlinear(), batch, {"image": PatchMasker(G), "text": TokenMasker(keep_positions=(0, -1))})
    s = kept.samples[0]
    assert s.values_of("text").numel() == T - 2
    vm = s.value_map("text")
    assert vm[0].isnan() and vm[-1].isnan() and not vm[1:-1].isnan().any()


def test_symmetric_features_get_equal_values():
    batch = text_image_batch()
    f = lambda b: torch.tanh(indicators(b)[:, 1] + indicators(b)[:, 2]) ** 3 * (1 + indicators(b)[:, 5:].sum(1))  # noqa: E731
    r = mmshap(f, batch, MASKERS, method="exact")
    for s in r.samples:
        t = s.values_of("text")
        assert float(t[1]) == pytest.approx(float(t[2]), abs=1e-12) and float(t[1]) > 0
        assert t[[0, 3, 4]].abs().max() == 0
        assert abs(s.efficiency_gap()) < 1e-12


def test_shares_invariant_to_affine_map_and_in_unit_interval():
    batch = text_image_batch(seed=4)
    f = random_nonlinear(1)
    s1 = mmshap(f, batch, MASKERS, n_permutations=2, seed=5).shares()
    s2 = mmshap(lambda b: 4.0 - 2.5 * f(b), batch, MASKERS, n_permutations=2, seed=5).shares()
    torch.testing.assert_close(s1, s2, rtol=0, atol=1e-12)
    assert ((s1 >= 0) & (s1 <= 1)).all()
    torch.testing.assert_close(s1.sum(1), torch.ones(3, dtype=torch.float64))


def test_model_ignoring_image_has_zero_image_share():
    batch = text_image_batch()
    g = torch.Generator().manual_seed(0)
    E = torch.randn(20, generator=g, dtype=torch.float64)
    r = mmshap(lambda b: torch.tanh(E[b.inputs["text"]].sum(1)), batch, MASKERS, n_permutations=2)
    assert r.shares()[:, 0].tolist() == [0.0, 0.0, 0.0]
    assert r.mean_shares()["text"] == 1.0


def test_zero_total_nan_or_equal():
    batch = text_image_batch()
    r = mmshap(lambda b: torch.ones(b.batch_size, dtype=torch.float64), batch, MASKERS, n_permutations=1)
    assert r.shares().isnan().all()
    assert r.shares("equal").tolist() == [[0.5, 0.5]] * 3


def test_reference_patch_rule():
    for n in range(1, 300):
        p = patch_grid_for_tokens(n)
        assert p * p >= n > (p - 1) ** 2
    batch = text_image_batch(lengths=[5, 4, 2])  # p = 3, 2, 2 → patch side 7 // p
    r = mmshap(random_nonlinear(), batch, {"image": PatchMasker("auto")}, n_permutations=1)
    for s, L, p in zip(r.samples, [5, 4, 2], [3, 2, 2]):
        lay = s.layouts["image"]
        assert lay.info["grid"] == (p, p) and lay.n == p * p and lay.info["patch"] == (H // p, H // p)
        assert s.values_of("text").numel() == L  # padding positions are not features
        covered = (H // p) * p
        fm = lay.fmap[0]
        assert (fm[covered:, :] == -1).all() and (fm[:, covered:] == -1).all() and (fm[:covered, :covered] >= 0).all()


def test_batched_equals_unbatched_and_deterministic():
    batch = text_image_batch(seed=6)
    f = random_nonlinear(2)
    big = mmshap(f, batch, MASKERS, n_permutations=3, seed=9)
    small = mmshap(f, batch, MASKERS, n_permutations=3, seed=9, max_rows=7)
    assert small.extra["model_calls"] > big.extra["model_calls"]
    for a, b in zip(big.samples, small.samples):
        torch.testing.assert_close(a.values, b.values, rtol=0, atol=1e-12)
    one = [mmshap(f, batch.select([i]), MASKERS, n_permutations=3, permutations=None, seed=0).samples[0]
           for i in range(3)]
    ex = mmshap(f, batch, MASKERS, method="exact")
    for e, o in zip(ex.samples, [mmshap(f, batch.select([i]), MASKERS, method="exact").samples[0] for i in range(3)]):
        torch.testing.assert_close(e.values, o.values, rtol=0, atol=1e-12)
    assert all(abs(o.efficiency_gap()) < 1e-12 for o in one)
    other = mmshap(f, batch, MASKERS, n_permutations=3, seed=10)
    assert not torch.allclose(other.samples[0].values, big.samples[0].values)


def test_variable_length_windows_and_explicit_permutations():
    batch = text_image_batch(B=2)
    batch.inputs["seq"] = torch.randn(2, 6, 2, dtype=torch.float64)
    batch.inputs["seq"][1, 2:] = 0
    batch.mask["seq"] = torch.ones(2, dtype=torch.bool)
    batch.lengths["seq"] = torch.tensor([6, 2])
    f = lambda b: random_nonlinear()(b) * torch.tanh(b.inputs["seq"].sum((1, 2)))  # noqa: E731
    r = mmshap(f, batch, {"image": PatchMasker(G), "seq": WindowMasker(3)}, n_permutations=2)
    assert [s.layouts["seq"].n for s in r.samples] == [3, 2]
    assert all(abs(s.efficiency_gap()) < 1e-12 for s in r.samples)
    perms = [torch.stack([torch.randperm(s.values.numel()) for _ in range(2)]) for s in r.samples]
    listed = mmshap(f, batch, {"image": PatchMasker(G), "seq": WindowMasker(3)}, permutations=perms)
    single = mmshap(f, batch.select([0]), {"image": PatchMasker(G), "seq": WindowMasker(3)}, permutations=perms[0])
    torch.testing.assert_close(listed.samples[0].values, single.samples[0].values, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="one tensor for all samples or a list of 2"):
        mmshap(f, batch, {"image": PatchMasker(G)}, permutations=perms[:1])


def test_pair_mode_keeps_other_modalities():
    batch = text_image_batch()
    batch.inputs["meta"] = torch.ones(3, 2, dtype=torch.float64)
    batch.mask["meta"] = torch.ones(3, dtype=torch.bool)
    base_f = random_nonlinear()
    f = lambda b: base_f(b) + b.inputs["meta"].sum(1)  # noqa: E731
    r = mmshap(f, batch, MASKERS, players=["text", "image"], n_permutations=2)
    assert r.modalities == ["image", "text"] and "meta" not in r.samples[0].layouts
    none = MultimodalBatch({"text": torch.zeros_like(batch.inputs["text"]), "image": batch.inputs["image"].clone(),
                            "meta": batch.inputs["meta"]}, batch.mask)
    none.inputs["image"][:, :, :6, :6] = 0
    torch.testing.assert_close(r.base, f(none))


def test_other_maskers():
    x = torch.arange(24, dtype=torch.float64).view(6, 4)
    lay = WindowMasker(3).layout(x, length=5)
    assert lay.n == 3 and lay.fmap[:, 0].tolist() == [0, 0, 1, 1, 2, -1]
    masked = WindowMasker(3, baseline=-1.0).apply(x, lay, torch.tensor([[True, False, True]]))[0]
    assert masked[2:4].eq(-1).all() and masked[[0, 1, 4, 5]].equal(x[[0, 1, 4, 5]])
    assert WindowMasker(8).layout(x, length=2).n == 2  # short sequence: one window per step
    v = torch.zeros(2, 4, 6, 6)
    vl = VideoMasker(grid=3, n_windows=2).layout(v)
    assert vl.n == 18 and vl.fmap[:, :2].max() == 8 and vl.fmap[:, 2:].min() == 9
    assert VideoMasker(grid=3).layout(v).fmap[0, 0].equal(VideoMasker(grid=3).layout(v).fmap[1, 3])  # same patch every frame
    vec = VectorMasker(n_chunks=3).layout(torch.zeros(7))
    assert vec.n == 3 and vec.fmap.tolist() == [0, 0, 0, 1, 1, 2, 2]
    mean = torch.full((1, H, H), 0.25, dtype=torch.float64)
    pm = PatchMasker(G, baseline=mean)
    img = torch.ones(1, H, H, dtype=torch.float64)
    out = pm.apply(img, pm.layout(img), torch.tensor([[False, True, True, True]]))[0, 0]
    assert out[:3, :3].eq(0.25).all() and out[3:, :].eq(1).all() and out[:, 6].eq(1).all()


def test_bad_inputs():
    batch = text_image_batch()
    f = random_nonlinear()
    with pytest.raises(MissingModalityError, match="unknown modality 'audio'"):
        mmshap(f, batch, MASKERS, players=["text", "audio"])
    with pytest.raises(MissingModalityError, match="maskers: unknown modality 'img'"):
        mmshap(f, batch, {"img": "patches"})
    with pytest.raises(ConfigError, match="grid 8x8 is larger than the image 7x7"):
        mmshap(f, batch, {"image": PatchMasker(8)})
    with pytest.raises(ConfigError, match="n_permutations must be an integer >= 1, got 0"):
        mmshap(f, batch, MASKERS, n_permutations=0)
    with pytest.raises(ConfigError, match="exact_max"):
        mmshap(f, batch, {"image": PatchMasker(3)}, method="exact", exact_max=10)
    with pytest.raises(ShapeError, match="tokens masker needs one sample of shape \\[T\\]"):
        mmshap(f, batch, {"image": "tokens"})
    with pytest.raises(UnknownNameError, match="did you mean 'patches'"):
        mmshap(f, batch, {"image": "patch"})
    with pytest.raises(ConfigError, match="grid='auto'.*needs a 'tokens' modality"):
        mmshap(f, batch, {"image": PatchMasker("auto")}, players=["image"])
    with pytest.raises(ConfigError, match="grid must be"):
        PatchMasker(0)
    with pytest.raises(ShapeError, match="baseline of shape"):
        pm = PatchMasker(2, baseline=torch.zeros(3, 3))
        img = torch.ones(1, H, H)
        pm.apply(img, pm.layout(img), torch.ones(1, 4, dtype=torch.bool))
