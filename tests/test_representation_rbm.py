"""SparseRBM: conditionals and free energy against exact enumeration, CD and sparsity behaviour."""

import pytest
import torch

from mmfuse.errors import ConfigError, ShapeError
from mmfuse.representation import SparseRBM, enumerate_binary
from mmfuse.schemes.greedy_pretrain import pretrain_rbm


def train_rbm(rbm, data, epochs, batch_size, lr, k=1, generator=None):
    """Shuffled mini-batch CD-k through the greedy_pretrain scheme's epoch loop."""
    def batches():
        order = torch.randperm(data.shape[0], generator=generator)
        return [data[order[i:i + batch_size]] for i in range(0, len(order), batch_size)]
    return pretrain_rbm(rbm, batches, epochs, lr, k=k, generator=generator)

def _close(a, b, atol=1e-6, rtol=1e-5):
    """torch.allclose with a readable failure (torch.testing imports torch.distributed: ~9 s)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, atol=atol, rtol=rtol), float((a - b).abs().max())



def _tiny(visible="binary", sigma=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    rbm = SparseRBM(4, 3, visible=visible, sigma=sigma, init_std=1.0, generator=g)
    with torch.no_grad():
        rbm.b.copy_(torch.randn(3, generator=g))
        rbm.c.copy_(torch.randn(4, generator=g))
    return rbm


@pytest.mark.parametrize("visible,sigma", [("binary", 1.0), ("gaussian", 1.0), ("gaussian", 0.7)])
def test_hidden_conditional_matches_energy_enumeration(visible, sigma):
    rbm = _tiny(visible, sigma)
    v = torch.randn(5, 4) if visible == "gaussian" else enumerate_binary(4)[[0, 3, 7, 12, 15]]
    hs = enumerate_binary(3)                                            # [8, 3]
    with torch.no_grad():
        e = torch.stack([rbm.energy(v, h.expand(len(v), -1)) for h in hs], 1)  # [B, 8]
        p = torch.softmax(-e, dim=1)                                    # p(h | v) ∝ exp(−E)
        marginal = p @ hs                                               # p(h_j = 1 | v)
        _close(marginal, rbm.hidden_prob(v), atol=1e-6, rtol=1e-5)


def test_visible_conditional_matches_energy_binary():
    rbm = _tiny("binary")
    vs = enumerate_binary(4)
    h = torch.tensor([[1.0, 0.0, 1.0]])
    with torch.no_grad():
        p = torch.softmax(-rbm.energy(vs, h.expand(16, -1)), 0)
        _close(p @ vs, rbm.visible_mean(h)[0], atol=1e-6, rtol=1e-5)


def test_gaussian_visible_mean_is_the_energy_minimiser():
    rbm = _tiny("gaussian", sigma=0.5)
    h = torch.tensor([[0.0, 1.0, 1.0]])
    v = rbm.visible_mean(h).detach().requires_grad_(True)
    rbm.energy(v, h).sum().backward()
    assert v.grad.abs().max() < 1e-5            # N(c + Wᵀh, σ²) has its mode where ∂E/∂v = 0


def test_free_energy_matches_enumeration_binary():
    rbm = _tiny("binary")
    vs, hs = enumerate_binary(4), enumerate_binary(3)
    with torch.no_grad():
        e = torch.stack([rbm.energy(vs, h.expand(16, -1)) for h in hs], 1)    # [16, 8]
        log_joint_v = torch.logsumexp(-e, 1)                                  # log Σ_h exp(−E)
        _close(-rbm.free_energy(vs), log_joint_v, atol=1e-5, rtol=1e-5)
        p_enum = torch.softmax(log_joint_v, 0)
        p_free = torch.softmax(-rbm.free_energy(vs), 0)                        # p(v) ∝ exp(−F(v))
        _close(p_free, p_enum, atol=1e-6, rtol=1e-5)


def test_free_energy_gaussian_matches_hidden_sum():
    rbm = _tiny("gaussian", sigma=0.8)
    v, hs = torch.randn(6, 4), enumerate_binary(3)
    with torch.no_grad():
        e = torch.stack([rbm.energy(v, h.expand(6, -1)) for h in hs], 1)
        _close(rbm.free_energy(v), -torch.logsumexp(-e, 1), atol=1e-5, rtol=1e-5)


def _toy_binary(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = torch.tensor([[1, 1, 1, 0, 0, 0, 1, 0], [0, 0, 0, 1, 1, 1, 0, 1.0]])
    x = protos[torch.randint(0, 2, (n,), generator=g)]
    flip = torch.rand(x.shape, generator=g) < 0.05
    return torch.where(flip, 1 - x, x)


def test_cd_lowers_reconstruction_error_and_free_energy():
    torch.manual_seed(0)
    x = _toy_binary()
    g = torch.Generator().manual_seed(1)
    rbm = SparseRBM(8, 6, visible="binary", generator=g)
    with torch.no_grad():
        f0 = float(rbm.free_energy(x).mean())
    first = rbm.cd_step(x, lr=0.1, generator=g)
    hist = train_rbm(rbm, x, epochs=30, batch_size=20, lr=0.1, generator=g)
    assert hist[-1] < 0.5 * first
    # CD sign: the training data's free energy drops relative to random binary vectors
    noise = (torch.rand(200, 8, generator=g) < 0.5).float()
    with torch.no_grad():
        f_data, f_noise = float(rbm.free_energy(x).mean()), float(rbm.free_energy(noise).mean())
    assert f_data < f0
    assert f_data < f_noise - 1.0


def test_cd_k_gaussian_runs_and_improves():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=g) @ torch.tensor([[1.0, 0.8], [0.0, 0.3]])
    x = torch.cat([x, -x], 1)                                           # [300, 4] correlated
    rbm = SparseRBM(4, 8, visible="gaussian", generator=g)
    hist = train_rbm(rbm, x, epochs=20, batch_size=30, lr=0.01, k=2, generator=g)
    assert hist[-1] < hist[0]


def test_sparsity_penalty_zero_at_target_and_gradient_pushes_toward_rho():
    rbm = SparseRBM(5, 4, visible="binary", sparsity_target=0.2, sparsity_cost=1.0)
    with torch.no_grad():
        rbm.W.zero_()
        rbm.b.fill_(torch.logit(torch.tensor(0.2)))
    v = torch.ones(3, 5)
    assert float(rbm.sparsity_penalty(v).detach()) == pytest.approx(0.0, abs=1e-12)
    # mean activation 0.5 > ρ = 0.1: training with only the regulariser acting lowers it toward ρ
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(100, 5, generator=g) < 0.5).float()
    for cost in (0.0, 3.0):
        rbm = SparseRBM(5, 4, visible="binary", sparsity_target=0.1, sparsity_cost=cost, generator=g)
        q0 = float(rbm.hidden_prob(x).mean().detach())
        for _ in range(200):
            rbm.cd_step(x, lr=0.05, generator=g)
        q = float(rbm.hidden_prob(x).mean().detach())
        if cost == 0.0:
            q_free = q
        else:
            assert q0 == pytest.approx(0.5, abs=0.05)
            assert abs(q - 0.1) < abs(q_free - 0.1)
            assert q < 0.2


def test_sparsity_gradient_matches_autograd():
    torch.manual_seed(0)
    rbm = SparseRBM(5, 4, visible="gaussian", sigma=0.9, sparsity_target=0.05, sparsity_cost=2.0, init_std=0.5)
    v = torch.randn(7, 5)
    rbm.sparsity_penalty(v).backward()
    p = rbm.hidden_prob(v).detach()
    q = p.mean(0)
    manual = -2 * 2.0 * (0.05 - q) * (p * (1 - p)).mean(0) / 0.81     # the cd_step update uses −this
    _close(rbm.b.grad, manual, atol=1e-6, rtol=1e-5)


def test_transform_shape_and_bad_inputs():
    rbm = SparseRBM(6, 3)
    assert rbm.transform(torch.randn(2, 6)).shape == (2, 3)
    assert [n for n, _ in rbm.named_parameters()] == ["W", "b", "c"]
    with pytest.raises(ShapeError, match="6"):
        rbm.transform(torch.randn(2, 5))
    with pytest.raises(ShapeError):
        rbm.transform(torch.randn(6))
    with pytest.raises(ShapeError, match="floating"):
        rbm.transform(torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(ConfigError, match="visible"):
        SparseRBM(6, 3, visible="poisson")
    with pytest.raises(ConfigError, match="sparsity_target"):
        SparseRBM(6, 3, sparsity_target=1.5)
    with pytest.raises(ConfigError):
        SparseRBM(0, 3)
    with pytest.raises(ConfigError, match="lr"):
        rbm.cd_step(torch.randn(2, 6), lr=-1)
    with pytest.raises(ConfigError, match="k"):
        rbm.cd_step(torch.randn(2, 6), lr=0.1, k=0)


def test_state_dict_round_trip():
    a, b = SparseRBM(6, 3, sparsity_cost=1.0), SparseRBM(6, 3, sparsity_cost=1.0)
    a.cd_step(torch.randn(4, 6), lr=0.1)
    b.load_state_dict(a.state_dict())
    v = torch.randn(3, 6)
    _close(a.transform(v), b.transform(v))
