"""NTU RGB+D ``.skeleton`` files (Shahroudy et al., 2016) from the user's folder (``ntu_skeleton``).

File name: ``SsssCcccPpppRrrrAaaa.skeleton`` (setup, camera, performer = subject, replication,
action 1..60 (NTU 60) or 1..120 (NTU 120)). Text format, whitespace separated::

    <number of frames>
    per frame:  <number of bodies>
      per body: 10 values   bodyID clippedEdges handLeftConfidence handLeftState
                            handRightConfidence handRightState isRestricted leanX leanY trackingState
                <number of joints> (25)
                per joint: 12 values  x y z depthX depthY colorX colorY
                                      orientationW orientationX orientationY orientationZ trackingState

Modality ``"skeleton"``: float32 ``(max_frames, 150)``, each frame the 3-D positions (x, y, z in
metres) of 25 joints of 2 bodies, flattened as ``[body, joint, xyz]``. Bodies are tracked by
``bodyID``; when a clip has more than 2 ids, the 2 seen in the most frames are kept (ties: the
first seen), the first of them in slot 0; a body absent from a frame is zeros. Clips longer
than ``max_frames`` (default 300, the longest NTU clip) are centre-cropped, shorter ones zero-padded
at the end; ``max_frames=None`` keeps the variable length (shape ``(None, 150)``).

Splits (``benchmark``):

* ``"xsub"`` (cross-subject): performers in :data:`XSUB_TRAIN_SUBJECTS` (the paper's 20 ids)
  train, the others test; ``train_subjects`` overrides the list (e.g. for NTU 120);
* ``"xview"`` (cross-view): cameras 2 and 3 train, camera 1 test.

``val`` is ``val_fraction`` (default 0.05) of the training clips, drawn per action with ``seed``.

Missing skeletons: the dataset's list of clips without usable skeletons (302 files in NTU 60)
is given with ``missing_skeletons``: a list of clip names (with or without ``.skeleton``) or the
path of a text file with one name per line. Listed clips are skipped and the count is reported
(a warning and ``dataset.skipped_missing``); a clip not listed whose frames hold no body raises
a DataError naming it.

Task: ``multiclass`` over ``num_classes`` actions (default 60), class ``c`` = action ``c + 1``
(names ``"A001"``...); the field reports top-1 accuracy. ``dataset.ids`` index
``dataset.files``, the sorted clip names of the folder that were read.

Every call parses the text files again (the reader is registered with ``cache=False``, as the
files live outside mmfuse): the 56,880 clips of NTU 60 take minutes to parse, so for repeated
runs save the splits once (``mmfuse.datasets.loading.save_splits``) or use a subset folder.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import ConfigError, DataError
from ..base import ArrayDataset, check_fraction, choice, stratified_split
from ..loading import register_dataset
from ._common import check_int, existing_path

XSUB_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
XVIEW_TRAIN_CAMERAS = (2, 3)
NUM_JOINTS, NUM_BODIES = 25, 2
_NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")


def parse_name(stem: str, where: str) -> dict[str, int]:
    m = _NAME.match(stem)
    if not m:
        raise DataError(f"{where}: file name {stem!r} is not SsssCcccPpppRrrrAaaa.skeleton")
    return dict(zip(("setup", "camera", "subject", "replication", "action"), map(int, m.groups())))


def read_skeleton(path: str | Path) -> list[dict[str, np.ndarray]]:
    """Parse one ``.skeleton`` file: per frame, ``{bodyID: joints [25, 12] float}``."""
    path = Path(path)
    tokens = path.read_text().split()
    pos = 0

    def take(count: int, what: str) -> list[str]:
        nonlocal pos
        if pos + count > len(tokens):
            raise DataError(f"{path}: the file ends inside {what} (needs {count} more values at token {pos})")
        out = tokens[pos:pos + count]
        pos += count
        return out

    def integer(what: str) -> int:
        tok = take(1, what)[0]
        try:
            return int(tok)
        except ValueError:
            raise DataError(f"{path}: {what} must be an integer, got {tok!r} (token {pos - 1})") from None

    n_frames = integer("the frame count")
    frames: list[dict[str, np.ndarray]] = []
    for t in range(n_frames):
        n_bodies = integer(f"frame {t}: the body count")
        bodies: dict[str, np.ndarray] = {}
        for b in range(n_bodies):
            info = take(10, f"frame {t}, body {b}: the 10 body values")
            n_joints = integer(f"frame {t}, body {b}: the joint count")
            if n_joints != NUM_JOINTS:
                raise DataError(f"{path}: frame {t}, body {b} has {n_joints} joints; NTU skeletons have {NUM_JOINTS}")
            vals = take(12 * n_joints, f"frame {t}, body {b}: the joint values")
            try:
                joints = np.asarray(vals, dtype=np.float64).reshape(n_joints, 12)
            except ValueError:
                raise DataError(f"{path}: frame {t}, body {b}: a joint value is not a number") from None
            bodies[info[0]] = joints
        frames.append(bodies)
    if pos != len(tokens):
        raise DataError(f"{path}: {len(tokens) - pos} values after the {n_frames} frames the header announced")
    return frames


def skeleton_array(frames: list[dict[str, np.ndarray]]) -> np.ndarray:
    """``[T, 2, 25, 3]`` xyz of the 2 most-seen bodies (zeros where a body is absent)."""
    counts: dict[str, int] = {}
    for fr in frames:
        for bid in fr:
            counts[bid] = counts.get(bid, 0) + 1
    order = list(counts)  # first-seen order
    keep = sorted(order, key=lambda b: (-counts[b], order.index(b)))[:NUM_BODIES]
    keep.sort(key=order.index)
    out = np.zeros((len(frames), NUM_BODIES, NUM_JOINTS, 3), dtype=np.float32)
    for t, fr in enumerate(frames):
        for slot, bid in enumerate(keep):
            if bid in fr:
                out[t, slot] = fr[bid][:, :3]
    return out


def _missing_list(value: Any, where: str) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        path = existing_path(value, "missing_skeletons", where, directory=False)
        names = path.read_text().split()
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        names = list(value)
    else:
        raise ConfigError(f"{where}: option 'missing_skeletons' must be a list of clip names or the path of a "
                          f"text file with one name per line, got {value!r}")
    return {n.strip().removesuffix(".skeleton") for n in names if n.strip()}


def _fix_length(x: np.ndarray, frames: int) -> np.ndarray:
    if len(x) >= frames:
        start = (len(x) - frames) // 2
        return x[start:start + frames]
    out = np.zeros((frames,) + x.shape[1:], dtype=x.dtype)
    out[: len(x)] = x
    return out


@register_dataset("ntu_skeleton", version=1, cache=False, task="multiclass")
def ntu_skeleton(*, seed: int = 0, root: str | None = None, benchmark: str = "xsub",
                 missing_skeletons: Sequence[str] | str | None = None, max_frames: int | None = 300,
                 num_classes: int = 60, val_fraction: float = 0.05,
                 train_subjects: Sequence[int] | None = None) -> dict[str, ArrayDataset]:
    """NTU RGB+D skeletons from the folder ``root`` (see the module docstring)."""
    where = "dataset 'ntu_skeleton'"
    folder = existing_path(root, "root", where, directory=True)
    benchmark = choice("benchmark", benchmark, ("xsub", "xview"), where)
    num_classes = check_int(num_classes, "num_classes", where, minimum=1)
    if max_frames is not None:
        max_frames = check_int(max_frames, "max_frames", where, minimum=1)
    val_fraction = check_fraction(val_fraction, "val_fraction", where)
    subjects = set(XSUB_TRAIN_SUBJECTS if train_subjects is None else [int(s) for s in train_subjects])
    missing = _missing_list(missing_skeletons, where)
    files = sorted(folder.glob("*.skeleton"))
    if not files:
        raise DataError(f"{where}: no .skeleton files in {folder}")
    skipped = [p.stem for p in files if p.stem in missing]
    if skipped:
        warnings.warn(f"{where}: skipped {len(skipped)} clip(s) listed in missing_skeletons "
                      f"(e.g. {skipped[0]})", stacklevel=2)
    files = [p for p in files if p.stem not in missing]
    seqs, labels, is_train, names = [], [], [], []
    for p in files:
        meta = parse_name(p.stem, f"{where}: {p}")
        if not 1 <= meta["action"] <= num_classes:
            raise DataError(f"{where}: {p.name} has action {meta['action']} outside 1..{num_classes}; "
                            "set num_classes (120 for NTU RGB+D 120)")
        frames = read_skeleton(p)
        if not any(frames):
            raise DataError(f"{where}: {p} has no body in any of its {len(frames)} frames; add it to "
                            "missing_skeletons (the dataset's list of clips without skeletons)")
        x = skeleton_array(frames).reshape(len(frames), -1)
        seqs.append(x if max_frames is None else _fix_length(x, max_frames))
        labels.append(meta["action"] - 1)
        is_train.append(meta["subject"] in subjects if benchmark == "xsub"
                        else meta["camera"] in XVIEW_TRAIN_CAMERAS)
        names.append(p.stem)
    y = np.asarray(labels, dtype=np.int64)
    train_all = np.flatnonzero(is_train)
    test = np.flatnonzero(~np.asarray(is_train))
    if not len(train_all) or not len(test):
        raise DataError(f"{where}: the {benchmark} split of the {len(y)} clips in {folder} leaves "
                        f"{len(train_all)} training and {len(test)} test clips; both must be non-empty")
    tr, va, _ = stratified_split(y[train_all], len(train_all), (1.0 - val_fraction, val_fraction, 0.0),
                                 np.random.default_rng([seed, 12]))
    rows = {"train": train_all[tr], "val": train_all[va], "test": test}
    class_names = [f"A{c + 1:03d}" for c in range(num_classes)]
    out = {}
    for split, idx in rows.items():
        data: Any = [seqs[i] for i in idx] if max_frames is None else (
            np.stack([seqs[i] for i in idx]) if len(idx) else np.zeros((0, max_frames, 150), np.float32))
        out[split] = ArrayDataset({"skeleton": data}, y[idx], task="multiclass", num_classes=num_classes,
                                  class_names=class_names, name=f"ntu_skeleton/{split}",
                                  attrs={"files": names, "skipped_missing": skipped, "benchmark": benchmark},
                                  ids=idx)
    return out


__all__ = ["ntu_skeleton", "read_skeleton", "skeleton_array", "XSUB_TRAIN_SUBJECTS", "XVIEW_TRAIN_CAMERAS"]
