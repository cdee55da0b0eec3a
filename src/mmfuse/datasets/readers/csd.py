"""CMU-MultimodalSDK computational sequences (``.csd``) aligned to words (``csd``; needs ``h5py``).

A ``.csd`` file (written by ``mmsdk``'s ``write_CSD``) is HDF5::

    /<root name>/data/<video id>/features   [T, D]  (numbers; the words sequence: [T, 1] byte strings)
    /<root name>/data/<video id>/intervals  [T, 2]  start and end time (seconds) of each row
    /<root name>/metadata/...                       descriptive strings

Options:

* ``sequences``: ``{modality: path}``, e.g. ``{text: CMU_MOSI_TimestampedWordVectors.csd, audio:
  CMU_MOSI_COVAREP.csd, vision: CMU_MOSI_Visual_Facet_41.csd}``;
* ``words``: the modality whose rows are the words (the pivot), default ``"text"``. When its
  features are byte strings (``CMU_MOSI_TimestampedWords.csd``) they become int64 token ids
  (``dataset.vocab`` lists the words, id = position + 1; 0 = padding) and ``"sp"`` (silence)
  rows are dropped; numeric features (word vectors) are kept as they are;
* ``labels``: path of the labels ``.csd`` (``CMU_MOSI_Opinion_Labels.csd``): per video, one row
  per opinion segment (``intervals``) with its sentiment in column ``label_column`` (default 0);
* ``splits``: ``{train: [video ids], val: [...], test: [...]}`` (e.g. mmsdk's
  ``standard_train_fold`` / ``standard_valid_fold`` / ``standard_test_fold``; labelled videos in
  none of the lists are left out); by default the
  videos are split 70/10/20 with ``seed`` (no video in two splits);
* ``max_words``: words kept per segment (default 50, the first ones; shorter segments are zero
  padded at the end); ``None`` keeps the variable length.

Alignment (as ``mmsdk``'s ``align`` with the ``avg`` collapse function): for each word with
interval ``[s, e]``, every other modality's rows whose interval overlaps it (``start < e`` and
``end > s``) are averaged, unweighted; a word that no row overlaps gets zeros (counted in
``dataset.unaligned_words``). A sample is one labelled segment: the words overlapping its
interval, in time order. Videos missing from a sequence raise a DataError naming the file and
the video.

Task: ``regression`` (one output ``"sentiment"``); the MOSI metrics of
:func:`mmfuse.evaluation.metrics.mosi_metrics` are added when evaluating.
``dataset.segment_ids[dataset.ids[i]]`` is ``"<video>[<k>]"`` for sample ``i``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...errors import ConfigError, DataError
from ..base import ArrayDataset, check_fractions, split_counts
from ..loading import register_dataset
from ._common import check_int, existing_path
from .mmimdb import _h5py

SILENCE = "sp"


def read_csd(path: Any, where: str = "csd") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{video id: (features [T, D], intervals [T, 2])}`` from a computational-sequence file."""
    h5py = _h5py(where)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{where}: {path} is not a readable HDF5 file ({exc})") from None
    with f:
        roots = [k for k in f.keys() if isinstance(f[k], h5py.Group) and "data" in f[k]]
        if len(roots) != 1:
            raise DataError(f"{where}: {path} must hold one group '<root name>/data' (a computational sequence); "
                            f"found top-level keys {sorted(f.keys())}")
        data = f[roots[0]]["data"]
        out = {}
        for vid in data:
            g = data[vid]
            if not isinstance(g, h5py.Group) or "features" not in g or "intervals" not in g:
                raise DataError(f"{where}: {path}, video {vid!r} must have 'features' and 'intervals'")
            feats, iv = g["features"][()], np.asarray(g["intervals"][()], dtype=np.float64)
            if iv.ndim != 2 or iv.shape[1] != 2 or len(iv) != len(feats):
                raise DataError(f"{where}: {path}, video {vid!r}: intervals have shape {iv.shape} for "
                                f"{len(feats)} feature rows; expected [{len(feats)}, 2]")
            if len(iv) and (not np.isfinite(iv).all() or (iv[:, 1] < iv[:, 0]).any()):
                raise DataError(f"{where}: {path}, video {vid!r}: an interval is not finite or ends before it starts")
            out[str(vid)] = (feats, iv)
    return out


def _words(x: np.ndarray) -> list[str] | None:
    if x.dtype.kind in "SUO":
        return [(v.decode() if isinstance(v, bytes) else str(v)) for v in x.reshape(len(x), -1)[:, 0]]
    return None


def align_to_words(words_iv: np.ndarray, feats: np.ndarray, iv: np.ndarray) -> tuple[np.ndarray, int]:
    """Per word interval, the unweighted mean of the overlapping rows of ``feats`` (zeros if none)."""
    feats = np.asarray(feats, dtype=np.float64).reshape(len(feats), -1)
    out = np.zeros((len(words_iv), feats.shape[1]), dtype=np.float32)
    empty = 0
    for k, (s, e) in enumerate(words_iv):
        hit = (iv[:, 0] < e) & (iv[:, 1] > s)
        if hit.any():
            out[k] = feats[hit].mean(axis=0)
        else:
            empty += 1
    return out, empty


