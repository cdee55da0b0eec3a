"""The learning settings of Ngiam et al. 2011 (Table 1): which modalities the supervised part sees.

Features are always learned from A + V (the representation's unsupervised objective reads both
modalities). The setting only decides what the supervised head is given, at training and at test
time; ``source`` is the modality named ``model.source`` of the ``ngiam`` family:

==================================  ====================  ==================  ==========================
setting (``model.setting``)         feature learning      supervised training  test (evaluation)
==================================  ====================  ==================  ==========================
``fusion`` (multimodal fusion)      A + V                 A + V                A + V (whatever is present)
``cross_modality``                  A + V                 source only          source only
``shared`` (shared representation)  A + V                 source only          whatever is present
==================================  ====================  ==================  ==========================

In ``shared``, the paper's test "train on A, test on V" is the evaluation pattern that keeps only
the other modality (``mmfuse evaluate`` reports every pattern). A modality the head must not see is
made absent (mask False, inputs zeroed) *before* the representation reads it, so nothing leaks.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError

SETTINGS = ("fusion", "cross_modality", "shared")


def head_mask(setting: str, source: str, mask: Mapping[str, torch.Tensor], training: bool) -> dict[str, torch.Tensor]:
    """The presence mask the supervised head's path uses: ``mask`` with the hidden modalities set False.

    ``fusion``: ``mask`` unchanged; ``cross_modality``: only ``source`` (training and test);
    ``shared``: only ``source`` while ``training``, ``mask`` unchanged at evaluation.
    """
    if setting not in SETTINGS:
        raise ConfigError(f"model.setting: must be one of {list(SETTINGS)}, got {setting!r}")
    if source not in mask:
        raise ConfigError(f"model.source: {source!r} is not one of the modalities {sorted(mask)}")
    source_only = setting == "cross_modality" or (setting == "shared" and training)
    if not source_only:
        return dict(mask)
    return {m: (v if m == source else torch.zeros_like(v, dtype=torch.bool)) for m, v in mask.items()}


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of a list of row dicts (columns default to the first row's keys)."""
    if not rows:
        return ""
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
