"""MEA: modality-exclusive and -agnostic representations for asynchronous multimodal sequences.

Dingkang Yang et al., "Asynchronous Multimodal Video Sequence Fusion via Learning Modality-Exclusive
and -Agnostic Representations", arXiv 2407.04955 (2024). Only the abstract and figure captions
were readable (see ``shared/specs/04-mea.md``); the components below follow the abstract and every
choice it does not fix is marked [inferred].

Pipeline (shape legend: B batch, T_m length of modality m, F_m its features, D = ``dim``,
M modalities, K outputs):

1. Front end per modality [inferred, after the 3rd-party sketch]: Conv1d(F_m → D, kernel 3) over
   the zero-padded sequence + a sinusoidal position table counted in the modality's own steps.
2. :class:`~mmfuse.sequence.psa.PSA` → modality-exclusive sequences [B, T_m, D];
   :class:`~mmfuse.sequence.hca.HCA` (on the same front-end outputs, in parallel [inferred])
   → modality-agnostic sequences [B, T_m, D]. No alignment: every sequence keeps its own T_m.
3. Decoupled codes [inferred]: masked mean pooling, then an MLP — one per modality for the
   exclusive codes ``e_m``, one shared by all modalities for the agnostic codes ``a_m`` [B, D].
4. Double discriminator [inferred design of the "adversarial manner"]:
   (i) a *modality discriminator* ``D_mod`` (D → M) classifies which modality a code comes from:
   trained directly on exclusive codes (they should stay modality-specific) and on agnostic codes
   through a gradient-reversal layer (the agnostic encoder learns to fool it, so agnostic codes
   become modality-invariant); (ii) an *exclusive-vs-agnostic discriminator* ``D_src`` (D → 1)
   told apart exclusive (label 1) and agnostic (label 0) codes; its gradient reaches the encoders
   unreversed, pushing the two kinds of code apart. ``adversarial`` = mean of the four
   cross-entropies over present (sample, modality) pairs.
   Disparity [inferred, after the sketch]: mean over modalities of HSIC(e_m, a_m) on present samples
   (≥ 0; 0 when independent), so exclusive and agnostic codes carry different information.
   ``auxiliary_loss(output) = α·disparity + β·adversarial``; α = β = 0 is the paper's ablation.
5. :class:`~mmfuse.sequence.graph.GraphFusion` over the nodes {e_m} ∪ {mean of present a_m} → fused
   [B, D] → head (Linear, GELU, Dropout, Linear) → logits [B, K].

Absent modalities (``batch.mask[m]`` False) are replaced by zeros before any layer (NaN
placeholders cannot leak), never act as attention keys, are not graph nodes and are left out of
both constraints. Padding (``batch.lengths``) is handled the same way. The model needs at least
two modalities (HCA attends across them); a sample may have only one present.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..batch import MultimodalBatch
from ..errors import ConfigError, DataError, MissingModalityError, ShapeError
from ..fusion.base import module_key
from ..models.model import PRESENT_KEY
from ..models.output import ModelOutput
from ._common import check_heads, grad_reverse, hsic, masked_pool, sinusoid, valid_positions, zero_invalid
from .graph import GraphFusion
from .hca import HCA
from .psa import PSA

DISPARITY_KEY, ADVERSARIAL_KEY = "loss.disparity", "loss.adversarial"


class SequenceFrontEnd(nn.Module):
    """``forward(x [B,T,F], valid [B,T]) -> [B,T,D]``: Conv1d(kernel 3) on zero-padded input + positions."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(in_features, dim, kernel_size=3, padding=1)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        x = zero_invalid(x.float(), valid)
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return zero_invalid(h + sinusoid(h.shape[1], h.shape[2], h.device, h.dtype), valid)


def _mlp(dim: int, out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, out))


