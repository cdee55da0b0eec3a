"""Batches of named modalities with a presence mask, and the collate function that makes them.

A *sample* is a mapping from modality name to a value (array-like or ``None`` when the modality
is absent) plus the reserved key ``"target"``. A *batch* holds, for every modality, a tensor of
the whole batch (absent samples are zeros) and a boolean mask (True = present).

Shape legend: B batch, T time/sequence length (padded), * the modality's own dims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import DataError, MissingModalityError, ShapeError

TARGET_KEY = "target"


@dataclass
class MultimodalBatch:
    """``inputs[m]``: Tensor[B, *]; ``mask[m]``: BoolTensor[B]; ``target``: Tensor[B, ...] or None.

    ``lengths[m]`` (LongTensor[B]) exists for variable-length modalities that were padded along
    their first axis; it is 0 for absent samples.
    """

    inputs: dict[str, Tensor]
    mask: dict[str, Tensor]
    target: Tensor | None = None
    lengths: dict[str, Tensor] = field(default_factory=dict)
    index: Tensor | None = None  # dataset indices of the samples, for error messages

    def __post_init__(self) -> None:
        if set(self.inputs) != set(self.mask):
            raise MissingModalityError(
                f"batch: inputs have modalities {sorted(self.inputs)} but mask has {sorted(self.mask)}; "
                "give every modality both a tensor and a presence mask (the same keys in both)"
            )
        sizes = {m: int(x.shape[0]) for m, x in self.inputs.items()}
        sizes.update({f"mask[{m}]": int(v.shape[0]) for m, v in self.mask.items()})
        if len(set(sizes.values())) > 1:
            raise ShapeError(f"batch: batch sizes differ between entries: {sizes}; give every input and mask the "
                             "same first dimension (one row per sample)")
        for m, v in self.mask.items():
            if v.dtype != torch.bool or v.dim() != 1:
                raise ShapeError(f"batch: mask[{m!r}] must be a 1-D bool tensor, got {v.dtype} of shape {tuple(v.shape)}; "
                                 "pass one bool per sample (True = present), e.g. mask.bool()")

    @property
    def modalities(self) -> list[str]:
        return sorted(self.inputs)

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.mask.values())).shape[0])

    def __len__(self) -> int:
        return self.batch_size

    def to(self, device: torch.device | str) -> "MultimodalBatch":
        return MultimodalBatch(
            inputs={m: x.to(device) for m, x in self.inputs.items()},
            mask={m: v.to(device) for m, v in self.mask.items()},
            target=None if self.target is None else self.target.to(device),
            lengths={m: v.to(device) for m, v in self.lengths.items()},
            index=self.index,
        )

    def with_mask(self, mask: Mapping[str, Tensor]) -> "MultimodalBatch":
        """A copy whose mask is ``mask`` (missing keys keep their mask); absent inputs are zeroed."""
        new_mask = {m: (mask[m].to(torch.bool) & self.mask[m]) if m in mask else self.mask[m] for m in self.mask}
        inputs = {m: zero_absent(x, new_mask[m]) for m, x in self.inputs.items()}
        lengths = {m: torch.where(new_mask[m], ln, torch.zeros_like(ln)) for m, ln in self.lengths.items()}
        return MultimodalBatch(inputs, new_mask, self.target, lengths, self.index)

    def select(self, rows: Tensor | slice | Sequence[int]) -> "MultimodalBatch":
        """The sub-batch of the given rows."""
        return MultimodalBatch(
            inputs={m: x[rows] for m, x in self.inputs.items()},
            mask={m: v[rows] for m, v in self.mask.items()},
            target=None if self.target is None else self.target[rows],
            lengths={m: v[rows] for m, v in self.lengths.items()},
            index=None if self.index is None else self.index[rows],
        )


def require_modalities(batch: MultimodalBatch, expected: Sequence[str]) -> None:
    """Raise a MissingModalityError when ``batch`` lacks a modality a model expects."""
    missing = [m for m in expected if m not in batch.inputs]
    if missing:
        raise MissingModalityError(
            f"batch lacks modality {missing[0]!r}; the model expects {list(expected)} and the batch has "
            f"{batch.modalities}. Give absent values in the batch as zeros with mask False"
        )


def zero_absent(x: Tensor, present: Tensor) -> Tensor:
    """``x`` with the rows where ``present`` is False set to zero (Tensor[B, *], BoolTensor[B])."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return x * present.view(shape).to(x.dtype) if x.is_floating_point() else torch.where(
        present.view(shape), x, torch.zeros((), dtype=x.dtype)
    )


