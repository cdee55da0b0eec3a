"""SMIL oracles (spec 02, §2.7): priors, reconstruction, regulariser, model, meta-learning step, and
the ``smil_meta`` scheme through ``mmfuse.fit`` (the one LightningModule)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfuse.batch import MultimodalBatch
from mmfuse.errors import ConfigError, DataError, MissingModalityError, ShapeError
from mmfuse.missing import (FeatureRegularizer, ReconstructionNet, SMILModel, kmeans_priors, pca_priors,
                            resolve_param_subset, smil_meta_step)
from mmfuse.missing.meta import meta_test_loss, without


class Enc(nn.Module):
    def __init__(self, d_in, d_out, bn=False):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out) if bn else nn.Identity()
        self.output_dim = d_out

    def forward(self, x, lengths=None):
        return torch.relu(self.bn(self.lin(x.flatten(1))))


def _model(k=4, dropout=0.0, num_classes=3, **kw):
    torch.manual_seed(0)
    return SMILModel(Enc(6, 5), Enc(3, 4, bn=True), torch.randn(k, 4), num_classes=num_classes, hidden=8,
                     dropout=dropout, **kw)


# the task losses written out (what FusionSystem.task_loss computes for each task)
HAND_LOSS = {
    "multiclass": lambda s, t: torch.nn.functional.cross_entropy(s, t.long()),
    "multilabel": lambda s, t: torch.nn.functional.binary_cross_entropy_with_logits(s, t.to(s.dtype)),
    "regression": lambda s, t: torch.nn.functional.mse_loss(s, t.to(s.dtype)),
}
OUTPUTS = {"multiclass": 3, "multilabel": 3, "regression": 1}


def _task_target(task, y, seed=0):
    """Class ids ``y`` (Tensor[B]) as the target of ``task``: the ids, 3 indicator labels (y == 0,
    y >= 1, y == 2) or a noisy real value ``y + 0.1·ε`` (Tensor[B, 1])."""
    if task == "multiclass":
        return y
    if task == "multilabel":
        return torch.stack([y == 0, y >= 1, y == 2], 1).float()
    g = torch.Generator().manual_seed(seed)
    return (y.float() + 0.1 * torch.randn(len(y), generator=g)).view(-1, 1)


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


def test_absent_full_modality_is_the_encoder_of_zeros():
    m = _model().eval()
    b = _batch(audio_present=[1, 0, 1, 0, 1, 1])
    gone = torch.tensor([1, 1, 0, 0, 1, 1], dtype=torch.bool)
    masked = b.with_mask({"image": gone})  # zeroes the image of rows 2, 3 and marks it absent
    raw = MultimodalBatch({"image": b.inputs["image"] * gone[:, None].float(), "audio": b.inputs["audio"]},
                          {"image": torch.ones(6, dtype=torch.bool), "audio": b.mask["audio"]}, b.target)
    out = m(masked)  # no error (explanations mask modalities)
    assert torch.equal(out.logits, m(raw).logits)
    assert torch.allclose(out.embeddings["image"][2], m.full_encoder(torch.zeros(1, 6))[0])
    # a mask-only change (inputs left as they are) is zeroed by the model itself
    unzeroed = MultimodalBatch(dict(b.inputs), {"image": gone, "audio": b.mask["audio"]}, b.target)
    assert torch.equal(m(unzeroed).logits, out.logits)
    assert not torch.allclose(out.logits[2], m(b).logits[2])


def test_model_errors():
    m = _model()
    b = _batch()
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


def test_real_ce_weight_adds_the_real_path_cross_entropy():
    m = _model().eval()
    bm, bf = _batch(audio_present=[0] * 6, seed=2), _batch(seed=3)
    base = smil_meta_step(m, bm, bf, inner_lr=0.0)
    more = smil_meta_step(m, bm, bf, inner_lr=0.0, real_ce_weight=0.5)
    ce_real = torch.nn.functional.cross_entropy(m(bf, reconstruct="never").logits, bf.target)
    assert torch.allclose(more.meta_test_loss, base.meta_test_loss + 0.5 * ce_real, atol=1e-6)


def test_meta_step_matches_hand_computation_float64():
    m = _model(regularize=()).double().train()  # no regulariser: the meta step is deterministic
    dbl = lambda b: MultimodalBatch({k: v.double() for k, v in b.inputs.items()}, b.mask, b.target)  # noqa: E731
    bm, bf = dbl(_batch(audio_present=[0, 1, 0, 0, 1, 0], seed=2)), dbl(_batch(seed=3))
    names = resolve_param_subset(m, "full_encoder+head")
    res = smil_meta_step(m, bm, bf, inner_steps=1, inner_lr=0.3, inner_names=names)
    # by hand: one SGD step of CE(reconstructed path on D^m with the modality hidden) on the subset ...
    l_train = torch.nn.functional.cross_entropy(m(without(bm, "audio"), reconstruct="always").logits, bm.target)
    params = dict(m.named_parameters())
    grads = torch.autograd.grad(l_train, [params[n] for n in names])
    fast = __import__("copy").deepcopy(m)
    with torch.no_grad():
        for n, g in zip(names, grads):
            dict(fast.named_parameters())[n].sub_(0.3 * g)
    # ... then CE(recon) + 0.01 MSE(concat) + 0.01 MSE(hidden) on D^f through θ*
    rec, real = fast(bf, reconstruct="always", noisy=False), fast(bf, reconstruct="never", noisy=False)
    mse = torch.nn.functional.mse_loss
    l_test = (torch.nn.functional.cross_entropy(rec.logits, bf.target)
              + 0.01 * mse(rec.extras["concat"], real.extras["concat"]) + 0.01 * mse(rec.extras["hidden"], real.extras["hidden"]))
    assert res.loss.dtype == torch.float64
    assert torch.allclose(res.meta_train_loss, l_train, rtol=0, atol=1e-12)
    assert torch.allclose(res.meta_test_loss, l_test, rtol=0, atol=1e-12)
    assert torch.allclose(res.loss, l_train + l_test, rtol=0, atol=1e-12)
    with pytest.raises(DataError, match="needs modality 'audio'"):
        smil_meta_step(m, bm, bm)


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_meta_step_with_task_loss_matches_hand_computation_float64(task):
    """loss_fn replaces the cross-entropy in the inner step, the meta-test loss and the real-path term;
    the alignment MSEs stay. Checked against BCE-with-logits / MSE written out, second-order gradients
    included (the inner step's graph reaches θ)."""
    from torch.func import functional_call

    m = _model(regularize=(), num_classes=OUTPUTS[task]).double().train()
    dbl = lambda b: MultimodalBatch({k: v.double() for k, v in b.inputs.items()}, b.mask,  # noqa: E731
                                    _task_target(task, b.target).double())
    bm, bf = dbl(_batch(audio_present=[0, 1, 0, 0, 1, 0], seed=2)), dbl(_batch(seed=3))
    names = resolve_param_subset(m, "full_encoder+head")
    loss = HAND_LOSS[task]
    res = smil_meta_step(m, bm, bf, inner_steps=1, inner_lr=0.3, inner_names=names, real_ce_weight=0.5,
                         loss_fn=loss)
    params = dict(m.named_parameters())
    l_train = loss(m(without(bm, "audio"), reconstruct="always").logits, bm.target)
    grads = torch.autograd.grad(l_train, [params[n] for n in names], create_graph=True)
    fast = {**params, **{n: params[n] - 0.3 * g for n, g in zip(names, grads)}}
    rec = functional_call(m, fast, (bf,), {"reconstruct": "always", "noisy": False})
    real = functional_call(m, fast, (bf,), {"reconstruct": "never", "noisy": False})
    mse = torch.nn.functional.mse_loss
    l_test = (loss(rec.logits, bf.target) + 0.5 * loss(real.logits, bf.target)
              + 0.01 * mse(rec.extras["concat"], real.extras["concat"]) + 0.01 * mse(rec.extras["hidden"], real.extras["hidden"]))
    assert torch.allclose(res.meta_train_loss, l_train, rtol=0, atol=1e-12)
    assert torch.allclose(res.meta_test_loss, l_test, rtol=0, atol=1e-12)
    # not the cross-entropy default (on the labels' argmax): the task loss really replaced it
    assert not torch.allclose(res.meta_test_loss, meta_test_loss(rec, real, bf.target.argmax(1), real_ce_weight=0.5))
    got = torch.autograd.grad(res.loss, list(params.values()), allow_unused=True)
    want = torch.autograd.grad(l_train + l_test, list(params.values()), allow_unused=True)
    for n, a, b in zip(params, got, want):
        assert (a is None) == (b is None), n
        assert a is None or torch.allclose(a, b, rtol=0, atol=1e-12), n


# ---------------------------------------------------------------- the smil_meta scheme through mmfuse.fit
def _tiny_data(n=24, seed=0, eta=0.4, task="multiclass"):
    import numpy as np

    from mmfuse.datasets.base import ArrayDataset

    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    img = (r.normal(size=(n, 1, 16, 16)) + y[:, None, None, None]).astype("float32")
    aud = (r.normal(size=(n, 8, 6)) - y[:, None, None]).astype("float32")
    present = r.random(n) < eta
    present[:4] = True
    present[4:6] = False
    target = _task_target(task, torch.as_tensor(y), seed).numpy()
    return ArrayDataset({"image": img, "audio": aud}, target, {"audio": present}, task=task,
                        num_classes=OUTPUTS[task])


def _tiny_config(**training):
    from mmfuse.config import parse_config

    scheme_options = training.pop("scheme_options", {})
    model = training.pop("model", {})
    data = training.pop("data", {})
    raw = {"seed": 0, "data": {"batch_size": 64, **data},
           "model": {"family": "smil", "full": "image", "k": 3, "hidden": 8, "dropout": 0.0,
                     "encoders": {"image": {"name": "lenet", "options": {"channels": [2, 3], "dropout": 0.0}},
                                  "audio": {"name": "snet", "options": {"channels": [4, 4, 2], "pool_size": 2,
                                                                        "dropout": 0.0}}}, **model},
           "training": {"max_epochs": 1, "progress": False, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0,
                        "limit_train_batches": 1, "scheme_options": scheme_options, **training}}
    return parse_config(raw)


def _splits(task="multiclass"):
    return {"train": _tiny_data(task=task), "val": _tiny_data(9, 1, 1.0, task), "test": _tiny_data(9, 2, 1.0, task)}


def _hand_start(cfg, train):
    """The model ``fit`` builds (same seed) and the priors the scheme computes from it."""
    import lightning as L

    from mmfuse.models import build_model
    from mmfuse.schemes.smil_meta import compute_priors, reconstructed_features

    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg.model, train.shapes, int(train.num_classes), train.task)
    whole = train.batch(list(range(len(train))))
    return model, whole, (lambda mdl: compute_priors(mdl, reconstructed_features(mdl, [whole]), 0))


