"""Sparse restricted Boltzmann machine (Ngiam et al. 2011, section 3.2; Lee et al. 2008 sparsity).

Energy (``visible="gaussian"``), with ``W: [H, V]``, hidden bias ``b: [H]``, visible bias ``c: [V]``::

    E(v, h) = (1 / 2σ²) vᵀv − (1 / σ²) (cᵀv + bᵀh + hᵀWv)

so that ``p(h_j = 1 | v) = sigmoid((b_j + w_jᵀv) / σ²)`` and ``p(v | h) = N(c + Wᵀh, σ² I)``.
With ``visible="binary"`` the quadratic term is dropped and ``p(v_k = 1 | h) = sigmoid((c_k + (Wᵀh)_k) / σ²)``
(σ acts as a temperature; keep the default 1 for the usual binary RBM).

Free energy ``F(v) = −log Σ_h exp(−E(v, h))``::

    F(v) = [(1 / 2σ²) vᵀv]_gaussian − (1 / σ²) cᵀv − Σ_j softplus((b_j + w_jᵀv) / σ²)

so ``p(v) ∝ exp(−F(v))``. Training: contrastive divergence CD-k (:meth:`SparseRBM.cd_step`, one manual
parameter update per batch, no autograd) plus the sparsity regulariser ``λ Σ_j (ρ − q_j)²``, ``q_j = (1/m) Σ_l E[h_j | v^(l)]``, whose gradient is applied
to the hidden biases only (as in Lee et al.).

Gaussian visible units assume roughly standardised data (σ = 1 fits PCA-whitened or z-scored inputs);
use a small learning rate (1e-3 .. 1e-2) for them, larger (≈ 0.05 .. 0.1) for binary units.
The epoch loop over a training set lives in the ``greedy_pretrain`` training scheme
(:func:`mmfuse.schemes.greedy_pretrain.pretrain_rbm`), which reads the batches of the one training loop.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ._checks import check_matrix, positive_float, positive_int

VISIBLE_TYPES = ("gaussian", "binary")


class SparseRBM(nn.Module):
    """RBM with Gaussian or binary visible units and binary hidden units.

    Shapes: ``v: [B, n_visible]``, ``h: [B, n_hidden]``.
    """

    def __init__(self, n_visible: int, n_hidden: int, visible: str = "gaussian", sigma: float = 1.0,
                 sparsity_target: float = 0.1, sparsity_cost: float = 0.0, init_std: float = 0.01,
                 generator: torch.Generator | None = None):
        super().__init__()
        where = "SparseRBM"
        self.n_visible = positive_int("n_visible", n_visible, where)
        self.n_hidden = positive_int("n_hidden", n_hidden, where)
        if visible not in VISIBLE_TYPES:
            raise ConfigError(f"{where}: visible must be one of {list(VISIBLE_TYPES)}, got {visible!r}")
        self.visible = visible
        self.sigma = positive_float("sigma", sigma, where)
        rho = positive_float("sparsity_target", sparsity_target, where)
        if not rho < 1:
            raise ConfigError(f"{where}: sparsity_target ρ must be in (0, 1), got {sparsity_target!r}")
        self.sparsity_target = rho
        self.sparsity_cost = positive_float("sparsity_cost", sparsity_cost, where, allow_zero=True)
        init_std = positive_float("init_std", init_std, where)
        w = torch.randn(self.n_hidden, self.n_visible, generator=generator) * init_std
        self.W = nn.Parameter(w)                                   # [H, V]
        self.b = nn.Parameter(torch.zeros(self.n_hidden))          # [H] hidden bias
        self.c = nn.Parameter(torch.zeros(self.n_visible))         # [V] visible bias

    def extra_repr(self) -> str:
        return (f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, visible={self.visible!r}, "
                f"sigma={self.sigma}, sparsity_target={self.sparsity_target}, sparsity_cost={self.sparsity_cost}")

    # ---- the model --------------------------------------------------------------------------
    def _v(self, v: torch.Tensor) -> torch.Tensor:
        return check_matrix(v, self.n_visible, "SparseRBM visible input v")

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``E(v, h)`` per sample: ``[B]``."""
        v = self._v(v)
        h = check_matrix(h, self.n_hidden, "SparseRBM hidden state h")
        s2 = self.sigma ** 2
        inter = ((h @ self.W) * v).sum(1)                          # hᵀWv, [B]
        e = -(v @ self.c + h @ self.b + inter) / s2
        if self.visible == "gaussian":
            e = e + (v * v).sum(1) / (2 * s2)
        return e

    def hidden_prob(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h = 1 | v)``: ``[B, H]``."""
        v = self._v(v)
        return torch.sigmoid((v @ self.W.t() + self.b) / self.sigma ** 2)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """``E[v | h]``: ``c + Wᵀh`` (gaussian) or ``sigmoid((c + Wᵀh) / σ²)`` (binary): ``[B, V]``."""
        h = check_matrix(h, self.n_hidden, "SparseRBM hidden state h")
        a = h @ self.W + self.c
        return a if self.visible == "gaussian" else torch.sigmoid(a / self.sigma ** 2)

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.hidden_prob(v), generator=generator)

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean = self.visible_mean(h)
        if self.visible == "gaussian":
            return mean + self.sigma * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return torch.bernoulli(mean, generator=generator)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v) = −log Σ_h exp(−E(v, h))`` per sample: ``[B]``."""
        v = self._v(v)
        s2 = self.sigma ** 2
        f = -(v @ self.c) / s2 - F.softplus((v @ self.W.t() + self.b) / s2).sum(1)
        if self.visible == "gaussian":
            f = f + (v * v).sum(1) / (2 * s2)
        return f

    def transform(self, v: torch.Tensor) -> torch.Tensor:
        """Features ``E[h | v]``: ``[B, H]``."""
        return self.hidden_prob(v)

    forward = transform

    @torch.no_grad()
    def reconstruction_error(self, v: torch.Tensor) -> float:
        """Mean squared difference between ``v`` and its deterministic reconstruction ``E[v | E[h | v]]``."""
        v = self._v(v)
        return float(((v - self.visible_mean(self.hidden_prob(v))) ** 2).mean())

    def sparsity_penalty(self, v: torch.Tensor) -> torch.Tensor:
        """``λ Σ_j (ρ − q_j)²`` with ``q_j`` the batch mean of ``p(h_j | v)`` (a scalar)."""
        q = self.hidden_prob(v).mean(0)
        return self.sparsity_cost * ((self.sparsity_target - q) ** 2).sum()

    # ---- training ---------------------------------------------------------------------------
    @torch.no_grad()
    def cd_step(self, v: torch.Tensor, lr: float, k: int = 1, generator: torch.Generator | None = None,
                weight_decay: float = 0.0, sample_visible: bool = False) -> float:
        """One CD-k update on the batch ``v: [B, V]``; returns the reconstruction error before it.

        Hidden states of the chain are sampled; visible states use their mean (Hinton's guide)
        unless ``sample_visible``. Gradient ascent on the CD estimate of ``log p(v)``::

            ΔW = lr (⟨h vᵀ⟩_data − ⟨h vᵀ⟩_k) / σ²,  Δb = lr (⟨h⟩_data − ⟨h⟩_k) / σ²,  Δc = lr (⟨v⟩_data − ⟨v⟩_k) / σ²

        and descent on the sparsity penalty for the hidden biases:
        ``Δb_j += lr · 2λ (ρ − q_j) · mean_l[p_lj (1 − p_lj)] / σ²`` (the exact derivative of
        ``λ Σ_j (ρ − q_j)²`` with respect to ``b_j``). The error is the mean squared difference
        between ``v`` and its first mean reconstruction ``E[v | h⁰]``.
        """
        v0 = self._v(v)
        lr = positive_float("lr", lr, "SparseRBM.cd_step")
        k = positive_int("k", k, "SparseRBM.cd_step")
        weight_decay = positive_float("weight_decay", weight_decay, "SparseRBM.cd_step", allow_zero=True)
        s2 = self.sigma ** 2
        m = v0.shape[0]
        p0 = self.hidden_prob(v0)                                   # [B, H]
        h = torch.bernoulli(p0, generator=generator)
        vk = v0
        recon = None
        for _ in range(k):
            vk = self.sample_visible(h, generator) if sample_visible else self.visible_mean(h)
            if recon is None:
                recon = vk if not sample_visible else self.visible_mean(h)
            pk = self.hidden_prob(vk)
            h = torch.bernoulli(pk, generator=generator)
        gW = (p0.t() @ v0 - pk.t() @ vk) / (m * s2)                  # [H, V]
        gb = (p0 - pk).mean(0) / s2                                 # [H]
        gc = (v0 - vk).mean(0) / s2                                 # [V]
        if self.sparsity_cost > 0:
            q = p0.mean(0)
            gb = gb + 2 * self.sparsity_cost * (self.sparsity_target - q) * (p0 * (1 - p0)).mean(0) / s2
        self.W.add_(lr * (gW - weight_decay * self.W))
        self.b.add_(lr * gb)
        self.c.add_(lr * gc)
        return float(((v0 - recon) ** 2).mean())


def enumerate_binary(n: int) -> torch.Tensor:
    """All ``2ⁿ`` binary vectors of length ``n`` as ``[2ⁿ, n]`` floats (for exact checks on tiny RBMs)."""
    n = positive_int("n", n, "enumerate_binary")
    if n > 20:
        raise ConfigError(f"enumerate_binary: n={n} would create 2^{n} rows; use n <= 20")
    codes = torch.arange(2 ** n).unsqueeze(1)
    return ((codes >> torch.arange(n - 1, -1, -1)) & 1).float()


__all__: Sequence[str] = ("SparseRBM", "enumerate_binary", "VISIBLE_TYPES")