def _to_tensor(value: Any, index: int, modality: str) -> Tensor:
    if isinstance(value, Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"sample {index}, modality {modality!r}: cannot convert a {type(value).__name__} to a tensor "
                f"({exc}); give a number, an array or a tensor, or None when the modality is absent"
            ) from None
    if t.is_complex():
        raise DataError(f"sample {index}, {'field' if modality == TARGET_KEY else 'modality'} {modality!r}: complex "
                        "values are not supported (their imaginary part would be dropped); pass the real and "
                        "imaginary parts (or magnitude and phase) as real features")
    if t.dtype == torch.float64:
        t = t.float()
    return t


def _check_finite(x: Tensor, present: Tensor, idx: list[int], modality: str) -> None:
    """Raise a DataError naming the first sample whose values are NaN or infinite (one check per batch)."""
    if not x.is_floating_point():
        return
    flat = x.detach().reshape(x.shape[0], -1).cpu().numpy()  # numpy: far cheaper than torch for this check
    if np.isfinite(flat).all():
        return
    bad = ~np.isfinite(flat).all(1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"sample {idx[row]}, {'field' if modality == TARGET_KEY else 'modality'} {modality!r}: contains NaN or "
            "infinite values; clean or impute them, or mark the modality absent (None) for this sample"
        )