def _check_float(value, name: str, low: float = 0.0, high: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        raise ConfigError(f"MEAModel: {name} must be a number ≥ {low}" + (f" and ≤ {high}" if high is not None else "")
                          + f", got {value!r}")
    return float(value)


class MEAModel(nn.Module):
    """MEA for asynchronous multimodal sequences: ``forward(batch) -> ModelOutput``.

    Parameters: ``input_dims`` {modality: features per step F_m} (inputs are channels-last
    sequences [B, T_m, F_m], each modality with its own length); ``num_outputs`` K; ``dim`` D;
    ``heads``; ``psa_layers`` / ``hca_layers`` (2 each, as the sketch); ``mu`` the weight of the
    predictive attention map; ``graph_rounds``; ``alpha`` / ``beta`` the disparity / adversarial
    weights used by :meth:`auxiliary_loss` (defaults 0.02 / 0.03 from the 3rd-party sketch, not
    verified); ``grl_lambda`` the gradient-reversal factor; ``hsic_kernel`` "rbf" | "linear".

    ``ModelOutput``: ``logits`` [B, K]; ``fused`` [B, D]; ``embeddings`` {m: exclusive code [B, D]};
    ``extras``: ``loss.disparity``, ``loss.adversarial`` (scalars), ``exclusive.<m>`` /
    ``agnostic.<m>`` codes [B, D], ``modality_logits`` [B, M, M] (the modality discriminator on each
    exclusive code), ``modality_weights`` [B, M] (PSA's weighted attention layer), ``edge_weights``
    [B, M+1, M+1] (graph, last round; node M is the agnostic node), ``present.<m>`` [B].
    """

    def __init__(self, input_dims: Mapping[str, int], num_outputs: int, dim: int = 32, heads: int = 4,
                 psa_layers: int = 2, hca_layers: int = 2, mu: float = 0.25, graph_rounds: int = 2,
                 alpha: float = 0.02, beta: float = 0.03, grl_lambda: float = 1.0, dropout: float = 0.0,
                 hsic_kernel: str = "rbf"):
        super().__init__()
        if not isinstance(input_dims, Mapping) or len(input_dims) < 2:
            raise ConfigError(f"MEAModel: input_dims must map at least 2 modality names to feature sizes, got {input_dims!r}")
        for m, f in input_dims.items():
            if not isinstance(m, str) or isinstance(f, bool) or not isinstance(f, int) or f < 1:
                raise ConfigError(f"MEAModel: input_dims[{m!r}] must be a positive int (features per step), got {f!r}")
            module_key(m, "mea")
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ConfigError(f"MEAModel: num_outputs must be a positive int, got {num_outputs!r}")
        check_heads(dim, heads, "MEAModel")
        if hsic_kernel not in ("rbf", "linear"):
            raise ConfigError(f"MEAModel: hsic_kernel must be 'rbf' or 'linear', got {hsic_kernel!r}")
        self.alpha, self.beta = _check_float(alpha, "alpha"), _check_float(beta, "beta")
        self.grl_lambda = _check_float(grl_lambda, "grl_lambda")
        dropout = _check_float(dropout, "dropout", 0.0, 0.99)
        self.hsic_kernel = hsic_kernel
        self.input_dims = dict(sorted(input_dims.items()))
        self.modalities = list(self.input_dims)
        self.dim, self.num_outputs = dim, num_outputs
        M = len(self.modalities)
        self.front = nn.ModuleDict({m: SequenceFrontEnd(f, dim) for m, f in self.input_dims.items()})
        self.psa = PSA(self.modalities, dim, heads, psa_layers, mu, True, dropout)
        self.hca = HCA(self.modalities, dim, heads, hca_layers, dropout)
        self.exclusive = nn.ModuleDict({m: _mlp(dim, dim, dropout) for m in self.modalities})
        self.agnostic = _mlp(dim, dim, dropout)          # one module shared by every modality
        self.modality_disc = _mlp(dim, M)
        self.source_disc = _mlp(dim, 1)
        self.graph = GraphFusion(dim, graph_rounds)
        self.head = _mlp(dim, num_outputs, dropout)

    # ------------------------------------------------------------------ input checks
    def _inputs(self, batch: MultimodalBatch) -> tuple[dict, dict, Tensor]:
        if not isinstance(batch, MultimodalBatch):
            raise DataError(f"MEAModel: forward expects a MultimodalBatch, got {type(batch).__name__}; "
                            "build one with mmfuse.batch.collate")
        missing = [m for m in self.modalities if m not in batch.inputs]
        if missing:
            raise MissingModalityError(f"MEAModel: batch lacks modality {missing[0]!r}; the model expects {self.modalities} "
                                       f"and the batch has {batch.modalities}. Absent values belong in the batch as zeros "
                                       "with mask False")
        xs, valid = {}, {}
        for m in self.modalities:
            x, F_m = batch.inputs[m], self.input_dims[m]
            if x.dim() != 3 or x.shape[-1] != F_m or not x.is_floating_point():
                raise ShapeError(f"MEAModel: modality {m!r} must be a float sequence (B, T, {F_m}), got "
                                 f"{tuple(x.shape)} {x.dtype}; check input_dims[{m!r}]")
            if x.shape[1] < 1:
                raise ShapeError(f"MEAModel: modality {m!r} has an empty time axis {tuple(x.shape)}")
            ln = batch.lengths.get(m)
            if ln is not None and (ln.shape != (x.shape[0],) or bool((ln < 0).any()) or bool((ln > x.shape[1]).any())):
                raise ShapeError(f"MEAModel: lengths[{m!r}] must have shape ({x.shape[0]},) with values in "
                                 f"[0, {x.shape[1]}], got shape {tuple(ln.shape)} and values {ln.tolist()[:8]}; "
                                 "lengths count the real steps of each padded sequence")
            valid[m] = valid_positions(ln, batch.mask[m].to(x.device), x.shape[1])
            xs[m] = x
        present = torch.stack([valid[m].any(1) for m in self.modalities], 1)  # [B, M]; length 0 counts as absent
        return xs, valid, present

    # ------------------------------------------------------------------ forward
    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        xs, valid, present = self._inputs(batch)
        h = {m: self.front[m](xs[m], valid[m]) for m in self.modalities}
        exc_seq, info = self.psa(h, valid, present)
        agn_seq = self.hca(h, valid)
        zero = torch.zeros((), dtype=next(iter(h.values())).dtype, device=present.device)
        exc = {m: torch.where(present[:, i, None], self.exclusive[m](masked_pool(exc_seq[m], valid[m])), zero)
               for i, m in enumerate(self.modalities)}
        agn = {m: torch.where(present[:, i, None], self.agnostic(masked_pool(agn_seq[m], valid[m])), zero)
               for i, m in enumerate(self.modalities)}
        E = torch.stack([exc[m] for m in self.modalities], 1)   # [B, M, D]
        A = torch.stack([agn[m] for m in self.modalities], 1)   # [B, M, D]
        agn_node = A.sum(1) / present.sum(1, keepdim=True).clamp_min(1).to(A.dtype)
        nodes = torch.cat([E, agn_node[:, None]], 1)            # [B, M+1, D]
        node_present = torch.cat([present, present.any(1, keepdim=True)], 1)
        fused, edges = self.graph(nodes, node_present)
        logits = self.head(fused)

        mod_logits_e = self.modality_disc(E)                    # [B, M, M]
        mod_logits_a = self.modality_disc(grad_reverse(A, self.grl_lambda))
        extras = {
            DISPARITY_KEY: self._disparity(E, A, present),
            ADVERSARIAL_KEY: self._adversarial(E, A, mod_logits_e, mod_logits_a, present),
            "modality_logits": mod_logits_e,
            "modality_weights": info["weights"],
            "edge_weights": edges,
        }
        for m in self.modalities:
            extras["exclusive." + m], extras["agnostic." + m] = exc[m], agn[m]
            extras[PRESENT_KEY + m] = batch.mask[m]
        return ModelOutput(logits, fused, dict(exc), None, extras)

    # ------------------------------------------------------------------ constraints
    def _disparity(self, E: Tensor, A: Tensor, present: Tensor) -> Tensor:
        terms = [hsic(E[present[:, i], i], A[present[:, i], i], self.hsic_kernel) for i in range(E.shape[1])]
        return torch.stack(terms).mean()

    def _adversarial(self, E: Tensor, A: Tensor, le: Tensor, la: Tensor, present: Tensor) -> Tensor:
        B, M = present.shape
        if not bool(present.any()):
            return (le.sum() + la.sum()) * 0.0 + self.source_disc(E).sum() * 0.0
        labels = torch.arange(M, device=present.device).expand(B, M)[present]
        mod = F.cross_entropy(le[present], labels) + F.cross_entropy(la[present], labels)
        se, sa = self.source_disc(E)[present].squeeze(-1), self.source_disc(A)[present].squeeze(-1)
        src = F.binary_cross_entropy_with_logits(se, torch.ones_like(se)) + \
            F.binary_cross_entropy_with_logits(sa, torch.zeros_like(sa))
        return (mod + src) / 4.0

    def auxiliary_loss(self, output: ModelOutput) -> Tensor:
        """``α·disparity + β·adversarial`` from ``output.extras`` (add it to the task loss)."""
        if not isinstance(output, ModelOutput) or DISPARITY_KEY not in output.extras or ADVERSARIAL_KEY not in output.extras:
            raise DataError("MEAModel.auxiliary_loss: expects the ModelOutput returned by MEAModel.forward "
                            f"(with extras {DISPARITY_KEY!r} and {ADVERSARIAL_KEY!r})")
        return self.alpha * output.extras[DISPARITY_KEY] + self.beta * output.extras[ADVERSARIAL_KEY]

    def extra_repr(self) -> str:
        return f"input_dims={self.input_dims}, num_outputs={self.num_outputs}, dim={self.dim}, alpha={self.alpha}, beta={self.beta}"
