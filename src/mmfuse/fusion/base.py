"""The feature-level fusion contract, and the mask handling every operator shares.

A fusion operator is built with ``input_dims: Mapping[str, int]`` (one embedding width per
modality), exposes ``output_dim`` and computes ``forward(embeddings, mask) -> Tensor[B, output_dim]``.

Mask semantics (defined once, here): an absent modality must not leak its placeholder values
into the result. Each operator uses the neutral element of its reduction: masked sum/mean/max,
renormalised gates, 1 for products, the constant-1 slot for TFN/LMF.

Shape legend: B batch, D_m width of modality m, D output width, N number of modalities.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError, MissingModalityError, ShapeError


def check_input_dims(input_dims: Mapping[str, int], op: str, min_modalities: int = 1) -> dict[str, int]:
    """Validate ``input_dims`` and return it as a dict in sorted key order."""
    if not isinstance(input_dims, Mapping) or len(input_dims) < min_modalities:
        raise ConfigError(
            f"fusion {op!r}: input_dims must map at least {min_modalities} modality name(s) to widths, got {input_dims!r}; pass e.g. {{'a': 64, 'b': 32}} (each encoder's output_dim)"
        )
    out = {}
    for m in sorted(input_dims):
        d = input_dims[m]
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ConfigError(f"fusion {op!r}: input_dims[{m!r}] must be a positive int, got {d!r}; give every modality a width >= 1 (its encoder's output_dim)")
        out[m] = d
    return out


class FusionOp(nn.Module):
    """Base class: stores sorted ``input_dims`` and validates inputs.

    Subclasses set ``self.output_dim`` in ``__init__`` and implement ``fuse(xs, present)`` where
    ``xs`` is a list of Tensor[B, D_m] in sorted modality order and ``present`` a BoolTensor[B, N].
    Operators that can use token sequences set ``accepts_sequences = True`` and receive
    Tensor[B, T_m, D_m] plus ``token_mask`` (BoolTensor[B, T_m]) where a modality is a sequence.
    """

    accepts_sequences: bool = False
    min_modalities: int = 1

    def __init__(self, input_dims: Mapping[str, int]):
        super().__init__()
        self.input_dims = check_input_dims(input_dims, type(self).__name__, self.min_modalities)
        self.modalities = list(self.input_dims)
        self.output_dim: int = 0

    def extra_repr(self) -> str:
        return f"input_dims={self.input_dims}, output_dim={self.output_dim}"

    def _check(self, embeddings: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> tuple[list[Tensor], Tensor]:
        xs = self._check_inputs(embeddings)
        return xs, self._present(xs, mask)

    def _check_inputs(self, embeddings: Mapping[str, Tensor]) -> list[Tensor]:
        """The embeddings in sorted modality order, validated (every modality, batch sizes, widths)."""
        missing = [m for m in self.modalities if m not in embeddings]
        if missing:
            raise MissingModalityError(
                f"{type(self).__name__}: embeddings lack modality {missing[0]!r}; it was built for {self.modalities}. "
                "Pass every modality (zeros with mask False when absent)"
            )
        xs = [embeddings[m] for m in self.modalities]
        B = xs[0].shape[0]
        for m, x in zip(self.modalities, xs):
            if x.shape[0] != B:
                raise ShapeError(f"{type(self).__name__}: modality {m!r} has batch size {x.shape[0]}, expected {B}")
            want = self.input_dims[m]
            if x.shape[-1] != want or (x.dim() != 2 and not self.accepts_sequences) or x.dim() not in (2, 3):
                raise ShapeError(
                    f"{type(self).__name__}: modality {m!r} embedding has shape {tuple(x.shape)}, expected (B, {want})"
                    + (" or (B, T, {want})".format(want=want) if self.accepts_sequences else "")
                    + "; check the encoder's output_dim and the fusion's input_dims"
                )
        return xs

    def _present(self, xs: list[Tensor], mask: Mapping[str, Tensor] | None) -> Tensor:
        """BoolTensor[B, N] of the validated ``mask`` (all True when ``mask`` is None)."""
        B = xs[0].shape[0]
        if mask is None:
            present = torch.ones(B, len(xs), dtype=torch.bool, device=xs[0].device)
        else:
            cols = []
            for m in self.modalities:
                v = mask.get(m)
                if v is None:
                    v = torch.ones(B, dtype=torch.bool, device=xs[0].device)
                if v.shape != (B,):
                    raise ShapeError(f"{type(self).__name__}: mask[{m!r}] has shape {tuple(v.shape)}, expected ({B},); "
                                     "give one bool per sample")
                cols.append(v.to(torch.bool))
            present = torch.stack(cols, dim=1)
        return present

    def forward(self, embeddings: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None, **kwargs) -> Tensor:
        xs = self._check_inputs(embeddings)
        if not kwargs and self.has_fast_path() and (mask is None or _all_true(mask, self.modalities, xs[0].shape[0])):
            return self.fuse_all_present(xs)
        return self.fuse(xs, self._present(xs, mask), **kwargs)

    def fuse(self, xs: list[Tensor], present: Tensor, **kwargs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # Fast path: when no modality is absent anywhere in the batch, the mask arithmetic (torch.where
    # with the neutral element) is the identity, so an operator may skip it. ``forward`` calls
    # ``fuse_all_present(xs)`` instead of ``fuse(xs, present)`` when the operator overrides it, no
    # extra keyword is given and every mask entry is True (or ``mask`` is None). An override must
    # return exactly what ``fuse`` returns for an all-True ``present`` (tests/test_fusion_fast_path.py).
    fuse_all_present = None  # type: ignore[assignment]

    def has_fast_path(self) -> bool:
        """True when the operator's ``fuse_all_present`` belongs to its ``fuse``.

        That is, the class that defines ``fuse_all_present`` is the one that defines ``fuse`` or a
        subclass of it: a user subclass that overrides ``fuse`` only keeps the masked path.
        """
        cls = type(self)
        ok = _FAST_PATH_OK.get(cls)
        if ok is None:
            def owner(name: str) -> type | None:
                return next((c for c in cls.__mro__ if name in c.__dict__), None)

            fast, fuse = owner("fuse_all_present"), owner("fuse")
            ok = fast is not None and fast is not FusionOp and fuse is not None and issubclass(fast, fuse)
            _FAST_PATH_OK[cls] = ok
        return ok


_FAST_PATH_OK: dict[type, bool] = {}


def _all_true(mask: Mapping[str, Tensor], modalities: list[str], B: int) -> bool:
    """True when every well-formed mask column of ``modalities`` is all True (a bad one goes to ``_present``)."""
    shape = (B,)
    for m in modalities:
        v = mask.get(m)
        if v is None:
            continue
        # (is_meta / .item(): the cheapest forms, this runs on every fused batch)
        if v.dtype is not torch.bool or v.shape != shape or v.is_meta or not v.all().item():
            return False  # (a meta tensor has no values: the masked path, which is exact for any mask)
    return True


def masked(x: Tensor, present_col: Tensor, fill: float = 0.0) -> Tensor:
    """Rows of ``x`` (Tensor[B, *]) where ``present_col`` (BoolTensor[B]) is False replaced by ``fill``."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(present_col.view(shape), x, torch.full((), fill, dtype=x.dtype, device=x.device))