def _z_loss(task, train):
    """The task loss written out; regression: MSE against (y - mean) / std of the training rows (numpy's, ddof 0;
    data.standardize_target, the default)."""
    if task != "regression":
        return HAND_LOSS[task]
    import numpy as np

    y = np.asarray(train.targets, dtype=np.float64).reshape(len(train.targets), -1)
    mean, std = torch.tensor(y.mean(0), dtype=torch.float32), torch.tensor(y.std(0), dtype=torch.float32)
    return lambda s, t: torch.nn.functional.mse_loss(s, (t.to(s.dtype).view_as(s) - mean) / std)


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_scheme_meta_step_equals_hand_meta_step_and_one_adam_step(task):
    """One smil_meta step through fit = the meta step with the task's loss written out (CE, BCE-with-logits,
    MSE; the meta step itself is checked against a hand computation above) and one Adam step."""
    from mmfuse.training.fit import fit

    cfg = _tiny_config(model={"regularize": []}, scheme_options={"warmup_epochs": 0, "inner_lr": 0.05})
    splits = _splits(task)
    got = fit(cfg, splits, save=False).model
    model, whole, priors_of = _hand_start(cfg, splits["train"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.set_priors(priors_of(model))  # warmup_epochs=0: priors of the initial encoder, at train start
    assert torch.equal(got.reconstruction.priors, model.reconstruction.priors)
    assert got.reconstruction.priors.abs().sum() > 0
    model.train()
    both = whole.mask["image"] & whole.mask["audio"]
    res = smil_meta_step(model, whole.select(whole.mask["image"] & ~whole.mask["audio"]), whole.select(both),
                         inner_steps=1, inner_lr=0.05, inner_names=resolve_param_subset(model, "full_encoder+head"),
                         loss_fn=None if task == "multiclass" else _z_loss(task, splits["train"]))  # None: CE
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    opt.zero_grad()
    res.loss.backward()
    opt.step()
    # Adam's first step is lr·g/(|g|+eps): where the true gradient is 0 (a conv bias right before a
    # batch norm) the round-off of a different row order decides it, so compare where |g| > 1e-6
    hand = dict(model.named_parameters())
    covered = total = 0
    for n, p in got.named_parameters():
        ok = hand[n].grad.abs() > 1e-6
        assert torch.allclose(p[ok], hand[n][ok], atol=1e-6, rtol=0), n
        covered, total = covered + int(ok.sum()), total + ok.numel()
    assert covered > 0.8 * total  # the rest: dead ReLU units (g = 0 exactly) and biases before batch norms
    changed = [n for n, p in got.named_parameters() if not torch.equal(p, before[n])]
    for prefix in ("full_encoder.", "missing_encoder.", "head.", "reconstruction."):
        assert any(n.startswith(prefix) for n in changed), prefix


def test_warmup_step_priors_checkpoint_and_determinism(tmp_path):
    from mmfuse.training.checkpoint import load_checkpoint
    from mmfuse.training.fit import fit

    cfg = _tiny_config(scheme_options={"warmup_epochs": 1})  # the only epoch is warm-up: priors at its end
    splits = _splits()
    run = fit(cfg, splits, out_dir=tmp_path / "a")
    # warm-up = one Adam step of the fused model on the paired rows with their real features
    model, whole, priors_of = _hand_start(cfg, splits["train"])
    model.train()
    paired = whole.select(whole.mask["image"] & whole.mask["audio"])
    loss = torch.nn.functional.cross_entropy(model(paired, reconstruct="never").logits, paired.target)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss.backward()
    opt.step()
    hand = dict(model.named_parameters())
    for n, p in run.model.named_parameters():
        if hand[n].grad is None:  # φ_c, φ_r: unused by the real-feature path, so untouched
            assert n.startswith(("reconstruction.", "regularizers.")) and torch.equal(p, hand[n]), n
            continue
        ok = hand[n].grad.abs() > 1e-6  # see the meta-step test
        assert torch.allclose(p[ok], hand[n][ok], atol=1e-6, rtol=0), n
    # priors: clustering of the (trained) reconstructed encoder's features after the warm-up
    assert torch.allclose(run.model.reconstruction.priors, priors_of(run.model), atol=1e-6)
    assert run.model.reconstruction.priors.abs().sum() > 0
    # the checkpoint restores the priors and gives identical logits
    loaded, _, meta = load_checkpoint(run.checkpoint)
    assert meta["family"] == "smil"
    assert torch.equal(loaded.reconstruction.priors, run.model.reconstruction.priors)
    test = splits["test"].batch(list(range(len(splits["test"]))))
    for b in (test, without(test, "audio")):
        assert torch.equal(loaded(b).logits, run.model.eval()(b).logits)
    # same seed, same weights
    again = fit(cfg, splits, save=False).model.state_dict()
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, again[k]), k


def _best_constant_micro_f1(t):
    """The best micro-F1 of a constant predictor (the same 0/1 vector for every row) on targets ``t`` [N, L]."""
    import itertools

    import numpy as np

    best = 0.0
    for s in itertools.product((0, 1), repeat=t.shape[1]):
        pred = np.broadcast_to(np.array(s), t.shape)
        tp, fp, fn = (pred * t).sum(), (pred * (1 - t)).sum(), ((1 - pred) * t).sum()
        best = max(best, 2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(best)


def _vector_data(n, seed, task, eta=0.5):
    """Vector modalities (fast mlp encoders): image = y + ε (12 dims), audio = −y + ε (5 dims), y ∈ {0, 1, 2}."""
    import numpy as np

    from mmfuse.datasets.base import ArrayDataset

    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    img = (r.normal(size=(n, 12)) + y[:, None]).astype("float32")
    aud = (r.normal(size=(n, 5)) - y[:, None]).astype("float32")
    target = _task_target(task, torch.as_tensor(y), seed).numpy()
    return ArrayDataset({"image": img, "audio": aud}, target, {"audio": r.random(n) < eta}, task=task,
                        num_classes=OUTPUTS[task])


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_fit_learns_every_task(task):
    """smil_meta (warm-up, priors, meta steps with the task's loss) on separable data beats the best constant
    predictor on the test set: overall (half the rows reconstruct the audio) and with the audio hidden in
    every row (the image-only pattern: the reconstruction alone)."""
    import numpy as np

    from mmfuse.config import parse_config
    from mmfuse.training.fit import fit

    enc = {"name": "mlp", "options": {"hidden": [16], "output_dim": 8}}
    cfg = parse_config({"seed": 0, "data": {"batch_size": 16},
                        "model": {"family": "smil", "full": "image", "k": 3, "hidden": 8, "dropout": 0.0,
                                  "encoders": {"image": enc, "audio": enc}},
                        "training": {"max_epochs": 6, "progress": False, "lr": 0.03, "weight_decay": 0.0,
                                     "scheme_options": {"warmup_epochs": 1}}})
    splits = {"train": _vector_data(64, 0, task), "val": _vector_data(24, 1, task), "test": _vector_data(48, 2, task)}
    run = fit(cfg, splits, save=False)
    assert run.task == task and run.model.head.fc2.out_features == OUTPUTS[task]
    t = splits["test"].targets
    if task == "multiclass":
        name, constant, margin = "accuracy", np.bincount(t, minlength=3).max() / len(t), 0.3
    elif task == "multilabel":
        name, constant, margin = "f1_micro", _best_constant_micro_f1(t), 0.15
    else:
        name, constant, margin = "r2", 0.0, 0.3  # the best constant (the test mean) has r2 = 0
    for pattern in ("audio+image", "image"):
        got = run.test["patterns"][pattern][name]
        assert got > constant + margin, (pattern, name, got, constant)
