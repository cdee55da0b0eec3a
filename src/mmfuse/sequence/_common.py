"""Shared pieces of the sequence models: masks, masked attention, gradient reversal, HSIC.

Shape legend: B batch, T / S query / key length, D width, H heads, d = D / H per-head width.
A *valid* position is a real (non-padding) step of a present sample. Every reduction here
replaces invalid entries (``torch.where``) instead of multiplying them by 0, so padding and
absent-modality placeholders (even NaN / inf) cannot reach outputs or gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError


def check_heads(dim: int, heads: int, where: str) -> None:
    if not isinstance(dim, int) or not isinstance(heads, int) or dim < 1 or heads < 1 or dim % heads:
        raise ConfigError(f"{where}: dim ({dim!r}) must be a positive int divisible by heads ({heads!r}); "
                          "e.g. dim=32, heads=4")


def valid_positions(lengths: Tensor | None, present: Tensor, T: int) -> Tensor:
    """BoolTensor[B, T]: True on real steps of present samples (``lengths``: LongTensor[B] or None)."""
    steps = torch.arange(T, device=present.device)[None, :]
    full = torch.full_like(present, T, dtype=torch.long) if lengths is None else lengths.to(present.device)
    return (steps < full[:, None]) & present[:, None]


def zero_invalid(x: Tensor, valid: Tensor) -> Tensor:
    """Tensor[B, T, D] with invalid steps (BoolTensor[B, T] False) replaced by 0."""
    return torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_softmax(logits: Tensor, key_valid: Tensor) -> Tensor:
    """Softmax over the last axis restricted to valid keys; a row with no valid key is all 0 (not NaN).

    ``logits``: Tensor[..., S]; ``key_valid``: BoolTensor broadcastable to ``logits``.
    """
    low = torch.finfo(logits.dtype).min
    w = torch.softmax(torch.where(key_valid, logits, torch.full((), low, dtype=logits.dtype, device=logits.device)), -1)
    return torch.where(key_valid, w, torch.zeros((), dtype=w.dtype, device=w.device))


def masked_pool(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of Tensor[B, T, D] over valid steps -> Tensor[B, D] (0 where no step is valid)."""
    s = zero_invalid(x, valid).sum(1)
    return s / valid.sum(1, keepdim=True).clamp_min(1).to(x.dtype)


def sinusoid(T: int, D: int, device=None, dtype=torch.float32) -> Tensor:
    """Sinusoidal position table Tensor[T, D] (Vaswani et al.); each modality counts its own steps."""
    pos = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, D, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / D))
    table = torch.zeros(T, D, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: D // 2])
    return table.to(dtype)


class MultiHead(nn.Module):
    """Query / key / value / output projections with the head split, parameters made here.

    ``scores(q_in, kv_in)`` -> (logits Tensor[B, H, T, S], values Tensor[B, H, S, d]);
    ``mix(attn, v)`` -> Tensor[B, T, D].
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.d = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def _split(self, x: Tensor) -> Tensor:  # [B, T, D] -> [B, H, T, d]
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.d).transpose(1, 2)

    def scores(self, q_in: Tensor, kv_in: Tensor) -> tuple[Tensor, Tensor]:
        q, k, v = self._split(self.q(q_in)), self._split(self.k(kv_in)), self._split(self.v(kv_in))
        return q @ k.transpose(-1, -2) / math.sqrt(self.d), v

    def mix(self, attn: Tensor, v: Tensor) -> Tensor:
        B, H, T, d = attn.shape[0], self.heads, attn.shape[2], self.d
        return self.o((attn @ v).transpose(1, 2).reshape(B, T, H * d))


class FeedForward(nn.Module):
    """Position-wise Linear(D, 2D) -> GELU -> Dropout -> Linear(2D, D)."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lambd: float) -> Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return -ctx.lambd * grad, None


def grad_reverse(x: Tensor, lambd: float = 1.0) -> Tensor:
    """Gradient-reversal layer (Ganin & Lempitsky 2015): identity forward, gradient × (−``lambd``) backward."""
    return _GradReverse.apply(x, float(lambd))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`."""

    def __init__(self, lambd: float = 1.0):
        super().__init__()
        self.lambd = float(lambd)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"


def hsic(x: Tensor, y: Tensor, kernel: str = "rbf") -> Tensor:
    """Biased empirical HSIC (Gretton et al. 2005) between rows of Tensor[n, Dx] and Tensor[n, Dy].

    ``tr(K H L H) / (n − 1)²`` with centring ``H``; ``kernel`` is ``"rbf"`` (Gaussian, bandwidth =
    the detached median pairwise distance) or ``"linear"``. Always ≥ 0, and 0 when either input
    is constant over the rows or when n < 2.
    """
    n = x.shape[0]
    if n < 2:
        return x.sum() * 0.0 + y.sum() * 0.0
    def gram(z: Tensor) -> Tensor:
        if kernel == "linear":
            return z @ z.T
        sq = (z * z).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0.0)  # no sqrt: finite gradients at distance 0
        off = d2[~torch.eye(n, dtype=torch.bool, device=z.device)].detach()
        sigma2 = off.median().clamp_min(1e-6)
        return torch.exp(-d2 / (2 * sigma2))
    if kernel not in ("rbf", "linear"):
        raise ConfigError(f"hsic: kernel must be 'rbf' or 'linear', got {kernel!r}")
    H = torch.eye(n, device=x.device, dtype=x.dtype) - 1.0 / n
    K, L = H @ gram(x) @ H, H @ gram(y) @ H
    return (K * L).sum().clamp_min(0.0) / (n - 1) ** 2
