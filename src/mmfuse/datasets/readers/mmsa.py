"""MOSI / MOSEI / SIMS feature pickles of MMSA and MultiBench's affect pickles (``mmsa``).

Format (MMSA ``aligned_50.pkl`` / ``unaligned_50.pkl``; MultiBench ``mosi_data.pkl`` /
``mosi_raw.pkl`` / ``mosei_senti_data.pkl``): a dict ``split -> dict`` with splits ``"train"``,
``"valid"`` (``"val"``/``"dev"`` accepted) and ``"test"``; each split holds

* ``"text"`` float ``[N, L, D]`` (GloVe or BERT features) and/or ``"text_bert"`` int ``[N, 3, L]``
  (token ids, attention mask, segment ids);
* ``"audio"`` float ``[N, La, Da]`` (COVAREP 74 for MOSI/MOSEI, LibROSA 33 for SIMS);
* ``"vision"`` float ``[N, Lv, Dv]`` (FACET 47/35, OpenFace 709);
* the target: ``"regression_labels"`` ``[N]`` (MMSA) or ``"labels"`` ``[N, 1, 1]`` (MultiBench),
  sentiment in [-3, 3] (SIMS: [-1, 1]);
* ``"id"`` ``[N]`` clip names (optional), ``"audio_lengths"`` / ``"vision_lengths"`` ``[N]``
  (unaligned MMSA files; optional).

Safety: the pickle is read by :class:`~mmfuse.datasets.readers.safe_pickle.SafeUnpickler`
(only builtin containers and numpy arrays; anything else is refused with a DataError naming
the class), after the optional ``sha256`` check. The first read converts the arrays to an
``.npz`` file in ``<convert_dir or the dataset cache>/readers/`` (``cache_root()``: ``$MMFUSE_CACHE``
or ``~/.cache/mmfuse``; key: the pickle's resolved path, size and
modification time), and later loads read that ``.npz`` with ``allow_pickle=False`` and never
unpickle again (the digest is only checked before an unpickling).

Variants (option ``aligned``):

* ``aligned=False`` (default): when the split has ``audio_lengths`` / ``vision_lengths``, each
  audio / vision sequence is cut to its length and the modality has a variable first axis
  (shape ``(None, D)``; the collate function pads and records ``lengths``); a length of 0
  makes the modality absent for that clip. Without length keys the padded arrays are kept.
* ``aligned=True``: the word-aligned file; text, audio and vision must share the time axis
  ``L`` (else a DataError says the file is unaligned) and stay fixed ``(L, D)`` arrays.

Non-finite features: COVAREP has ``-inf`` entries (log of zero energy). Every ``-inf``, ``+inf`` and
NaN in ``audio`` and ``vision`` is replaced by 0, as MMSA does (``audio[audio == -inf] = 0``); the
count per modality and split is in ``dataset.nonfinite_replaced`` and a warning reports it.

Text: ``text="text"`` (default) gives the float features ``[L, D]``; ``text="text_bert"`` gives the
token ids (first row of ``text_bert``) as int64 ``[L]``.

Task: ``regression``, one output ``"sentiment"``. ``dataset.source_ids[dataset.ids[i]]`` is the
clip name of sample ``i`` (``ids`` are row numbers within the split). The field reports, as
MMSA does (``mmfuse.evaluation.metrics.mosi_metrics``): Acc-2 in the Has0 form (negative < 0 <=
non-negative) and the Non0 form (clips with label 0 dropped), the weighted F1 of each, Acc-7 and
Acc-5 (round the prediction and the label clipped to [-3, 3] / [-2, 2]), MAE and Pearson
correlation.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..loading import write_npz
from ...errors import ConfigError, DataError
from ..base import ArrayDataset, choice
from ..loading import cache_root, register_dataset
from ._common import existing_path, file_key
from .safe_pickle import load_pickle

SPLIT_KEYS = {"train": ("train",), "val": ("valid", "val", "dev"), "test": ("test",)}
FEATURES = ("text", "text_bert", "audio", "vision", "regression_labels", "labels", "id",
            "audio_lengths", "vision_lengths")


def _converted_path(path: Path, convert_dir: Any) -> Path:
    return cache_root(convert_dir) / "readers" / f"mmsa-{file_key(path)}.npz"


def _to_npz_payload(data: Any, where: str) -> dict[str, np.ndarray]:
    if not isinstance(data, dict):
        raise DataError(f"{where}: the pickle holds a {type(data).__name__}; expected a dict of splits "
                        "('train', 'valid', 'test')")
    payload: dict[str, np.ndarray] = {}
    for split, found in ((s, next((k for k in keys if k in data), None)) for s, keys in SPLIT_KEYS.items()):
        if found is None:
            raise DataError(f"{where}: no {split!r} split; the pickle's keys are {sorted(map(str, data))} "
                            f"(expected one of {list(SPLIT_KEYS[split])})")
        part = data[found]
        if not isinstance(part, dict):
            raise DataError(f"{where}: split {found!r} holds a {type(part).__name__}; expected a dict of arrays")
        for key in FEATURES:
            if key not in part:
                continue
            arr = np.asarray(part[key])
            if arr.dtype == object:
                if key != "id":
                    raise DataError(f"{where}: split {found!r}, key {key!r} holds Python objects; expected numbers")
                arr = np.array([str(v) for v in arr.reshape(-1)])
            elif arr.dtype.kind == "S":
                arr = arr.astype(str)
            payload[f"{split}__{key}"] = arr
    return payload


def _read(path: Path, sha256: str | None, convert_dir: Any, where: str) -> tuple[dict[str, np.ndarray], Path | None]:
    conv = _converted_path(path, convert_dir)
    if conv.is_file():
        try:
            with np.load(conv, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, conv
        except (OSError, ValueError) as exc:
            warnings.warn(f"{where}: ignoring unreadable converted file {conv} ({exc}); converting again",
                          stacklevel=3)
    payload = _to_npz_payload(load_pickle(path, sha256=sha256, where=where), f"{where}: {path}")
    try:
        write_npz(conv, payload)
    except OSError as exc:
        warnings.warn(f"{where}: could not write the converted file {conv} ({exc}); the pickle will be read "
                      "again next time", stacklevel=3)
        return payload, None
    return payload, conv


def _features(arr: np.ndarray, key: str, split: str, n: int, where: str) -> np.ndarray:
    if arr.ndim != 3 or len(arr) != n:
        raise DataError(f"{where}: split {split!r}, key {key!r} has shape {arr.shape}; expected [{n}, T, D]")
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{where}: split {split!r}, key {key!r} has dtype {arr.dtype}; expected numbers")
    return arr.astype(np.float32)


def _lengths(arr: np.ndarray, key: str, split: str, n: int, t: int, where: str) -> np.ndarray:
    arr = np.asarray(arr).reshape(-1)
    if len(arr) != n or arr.dtype.kind not in "iuf":
        raise DataError(f"{where}: split {split!r}, key {key!r} must be {n} integers, got shape {arr.shape}")
    lengths = arr.astype(np.int64)
    bad = np.flatnonzero((lengths < 0) | (lengths > t))
    if len(bad):
        raise DataError(f"{where}: split {split!r}, {key}[{int(bad[0])}] = {int(lengths[bad[0]])} is outside "
                        f"[0, {t}] (the padded length)")
    return lengths


@register_dataset("mmsa", version=1, cache=False, task="regression")
def mmsa(*, seed: int = 0, path: str | None = None, aligned: bool = False, text: str = "text",
         sha256: str | None = None, convert_dir: str | None = None) -> dict[str, ArrayDataset]:
    """MMSA / MultiBench MOSI, MOSEI or SIMS features from the pickle ``path`` (see the module docstring)."""
    where = "dataset 'mmsa'"
    file = existing_path(path, "path", where, directory=False)
    if not isinstance(aligned, bool):
        raise ConfigError(f"{where}: option 'aligned' must be true or false, got {aligned!r}")
    text = choice("text", text, ("text", "text_bert"), where)
    data, conv = _read(file, sha256, convert_dir, where)
    fwhere = f"{where}: {file}"
    out: dict[str, ArrayDataset] = {}
    for split in ("train", "val", "test"):
        def get(key: str) -> np.ndarray | None:
            return data.get(f"{split}__{key}")

        if get("regression_labels") is not None:
            y = get("regression_labels")
        elif get("labels") is not None:
            y = get("labels")
        else:
            raise DataError(f"{fwhere}: split {split!r} has neither 'regression_labels' nor 'labels'")
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if y.shape[1] != 1:
            raise DataError(f"{fwhere}: split {split!r}: labels have shape {y.shape}; expected one sentiment per clip")
        n = len(y)
        if not np.isfinite(y).all():
            raise DataError(f"{fwhere}: split {split!r}, row {int(np.flatnonzero(~np.isfinite(y[:, 0]))[0])}: "
                            "the label is not finite")
        arrays: dict[str, Any] = {}
        present: dict[str, np.ndarray] = {}
        if get(text) is None:
            raise DataError(f"{fwhere}: split {split!r} has no {text!r} key; use text: "
                            f"{'text_bert' if text == 'text' else 'text'}")
        if text == "text":
            arrays["text"] = _features(get("text"), "text", split, n, where)
        else:
            tb = get("text_bert")
            if tb.ndim != 3 or tb.shape[:2] != (n, 3):
                raise DataError(f"{fwhere}: split {split!r}, 'text_bert' has shape {tb.shape}; expected [{n}, 3, L]")
            arrays["text"] = np.asarray(np.round(tb[:, 0]), dtype=np.int64)
        replaced: dict[str, int] = {}
        for m in ("audio", "vision"):
            if get(m) is None:
                raise DataError(f"{fwhere}: split {split!r} has no {m!r} key")
            x = _features(get(m), m, split, n, where)
            bad = ~np.isfinite(x)
            replaced[m] = int(bad.sum())
            if replaced[m]:
                x[bad] = 0.0
            if aligned:
                t_len = arrays["text"].shape[1]
                if x.shape[1] != t_len:
                    raise DataError(f"{fwhere}: split {split!r}: {m} has {x.shape[1]} steps but text has {t_len}; "
                                    "the file is not word-aligned: use aligned: false")
                arrays[m] = x
            elif get(f"{m}_lengths") is not None:
                lengths = _lengths(get(f"{m}_lengths"), f"{m}_lengths", split, n, x.shape[1], where)
                arrays[m] = [x[i, : lengths[i]] if lengths[i] > 0 else None for i in range(n)]
                present[m] = lengths > 0
            else:
                arrays[m] = x
        if any(replaced.values()):
            warnings.warn(f"{where}: split {split!r}: replaced non-finite feature values by 0: {replaced}",
                          stacklevel=2)
        ids = get("id")
        source_ids = [str(v) for v in ids.reshape(-1)] if ids is not None and len(ids.reshape(-1)) == n \
            else [str(i) for i in range(n)]
        out[split] = ArrayDataset(
            arrays, y.astype(np.float32), present, task="regression", num_classes=1, class_names=["sentiment"],
            name=f"mmsa/{split}",
            attrs={"source_ids": source_ids, "nonfinite_replaced": replaced, "aligned": aligned,
                   "source_file": str(file), "converted_file": None if conv is None else str(conv),
                   "metric_set": "mosi"})
    return out


__all__ = ["mmsa"]
