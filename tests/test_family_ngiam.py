"""The ngiam family and the greedy_pretrain scheme through the one front door (mmfuse.fit)."""

import numpy as np
import pytest
import torch

import mmfuse
from mmfuse.batch import MultimodalBatch
from mmfuse.config import parse_config
from mmfuse.datasets.base import ArrayDataset
from mmfuse.errors import ConfigError
from mmfuse.evaluation import make_loader
from mmfuse.models import build_model
from mmfuse.schemes.greedy_pretrain import greedy_pretrain, input_statistics
from mmfuse.training.checkpoint import load_checkpoint

SHAPES = {"audio": (2, 3), "video": (8,)}


def _close(a, b, atol=1e-6, rtol=1e-5):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, atol=atol, rtol=rtol), float((a - b).abs().max())


def _dataset(n, seed, task="multiclass", drop=0.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    pa = np.random.default_rng(99).normal(size=(3, 2, 3))
    pv = np.random.default_rng(98).normal(size=(3, 8))
    a = (pa[y] + 0.3 * rng.normal(size=(n, 2, 3))).astype(np.float32) * 3 + 5   # not standardised
    v = (pv[y] + 0.3 * rng.normal(size=(n, 8))).astype(np.float32)
    present = {"audio": rng.random(n) >= drop}
    if task == "multilabel":
        t = np.stack([y == 0, y == 1, y != 1], 1).astype(np.float32)
    elif task == "regression":
        t = (y.astype(np.float32) + 0.1 * rng.normal(size=n)).astype(np.float32)
    else:
        t = y
    return ArrayDataset({"audio": a, "video": v}, t, present, task=task)


def _splits(task="multiclass"):
    return {"train": _dataset(60, 0, task, drop=0.2), "val": _dataset(30, 1, task), "test": _dataset(30, 2, task)}


def _cfg(kind, setting="fusion", **model):
    return parse_config({
        "seed": 0,
        "model": {"family": "ngiam", "model": kind, "setting": setting, "source": "video", "hidden_dims": 6,
                  "shared_dim": 4, "head": {"name": "linear"}, "reconstruction_weight": 0.1, **model},
        "data": {"batch_size": 20},
        "training": {"max_epochs": 8, "lr": 0.1, "progress": False,
                     "scheme_options": {"epochs": 15, "lr": 0.1, "joint_lr": 0.1, "batch_size": 5}}})


def _batch(ds, n=None):
    return next(iter(make_loader(ds, n or len(ds))))


@pytest.mark.parametrize("kind", ["dbn", "bimodal_ae", "video_only_ae"])
@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_fit_every_kind_and_task_and_checkpoint_round_trip(kind, task, tmp_path):
    data = _splits(task)
    cfg = _cfg(kind)
    res = mmfuse.fit(cfg, data, out_dir=tmp_path)
    assert res.config.training.scheme == "auto" and res.history
    hist = res.model.pretrain_history            # greedy_pretrain ran (the family's default scheme)
    assert set(hist) == {"audio", "video", "joint"} and len(hist["joint"]) == 15
    if task == "multiclass":
        assert res.test["metrics"]["accuracy"] >= 0.9     # separable toy classes (chance 1/3)
    elif task == "regression":
        assert res.test["metrics"]["pearson_r"] > 0.5      # predictions follow the target
    model, loaded_cfg, meta = load_checkpoint(res.checkpoint)
    assert meta["family"] == "ngiam" and loaded_cfg.model.model == kind
    b = _batch(data["test"])
    res.model.eval()
    with torch.no_grad():
        _close(model(b).logits, res.model(b).logits, atol=0, rtol=0)
    # the standardisation statistics travel with the checkpoint (buffers)
    assert float(model.scale_audio.min()) < 0.5 and float(model.shift_audio.mean()) > 3


def test_greedy_pretraining_lowers_reconstruction_error_and_free_energy_gap():
    data = _splits()
    model = build_model(_cfg("dbn").model, data["train"].shapes, 3, "multiclass")
    batches = list(make_loader(data["train"], 10, shuffle=True))

    def stats(m):
        b = _batch(data["train"])
        x, mask = model.flat(b)
        rbm = model.representation.first[m]
        v = x[m][mask[m]]
        noise = torch.randn(v.shape, generator=torch.Generator().manual_seed(5)) * v.std() + v.mean()
        with torch.no_grad():   # free energy of noise minus that of the data (p(v) ∝ exp(−F(v)))
            gap = float(rbm.free_energy(noise).mean() - rbm.free_energy(v).mean())
        return rbm.reconstruction_error(v), gap

    torch.manual_seed(0)
    model.set_input_statistics(*input_statistics(model, lambda: batches))
    before = {m: stats(m) for m in model.modalities}
    hist = greedy_pretrain(model, lambda: batches, {"epochs": 30, "lr": 0.1, "joint_lr": 0.1, "batch_size": 5})
    after = {m: stats(m) for m in model.modalities}
    for m in model.modalities:
        assert after[m][0] < 0.5 * before[m][0], (m, before[m], after[m])       # reconstruction error drops
        assert after[m][1] > before[m][1] + 0.5, (m, before[m], after[m])       # data's free energy < noise's
        assert hist[m][-1] < hist[m][0]
    assert hist["joint"][-1] < hist["joint"][0]
    # audio is absent in ~20 % of the training rows: the audio RBM saw only the present rows
    assert model.representation.first["audio"].n_visible == 6


@pytest.mark.parametrize("kind", ["dbn", "bimodal_ae", "video_only_ae"])
def test_losses_are_weight_times_an_independent_mse(kind):
    data = _splits()
    model = build_model(_cfg(kind, reconstruction_weight=0.3, denoising=False).model, data["train"].shapes, 3,
                        "multiclass")
    b = _batch(data["train"])
    model.train()
    out = model(b)
    assert set(out.losses) == {"reconstruction"}
    x = {"audio": b.inputs["audio"].reshape(60, -1), "video": b.inputs["video"]}     # identity statistics
    pa, pv = b.mask["audio"], b.mask["video"]
    xa = x["audio"] * pa.unsqueeze(1)
    rep = model.representation
    with torch.no_grad():
        if kind == "dbn":       # up-down pass written out from the RBM parameters
            sig = torch.sigmoid
            ha, hv = sig(xa @ rep.first["audio"].W.t() + rep.first["audio"].b), sig(
                x["video"] @ rep.first["video"].W.t() + rep.first["video"].b)
            h = torch.cat([ha, hv], 1)
            for _ in range(10):       # mean-field for the rows without audio
                top = sig(h @ rep.joint.W.t() + rep.joint.b)
                h_in = sig(top @ rep.joint.W + rep.joint.c)
                h = torch.where(pa.unsqueeze(1), torch.cat([ha, hv], 1), torch.cat([h_in[:, :6], hv], 1))
            top = sig(h @ rep.joint.W.t() + rep.joint.b)
            hd = sig(top @ rep.joint.W + rep.joint.c)
            ra = hd[:, :6] @ rep.first["audio"].W + rep.first["audio"].c
            rv = hd[:, 6:] @ rep.first["video"].W + rep.first["video"].c
            rows_a = pa
        else:
            if kind == "bimodal_ae":
                ea = torch.sigmoid(rep.enc_hidden["audio"](xa))
                ev = torch.sigmoid(rep.enc_hidden["video"](x["video"]))
                z = torch.sigmoid(rep.enc_shared(torch.cat([ea, ev], 1)))
                rows_a = pa
            else:               # video-only: the encoder never reads audio
                z = torch.sigmoid(rep.enc_shared(torch.sigmoid(rep.enc_hidden(x["video"]))))
                rows_a = pa & pv
            ra = rep.dec_out["audio"](torch.sigmoid(rep.dec_hidden["audio"](z)))
            rv = rep.dec_out["video"](torch.sigmoid(rep.dec_hidden["video"](z)))
        mse = ((ra - x["audio"]) ** 2).mean(1)[rows_a].mean() + ((rv - x["video"]) ** 2).mean()
    assert float(out.losses["reconstruction"].detach()) == pytest.approx(0.3 * float(mse), rel=1e-5)
    assert not bool(rows_a.all())   # the test really covers absent targets
    model.eval()
    assert model(b).losses == {}    # only while training


@pytest.mark.parametrize("kind", ["dbn", "bimodal_ae"])
def test_shared_setting_head_never_sees_the_other_modality_in_training(kind):
    data = _splits()
    model = build_model(_cfg(kind, setting="shared").model, data["train"].shapes, 3, "multiclass")
    b = _batch(data["train"])
    inputs = {m: v.clone().requires_grad_(True) for m, v in b.inputs.items()}
    batch = MultimodalBatch(inputs, b.mask, b.target, index=b.index)
    model.train()
    out = model(batch)
    out.logits.sum().backward()
    assert torch.equal(inputs["audio"].grad, torch.zeros_like(inputs["audio"]))      # exactly 0
    assert float(inputs["video"].grad.abs().sum()) > 0
    # the reconstruction term still learns from both modalities
    inputs["audio"].grad = None
    out = model(batch)
    out.losses["reconstruction"].backward()
    assert float(inputs["audio"].grad.abs().sum()) > 0
    # evaluation: whatever is present is used (audio changes the logits) ...
    model.eval()
    with torch.no_grad():
        full = model(b).logits
        alone = model(b.with_mask({"audio": torch.zeros(60, dtype=torch.bool)})).logits
        assert float((full - alone).abs().max()) > 1e-4
        # ... but a value marked absent never leaks, even NaN
        bad = b.inputs["audio"].clone()
        bad[~b.mask["audio"]] = float("nan")
        nb = MultimodalBatch(dict(b.inputs, audio=bad), b.mask, b.target)
        assert torch.isfinite(model(nb).logits).all()
        _close(model(nb).logits, full)


def test_cross_modality_hides_the_other_modality_at_test_too():
    data = _splits()
    model = build_model(_cfg("bimodal_ae", setting="cross_modality").model, data["train"].shapes, 3, "multiclass")
    b = _batch(data["test"])
    model.eval()
    with torch.no_grad():
        _close(model(b).logits, model(b.with_mask({"audio": torch.zeros(30, dtype=torch.bool)})).logits, atol=0, rtol=0)


def test_joint_scheme_skips_pretraining_and_freeze_trains_only_the_head(tmp_path):
    data = _splits()
    cfg = _cfg("dbn", freeze_representation=True)
    res = mmfuse.fit(cfg, data, save=False)
    # pre-trained, then frozen: only the head learned
    assert res.model.pretrain_history and res.test["metrics"]["accuracy"] >= 0.7
    assert not any(p.requires_grad for p in res.model.representation.parameters())
    cfg = parse_config({**cfg.model_dump(), "training": {**cfg.training.model_dump(), "scheme": "joint",
                                                         "scheme_options": {}},
                        "model": {**cfg.model.model_dump(), "freeze_representation": False}})
    res = mmfuse.fit(cfg, data, save=False)
    assert res.model.pretrain_history == {}
    assert float(res.model.scale_audio.min()) == 1.0       # no statistics without greedy_pretrain


def test_config_errors_name_the_key():
    data = _splits()
    three = dict(data["train"].shapes, depth=(3,))
    with pytest.raises(ConfigError, match="model.modalities.*exactly two"):
        build_model(_cfg("dbn").model, three, 3, "multiclass")
    with pytest.raises(ConfigError, match="model.source"):
        build_model(_cfg("dbn", source="depth").model, data["train"].shapes, 3, "multiclass")
    with pytest.raises(ConfigError, match="variable-length"):
        build_model(_cfg("dbn").model, {"audio": (None, 3), "video": (8,)}, 3, "multiclass")
    with pytest.raises(ConfigError, match="model.hidden_dims"):
        build_model(_cfg("dbn", hidden_dims={"audio": 3}).model, data["train"].shapes, 3, "multiclass")
    with pytest.raises(ConfigError, match="training.scheme_options.k"):
        parse_config({"model": {"family": "ngiam"}, "training": {"scheme_options": {"k": 0}}})
    with pytest.raises(ConfigError, match="training.scheme_options.epoch"):
        parse_config({"model": {"family": "ngiam"}, "training": {"scheme_options": {"epoch": 3}}})
    with pytest.raises(ConfigError, match="greedy_pretrain"):
        parse_config({"model": {"family": "fusion"}, "training": {"scheme": "greedy_pretrain"}})
    with pytest.raises(ConfigError, match="imputer"):
        build_model(_cfg("dbn", missing={"imputer": "zero"}).model, data["train"].shapes, 3, "multiclass")