@register_dataset("csd", version=1, cache=False, task="regression")
def csd(*, seed: int = 0, sequences: dict[str, str] | None = None, labels: str | None = None, words: str = "text",
        splits: dict[str, Sequence[str]] | None = None, fractions: Sequence[float] = (0.7, 0.1, 0.2),
        max_words: int | None = 50, label_column: int = 0) -> dict[str, ArrayDataset]:
    """Word-aligned computational sequences with segment labels (see the module docstring)."""
    where = "dataset 'csd'"
    if not isinstance(sequences, dict) or not sequences:
        raise ConfigError(f"{where}: option 'sequences' must map modality names to .csd paths, got {sequences!r}")
    if words not in sequences:
        raise ConfigError(f"{where}: words={words!r} must be one of the sequences {sorted(sequences)}")
    if max_words is not None:
        max_words = check_int(max_words, "max_words", where, minimum=1)
    label_column = check_int(label_column, "label_column", where)
    seqs = {m: read_csd(existing_path(p, f"sequences.{m}", where, directory=False), where)
            for m, p in sequences.items()}
    label_path = existing_path(labels, "labels", where, directory=False)
    lab = read_csd(label_path, where)
    videos = sorted(lab)
    for m, s in seqs.items():
        gone = [v for v in videos if v not in s]
        if gone:
            raise DataError(f"{where}: {sequences[m]} has no video {gone[0]!r} that {label_path} labels "
                            f"({len(gone)} missing); give sequences covering the labelled videos")
    # token vocabulary when the words are strings
    wfirst = _words(seqs[words][videos[0]][0]) if videos else None
    vocab: list[str] | None = None
    if wfirst is not None:
        vocab = sorted({w for v in videos for w in _words(seqs[words][v][0]) if w != SILENCE})
    index = {w: i + 1 for i, w in enumerate(vocab or [])}
    arrays: dict[str, list[np.ndarray]] = {m: [] for m in seqs}
    targets, seg_ids, seg_video = [], [], []
    empty = {m: 0 for m in seqs if m != words}
    for v in videos:
        wf, wiv = seqs[words][v]
        if vocab is not None:
            toks = _words(wf)
            keep = np.array([t != SILENCE for t in toks], dtype=bool)
            wvals: np.ndarray = np.array([index[t] for t, k in zip(toks, keep) if k], dtype=np.int64)
            wiv = wiv[keep]
        else:
            if wf.dtype.kind not in "fiu":
                raise DataError(f"{where}: {sequences[words]}, video {v!r}: features have dtype {wf.dtype}")
            wvals = np.asarray(wf, dtype=np.float32).reshape(len(wf), -1)
        order = np.argsort(wiv[:, 0], kind="stable")
        wvals, wiv = wvals[order], wiv[order]
        aligned = {words: wvals}
        for m, s in seqs.items():
            if m != words:
                aligned[m], n_empty = align_to_words(wiv, s[v][0], s[v][1])
                empty[m] += n_empty
        y, liv = lab[v]
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if label_column >= y.shape[1]:
            raise ConfigError(f"{where}: label_column={label_column} but {label_path} has {y.shape[1]} label columns")
        for k, (s, e) in enumerate(liv):
            rows = np.flatnonzero((wiv[:, 0] < e) & (wiv[:, 1] > s))
            if max_words is not None:
                rows = rows[:max_words]
            for m in seqs:
                seg = aligned[m][rows]
                if max_words is not None and len(seg) < max_words:
                    seg = np.concatenate([seg, np.zeros((max_words - len(seg),) + seg.shape[1:], seg.dtype)])
                arrays[m].append(seg)
            targets.append(y[k, label_column])
            seg_ids.append(f"{v}[{k}]")
            seg_video.append(v)
    if not targets:
        raise DataError(f"{where}: {label_path} labels no segment")
    if not np.isfinite(targets).all():
        raise DataError(f"{where}: {label_path}: segment {seg_ids[int(np.flatnonzero(~np.isfinite(targets))[0])]} "
                        "has a non-finite label")
    seg_video_arr = np.asarray(seg_video)
    if splits is not None:
        if not isinstance(splits, dict) or set(splits) != {"train", "val", "test"}:
            raise ConfigError(f"{where}: option 'splits' must map train, val and test to lists of video ids")
        vid_split = {}
        for name, vids in splits.items():
            for vid in vids:
                if str(vid) in vid_split:
                    raise ConfigError(f"{where}: video {vid!r} is in splits {vid_split[str(vid)]!r} and {name!r}")
                vid_split[str(vid)] = name
        unknown = [v for v in vid_split if v not in lab]
        if unknown:
            raise ConfigError(f"{where}: splits name video {unknown[0]!r}, which {label_path} does not label")
    else:
        f = check_fractions(fractions, where)
        perm = [videos[i] for i in np.random.default_rng([seed, 13]).permutation(len(videos))]
        counts = split_counts(len(videos), f)
        vid_split = {}
        start = 0
        for name, c in zip(("train", "val", "test"), counts):
            vid_split.update({v: name for v in perm[start:start + c]})
            start += c
    ragged = max_words is None
    out = {}
    for name in ("train", "val", "test"):
        idx = np.flatnonzero([vid_split.get(v) == name for v in seg_video_arr])
        split_arrays = {m: ([a[i] for i in idx] if ragged else np.stack([a[i] for i in idx]) if len(idx)
                            else np.zeros((0, max_words) + arrays[m][0].shape[1:], arrays[m][0].dtype))
                        for m, a in arrays.items()}
        out[name] = ArrayDataset(split_arrays, np.asarray(targets, dtype=np.float32)[idx], task="regression",
                                 num_classes=1, class_names=["sentiment"], name=f"csd/{name}", ids=idx,
                                 attrs={"segment_ids": seg_ids, "unaligned_words": empty, "metric_set": "mosi",
                                        **({"vocab": vocab} if vocab is not None else {})})
    return out


__all__ = ["csd", "read_csd", "align_to_words"]
