"""Bimodal deep belief network and shallow bimodal RBM (Ngiam et al. 2011, Fig. 2 b-d).

* :class:`ShallowBimodalRBM`: one Gaussian-visible :class:`SparseRBM` on ``[a; v]`` (the inputs
  concatenated in sorted modality order). The paper reports its hidden units end up mostly unimodal.
* :class:`BimodalDBN`: a Gaussian-visible RBM per modality, then a joint binary RBM on the
  concatenated first-layer activations ``[E[h_a | a]; E[h_v | v]]``; trained greedily layer by layer
  by the ``greedy_pretrain`` scheme (:mod:`mmfuse.schemes.greedy_pretrain`; CD-k in :meth:`SparseRBM.cd_step`).

Absent modalities (mask False, or key missing): the shallow RBM reads zeros (the paper's convention).
The DBN infers the missing first-layer activations by mean-field in the joint RBM: the present
units are clamped to ``E[h_m | x_m]``, the missing ones start at 0 and are updated ``infer_steps``
times with ``h_missing ← E[h_missing | top]``, ``top ← E[top | h_all]`` — the paper notes that this
makes the DBN "clumsy" for cross-modality learning, which motivated the deep autoencoders.

Shapes: ``x: {modality: [B, D_m]}``, ``mask: {modality: bool[B]}``; representations ``[B, K]``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ._checks import check_dims, check_inputs, positive_int, zero_absent
from .rbm import SparseRBM


def _per_modality(name: str, value: Any, modalities: list[str], where: str) -> dict[str, int]:
    if isinstance(value, Mapping):
        if sorted(value) != modalities:
            raise ConfigError(f"{where}: {name} must have one entry per modality {modalities}, got {sorted(value)}")
        return check_dims(name, value, where)
    return {m: positive_int(name, value, where) for m in modalities}


class ShallowBimodalRBM(nn.Module):
    """A single sparse Gaussian RBM on the concatenated inputs ``[x_m1; x_m2; ...]``."""

    def __init__(self, input_dims: Mapping[str, int], n_hidden: int, **rbm_kwargs: Any):
        super().__init__()
        self.input_dims = check_dims("input_dims", input_dims, "ShallowBimodalRBM", min_len=2)
        self.rbm = SparseRBM(sum(self.input_dims.values()), n_hidden, visible="gaussian", **rbm_kwargs)
        self.output_dim = self.rbm.n_hidden

    def _joined(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None,
                required: bool) -> torch.Tensor:
        xs, present, batch = check_inputs(x, self.input_dims, "ShallowBimodalRBM", required=required, mask=mask)
        full = zero_absent(xs, present, self.input_dims, batch)
        return torch.cat([full[m] for m in self.input_dims], dim=1)  # [B, ΣD_m]

    def joined(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None = None,
               required: bool = False) -> torch.Tensor:
        """``[x_m1; x_m2; ...]`` with absent inputs zeroed: ``[B, ΣD_m]`` (the RBM's visible layer)."""
        return self._joined(x, mask, required)

    @torch.no_grad()
    def shared_representation(self, x: Mapping[str, torch.Tensor],
                              mask: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``E[h | [x_a; x_v]]`` with absent inputs zeroed: ``[B, n_hidden]``."""
        return self.rbm.transform(self._joined(x, mask, False))

    forward = shared_representation


class BimodalDBN(nn.Module):
    """Per-modality Gaussian RBMs + a joint binary RBM on their concatenated hidden activations.

    Parameters
    ----------
    input_dims: ``{modality: D_m}`` (at least two modalities; sorted order fixes the joint layout).
    hidden_dims: first-layer size, one int for all modalities or ``{modality: H_m}``.
    joint_dim: size ``K`` of the shared (joint) layer.
    sigma, sparsity_target, sparsity_cost: passed to the first-layer (Gaussian) RBMs.
    joint_sparsity_target, joint_sparsity_cost: the same for the joint RBM.
    """

    def __init__(self, input_dims: Mapping[str, int], hidden_dims: int | Mapping[str, int], joint_dim: int,
                 sigma: float = 1.0, sparsity_target: float = 0.1, sparsity_cost: float = 0.0,
                 joint_sparsity_target: float = 0.1, joint_sparsity_cost: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        where = "BimodalDBN"
        self.input_dims = check_dims("input_dims", input_dims, where, min_len=2)
        self.modalities = list(self.input_dims)
        self.hidden_dims = _per_modality("hidden_dims", hidden_dims, self.modalities, where)
        self.first = nn.ModuleDict({
            m: SparseRBM(self.input_dims[m], self.hidden_dims[m], visible="gaussian", sigma=sigma,
                         sparsity_target=sparsity_target, sparsity_cost=sparsity_cost, generator=generator)
            for m in self.modalities})
        self.joint = SparseRBM(sum(self.hidden_dims.values()), joint_dim, visible="binary",
                               sparsity_target=joint_sparsity_target, sparsity_cost=joint_sparsity_cost,
                               generator=generator)
        self.output_dim = self.joint.n_hidden

    def joint_slices(self) -> dict[str, slice]:
        """Columns of the joint RBM's visible layer that belong to each modality."""
        out, start = {}, 0
        for m in self.modalities:
            out[m] = slice(start, start + self.hidden_dims[m])
            start += self.hidden_dims[m]
        return out

    def first_layer(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None = None,
                    infer_steps: int = 10) -> torch.Tensor:
        """First-layer activations ``[B, ΣH_m]``; absent modalities inferred through the joint RBM."""
        xs, present, batch = check_inputs(x, self.input_dims, "BimodalDBN", required=False, mask=mask)
        full = zero_absent(xs, present, self.input_dims, batch)
        h = torch.cat([self.first[m].transform(full[m]) for m in self.modalities], dim=1)
        keep = torch.cat([present[m].unsqueeze(1).expand(-1, self.hidden_dims[m]) for m in self.modalities], 1)
        if bool(keep.all()):
            return h
        observed = h
        h = torch.where(keep, observed, torch.zeros_like(observed))
        for _ in range(positive_int("infer_steps", infer_steps, "BimodalDBN")):
            top = self.joint.transform(h)
            h = torch.where(keep, observed, self.joint.visible_mean(top))
        return h

    def encode(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None = None,
               infer_steps: int = 10) -> torch.Tensor:
        """The joint layer ``E[top | first-layer activations]``: ``[B, joint_dim]`` (differentiable, so
        the supervised fine-tuning of the ``ngiam`` family back-propagates through the mean-field pass)."""
        return self.joint.transform(self.first_layer(x, mask, infer_steps))

    @torch.no_grad()
    def shared_representation(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None = None,
                              infer_steps: int = 10) -> torch.Tensor:
        """:meth:`encode` without gradients."""
        return self.encode(x, mask, infer_steps)

    forward = shared_representation

    def reconstruct(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None = None,
                    infer_steps: int = 10) -> dict[str, torch.Tensor]:
        """The deterministic up-down pass ``x -> h -> top -> h' = E[h | top] -> x' = E[x | h']``.

        The DBN unrolled into a tied-weight autoencoder (Hinton & Salakhutdinov 2006): ``{m: [B, D_m]}``
        for every modality, differentiable (the ``ngiam`` family's reconstruction term for ``model: dbn``).
        """
        top = self.encode(x, mask, infer_steps)
        h = self.joint.visible_mean(top)                                  # [B, ΣH_m]
        return {m: self.first[m].visible_mean(h[:, sl]) for m, sl in self.joint_slices().items()}
