"""Cross-modal attention fusion: each modality's tokens attend to the other modalities' tokens.

Shape legend: B batch, T_m tokens of modality m (1 for a vector), D_m input width, D model width,
K number of key tokens (all tokens of the other modalities), Hd heads, N modalities.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError, MissingModalityError, ShapeError
from ..registry import FUSIONS
from .base import FusionOp, masked_softmax, module_key
from .options import positive_int, probability


class CrossAttentionBlock(nn.Module):
    """Queries attend to keys (multi-head, masked by hand), then residual + LayerNorm and a
    small feed-forward with residual + LayerNorm (post-norm, as in the original Transformer).

    Besides the real keys there is one learned *null key* whose value is zero (an attention
    sink): a query can put its attention there and take nothing from the other modalities.
    Without it, a single key token (two vector modalities) would always get weight 1 and the
    query/key projections would learn nothing. When a sample has no real key, the attention
    update is exactly 0 (residual only), never NaN.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.null_key = nn.Parameter(torch.randn(dim) * dim**-0.5)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Tensor) -> Tensor:
        # queries: [B, Tq, D]; keys: [B, K, D]; key_mask: [B, K] (True = real token) -> [B, Tq, D]
        B, Tq, D = queries.shape
        K, Hd = keys.shape[1], self.heads
        q = self.q(queries).view(B, Tq, Hd, D // Hd).transpose(1, 2)  # [B, Hd, Tq, D/Hd]
        null = self.null_key.view(1, 1, D).expand(B, 1, D)
        k = torch.cat([self.k(keys), null], dim=1).view(B, K + 1, Hd, D // Hd).transpose(1, 2)  # [B, Hd, K+1, D/Hd]
        v = self.v(keys).view(B, K, Hd, D // Hd).transpose(1, 2)  # [B, Hd, K, D/Hd]
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // Hd)  # [B, Hd, Tq, K+1]
        keep = torch.cat([key_mask, torch.ones(B, 1, dtype=torch.bool, device=key_mask.device)], dim=1)
        attn = masked_softmax(scores, keep[:, None, None, :], dim=-1)[..., :K]  # null's value is 0
        context = (self.drop(attn) @ v).transpose(1, 2).reshape(B, Tq, D)  # [B, Tq, D]
        has_keys = key_mask.any(dim=1).view(B, 1, 1)
        update = torch.where(has_keys, self.out(context), torch.zeros((), dtype=queries.dtype, device=queries.device))
        x = self.norm1(queries + self.drop(update))
        return self.norm2(x + self.drop(self.ffn(x)))


@FUSIONS.register("cross_attention", test_options={"dim": 8, "heads": 2, "ffn_dim": 8},
                  search_space={"model.fusion.options.dim": {"choices": [16, 32, 64]},
                                "model.fusion.options.heads": {"choices": [1, 2, 4]},  # each divides every dim
                                "model.fusion.options.ffn_dim": {"low": 16, "high": 256, "log": True},
                                "model.fusion.options.dropout": {"low": 0.0, "high": 0.3}})
class CrossAttentionFusion(FusionOp):
    """Cross-modal attention over modality tokens, pooled per modality and concatenated::

        t_m   = Linear_m(x_m) + e_m              [B, T_m, D]   e_m: learned modality embedding
        keys  = tokens of the other *present* modalities (real tokens only)      [B, K, D]
        u_m   = Block_m(t_m, keys)               [B, T_m, D]   attention + residual/LayerNorm + FFN
        p_m   = masked mean of u_m over real tokens               [B, D]
        out   = p_1 ‖ … ‖ p_N  (absent modality block = 0)        [B, N·D]

    A modality given as a vector (B, D_m) is one token; a sequence (B, T_m, D_m) comes with
    ``token_mask={m: BoolTensor[B, T_m]}`` (True = real token) or ``lengths={m: LongTensor[B]}``;
    with neither, every token is real. Padding tokens are neither keys nor pooled, and are
    zeroed before any layer. The operator adds no positional encoding: a sequence encoder is
    expected to have encoded positions already.

    Options: ``dim`` (64), ``heads`` (4; must divide ``dim``), ``ffn_dim`` (2·dim), ``dropout`` (0).
    Needs at least two modalities.
    """

    accepts_sequences = True
    min_modalities = 2

    def __init__(
        self,
        input_dims: Mapping[str, int],
        *,
        dim: int = 64,
        heads: int = 4,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__(input_dims)
        op = "cross_attention"
        self.dim = positive_int(dim, "dim", op)
        self.heads = positive_int(heads, "heads", op)
        if self.dim % self.heads:
            raise ConfigError(f"fusion {op!r}: option 'heads' ({heads}) must divide option 'dim' ({dim})")
        ffn_dim = positive_int(ffn_dim, "ffn_dim", op, default=2 * self.dim)
        dropout = probability(dropout, "dropout", op)
        keys = [module_key(m, op) for m in self.modalities]
        self.proj = nn.ModuleDict({m: nn.Linear(self.input_dims[m], self.dim) for m in keys})
        self.modality_embedding = nn.Parameter(torch.randn(len(keys), self.dim) * 0.02)
        self.blocks = nn.ModuleDict({m: CrossAttentionBlock(self.dim, self.heads, ffn_dim, dropout) for m in keys})
        self.output_dim = len(keys) * self.dim

    def _token_masks(
        self, xs: list[Tensor], token_mask: Mapping[str, Tensor] | None, lengths: Mapping[str, Tensor] | None
    ) -> list[Tensor]:
        """One BoolTensor[B, T_m] per modality (True = real token), validated."""
        name = type(self).__name__
        for given, what in ((token_mask, "token_mask"), (lengths, "lengths")):
            unknown = sorted(set(given or {}) - set(self.modalities))
            if unknown:
                raise MissingModalityError(
                    f"{name}: {what} has unknown modality {unknown[0]!r}; it was built for {self.modalities}"
                )
        out = []
        for m, x in zip(self.modalities, xs):
            B, T = x.shape[0], (x.shape[1] if x.dim() == 3 else 1)
            if token_mask is not None and token_mask.get(m) is not None:
                tm = token_mask[m]
                if tuple(tm.shape) != (B, T):
                    raise ShapeError(
                        f"{name}: token_mask[{m!r}] has shape {tuple(tm.shape)}, expected ({B}, {T}) to match "
                        f"the embedding of shape {tuple(x.shape)}"
                    )
                tm = tm.to(torch.bool)
            elif lengths is not None and lengths.get(m) is not None:
                ln = lengths[m]
                if tuple(ln.shape) != (B,):
                    raise ShapeError(f"{name}: lengths[{m!r}] has shape {tuple(ln.shape)}, expected ({B},)")
                tm = torch.arange(T, device=x.device).unsqueeze(0) < ln.to(x.device).unsqueeze(1)
            else:
                tm = torch.ones(B, T, dtype=torch.bool, device=x.device)
            out.append(tm.to(x.device))
        return out

    def fuse(
        self,
        xs: list[Tensor],
        present: Tensor,
        token_mask: Mapping[str, Tensor] | None = None,
        lengths: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        masks = self._token_masks(xs, token_mask, lengths)
        tokens, real = [], []
        for i, (m, x, tm) in enumerate(zip(self.modalities, xs, masks)):
            x = x if x.dim() == 3 else x.unsqueeze(1)  # [B, T_m, D_m]
            ok = tm & present[:, i : i + 1]  # [B, T_m] real token of a present modality
            x = torch.where(ok.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
            tokens.append(self.proj[m](x) + self.modality_embedding[i])  # [B, T_m, D]
            real.append(ok)
        pooled = []
        for i, m in enumerate(self.modalities):
            others = [j for j in range(len(tokens)) if j != i]
            keys = torch.cat([tokens[j] for j in others], dim=1)  # [B, K, D]
            key_mask = torch.cat([real[j] for j in others], dim=1)  # [B, K]
            u = self.blocks[m](tokens[i], keys, key_mask)  # [B, T_m, D]
            w = real[i].unsqueeze(-1)
            total = torch.where(w, u, torch.zeros((), dtype=u.dtype, device=u.device)).sum(dim=1)
            pooled.append(total / w.sum(dim=1).clamp(min=1).to(u.dtype))  # [B, D]; absent -> 0
        return torch.cat(pooled, dim=-1)
