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
   In training mode ``ModelOutput.losses`` holds ``{"mea.disparity": α·disparity,
   "mea.adversarial": β·adversarial}`` (a term whose weight is 0 is left out), which the one training
   loop adds to the task loss; α = β = 0 is the paper's ablation (no extra term at all).
5. :class:`~mmfuse.sequence.graph.GraphFusion` over the nodes {e_m} ∪ {mean of present a_m} → fused
   [B, D] → head (Linear, GELU, Dropout, Linear) → logits [B, K].

Inputs other than [B, T, F] (when built with ``input_shapes``, as ``family: mea`` does): a
:class:`SequenceView` per modality turns one sample of shape (T, F) (T may vary) into itself, (F,)
into one step (1, F), and (d_1, ..., d_k, F) into (d_1·…·d_k, F) (leading dims flattened into time,
the last kept as features; e.g. an image (1, 28, 28) becomes 28 steps of 28 features).

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

DISPARITY_KEY, ADVERSARIAL_KEY = "loss.disparity", "loss.adversarial"  # extras: the unweighted constraints
DISPARITY_LOSS, ADVERSARIAL_LOSS = "mea.disparity", "mea.adversarial"    # losses: α·disparity, β·adversarial


class SequenceView(nn.Module):
    """One modality's inputs as a channels-last sequence: ``forward(x [B, *shape], lengths) -> (x [B, T, F], lengths)``.

    ``shape``: one sample's shape. (T, F): unchanged (T may be None = variable length); (F,): one
    step, T = 1; (d_1, ..., d_k, F) with k ≥ 2: the leading dims are flattened into time,
    T = d_1·…·d_k (``lengths``, which count entries of the first axis, are multiplied by d_2·…·d_k).
    No parameters; only the first axis may be None.
    """

    def __init__(self, shape, modality: str = "input"):
        super().__init__()
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else shape
        ok = isinstance(shape, tuple) and len(shape) >= 1 and all(
            (d is None and i == 0) or (isinstance(d, int) and not isinstance(d, bool) and d >= 1) for i, d in enumerate(shape))
        if not ok or shape[-1] is None:
            raise ConfigError(f"MEAModel: modality {modality!r} has per-sample shape {shape!r}; MEA needs a shape "
                              "(T, F), (F,) or (d_1, ..., F) of positive ints whose last axis (features) is fixed "
                              "(only the first axis may be None = variable length)")
        self.shape, self.modality = shape, modality
        self.features = int(shape[-1])
        self.per_step = 1
        for d in shape[1:-1]:
            self.per_step *= int(d)

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        fixed = self.shape[1:] if len(self.shape) >= 2 else self.shape
        if x.dim() != len(self.shape) + 1 or tuple(x.shape[x.dim() - len(fixed):]) != fixed:
            raise ShapeError(f"MEAModel: modality {self.modality!r} must have per-sample shape {self.shape} "
                             f"(None = any length), got a batch of shape {tuple(x.shape)}")
        if len(self.shape) == 1:
            return x.unsqueeze(1), None
        if len(self.shape) == 2:
            return x, lengths
        y = x.reshape(x.shape[0], -1, self.features)
        return y, (None if lengths is None else lengths * self.per_step)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, steps_per_entry={self.per_step}"


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
    weights of ``ModelOutput.losses`` in training mode (defaults 0.02 / 0.03 from the 3rd-party sketch, not
    verified); ``grl_lambda`` the gradient-reversal factor; ``hsic_kernel`` "rbf" | "linear";
    ``input_shapes`` {modality: one sample's shape} (optional; adds a :class:`SequenceView` per
    modality so vectors and images are accepted; ``input_dims`` may then be None); ``head`` a
    module D → K replacing the default Linear-GELU-Dropout-Linear head; ``modality_dropout`` a
    :class:`~mmfuse.missing.ModalityDropout` applied to the mask in training mode.

    ``ModelOutput``: ``logits`` [B, K]; ``fused`` [B, D]; ``embeddings`` {m: exclusive code [B, D]};
    ``losses`` (training mode only) ``mea.disparity`` = α·disparity and ``mea.adversarial`` =
    β·adversarial, each left out when its weight is 0;
    ``extras``: ``loss.disparity``, ``loss.adversarial`` (scalars), ``exclusive.<m>`` /
    ``agnostic.<m>`` codes [B, D], ``modality_logits`` [B, M, M] (the modality discriminator on each
    exclusive code), ``modality_weights`` [B, M] (PSA's weighted attention layer), ``edge_weights``
    [B, M+1, M+1] (graph, last round; node M is the agnostic node), ``present.<m>`` [B].
    """

    def __init__(self, input_dims: Mapping[str, int] | None, num_outputs: int, dim: int = 32, heads: int = 4,
                 psa_layers: int = 2, hca_layers: int = 2, mu: float = 0.25, graph_rounds: int = 2,
                 alpha: float = 0.02, beta: float = 0.03, grl_lambda: float = 1.0, dropout: float = 0.0,
                 hsic_kernel: str = "rbf", input_shapes: Mapping[str, tuple] | None = None,
                 head: nn.Module | None = None, modality_dropout: nn.Module | None = None):
        super().__init__()
        if input_dims is None and isinstance(input_shapes, Mapping):
            input_dims = {m: (s[-1] if isinstance(s, (tuple, list)) and s else s) for m, s in input_shapes.items()}
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
        self.head = _mlp(dim, num_outputs, dropout) if head is None else head
        self.modality_dropout = modality_dropout
        self.views = None
        if input_shapes is not None:
            if not isinstance(input_shapes, Mapping) or set(input_shapes) != set(self.input_dims):
                raise ConfigError(f"MEAModel: input_shapes must name the modalities of input_dims {self.modalities}, "
                                  f"got {sorted(input_shapes) if isinstance(input_shapes, Mapping) else input_shapes!r}")
            self.views = nn.ModuleDict({m: SequenceView(input_shapes[m], m) for m in self.modalities})
            bad = [m for m in self.modalities if self.views[m].features != self.input_dims[m]]
            if bad:
                raise ConfigError(f"MEAModel: input_dims[{bad[0]!r}] = {self.input_dims[bad[0]]} but its input shape "
                                  f"{self.views[bad[0]].shape} has {self.views[bad[0]].features} features (last axis)")

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
            x, F_m, ln = batch.inputs[m], self.input_dims[m], batch.lengths.get(m)
            if self.views is not None:
                x, ln = self.views[m](x, ln)
            if x.dim() != 3 or x.shape[-1] != F_m or not x.is_floating_point():
                raise ShapeError(f"MEAModel: modality {m!r} must be a float sequence (B, T, {F_m}), got "
                                 f"{tuple(x.shape)} {x.dtype}; check input_dims[{m!r}]")
            if x.shape[1] < 1:
                raise ShapeError(f"MEAModel: modality {m!r} has an empty time axis {tuple(x.shape)}")
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
        if (self.training and self.modality_dropout is not None and isinstance(batch, MultimodalBatch)
                and all(m in batch.mask for m in self.modalities)):  # (a missing modality is reported by _inputs)
            batch = batch.with_mask(self.modality_dropout({m: batch.mask[m] for m in self.modalities}))
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
        disparity = self._disparity(E, A, present)
        adversarial = self._adversarial(E, A, mod_logits_e, mod_logits_a, present)
        losses = {}
        if self.training:
            if self.alpha > 0:
                losses[DISPARITY_LOSS] = self.alpha * disparity
            if self.beta > 0:
                losses[ADVERSARIAL_LOSS] = self.beta * adversarial
        extras = {
            DISPARITY_KEY: disparity,
            ADVERSARIAL_KEY: adversarial,
            "modality_logits": mod_logits_e,
            "modality_weights": info["weights"],
            "edge_weights": edges,
        }
        for m in self.modalities:
            extras["exclusive." + m], extras["agnostic." + m] = exc[m], agn[m]
            extras[PRESENT_KEY + m] = batch.mask[m]
        return ModelOutput(logits, fused, dict(exc), None, extras, losses)

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

    def extra_repr(self) -> str:
        return f"input_dims={self.input_dims}, num_outputs={self.num_outputs}, dim={self.dim}, alpha={self.alpha}, beta={self.beta}"
