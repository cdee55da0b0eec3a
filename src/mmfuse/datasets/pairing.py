"""``data.missing``: a modality absent from a fraction of the samples, for any dataset.

``apply_missing(splits, spec, seed)`` returns new splits in which, in every split named by
``spec.splits``, only ``round(spec.present_fraction * n)`` of the ``n`` rows that have
``spec.modality`` keep it — per class for a multiclass task when ``spec.stratify`` (SMIL's η: e.g.
0.2 of the 105 training pairs of each digit keep their audio) — and the others get it masked absent.
Rows are chosen with ``numpy.random.default_rng([seed, 7211, split number])``: the same seed gives the
same rows, whatever the order of the calls. No sample is removed: each modified split records
``missing_report = {"modality", "split", "rows", "present_before", "present_after", "masked"}``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError
from ..registry import suggestion

_SPLIT_NO = {"train": 0, "val": 1, "test": 2}


def kept_rows(present: np.ndarray, fraction: float, rng: np.random.Generator,
              groups: np.ndarray | None = None) -> np.ndarray:
    """A bool mask: ``round(fraction * n_g)`` of the ``n_g`` present rows of each group keep the modality."""
    keep = np.zeros(len(present), dtype=bool)
    groups = np.zeros(len(present), dtype=np.int64) if groups is None else np.asarray(groups)
    for g in np.unique(groups):
        rows = np.flatnonzero(present & (groups == g))
        k = int(round(fraction * len(rows)))
        keep[rows[rng.permutation(len(rows))[:k]]] = True
    return keep


def apply_missing(splits: Mapping[str, Any], spec: Any, seed: int) -> dict[str, Any]:
    """``splits`` with ``spec.modality`` masked absent on all but ``spec.present_fraction`` of the rows."""
    if spec is None:
        return dict(splits)
    out = dict(splits)
    for split in spec.splits:
        ds = splits.get(split)
        if ds is None:
            raise ConfigError(f"data.missing.splits: the data has no split {split!r}; it has {sorted(splits)}")
        if spec.modality not in ds.modalities:
            raise ConfigError(f"data.missing.modality: {spec.modality!r} is not a modality of the data; "
                              f"{suggestion(spec.modality, list(ds.modalities))}")
        if not hasattr(ds, "with_present"):
            raise ConfigError(f"data.missing: the {split!r} split ({type(ds).__name__}) cannot mask a modality; "
                              "use a dataset built from arrays (every built-in dataset and from_arrays are)")
        before = np.asarray(ds.present[spec.modality], dtype=bool)
        groups = np.asarray(ds.targets) if spec.stratify and ds.task == "multiclass" else None
        rng = np.random.default_rng([int(seed), 7211, _SPLIT_NO[split]])
        keep = kept_rows(before, float(spec.present_fraction), rng, groups)
        new = ds.with_present({spec.modality: keep})
        new.missing_report = {"modality": spec.modality, "split": split, "rows": len(ds),
                              "present_before": int(before.sum()), "present_after": int(keep.sum()),
                              "masked": int(before.sum() - keep.sum()), "present_fraction": float(spec.present_fraction)}
        out[split] = new
    return out


def missing_reports(splits: Mapping[str, Any]) -> list[dict]:
    """The ``missing_report`` of every split that has one."""
    return [ds.missing_report for ds in splits.values() if getattr(ds, "missing_report", None)]
