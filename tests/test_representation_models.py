"""BimodalDBN, shallow bimodal RBM, deep autoencoders and the learning-settings protocol."""

import pytest
import torch

from mmfuse.errors import ConfigError, MissingModalityError, ShapeError
from mmfuse.representation import (BimodalDBN, BimodalDeepAE, ConcatFeatures, ShallowBimodalRBM, VideoOnlyDeepAE,
                                   denoising_augment, evaluate_settings, format_table)

DIMS = {"audio": 5, "video": 7}

def _close(a, b, atol=1e-6, rtol=1e-5):
    """torch.allclose with a readable failure (torch.testing imports torch.distributed: ~9 s)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, atol=atol, rtol=rtol), float((a - b).abs().max())



def _data(n=30, seed=0):
    za, zv = torch.randn(3, 5, generator=torch.Generator().manual_seed(99)), torch.randn(3, 7, generator=torch.Generator().manual_seed(98))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = {"audio": za[y] + 0.3 * torch.randn(n, 5, generator=g), "video": zv[y] + 0.3 * torch.randn(n, 7, generator=g)}
    return x, y


def test_dbn_shapes_fit_and_missing_modality():
    x, _ = _data()
    g = torch.Generator().manual_seed(0)
    dbn = BimodalDBN(DIMS, hidden_dims={"audio": 4, "video": 6}, joint_dim=3, generator=g)
    hist = dbn.fit(x, epochs=(2, 3), batch_size=10, generator=g)
    assert set(hist) == {"audio", "video", "joint"} and len(hist["audio"]) == 2 and len(hist["joint"]) == 3
    assert dbn.joint.n_visible == 10 and dbn.first["audio"].visible == "gaussian" and dbn.joint.visible == "binary"
    assert dbn.shared_representation(x).shape == (30, 3)
    mask = {"audio": torch.zeros(30, dtype=torch.bool), "video": torch.ones(30, dtype=torch.bool)}
    h = dbn.first_layer(x, mask)
    assert h.shape == (30, 10)
    # the present modality's units stay clamped to E[h | x]; the absent ones are inferred (in (0, 1))
    _close(h[:, 4:], dbn.first["video"].transform(x["video"]))
    assert bool(((h[:, :4] > 0) & (h[:, :4] < 1)).all())
    # a modality missing from the dict = absent for every sample
    _close(dbn.shared_representation({"video": x["video"]}), dbn.shared_representation(x, mask))


def test_shallow_bimodal_rbm():
    x, _ = _data()
    rbm = ShallowBimodalRBM(DIMS, n_hidden=4)
    assert len(rbm.fit(x, epochs=2, batch_size=10)) == 2
    assert rbm.rbm.n_visible == 12 and rbm.shared_representation(x).shape == (30, 4)
    z = rbm.shared_representation({"audio": x["audio"]})
    full = torch.cat([x["audio"], torch.zeros(30, 7)], 1)
    _close(z, rbm.rbm.transform(full))


def test_denoising_augment_exact_thirds():
    x, _ = _data(n=6)
    inputs, mask, targets = denoising_augment(x)
    n = 6
    assert all(v.shape[0] == 3 * n for d in (inputs, mask, targets) for v in d.values())
    # block 0: audio zeroed; block 1: video zeroed; block 2: both intact
    assert bool((inputs["audio"][:n] == 0).all()) and not bool(mask["audio"][:n].any())
    assert torch.equal(inputs["video"][:n], x["video"]) and bool(mask["video"][:n].all())
    assert bool((inputs["video"][n:2 * n] == 0).all()) and not bool(mask["video"][n:2 * n].any())
    assert torch.equal(inputs["audio"][n:2 * n], x["audio"])
    assert torch.equal(inputs["audio"][2 * n:], x["audio"]) and torch.equal(inputs["video"][2 * n:], x["video"])
    for m in DIMS:
        assert torch.equal(targets[m], x[m].repeat(3, 1))
        assert int(mask[m].sum()) == 2 * n
    with pytest.raises(ConfigError):
        denoising_augment({"audio": x["audio"]})
    with pytest.raises(ShapeError, match="video"):
        denoising_augment({"audio": x["audio"], "video": x["video"][0]})


def test_bimodal_ae_reconstructs_both_from_one_and_masks():
    x, _ = _data(n=8)
    ae = BimodalDeepAE(DIMS, hidden_dims=4, shared_dim=3)
    out = ae({"video": x["video"]})
    assert {m: tuple(v.shape) for m, v in out.items()} == {"audio": (8, 5), "video": (8, 7)}
    mask = {"audio": torch.zeros(8, dtype=torch.bool)}
    _close(ae.encode(x, mask), ae.encode({"audio": torch.zeros(8, 5), "video": x["video"]}))
    bad = dict(x, audio=x["audio"].clone())
    bad["audio"][0] = float("nan")
    mask = {"audio": torch.tensor([False] + [True] * 7)}
    assert torch.isfinite(ae.encode(bad, mask)[0]).all()   # absent values never leak, even NaN


def test_video_only_ae_shapes_with_audio_absent():
    x, _ = _data(n=8)
    ae = VideoOnlyDeepAE(DIMS, source="video", hidden_dims=4, shared_dim=3)
    full, alone = ae(x), ae({"video": x["video"]})
    assert {m: tuple(v.shape) for m, v in alone.items()} == {"audio": (8, 5), "video": (8, 7)}
    for m in DIMS:
        _close(full[m], alone[m])
    with pytest.raises(MissingModalityError, match="video"):
        ae({"audio": x["audio"]})
    with pytest.raises(ConfigError, match="source"):
        VideoOnlyDeepAE(DIMS, source="depth", hidden_dims=4, shared_dim=3)


@pytest.mark.parametrize("cls", [BimodalDeepAE, VideoOnlyDeepAE])
def test_gradients_reach_every_parameter(cls):
    x, _ = _data(n=8)
    ae = cls(DIMS, hidden_dims=4, shared_dim=3) if cls is BimodalDeepAE else cls(DIMS, "video", 4, 3)
    loss = sum(((r - x[m]) ** 2).mean() for m, r in ae(x).items())
    loss.backward()
    for name, p in ae.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_init_from_dbn_matches_dbn_and_fit_lowers_loss():
    x, _ = _data()
    g = torch.Generator().manual_seed(0)
    dbn = BimodalDBN(DIMS, hidden_dims=4, joint_dim=3, sigma=0.8, generator=g)
    dbn.fit(x, epochs=2, batch_size=10, generator=g)
    ae = BimodalDeepAE(DIMS, hidden_dims=4, shared_dim=3).init_from_dbn(dbn)
    _close(ae.encode(x), dbn.shared_representation(x))
    vae = VideoOnlyDeepAE(DIMS, "video", hidden_dims=4, shared_dim=3).init_from_dbn(dbn)
    assert vae.encode(x).shape == (30, 3)
    hist = ae.fit(x, epochs=15, batch_size=15, lr=0.02, generator=g)
    assert len(hist) == 15 and hist[-1] < hist[0]
    with pytest.raises(ConfigError, match="sizes differ"):
        BimodalDeepAE(DIMS, hidden_dims=5, shared_dim=3).init_from_dbn(dbn)


def test_state_dict_round_trip():
    x, _ = _data(n=4)
    for make in (lambda: BimodalDeepAE(DIMS, 4, 3), lambda: VideoOnlyDeepAE(DIMS, "video", 4, 3),
                 lambda: BimodalDBN(DIMS, 4, 3)):
        a, b = make(), make()
        b.load_state_dict(a.state_dict())
        _close(a.shared_representation(x), b.shared_representation(x))


def test_bad_inputs_raise_mmfuse_errors():
    x, _ = _data(n=4)
    ae = BimodalDeepAE(DIMS, hidden_dims=4, shared_dim=3)
    with pytest.raises(ShapeError, match="audio"):
        ae({"audio": torch.randn(4, 6), "video": x["video"]})
    with pytest.raises(ShapeError, match="batch size"):
        ae({"audio": torch.randn(3, 5), "video": x["video"]})
    with pytest.raises(MissingModalityError, match="depth"):
        ae(dict(x, depth=torch.randn(4, 2)))
    with pytest.raises(ShapeError, match="mask"):
        ae(x, {"audio": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(MissingModalityError):
        BimodalDBN(DIMS, 4, 3).fit({"audio": x["audio"]}, epochs=1)
    with pytest.raises(ConfigError, match="input_dims"):
        BimodalDBN({"audio": 5}, 4, 3)
    with pytest.raises(ConfigError, match="hidden_dims"):
        BimodalDBN(DIMS, {"audio": 4}, 3)
    with pytest.raises(ConfigError, match="output"):
        BimodalDeepAE(DIMS, 4, 3, output="relu")
    with pytest.raises(ConfigError, match="classifier"):
        evaluate_settings(ConcatFeatures(DIMS), {}, classifier="svm")
    with pytest.raises(ConfigError, match="test"):
        evaluate_settings(ConcatFeatures(DIMS), {"train": (x, torch.zeros(4))})


def test_evaluate_settings_table_and_raw_baseline():
    tr, te = _data(n=60, seed=0), _data(n=30, seed=1)
    rows = evaluate_settings(ConcatFeatures(DIMS), {"train": tr, "test": te})
    assert [(r["setting"], r["train"], r["test"]) for r in rows] == [
        ("multimodal fusion", "audio+video", "audio+video"),
        ("cross-modality learning", "audio", "audio"), ("cross-modality learning", "video", "video"),
        ("shared representation learning", "audio", "video"), ("shared representation learning", "video", "audio")]
    acc = [r["accuracy"] for r in rows]
    assert min(acc[:3]) > 0.9                 # separable toy classes
    assert "| setting |" in format_table(rows)
