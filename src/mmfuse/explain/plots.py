"""Figures for explanations (matplotlib, Agg canvas: no display and no global backend switch).

* :func:`plot_share_bars` — mean (± std) share per modality for each level of a breakdown.
* :func:`plot_patch_heatmap` — φ of image patches overlaid on the image.
* :func:`plot_feature_bars` — φ of ordered features (tokens, time windows, chunks) as coloured bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_share_bars(table: pd.DataFrame, modalities: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Grouped bars: one group per row of ``table`` (``level`` column), one bar per modality.

    ``table`` has columns ``level``, ``share_<m>_mean`` and ``share_<m>_std`` (a :func:`breakdown` slice).
    """
    levels = [str(v) for v in table["level"]]
    x = np.arange(len(levels))
    width = 0.8 / max(1, len(modalities))
    fig = Figure(figsize=(max(4.0, 0.9 * len(levels) + 2), 3.2))
    ax = fig.add_subplot(1, 1, 1)
    for k, m in enumerate(modalities):
        mean = table[f"share_{m}_mean"].to_numpy(dtype=float)
        std = np.nan_to_num(table[f"share_{m}_std"].to_numpy(dtype=float))
        ax.bar(x + (k - (len(modalities) - 1) / 2) * width, mean, width, yerr=std, capsize=2, label=m)
    ax.set_xticks(x)
    ax.set_xticklabels(levels, rotation=45 if len(levels) > 6 else 0, ha="right" if len(levels) > 6 else "center")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of |contribution|")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _image_for_display(image: Tensor) -> np.ndarray:
    """[H, W] or [C, H, W] → an [H, W] or [H, W, 3] array in [0, 1]."""
    img = image.detach().float().cpu()
    if img.dim() == 3:
        img = img.permute(1, 2, 0) if img.shape[0] == 3 else img.mean(0)
    elif img.dim() > 3:
        img = img.reshape(-1, *img.shape[-2:]).mean(0)
    a = img.numpy()
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def plot_patch_heatmap(image: Tensor, value_map: Tensor, path: str | Path, title: str = "") -> Path:
    """``image`` [H, W] / [C, H, W]; ``value_map`` [H, W] of φ per pixel (NaN = never masked)."""
    vm = value_map.detach().double().cpu().numpy()
    lim = float(np.nanmax(np.abs(vm))) if np.isfinite(vm).any() else 1.0
    lim = lim if lim > 0 else 1.0
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    disp = _image_for_display(image)
    ax.imshow(disp, cmap="gray" if disp.ndim == 2 else None)
    im = ax.imshow(np.ma.masked_invalid(vm), cmap="bwr", vmin=-lim, vmax=lim, alpha=0.55)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="φ")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_feature_bars(values: Tensor, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """One bar per feature in order (e.g. tokens), height and colour = φ."""
    v = torch.as_tensor(values).double().cpu().numpy()
    lim = float(np.abs(v).max()) if v.size else 1.0
    lim = lim if lim > 0 else 1.0
    from matplotlib import colormaps

    colors = colormaps["bwr"]((v / lim + 1) / 2)
    fig = Figure(figsize=(max(3.5, 0.35 * len(v) + 1.5), 2.8))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(len(v)), v, color=colors, edgecolor="k", linewidth=0.3)
    ax.axhline(0, color="k", linewidth=0.5)
    ax.set_xticks(np.arange(len(v)))
    ax.set_xticklabels(list(labels), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("φ")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
