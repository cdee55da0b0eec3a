"""easy-VQA: questions about synthetic shape images, 13 one-word answers (data in ``easy-vqa``).

The ``easy-vqa`` package ships 4000 train / 1000 test 64x64 RGB images (one coloured circle,
rectangle or triangle each) and 38,575 / 9,673 questions about them ("what color is the
shape?", "is there a red triangle?"); answering needs both the image and the question.

Modalities:

* ``"image"``: float32 ``(3, image_size, image_size)`` in [0, 1] (``image_size`` default 32, box
  downsampling with Pillow; 64 keeps the original). Images are kept once as uint8 and shared
  by all questions about them (:class:`~mmfuse.datasets.Gather`).
* ``"question"``: with ``text="tokens"`` (default) int64 token ids of variable length (shape
  ``(None,)``; the collate function pads with 0 = ``<pad>`` and records ``lengths``), from a
  word vocabulary built on the training questions and exposed as ``dataset.vocab`` (index ->
  word; 1 = ``<unk>``); with ``text="minilm"`` a float32 ``(384,)`` all-MiniLM-L6-v2 sentence
  embedding (packaged weights, CPU; computed once per distinct question and cached).

Targets: the answer, ``task="multiclass"``, 13 classes in ``easy_vqa.get_answers()`` order.

Splits (all seeded): ``val`` holds the questions about ``val_fraction`` (default 10 %) of the
official training *images* (so no image is shared between train and val), at most ``max_val``
(default 2000) of them; ``train`` the questions about the other training images, subsampled to
``max_train`` (default 10,000; None = all ~34,700) for CPU speed; ``test`` the official test
questions, subsampled to ``max_test`` (default None = all 9,673).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .base import ArrayDataset, Gather, check_fraction, choice
from .loading import register_dataset
from .text import build_vocab, encode, minilm_embeddings


def _count(value: Any, option: str, where: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{where}: {option} must be a positive integer{' or None' if allow_none else ''}, "
                          f"got {value!r}")
    return int(value)


def _load_images(paths: dict[int, str], ids: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(ids), 3, size, size), dtype=np.uint8)
    for k, i in enumerate(ids):
        with Image.open(paths[int(i)]) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BOX)
            out[k] = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    return out


@register_dataset("easyvqa", version=1, task="multiclass")
def easyvqa(
    *,
    seed: int = 0,
    image_size: int = 32,
    text: str = "tokens",
    max_train: int | None = 10000,
    max_val: int | None = 2000,
    max_test: int | None = None,
    val_fraction: float = 0.1,
) -> dict[str, ArrayDataset]:
    """easy-VQA: image (3, S, S) + question -> one of 13 answers. See the module docstring."""
    where = "dataset 'easyvqa'"
    text = choice("text", text, ("tokens", "minilm"), where)
    image_size = _count(image_size, "image_size", where, allow_none=False)
    if image_size > 64:
        raise ConfigError(f"{where}: image_size must be <= 64 (the images are 64x64), got {image_size}")
    max_train = _count(max_train, "max_train", where)
    max_val = _count(max_val, "max_val", where)
    max_test = _count(max_test, "max_test", where)
    val_fraction = check_fraction(val_fraction, "val_fraction", where)
    try:
        import easy_vqa
    except ImportError:
        raise ConfigError(f"{where} needs the data shipped in the 'easy-vqa' package; install it with: "
                          "pip install easy-vqa") from None
    answers = list(easy_vqa.get_answers())
    lookup = {a: k for k, a in enumerate(answers)}
    rng = np.random.default_rng([seed, 3])

    q_tr, a_tr, id_tr = easy_vqa.get_train_questions()
    q_te, a_te, id_te = easy_vqa.get_test_questions()
    id_tr, id_te = np.asarray(id_tr, dtype=np.int64), np.asarray(id_te, dtype=np.int64)
    images_tr = np.unique(id_tr)
    n_val_img = int(round(val_fraction * len(images_tr)))
    val_images = np.sort(rng.choice(images_tr, size=n_val_img, replace=False)) if n_val_img else images_tr[:0]
    in_val = np.isin(id_tr, val_images)

    def pick(rows: np.ndarray, cap: int | None) -> np.ndarray:
        if cap is not None and len(rows) > cap:
            rows = np.sort(rng.choice(rows, size=cap, replace=False))
        return rows

    rows = {"train": pick(np.flatnonzero(~in_val), max_train), "val": pick(np.flatnonzero(in_val), max_val),
            "test": pick(np.arange(len(q_te)), max_test)}
    questions = {"train": [q_tr[i] for i in rows["train"]], "val": [q_tr[i] for i in rows["val"]],
                 "test": [q_te[i] for i in rows["test"]]}
    labels = {"train": [a_tr[i] for i in rows["train"]], "val": [a_tr[i] for i in rows["val"]],
              "test": [a_te[i] for i in rows["test"]]}
    image_ids = {"train": id_tr[rows["train"]], "val": id_tr[rows["val"]], "test": id_te[rows["test"]]}
    paths = {"train": easy_vqa.get_train_image_paths(), "val": None, "test": easy_vqa.get_test_image_paths()}
    paths["val"] = paths["train"]

    attrs: dict[str, Any] = {"image_size": image_size, "text": text}
    if text == "tokens":
        vocab = build_vocab(questions["train"])
        attrs["vocab"] = vocab
        q_values = {k: encode(v, vocab) for k, v in questions.items()}
    else:
        all_q = questions["train"] + questions["val"] + questions["test"]
        emb = minilm_embeddings(all_q)
        ends = np.cumsum([len(questions[k]) for k in ("train", "val", "test")])
        q_values = dict(zip(("train", "val", "test"), np.split(emb, ends[:-1])))

    out = {}
    for split in ("train", "val", "test"):
        bad = [i for i, a in enumerate(labels[split]) if a not in lookup]
        if bad:
            raise DataError(f"{where}: answer {labels[split][bad[0]]!r} is not in get_answers() {answers}")
        uniq, inverse = np.unique(image_ids[split], return_inverse=True)
        missing = [int(i) for i in uniq if int(i) not in paths[split]]
        if missing:
            raise DataError(f"{where}: image {missing[0]} of the {split} questions is missing from the package")
        bank = _load_images(paths[split], uniq, image_size)
        out[split] = ArrayDataset(
            {"image": Gather(bank, inverse.reshape(-1), scale=1.0 / 255.0), "question": q_values[split]},
            np.array([lookup[a] for a in labels[split]], dtype=np.int64),
            task="multiclass", num_classes=len(answers), class_names=answers, name=f"easyvqa/{split}",
            attrs=attrs)
    return out
