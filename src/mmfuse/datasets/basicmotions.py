"""BasicMotions: smart-watch accelerometer + gyroscope, 4 activities (read from aeon's .ts files).

Four students wore a smart watch while standing, walking, running and playing badminton, five
times each; the watch recorded a 3-D accelerometer and a 3-D gyroscope at 10 Hz for 10 s
(100 steps). The UEA archive files shipped in the ``aeon`` wheel
(``aeon/datasets/data/BasicMotions/BasicMotions_{TRAIN,TEST}.ts``) hold 40 + 40 cases with 6
dimensions; as documented for the UEA archive, dimensions 0-2 are the accelerometer (x, y, z)
and 3-5 the gyroscope (x, y, z). aeon is *not* imported (its pins would downgrade numpy); the
files are parsed by :func:`read_ts`. Install the data with ``pip install --no-deps aeon``.

Modalities: ``"accelerometer"`` and ``"gyroscope"``, each float32 ``(100, 3)`` (time, channel:
channels-last sequences for ``cnn1d`` / ``gru`` / ``transformer``), standardised per channel
with the mean / std of the training split. Targets: 4 classes in the file header's order
(Standing, Running, Walking, Badminton).

Splits: ``test`` is the official TEST file (40 cases, 10 per class); ``val`` is carved from the
official TRAIN file, ``val_per_class`` cases per class (default 2, so 8), chosen with ``seed``;
``train`` is the rest (32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ._packaged import package_dir
from .base import ArrayDataset
from .loading import register_dataset

INSTALL = "pip install --no-deps aeon"


def read_ts(path: str | Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Parse a ``.ts`` file (sktime/aeon text format) with equal-length series and class labels.

    Returns ``X`` float32 ``[n_cases, n_dimensions, series_length]`` (missing values "?" become
    NaN), the label of each case, and the class labels declared in the header (in order).
    """
    path = Path(path)
    header: dict[str, str] = {}
    cases: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise DataError(f"{path}, line {lineno}: expected a '@key value' header line, found {line[:40]!r}")
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                    continue
                header[key] = value.strip()
                continue
            if header.get("timestamps", "false").lower() == "true":
                raise DataError(f"{path}: series with timestamps are not supported")
            parts = line.split(":")
            has_label = header.get("classlabel", "false").split(" ")[0].lower() == "true"
            if has_label:
                labels.append(parts[-1].strip())
                parts = parts[:-1]
            try:
                dims = [[float("nan") if v.strip() == "?" else float(v) for v in p.split(",")] for p in parts]
            except ValueError as exc:
                raise DataError(f"{path}, line {lineno}: cannot parse a value ({exc})") from None
            if cases and (len(dims) != len(cases[0]) or any(len(d) != len(cases[0][0]) for d in dims)):
                raise DataError(f"{path}, line {lineno}: case has {len(dims)} dimensions of lengths "
                                f"{sorted({len(d) for d in dims})}, unlike the first case; unequal lengths are "
                                "not supported")
            cases.append(dims)
    if not in_data or not cases:
        raise DataError(f"{path}: no '@data' section or no cases")
    declared = header.get("classlabel", "").split()[1:]
    return np.asarray(cases, dtype=np.float32), labels, declared


@register_dataset("basicmotions", version=1, task="multiclass")
def basicmotions(*, seed: int = 0, val_per_class: int = 2) -> dict[str, ArrayDataset]:
    """BasicMotions: accelerometer (100, 3) + gyroscope (100, 3), 4 activities; 32 / 8 / 40 cases."""
    where = "dataset 'basicmotions'"
    if isinstance(val_per_class, bool) or not isinstance(val_per_class, (int, np.integer)) \
            or not 0 <= val_per_class < 10:
        raise ConfigError(f"{where}: val_per_class must be an integer in [0, 9], got {val_per_class!r}")
    root = package_dir("aeon", INSTALL, "the BasicMotions dataset") / "datasets" / "data" / "BasicMotions"
    files = {k: root / f"BasicMotions_{k.upper()}.ts" for k in ("train", "test")}
    for f in files.values():
        if not f.is_file():
            raise DataError(f"{where}: {f} is missing from the installed aeon package; reinstall it with: {INSTALL}")
    X_tr, y_tr, classes = read_ts(files["train"])
    X_te, y_te, classes_te = read_ts(files["test"])
    if not classes:
        classes = sorted(set(y_tr))
    unknown = sorted((set(y_tr) | set(y_te)) - set(classes))
    if unknown or X_tr.shape[1] != 6 or X_te.shape[1:] != X_tr.shape[1:]:
        raise DataError(f"{where}: unexpected file contents (labels {unknown}, shapes {X_tr.shape}, {X_te.shape})")
    lookup = {c: k for k, c in enumerate(classes)}
    t_tr = np.array([lookup[c] for c in y_tr], dtype=np.int64)
    t_te = np.array([lookup[c] for c in y_te], dtype=np.int64)
    rng = np.random.default_rng([seed, 4])
    val = np.concatenate([np.flatnonzero(t_tr == c)[rng.permutation(int((t_tr == c).sum()))][:val_per_class]
                          for c in range(len(classes))]).astype(np.int64)
    val = np.sort(val)
    train = np.setdiff1d(np.arange(len(t_tr)), val)
    seqs = {"train": X_tr[train], "val": X_tr[val], "test": X_te}
    targets = {"train": t_tr[train], "val": t_tr[val], "test": t_te}
    # [n, 6, T] -> [n, T, 6]; standardise each of the 6 channels with train statistics
    ref = seqs["train"].transpose(0, 2, 1).reshape(-1, 6)
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    out = {}
    for split, X in seqs.items():
        Z = ((X.transpose(0, 2, 1) - mean) / std).astype(np.float32)
        out[split] = ArrayDataset(
            {"accelerometer": np.ascontiguousarray(Z[:, :, :3]), "gyroscope": np.ascontiguousarray(Z[:, :, 3:])},
            targets[split], task="multiclass", num_classes=len(classes), class_names=classes,
            name=f"basicmotions/{split}")
    return out