def collate(
    samples: Sequence[Mapping[str, Any]],
    modalities: Iterable[str] | None = None,
    shapes: Mapping[str, Sequence[int | None]] | None = None,
    indices: Sequence[int] | None = None,
    dtypes: Mapping[str, torch.dtype] | None = None,
) -> MultimodalBatch:
    """Stack samples into a :class:`MultimodalBatch`.

    ``modalities``: the names to expect (default: every non-target key seen in any sample).
    ``shapes``: per modality, the shape of one sample, ``None`` for a variable first axis; needed
    only when a modality is absent from every sample of a batch (``dtypes`` then gives its dtype,
    default float32; token ids need int64). Variable-length modalities are
    padded with zeros along their first axis and get ``lengths``.
    """
    if len(samples) == 0:
        raise DataError("collate: got an empty list of samples; pass at least one sample (check that the "
                        "dataset or index list is not empty)")
    idx = list(indices) if indices is not None else list(range(len(samples)))
    for i, s in zip(idx, samples):
        if not isinstance(s, Mapping):
            raise DataError(f"sample {i}: expected a dict of modality name to value, got {type(s).__name__}; "
                            "give each sample as {modality: value}")
    if modalities is None:
        names = sorted({k for s in samples for k in s if k != TARGET_KEY})
    else:
        names = sorted(modalities)
        for i, s in zip(idx, samples):
            unknown = sorted(set(s) - set(names) - {TARGET_KEY})
            if unknown:
                raise MissingModalityError(
                    f"sample {i}: unknown modality {unknown[0]!r}; expected one of {names}: remove it, or add it to the "
                    "modalities passed to collate"
                )
    if not names:
        raise DataError("collate: samples contain no modality (only 'target' or nothing)")
    shapes = dict(shapes or {})

    inputs: dict[str, Tensor] = {}
    mask: dict[str, Tensor] = {}
    lengths: dict[str, Tensor] = {}
    for m in names:
        values = [s.get(m) for s in samples]
        tensors = {r: _to_tensor(v, idx[r], m) for r, v in enumerate(values) if v is not None}
        present = torch.tensor([v is not None for v in values], dtype=torch.bool)
        if tensors:
            ref_r, ref = next(iter(tensors.items()))
            variable = shapes.get(m) is not None and len(shapes[m]) > 0 and shapes[m][0] is None
            for r, t in tensors.items():
                where, other = f"sample {idx[r]}, modality {m!r}", f"sample {idx[ref_r]}"
                if t.dim() != ref.dim():
                    raise ShapeError(
                        f"{where}: has {t.dim()} dims {tuple(t.shape)} but {other} has "
                        f"{ref.dim()} dims {tuple(ref.shape)}; give every sample of a modality the same rank"
                    )
                if t.shape[1:] != ref.shape[1:] or (t.shape[:1] != ref.shape[:1] and t.dim() == 0):
                    raise ShapeError(
                        f"{where}: shape {tuple(t.shape)} does not match shape "
                        f"{tuple(ref.shape)} of {other}; only the first axis may vary (it is padded)"
                    )
                if t.dtype.is_floating_point != ref.dtype.is_floating_point:
                    raise ShapeError(f"{where}: dtype {t.dtype} differs from {ref.dtype} of {other}; give every sample "
                                     "of a modality one dtype (e.g. np.float32 for features)")
                if t.shape[:1] != ref.shape[:1]:
                    variable = True
            if variable or (shapes.get(m) is not None and len(shapes[m]) > 0 and shapes[m][0] is None):
                empty = [r for r, t in tensors.items() if t.dim() > 0 and t.shape[0] == 0]
                if empty:
                    raise DataError(
                        f"sample {idx[empty[0]]}, modality {m!r}: a present sequence of length 0; pass None to "
                        "mark the modality absent for this sample (an empty sequence is not an observation)")
            if shapes.get(m) is not None:
                want = tuple(shapes[m])
                for r, t in tensors.items():
                    if len(want) != t.dim() or any(w is not None and w != n for w, n in zip(want, t.shape)):
                        raise ShapeError(
                            f"sample {idx[r]}, modality {m!r}: expected shape {want} (None = any), got {tuple(t.shape)}; "
                            "give every sample of this modality that shape"
                        )
            rest = tuple(ref.shape[1:])
            if variable:
                T = max(int(t.shape[0]) for t in tensors.values())
                x = torch.zeros((len(samples), T) + rest, dtype=ref.dtype)
                ln = torch.zeros(len(samples), dtype=torch.long)
                for r, t in tensors.items():
                    x[r, : t.shape[0]] = t.to(ref.dtype)
                    ln[r] = t.shape[0]
                lengths[m] = ln
            elif len(tensors) == len(samples):
                x = torch.stack([tensors[r].to(ref.dtype) for r in range(len(samples))])
            else:
                x = torch.zeros((len(samples),) + tuple(ref.shape), dtype=ref.dtype)
                for r, t in tensors.items():
                    x[r] = t.to(ref.dtype)
        else:
            if m not in shapes or shapes[m] is None:
                raise MissingModalityError(
                    f"collate: modality {m!r} is absent from every sample of this batch and its shape is unknown; "
                    f"pass shapes={{{m!r}: (...)}} to collate (or use the dataset's collate_fn)"
                )
            shp = tuple(1 if s is None else int(s) for s in shapes[m])
            x = torch.zeros((len(samples),) + shp, dtype=(dtypes or {}).get(m, torch.float32))
            if shapes[m] and shapes[m][0] is None:
                lengths[m] = torch.zeros(len(samples), dtype=torch.long)
        _check_finite(x, present, idx, m)
        inputs[m] = x
        mask[m] = present

    target = None
    if any(TARGET_KEY in s for s in samples):
        missing = [i for i, s in zip(idx, samples) if s.get(TARGET_KEY) is None]
        if missing:
            raise DataError(
                f"sample {missing[0]}: has no 'target' while other samples of the batch do; "
                "give every training sample a target"
            )
        tt = [_to_tensor(s[TARGET_KEY], i, TARGET_KEY) for i, s in zip(idx, samples)]
        try:
            target = torch.stack(tt)
            _check_finite(target, torch.ones(len(tt), dtype=torch.bool), idx, TARGET_KEY)
        except RuntimeError:
            raise ShapeError(
                f"samples {idx[0]}..{idx[-1]}: targets have different shapes "
                f"{sorted({tuple(t.shape) for t in tt})}; give every sample a target of one shape"
            ) from None
    return MultimodalBatch(inputs, mask, target, lengths, torch.tensor(idx))


class Collator:
    """A picklable ``collate_fn`` with fixed modalities and shapes, for ``DataLoader``."""

    def __init__(self, modalities: Iterable[str], shapes: Mapping[str, Sequence[int | None]] | None = None,
                 dtypes: Mapping[str, torch.dtype] | None = None):
        self.modalities = sorted(modalities)
        self.shapes = dict(shapes or {})
        self.dtypes = dict(dtypes or {})

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> MultimodalBatch:
        if samples and isinstance(samples[0], tuple) and len(samples[0]) == 2 and isinstance(samples[0][0], int):
            indices = [i for i, _ in samples]
            samples = [s for _, s in samples]
        else:
            indices = None
        return collate(samples, self.modalities, self.shapes, indices, self.dtypes)
