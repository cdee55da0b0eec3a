"""SMIL oracles (spec 02, §2.7): priors, reconstruction, regulariser, model, meta-learning step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfuse.batch import MultimodalBatch
from mmfuse.errors import ConfigError, DataError, MissingModalityError, ShapeError
from mmfuse.missing import (FeatureRegularizer, ReconstructionNet, SMILModel, fit_smil, kmeans_priors, pca_priors,
                            resolve_param_subset, smil_meta_step, smil_train)
from mmfuse.missing.loops import accuracy, make_loader, without
from mmfuse.missing.meta import meta_test_loss
from mmfuse.missing.study import synthetic_pairs


class Enc(nn.Module):
    def __init__(self, d_in, d_out, bn=False):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out) if bn else nn.Identity()
        self.output_dim = d_out

    def forward(self, x, lengths=None):
        return torch.relu(self.bn(self.lin(x.flatten(1))))


def _model(k=4, dropout=0.0, **kw):
    torch.manual_seed(0)
    return SMILModel(Enc(6, 5), Enc(3, 4, bn=True), torch.randn(k, 4), num_classes=3, hidden=8, dropout=dropout, **kw)


def _batch(B=6, audio_present=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    present = torch.ones(B, dtype=torch.bool) if audio_present is None else torch.as_tensor(audio_present, dtype=torch.bool)
    audio = torch.randn(B, 3, generator=g) * present[:, None]
    return MultimodalBatch({"image": torch.randn(B, 6, generator=g), "audio": audio},
                           {"image": torch.ones(B, dtype=torch.bool), "audio": present},
                           torch.randint(0, 3, (B,), generator=g))


# ---------------------------------------------------------------- priors
def test_kmeans_priors_shape_and_determinism():
    x = torch.randn(60, 7)
    a, b = kmeans_priors(x, k=5, seed=3), kmeans_priors(x, k=5, seed=3)
    assert a.shape == (5, 7) and a.dtype == torch.float32
    assert torch.equal(a, b)


def test_pca_priors_shape_mean_and_determinism():
    x = torch.randn(40, 6) * torch.tensor([5.0, 3, 1, 1, 1, 1])
    p = pca_priors(x, k=5)
    assert p.shape == (5, 6)
    assert torch.allclose(p[0], x.mean(0), atol=1e-5)  # odd k: the mean first
    assert torch.allclose((p[1] + p[2]) / 2, x.mean(0), atol=1e-5)  # symmetric pairs
    assert torch.equal(p, pca_priors(x, k=5))


def test_prior_errors():
    with pytest.raises(DataError):
        kmeans_priors(torch.randn(3, 4), k=5)
    with pytest.raises(ShapeError):
        kmeans_priors(torch.randn(10), k=2)
    with pytest.raises(DataError):
        kmeans_priors(torch.tensor([[0.0, float("nan")]] * 4), k=2)
    with pytest.raises(ConfigError):
        pca_priors(torch.randn(10, 3), k=0)


# ---------------------------------------------------------------- φ_c
@pytest.mark.parametrize("mode", ["code", "paper"])
def test_reconstruction_in_convex_hull(mode):
    torch.manual_seed(0)
    M = torch.randn(6, 9)
    net = ReconstructionNet(5, M, mode=mode).train()
    x_hat, w = net(torch.randn(11, 5))
    assert x_hat.shape == (11, 9) and w.shape == (11, 6)
    assert bool((w >= 0).all())
    assert torch.allclose(w.sum(1), torch.ones(11), atol=1e-5)
    assert torch.allclose(x_hat, w @ M, atol=1e-5)


def test_reconstruction_equals_prior_for_one_hot_weights():
    M = torch.randn(4, 3)
    net = ReconstructionNet(2, M)
    for k in range(4):
        x_hat, _ = net.combine(torch.nn.functional.one_hot(torch.tensor([k]), 4).float())
        assert torch.allclose(x_hat[0], M[k], atol=1e-6)
    # through the network: softplus of a huge logit on k, very negative elsewhere
    with torch.no_grad():
        net.weights.weight.zero_()
        net.weights.bias.copy_(torch.tensor([-50.0, 40.0, -50.0, -50.0]))
    x_hat, w = net(torch.randn(3, 2))
    assert torch.allclose(x_hat, M[1].expand(3, 3), atol=1e-4)


def test_reconstruction_paper_mode_samples_in_training_only():
    torch.manual_seed(0)
    net = ReconstructionNet(5, torch.randn(4, 3), mode="paper")
    h = torch.randn(7, 5)
    net.train()
    assert not torch.allclose(net(h)[0], net(h)[0])
    net.eval()
    assert torch.equal(net(h)[0], net(h)[0])
    assert net.last_kl is not None and torch.isfinite(net.last_kl)


def test_reconstruction_errors():
    with pytest.raises(ConfigError):
        ReconstructionNet(4, torch.randn(3, 2), mode="vae")
    with pytest.raises(ShapeError):
        ReconstructionNet(4, torch.randn(3))
    with pytest.raises(ShapeError):
        ReconstructionNet(4, torch.randn(3, 2))(torch.randn(2, 5))


# ---------------------------------------------------------------- φ_r
def test_regularizer_positive_and_add_increases():
    torch.manual_seed(0)
    reg = FeatureRegularizer(5, 8, op="add")
    h, prev = torch.randn(10, 8), torch.randn(10, 5) * 20
    for noisy in (True, False):
        f = reg.factor(prev, noisy)
        assert bool((f > 0).all())
        assert bool((reg(h, prev, noisy) >= h).all())


def test_regularizer_mul_scales_by_mu_for_large_mu():
    reg = FeatureRegularizer(3, 4, op="mul")
    with torch.no_grad():
        reg.mu.weight.zero_()
        reg.mu.bias.fill_(50.0)
    h = torch.randn(5, 4)
    assert torch.allclose(reg.eval()(h, torch.randn(5, 3)), 50.0 * h, rtol=1e-4)


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_regularizer_eval_deterministic_training_noisy(learn_sigma):
    torch.manual_seed(0)
    reg = FeatureRegularizer(4, 6, learn_sigma=learn_sigma)
    h, prev = torch.randn(9, 6), torch.randn(9, 4)
    reg.eval()
    assert torch.equal(reg(h, prev), reg(h, prev))
    reg.train()
    assert not torch.equal(reg(h, prev), reg(h, prev))
    assert torch.equal(reg(h, prev, noisy=False), reg.eval()(h, prev))
    assert (reg.log_var is not None) == learn_sigma


def test_regularizer_errors():
    with pytest.raises(ConfigError):
        FeatureRegularizer(3, 4, op="sub")
    with pytest.raises(ConfigError):
        FeatureRegularizer(0, 4)
    with pytest.raises(ShapeError):
        FeatureRegularizer(3, 4)(torch.randn(2, 4), torch.randn(2, 5))


# ---------------------------------------------------------------- SMILModel
def test_model_uses_real_feature_where_present_and_reconstruction_elsewhere():
    m = _model().eval()
    b = _batch(audio_present=[1, 0, 1, 0, 0, 1])
    out = m(b)
    used = out.extras["used_recon"]
    assert torch.equal(used, ~b.mask["audio"])
    a = out.embeddings["audio"]
    assert torch.allclose(a[~used], out.extras["real"][~used])
    assert torch.allclose(a[used], out.extras["recon"][used])
    assert out.logits.shape == (6, 3) and torch.isfinite(out.logits).all()
    # the image-only test: everything reconstructed, and equal to the 'always' path
    img_only = m(without(b, "audio"))
    assert torch.allclose(img_only.logits, m(b, reconstruct="always").logits, atol=1e-6)


def test_model_eval_deterministic_and_training_noisy():
    m = _model()
    b = _batch(audio_present=[0, 0, 1, 0, 1, 0])
    m.eval()
    assert torch.equal(m(b).logits, m(b).logits)
    m.train()
    assert not torch.equal(m(b).logits, m(b).logits)
    assert torch.equal(m(b, noisy=False).logits, m(b, noisy=False).logits)  # dropout 0: only the noise is random


def test_model_errors():
    m = _model()
    b = _batch()
    bad = b.with_mask({"image": torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)})
    with pytest.raises(MissingModalityError, match="full modality 'image'"):
        m(bad)
    with pytest.raises(MissingModalityError):
        m(without(b, "audio"), reconstruct="never")
    with pytest.raises(ConfigError):
        m(b, reconstruct="sometimes")
    with pytest.raises(ShapeError):
        SMILModel(Enc(6, 5), Enc(3, 4), torch.randn(3, 7), num_classes=3)
    with pytest.raises(ConfigError):
        SMILModel(Enc(6, 5), Enc(3, 4), torch.randn(3, 4), num_classes=3, regularize=("fc3",))


# ---------------------------------------------------------------- meta-learning
def test_inner_lr_zero_keeps_parameters_and_meta_test_is_plain_loss():
    m = _model().eval()
    bm, bf = _batch(audio_present=[0] * 6, seed=2), _batch(seed=3)
    names = resolve_param_subset(m, "image_encoder+head")
    res = smil_meta_step(m, bm, bf, inner_steps=1, inner_lr=0.0, inner_names=names)
    params = dict(m.named_parameters())
    for n, p in res.fast_params.items():
        assert torch.equal(p, params[n])
    plain = meta_test_loss(m(bf, reconstruct="always", noisy=False), m(bf, reconstruct="never", noisy=False), bf.target)
    assert torch.allclose(res.meta_test_loss, plain, atol=1e-6)


def test_inner_step_changes_only_configured_parameters():
    m = _model().eval()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    bm, bf = _batch(audio_present=[0] * 6, seed=2), _batch(seed=3)
    names = resolve_param_subset(m, "head")
    assert names and all(n.startswith("head.") for n in names)
    res = smil_meta_step(m, bm, bf, inner_steps=2, inner_lr=0.5, inner_names=names)
    assert set(res.fast_params) == set(names)
    assert all(not torch.equal(res.fast_params[n], before[n]) for n in names)
    for n, p in m.named_parameters():  # the module itself is never modified by the inner loop
        assert torch.equal(p, before[n])
    full = resolve_param_subset(m, "image_encoder+head")
    assert any(n.startswith("full_encoder.") for n in full) and not any("missing_encoder" in n for n in full)


def test_meta_step_gradients_reach_theta_and_psi():
    m = _model()
    res = smil_meta_step(m, _batch(audio_present=[0] * 6, seed=2), _batch(seed=3), inner_lr=0.1)
    res.loss.backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    for prefix in ("full_encoder.", "missing_encoder.", "head.", "reconstruction.", "regularizers."):
        assert any(g is not None and bool(g.abs().sum() > 0) for n, g in grads.items() if n.startswith(prefix)), prefix


def test_resolve_param_subset_errors():
    with pytest.raises(ConfigError, match="head"):
        resolve_param_subset(_model(), "image_encoder+haed")
    with pytest.raises(ConfigError):
        resolve_param_subset(_model(), "")


def _loaders(seed=0):
    torch.manual_seed(seed)
    full = [_batch(seed=10 + i) for i in range(2)]
    miss = [_batch(audio_present=[0] * 6, seed=20 + i) for i in range(2)]
    return full, miss


@pytest.mark.parametrize("second_order", [True, False])
def test_smil_train_runs_and_is_deterministic(second_order):
    hist = []
    for _ in range(2):
        m = _model(dropout=0.5)
        torch.manual_seed(5)
        full, miss = _loaders()
        hist.append(smil_train(m, full, miss, steps=4, inner_lr=0.01, second_order=second_order))
    assert len(hist[0]) == 4 and all(torch.isfinite(torch.tensor(h)).all() for h in hist)
    assert hist[0] == hist[1]
    with pytest.raises(ConfigError):
        smil_train(_model(), *_loaders(), steps=-1)
    with pytest.raises(DataError):
        smil_meta_step(_model(), _batch(), _batch(audio_present=[1, 0, 1, 1, 1, 1]))


def test_fit_smil_end_to_end_on_tiny_data():
    splits = synthetic_pairs(eta=0.3, seed=0, n_train=10, n_test=5)
    from mmfuse.missing import LeNetEncoder, SNetEncoder

    encs = (LeNetEncoder((1, 16, 16), channels=(2, 3)), SNetEncoder((8, 6), channels=(4, 4, 2), pool_size=2))
    st = fit_smil(splits["train"], 3, encoders=encs, k=3, full_epochs=2, missing_epochs=2, fused_epochs=2,
                  meta_steps=3, batch_size=8, missing_batch_size=4, fused_batch_size=4, meta_batch_size=4)
    assert st.priors.shape == (3, encs[1].output_dim)
    test = make_loader(splits["test"], 64, False)
    for tr in (None, lambda b: without(b, "audio")):
        assert 0.0 <= accuracy(st.model, test, transform=tr) <= 1.0
    with pytest.raises(ConfigError):
        fit_smil(splits["train"], 3, preset="vae")
    with pytest.raises(ConfigError, match="inner_lr"):
        fit_smil(splits["train"], 3, encoders=encs, k=3, inner_lrr=0.1)


def test_smil_model_with_registry_encoders():
    import mmfuse.encoders  # noqa: F401  (registers the built-ins)
    from mmfuse.registry import ENCODERS

    img = ENCODERS.create("cnn2d", input_shape=(1, 28, 28))
    aud = ENCODERS.create("cnn1d", input_shape=(40, 13))
    m = SMILModel(img, aud, torch.randn(3, aud.output_dim), num_classes=10).eval()
    present = torch.tensor([1, 0, 1, 0], dtype=torch.bool)
    b = MultimodalBatch({"image": torch.randn(4, 1, 28, 28), "audio": torch.randn(4, 40, 13) * present[:, None, None]},
                        {"image": torch.ones(4, dtype=torch.bool), "audio": present}, torch.arange(4))
    out = m(b)
    assert out.logits.shape == (4, 10) and torch.isfinite(out.logits).all()
    res = smil_meta_step(m, without(b, "audio"), b.select(present))
    res.loss.backward()


def test_lightning_system_matches_plain_loop():
    from mmfuse.missing.lightning import SMILSystem, fit_smil_lightning

    class Loader:  # any iterable of batches with a length
        def __init__(self, items):
            self.items = items

        def __iter__(self):
            return iter(self.items)

        def __len__(self):
            return len(self.items)

    full, miss = (Loader(x) for x in _loaders())
    m1 = _model()
    torch.manual_seed(7)
    smil_train(m1, full, miss, steps=2, inner_lr=0.01)
    m2 = _model()
    torch.manual_seed(7)
    fit_smil_lightning(SMILSystem(m2, inner_lr=0.01), full, miss, steps=2)
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        assert torch.allclose(p1, p2, atol=1e-6), n


def test_real_ce_weight_adds_the_real_path_cross_entropy():
    m = _model().eval()
    bm, bf = _batch(audio_present=[0] * 6, seed=2), _batch(seed=3)
    base = smil_meta_step(m, bm, bf, inner_lr=0.0)
    more = smil_meta_step(m, bm, bf, inner_lr=0.0, real_ce_weight=0.5)
    ce_real = torch.nn.functional.cross_entropy(m(bf, reconstruct="never").logits, bf.target)
    assert torch.allclose(more.meta_test_loss, base.meta_test_loss + 0.5 * ce_real, atol=1e-6)
