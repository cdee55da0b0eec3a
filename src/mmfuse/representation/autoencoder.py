"""Deep autoencoders of Ngiam et al. 2011 (Fig. 3): video-only and bimodal, sigmoid units.

* :class:`VideoOnlyDeepAE`: the encoder reads one ``source`` modality (video in the paper),
  ``x_src -> h_src -> shared``; the decoder reconstructs *every* modality from ``shared``.
* :class:`BimodalDeepAE`: ``x_m -> h_m`` per modality, ``[h_m1; h_m2] -> shared`` and the same
  decoders. Trained denoising-style on :func:`denoising_augment` data: for two modalities ⅓ of the
  examples have the first zeroed, ⅓ the second, ⅓ both present; the target is always the full input.

Hidden and shared units are sigmoid (the paper's RBM-initialised networks; the slides' Keras code
with ReLU/adadelta/BCE is a modern stand-in, see spec 08 item 10). Reconstructions are linear by
default (``output="linear"``, for standardised / PCA-whitened inputs, the mean of a Gaussian RBM's
visible units) or sigmoid (``output="sigmoid"``, inputs in [0, 1]); the loss is the squared error.
Both can start from a trained :class:`~mmfuse.representation.dbn.BimodalDBN` (:meth:`init_from_dbn`):
encoders take the RBM weights, decoders their transposes (untied afterwards), then fine-tune by backprop:
the ``ngiam`` model family puts :meth:`reconstruction_objective` (× ``reconstruction_weight``) into
``ModelOutput.losses`` and the one training loop (``mmfuse.training``) minimises it with the task loss.

Shapes: ``x: {modality: [B, D_m]}``, ``mask: {modality: bool[B]}`` (absent inputs are zeroed);
``encode -> [B, shared_dim]``; ``forward -> {modality: [B, D_m]}``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError, MissingModalityError, ShapeError
from ._checks import check_dims, check_inputs, positive_int, zero_absent
from .dbn import BimodalDBN, _per_modality

OUTPUTS = ("linear", "sigmoid")


def denoising_augment(x: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                               dict[str, torch.Tensor]]:
    """The augmented set: one copy per modality with that modality zeroed, plus one intact copy.

    ``x: {m: [N, D_m]}`` (M modalities, sorted order) -> ``(inputs, mask, targets)`` with
    ``(M + 1) N`` rows: rows ``[i N, (i + 1) N)`` have modality ``i`` zeroed (mask False), the last
    ``N`` rows are intact; ``targets`` are the originals, tiled. For audio + video: exactly ⅓ each.
    """
    if not isinstance(x, Mapping) or len(x) < 2:
        raise ConfigError("denoising_augment: x must be a dict of at least two modalities {m: Tensor[N, D_m]}")
    for m, v in x.items():
        if not isinstance(v, torch.Tensor) or v.dim() != 2:
            raise ShapeError(f"denoising_augment: modality {m!r} must be a Tensor[N, D], got "
                             f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    xs, _, n = check_inputs(x, {m: int(v.shape[1]) for m, v in x.items()}, "denoising_augment")
    mods = sorted(xs)
    copies = len(mods) + 1
    inputs, mask, targets = {}, {}, {}
    for m in mods:
        v = xs[m]
        blocks = [torch.zeros_like(v) if i < len(mods) and mods[i] == m else v for i in range(copies)]
        inputs[m] = torch.cat(blocks, 0)
        mask[m] = torch.cat([torch.full((n,), not (i < len(mods) and mods[i] == m), dtype=torch.bool, device=v.device)
                             for i in range(copies)])
        targets[m] = v.repeat(copies, 1)
    return inputs, mask, targets


def reconstruction_loss(recon: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                        mask: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``Σ_m mean((recon_m − target_m)²)``; with ``mask: {m: bool[B]}`` the mean runs over the rows
    whose target is present only (an absent target is unknown, never a zero to reproduce; a modality
    absent from every row adds 0)."""
    total = None
    for m in sorted(target):
        err = ((recon[m] - target[m]) ** 2).flatten(1).mean(1)          # [B]
        if mask is not None and m in mask:
            keep = mask[m].to(err.dtype)
            term = (err * keep).sum() / keep.sum().clamp_min(1.0)
        else:
            term = err.mean()
        total = term if total is None else total + term
    return total


