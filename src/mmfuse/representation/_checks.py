"""Input validation shared by the representation models (mmfuse errors, never ``assert``)."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..errors import ConfigError, MissingModalityError, ShapeError


def positive_int(name: str, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(name: str, value: Any, where: str, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name} must be a number, got {value!r}") from None
    if not (v > 0 or (allow_zero and v == 0)) or v != v or v == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{where}: {name} must be a finite number {bound}, got {value!r}")
    return v


def check_dims(name: str, dims: Any, where: str, min_len: int = 1) -> dict[str, int]:
    """``{modality: positive int}`` in sorted key order."""
    if not isinstance(dims, Mapping) or len(dims) < min_len:
        raise ConfigError(f"{where}: {name} must be a dict of at least {min_len} modality -> size entries, "
                          f"got {dims!r}")
    return {str(m): positive_int(f"{name}[{m!r}]", dims[m], where) for m in sorted(dims)}


def check_matrix(x: Any, width: int, what: str) -> torch.Tensor:
    """A float tensor ``[B, width]``."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{what}: expected a torch.Tensor of shape [batch, {width}], got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != width:
        raise ShapeError(f"{what}: expected shape [batch, {width}], got {tuple(x.shape)}; flatten each sample "
                         f"to a vector of {width} values")
    if not x.is_floating_point():
        raise ShapeError(f"{what}: expected a floating-point tensor, got {x.dtype}; use x.float()")
    return x


def check_inputs(x: Any, dims: Mapping[str, int], where: str, required: bool = True,
                 mask: Any = None) -> tuple[dict[str, torch.Tensor | None], dict[str, torch.Tensor], int]:
    """Validate ``x: {modality: [B, D_m]}`` and ``mask: {modality: bool[B]}``.

    Returns (inputs, present, B). A modality missing from ``x`` (or None) is absent for every
    sample unless ``required``; ``present[m]`` is a bool ``[B]`` (all False for an absent one).
    """
    if not isinstance(x, Mapping):
        raise ShapeError(f"{where}: inputs must be a dict {{modality: Tensor[B, D]}}, got {type(x).__name__}")
    unknown = sorted(set(x) - set(dims))
    if unknown:
        raise MissingModalityError(f"{where}: unknown modality {unknown[0]!r}; the model knows {sorted(dims)}")
    out: dict[str, torch.Tensor | None] = {}
    batch = None
    for m, d in dims.items():
        v = x.get(m)
        if v is None:
            if required:
                raise MissingModalityError(f"{where}: modality {m!r} is missing from the inputs; pass zeros "
                                           f"and mask[{m!r}] = False for absent samples")
            out[m] = None
            continue
        v = check_matrix(v, d, f"{where}, modality {m!r}")
        if batch is not None and v.shape[0] != batch:
            raise ShapeError(f"{where}: modality {m!r} has batch size {v.shape[0]}, expected {batch}")
        batch = int(v.shape[0])
        out[m] = v
    if batch is None:
        raise MissingModalityError(f"{where}: no modality given; pass at least one of {sorted(dims)}")
    if mask is not None and not isinstance(mask, Mapping):
        raise ShapeError(f"{where}: mask must be a dict {{modality: BoolTensor[B]}}, got {type(mask).__name__}")
    mask = dict(mask or {})
    unknown = sorted(set(mask) - set(dims))
    if unknown:
        raise MissingModalityError(f"{where}: mask has unknown modality {unknown[0]!r}; known {sorted(dims)}")
    present: dict[str, torch.Tensor] = {}
    for m in dims:
        ref = next(v for v in out.values() if v is not None)
        if out[m] is None:
            present[m] = torch.zeros(batch, dtype=torch.bool, device=ref.device)
            continue
        p = mask.get(m)
        if p is None:
            present[m] = torch.ones(batch, dtype=torch.bool, device=ref.device)
            continue
        p = torch.as_tensor(p)
        if p.dim() != 1 or p.shape[0] != batch:
            raise ShapeError(f"{where}: mask[{m!r}] must have shape [{batch}], got {tuple(p.shape)}")
        present[m] = p.to(device=ref.device, dtype=torch.bool)
    return out, present, batch


def zero_absent(x: Mapping[str, torch.Tensor | None], present: Mapping[str, torch.Tensor],
                dims: Mapping[str, int], batch: int) -> dict[str, torch.Tensor]:
    """Absent inputs (missing key or mask False) become exact zeros, as in Ngiam et al."""
    ref = next(v for v in x.values() if v is not None)
    out = {}
    for m, d in dims.items():
        v = x.get(m)
        if v is None:
            out[m] = ref.new_zeros(batch, d)
        else:
            out[m] = torch.where(present[m].unsqueeze(1), v, torch.zeros_like(v))
    return out