# --------------------------------------------------------------------------------------------
# Shared mask helpers: every operator reduces over modalities through these, so the masked
# semantics (which value stands in for an absent modality) are written down exactly once.
# ``x`` is Tensor[B, N, D] (modalities stacked on dim 1), ``present`` is BoolTensor[B, N].
# Absent entries are *replaced* (torch.where), never multiplied by 0, so NaN/inf placeholders
# cannot leak either.
# --------------------------------------------------------------------------------------------


def stack_masked(xs: list[Tensor], present: Tensor, fill: float = 0.0) -> Tensor:
    """Stack Tensor[B, D] values into Tensor[B, N, D], absent entries replaced by ``fill``."""
    x = torch.stack(xs, dim=1)
    return torch.where(present.unsqueeze(-1), x, torch.full((), fill, dtype=x.dtype, device=x.device))


def masked_sum(x: Tensor, present: Tensor) -> Tensor:
    """Sum over present modalities: Tensor[B, N, D] -> Tensor[B, D] (none present -> 0)."""
    return torch.where(present.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)


def masked_mean(x: Tensor, present: Tensor) -> Tensor:
    """Mean over present modalities (none present -> 0)."""
    count = present.sum(dim=1, keepdim=True).clamp(min=1).to(x.dtype)
    return masked_sum(x, present) / count


def masked_max(x: Tensor, present: Tensor) -> Tensor:
    """Element-wise max over present modalities (none present -> 0)."""
    low = torch.finfo(x.dtype).min
    best = torch.where(present.unsqueeze(-1), x, torch.full((), low, dtype=x.dtype, device=x.device)).amax(dim=1)
    return torch.where(present.any(dim=1, keepdim=True), best, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_prod(x: Tensor, present: Tensor) -> Tensor:
    """Element-wise product over present modalities (absent -> 1; none present -> 0)."""
    prod = torch.where(present.unsqueeze(-1), x, torch.ones((), dtype=x.dtype, device=x.device)).prod(dim=1)
    return torch.where(present.any(dim=1, keepdim=True), prod, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_softmax(logits: Tensor, present: Tensor, dim: int = 1) -> Tensor:
    """Softmax over the modality axis ``dim`` restricted to present modalities (renormalised).

    ``present`` must broadcast against ``logits``. Weights of absent modalities are exactly 0;
    a row with no present modality gets all-zero weights (not NaN).
    """
    low = torch.finfo(logits.dtype).min
    w = torch.softmax(torch.where(present, logits, torch.full((), low, dtype=logits.dtype, device=logits.device)), dim=dim)
    return torch.where(present, w, torch.zeros((), dtype=w.dtype, device=w.device))


def module_key(modality: str, op: str) -> str:
    """``modality`` as a key of an ``nn.ModuleDict`` / ``nn.ParameterDict`` (validated)."""
    if "." in modality or not modality:
        raise ConfigError(
            f"fusion {op!r}: modality name {modality!r} cannot name a parameter (it is empty or contains '.'); "
            "rename the modality, e.g. replace '.' by '_'"
        )
    return modality


def zero_absent_inputs(xs: list[Tensor], present: Tensor) -> list[Tensor]:
    """Each Tensor[B, *] of ``xs`` with rows of absent modalities (``present``: [B, N]) set to 0.

    Operators call this before any layer, so that even non-finite placeholders cannot reach
    the output or the parameter gradients.
    """
    return [masked(x, present[:, i], 0.0) for i, x in enumerate(xs)]