class _DeepAE(nn.Module):
    """Shared parts: per-modality two-layer sigmoid decoders, the reconstruction objective, DBN initialisation."""

    def _init_decoders(self, where: str, input_dims: Any, hidden_dims: Any, shared_dim: int, output: str) -> None:
        self.input_dims = check_dims("input_dims", input_dims, where, min_len=2)
        self.modalities = list(self.input_dims)
        self.hidden_dims = _per_modality("hidden_dims", hidden_dims, self.modalities, where)
        self.shared_dim = positive_int("shared_dim", shared_dim, where)
        self.output_dim = self.shared_dim
        if output not in OUTPUTS:
            raise ConfigError(f"{where}: output must be one of {list(OUTPUTS)}, got {output!r}")
        self.output = output
        self.dec_hidden = nn.ModuleDict({m: nn.Linear(self.shared_dim, self.hidden_dims[m]) for m in self.modalities})
        self.dec_out = nn.ModuleDict({m: nn.Linear(self.hidden_dims[m], self.input_dims[m]) for m in self.modalities})

    def decode(self, shared: torch.Tensor) -> dict[str, torch.Tensor]:
        """``shared: [B, K]`` -> ``{m: [B, D_m]}``."""
        out = {}
        for m in self.modalities:
            r = self.dec_out[m](torch.sigmoid(self.dec_hidden[m](shared)))
            out[m] = torch.sigmoid(r) if self.output == "sigmoid" else r
        return out

    def forward(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
        """Reconstructions of every modality: ``{m: [B, D_m]}``."""
        return self.decode(self.encode(x, mask))

    @torch.no_grad()
    def shared_representation(self, x: Mapping[str, torch.Tensor],
                              mask: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.encode(x, mask)

    def reconstruction_set(self, x: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]
                           ) -> tuple[dict, dict, dict, dict]:
        """``(inputs, input_mask, targets, target_mask)`` of the reconstruction objective for a batch.

        ``x: {m: [B, D_m]}`` (every modality, absent rows zeroed), ``present: {m: bool[B]}``. The plain
        set is the batch itself; :class:`BimodalDeepAE` with ``denoising`` overrides it.
        """
        return dict(x), dict(present), dict(x), dict(present)

    def reconstruction_objective(self, x: Mapping[str, torch.Tensor],
                                 present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The (unweighted) squared reconstruction error of a batch, targets only where present."""
        inputs, in_mask, targets, t_mask = self.reconstruction_set(x, present)
        return reconstruction_loss(self(inputs, in_mask), targets, t_mask)

    def _check_dbn(self, dbn: BimodalDBN) -> None:
        if not isinstance(dbn, BimodalDBN):
            raise ConfigError(f"{type(self).__name__}.init_from_dbn: expected a BimodalDBN, got {type(dbn).__name__}")
        if dbn.input_dims != self.input_dims or dbn.hidden_dims != self.hidden_dims \
                or dbn.joint.n_hidden != self.shared_dim:
            raise ConfigError(
                f"{type(self).__name__}.init_from_dbn: sizes differ — DBN input_dims={dbn.input_dims}, "
                f"hidden_dims={dbn.hidden_dims}, joint_dim={dbn.joint.n_hidden}; autoencoder input_dims="
                f"{self.input_dims}, hidden_dims={self.hidden_dims}, shared_dim={self.shared_dim}")

    @torch.no_grad()
    def _init_decoders_from_dbn(self, dbn: BimodalDBN) -> None:
        s2j = dbn.joint.sigma ** 2
        for m, sl in dbn.joint_slices().items():
            # E[h_m | top] = sigmoid((c[sl] + W[:, sl]ᵀ top) / σ²)
            self.dec_hidden[m].weight.copy_(dbn.joint.W[:, sl].t() / s2j)
            self.dec_hidden[m].bias.copy_(dbn.joint.c[sl] / s2j)
            # E[x_m | h_m] = c + Wᵀh (Gaussian visible)
            self.dec_out[m].weight.copy_(dbn.first[m].W.t())
            self.dec_out[m].bias.copy_(dbn.first[m].c)


class BimodalDeepAE(_DeepAE):
    """Both inputs -> per-modality sigmoid layers -> shared sigmoid layer -> reconstruct both."""

    def __init__(self, input_dims: Mapping[str, int], hidden_dims: int | Mapping[str, int], shared_dim: int,
                 output: str = "linear", denoising: bool = True):
        super().__init__()
        self._init_decoders("BimodalDeepAE", input_dims, hidden_dims, shared_dim, output)
        self.denoising = bool(denoising)
        self.enc_hidden = nn.ModuleDict({m: nn.Linear(self.input_dims[m], self.hidden_dims[m])
                                         for m in self.modalities})
        self.enc_shared = nn.Linear(sum(self.hidden_dims.values()), self.shared_dim)

    def encode(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Shared representation ``[B, shared_dim]``; absent inputs (mask False / key missing) are zeros."""
        xs, present, batch = check_inputs(x, self.input_dims, "BimodalDeepAE", required=False, mask=mask)
        full = zero_absent(xs, present, self.input_dims, batch)
        h = torch.cat([torch.sigmoid(self.enc_hidden[m](full[m])) for m in self.modalities], dim=1)  # [B, ΣH_m]
        return torch.sigmoid(self.enc_shared(h))

    def reconstruction_set(self, x, present):
        """With ``denoising``: the augmented batch of :func:`denoising_augment` (3B rows for two
        modalities: first modality zeroed, second zeroed, both intact); a row's input mask is the
        augmentation's AND its own presence, its target mask its own presence (tiled)."""
        if not self.denoising:
            return super().reconstruction_set(x, present)
        inputs, aug_mask, targets = denoising_augment({m: x[m] for m in self.modalities})
        copies = len(self.modalities) + 1
        t_mask = {m: present[m].repeat(copies) for m in self.modalities}
        in_mask = {m: aug_mask[m].to(t_mask[m].device) & t_mask[m] for m in self.modalities}
        return inputs, in_mask, targets, t_mask

    @torch.no_grad()
    def init_from_dbn(self, dbn: BimodalDBN) -> "BimodalDeepAE":
        """Copy a trained DBN: encoders = ``E[h | x]`` of each RBM, decoders = their transposes."""
        self._check_dbn(dbn)
        for m in self.modalities:
            rbm = dbn.first[m]
            self.enc_hidden[m].weight.copy_(rbm.W / rbm.sigma ** 2)
            self.enc_hidden[m].bias.copy_(rbm.b / rbm.sigma ** 2)
        self.enc_shared.weight.copy_(dbn.joint.W / dbn.joint.sigma ** 2)
        self.enc_shared.bias.copy_(dbn.joint.b / dbn.joint.sigma ** 2)
        self._init_decoders_from_dbn(dbn)
        return self


class VideoOnlyDeepAE(_DeepAE):
    """One input modality (``source``) -> hidden -> shared -> reconstruct every modality."""

    def __init__(self, input_dims: Mapping[str, int], source: str, hidden_dims: int | Mapping[str, int],
                 shared_dim: int, output: str = "linear"):
        super().__init__()
        self._init_decoders("VideoOnlyDeepAE", input_dims, hidden_dims, shared_dim, output)
        if source not in self.input_dims:
            raise ConfigError(f"VideoOnlyDeepAE: source {source!r} is not one of the modalities {self.modalities}")
        self.source = source
        self.enc_hidden = nn.Linear(self.input_dims[source], self.hidden_dims[source])
        self.enc_shared = nn.Linear(self.hidden_dims[source], self.shared_dim)

    def encode(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[B, shared_dim]`` from ``x[source]`` only (other modalities are ignored; may be absent)."""
        if not isinstance(x, Mapping) or x.get(self.source) is None:
            raise MissingModalityError(f"VideoOnlyDeepAE: the source modality {self.source!r} is required; "
                                       f"got keys {sorted(x) if isinstance(x, Mapping) else type(x).__name__}")
        dims = {self.source: self.input_dims[self.source]}
        sub_mask = None if mask is None or self.source not in mask else {self.source: mask[self.source]}
        xs, present, batch = check_inputs({self.source: x[self.source]}, dims, "VideoOnlyDeepAE", mask=sub_mask)
        v = zero_absent(xs, present, dims, batch)[self.source]
        return torch.sigmoid(self.enc_shared(torch.sigmoid(self.enc_hidden(v))))

    def reconstruction_set(self, x, present):
        """Targets: every modality, on the rows where the source (the only input) is present."""
        src = present[self.source]
        return dict(x), dict(present), dict(x), {m: present[m] & src for m in self.modalities}

    @torch.no_grad()
    def init_from_dbn(self, dbn: BimodalDBN) -> "VideoOnlyDeepAE":
        """Encoder from the source RBM and the source's columns of the joint RBM; decoders transposed."""
        self._check_dbn(dbn)
        rbm = dbn.first[self.source]
        self.enc_hidden.weight.copy_(rbm.W / rbm.sigma ** 2)
        self.enc_hidden.bias.copy_(rbm.b / rbm.sigma ** 2)
        sl = dbn.joint_slices()[self.source]
        self.enc_shared.weight.copy_(dbn.joint.W[:, sl] / dbn.joint.sigma ** 2)
        self.enc_shared.bias.copy_(dbn.joint.b / dbn.joint.sigma ** 2)
        self._init_decoders_from_dbn(dbn)
        return self
