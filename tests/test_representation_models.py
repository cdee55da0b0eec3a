"""BimodalDBN, shallow bimodal RBM, deep autoencoders and the learning-settings protocol."""

import pytest
import torch

from mmfuse.errors import ConfigError, MissingModalityError, ShapeError
from mmfuse.representation import (BimodalDBN, BimodalDeepAE, ShallowBimodalRBM, VideoOnlyDeepAE, denoising_augment,
                                   format_table, head_mask, reconstruction_loss)
from mmfuse.schemes.greedy_pretrain import pretrain_rbm

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


def _batches(v, size=10):
    return lambda: [v[i:i + size] for i in range(0, v.shape[0], size)]


def _pretrain_dbn(dbn, x, epochs=(2, 3), lr=0.005, joint_lr=0.05, generator=None):
    """Greedy layer-wise CD-k through the scheme's epoch loop (the DBN has no .fit any more)."""
    hist = {m: pretrain_rbm(dbn.first[m], _batches(x[m]), epochs[0], lr, generator=generator) for m in dbn.modalities}
    with torch.no_grad():
        h = torch.cat([dbn.first[m].transform(x[m]) for m in dbn.modalities], 1)
    hist["joint"] = pretrain_rbm(dbn.joint, _batches(h), epochs[1], joint_lr, generator=generator)
    return hist


def test_dbn_shapes_fit_and_missing_modality():
    x, _ = _data()
    g = torch.Generator().manual_seed(0)
    dbn = BimodalDBN(DIMS, hidden_dims={"audio": 4, "video": 6}, joint_dim=3, generator=g)
    hist = _pretrain_dbn(dbn, x, (2, 3), generator=g)
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
    assert len(pretrain_rbm(rbm.rbm, _batches(rbm.joined(x, required=True)), 2, 0.005)) == 2
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


def test_init_from_dbn_matches_dbn():
    x, _ = _data()
    g = torch.Generator().manual_seed(0)
    dbn = BimodalDBN(DIMS, hidden_dims=4, joint_dim=3, sigma=0.8, generator=g)
    _pretrain_dbn(dbn, x, (2, 2), generator=g)
    ae = BimodalDeepAE(DIMS, hidden_dims=4, shared_dim=3).init_from_dbn(dbn)
    _close(ae.encode(x), dbn.shared_representation(x))
    # the decoders are the DBN's generative (down) pass: the AE reproduces the DBN's up-down reconstruction
    for m, r in ae(x).items():
        _close(r, dbn.reconstruct(x)[m], atol=1e-5)
    vae = VideoOnlyDeepAE(DIMS, "video", hidden_dims=4, shared_dim=3).init_from_dbn(dbn)
    # the video-only encoder = the DBN's joint layer with the audio half of the first layer set to 0
    h_v = dbn.first["video"].transform(x["video"])
    _close(vae.encode(x), dbn.joint.transform(torch.cat([torch.zeros(30, 4), h_v], 1)))
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
        BimodalDBN(DIMS, 4, 3).encode({"depth": x["audio"]})
    with pytest.raises(ConfigError, match="input_dims"):
        BimodalDBN({"audio": 5}, 4, 3)
    with pytest.raises(ConfigError, match="hidden_dims"):
        BimodalDBN(DIMS, {"audio": 4}, 3)
    with pytest.raises(ConfigError, match="output"):
        BimodalDeepAE(DIMS, 4, 3, output="relu")
    with pytest.raises(ConfigError, match="setting"):
        head_mask("classic", "audio", {"audio": torch.ones(4, dtype=torch.bool)}, True)
    with pytest.raises(ConfigError, match="source"):
        head_mask("shared", "depth", {"audio": torch.ones(4, dtype=torch.bool)}, True)


def test_head_mask_is_table_1_of_the_paper():
    mask = {"audio": torch.tensor([True, True, False]), "video": torch.tensor([True, False, True])}
    none = torch.zeros(3, dtype=torch.bool)
    for training in (True, False):
        got = head_mask("fusion", "video", mask, training)
        assert all(torch.equal(got[m], mask[m]) for m in mask)
        got = head_mask("cross_modality", "video", mask, training)       # source only, train and test
        assert torch.equal(got["video"], mask["video"]) and torch.equal(got["audio"], none)
    got = head_mask("shared", "video", mask, True)                       # train: source only
    assert torch.equal(got["video"], mask["video"]) and torch.equal(got["audio"], none)
    got = head_mask("shared", "video", mask, False)                      # test: whatever is present
    assert all(torch.equal(got[m], mask[m]) for m in mask)
    assert "| setting |" in format_table([{"setting": "shared", "accuracy": 0.5}])


def test_reconstruction_loss_masks_absent_targets_and_denoising_objective():
    x, _ = _data(n=6)
    ae = BimodalDeepAE(DIMS, hidden_dims=4, shared_dim=3)
    present = {"audio": torch.tensor([True] * 4 + [False] * 2), "video": torch.ones(6, dtype=torch.bool)}
    xz = {"audio": torch.where(present["audio"].unsqueeze(1), x["audio"], torch.zeros_like(x["audio"])),
          "video": x["video"]}
    with torch.no_grad():
        # denoising: 3 copies (audio zeroed, video zeroed, both), targets the originals where present
        copies = [({"audio": torch.zeros(6, 5), "video": xz["video"]}, {"audio": torch.zeros(6, dtype=torch.bool),
                   "video": present["video"]}),
                  ({"audio": xz["audio"], "video": torch.zeros(6, 7)}, {"audio": present["audio"],
                   "video": torch.zeros(6, dtype=torch.bool)}),
                  (xz, present)]
        recon = [ae(inp, msk) for inp, msk in copies]
        err_a = torch.cat([((r["audio"] - xz["audio"]) ** 2).mean(1)[present["audio"]] for r in recon]).mean()
        err_v = torch.cat([((r["video"] - xz["video"]) ** 2).mean(1) for r in recon]).mean()
        _close(ae.reconstruction_objective(xz, present), err_a + err_v)
        plain = BimodalDeepAE(DIMS, hidden_dims=4, shared_dim=3, denoising=False)
        r = plain(xz, present)
        _close(plain.reconstruction_objective(xz, present),
               ((r["audio"] - xz["audio"]) ** 2)[:4].mean() + ((r["video"] - xz["video"]) ** 2).mean())
        assert float(reconstruction_loss(r, xz, {"audio": torch.zeros(6, dtype=torch.bool),
                                                 "video": present["video"]})) == pytest.approx(
            float(((r["video"] - xz["video"]) ** 2).mean()), rel=1e-6)
