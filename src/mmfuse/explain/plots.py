"""Figures for explanations (matplotlib, Agg canvas: no display and no global backend switch).

Matplotlib is imported inside the drawing functions only.

* :func:`plot_share_bars` — mean (± std) share per modality for each level of a breakdown.
* :func:`plot_patch_heatmap` — the input image in grey (or colour) with φ of its patches as a
  semi-transparent diverging overlay (symmetric limits around 0, near-zero φ transparent, so the
  image stays visible) and a labelled colour bar.
* :func:`plot_series_contributions` — an audio / time-series input against time with the
  contributions of its windows (or patches) on a second panel sharing the time axis.
* :func:`plot_feature_bars` — φ of ordered features (tokens, numeric columns, chunks) as coloured bars.
* :func:`modality_display_info` / :func:`feature_labels` / :func:`is_series` — what the per-sample
  figures need to know about a dataset's modalities (column names, time rate, kind).

Each ``plot_*`` writes a PNG and returns its path; the ``*_figure`` functions return the figure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

POS, NEG = "#d62728", "#1f77b4"  # φ > 0 (raises the score) / φ < 0
SERIES_NAME = re.compile(r"audio|speech|sound|voice|wav|signal|series|sensor|eeg|ecg|emg|accel|gyro|motion|imu",
                         re.IGNORECASE)
AUDIO_HOP_MS = 10.0  # the table audio loader's MFCC / log-mel hop (mmfuse.datasets.audio.log_mel)


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


# ------------------------------------------------------------------------------------------ share bars
def plot_share_bars(table: "pd.DataFrame", modalities: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Grouped bars: one group per row of ``table`` (``level`` column), one bar per modality.

    ``table`` has columns ``level``, ``share_<m>_mean`` and ``share_<m>_std`` (a :func:`breakdown` slice).
    """
    from ..plots import style_cycle

    levels = [str(v) for v in table["level"]]
    x = np.arange(len(levels))
    width = 0.8 / max(1, len(modalities))
    fig = _figure((max(4.0, 0.9 * len(levels) + 2), 3.2))
    ax = fig.add_subplot(1, 1, 1)
    hatches = ("", "//", "..", "xx", "\\\\", "oo")
    for k, (m, st) in enumerate(zip(modalities, style_cycle(len(modalities)))):
        mean = table[f"share_{m}_mean"].to_numpy(dtype=float)
        std = np.nan_to_num(table[f"share_{m}_std"].to_numpy(dtype=float))
        ax.bar(x + (k - (len(modalities) - 1) / 2) * width, mean, width, yerr=std, capsize=2, label=m,
               color=st["color"], hatch=hatches[(k // 10) % len(hatches)])
    ax.set_xticks(x)
    ax.set_xticklabels(levels, rotation=45 if len(levels) > 6 else 0, ha="right" if len(levels) > 6 else "center")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of |contribution|")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------- image heatmap
def _image_for_display(image: Tensor) -> np.ndarray:
    """[H, W] or [C, H, W] → an [H, W] or [H, W, 3] array in [0, 1]."""
    img = torch.as_tensor(image).detach().float().cpu()
    if img.dim() == 3:
        img = img.permute(1, 2, 0) if img.shape[0] == 3 else img.mean(0)
    elif img.dim() > 3:
        img = img.reshape(-1, *img.shape[-2:]).mean(0)
    a = img.numpy()
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _fading_diverging(name: str = "RdBu_r"):
    """A diverging colour map whose opacity grows with |value|: 0 is fully transparent, so the image
    under an overlay stays visible where φ is small."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    rgba = colormaps[name](np.linspace(0.0, 1.0, 256))
    rgba[:, 3] = np.clip(np.abs(np.linspace(-1.0, 1.0, 256)) * 1.6, 0.0, 1.0) ** 0.8
    return ListedColormap(rgba, name=f"{name}_fading")


def patch_heatmap_figure(image: Tensor, value_map: Tensor, title: str = "", alpha: float = 0.65):
    """The figure of :func:`plot_patch_heatmap`: images ``[input, overlay]`` on one axes."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1) so the input stays visible, got {alpha}")
    vm = torch.as_tensor(value_map).detach().double().cpu().numpy()
    finite = np.isfinite(vm)
    lim = float(np.abs(vm[finite]).max()) if finite.any() else 1.0
    lim = lim if lim > 0 else 1.0
    fig = _figure((4.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    disp = _image_for_display(image)
    ax.imshow(disp, cmap="gray" if disp.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    im = ax.imshow(np.ma.masked_invalid(vm), cmap=_fading_diverging(), vmin=-lim, vmax=lim, alpha=alpha,
                   interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("φ per patch (red raises the score, blue lowers it)", fontsize=7)
    cb.ax.tick_params(labelsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return fig


def plot_patch_heatmap(image: Tensor, value_map: Tensor, path: str | Path, title: str = "") -> Path:
    """``image`` [H, W] / [C, H, W] drawn in grey (RGB when C = 3); ``value_map`` [H, W] of φ per pixel
    (NaN = never masked) over it, semi-transparent, colour limits ±max|φ|."""
    return _save(patch_heatmap_figure(image, value_map, title), path)


# -------------------------------------------------------------------------------------- time series
def series_contributions_figure(signal: Tensor, values: Tensor, fmap: Tensor, title: str = "",
                                length: int | None = None, rate: float | None = None, time_unit: str = "s",
                                step_name: str = "time step", signal_name: str = "signal"):
    """The figure of :func:`plot_series_contributions`: axes ``[signal, contributions]``."""
    x = torch.as_tensor(signal).detach().double().cpu()
    fm = torch.as_tensor(fmap).detach().long().cpu()
    if x.dim() not in (1, 2) or tuple(fm.shape) != tuple(x.shape):
        raise ValueError(f"series plot: signal must be [T] or [T, C] with a feature map of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(fm.shape)}")
    v = torch.as_tensor(values).detach().double().cpu()
    v = v.mean(1) if v.dim() == 2 else v.reshape(-1)
    T = int(x.shape[0])
    L = T if length is None else max(1, min(int(length), T))
    x2, f2 = (x.unsqueeze(1), fm.unsqueeze(1)) if x.dim() == 1 else (x, fm)
    x2, f2 = x2[:L].numpy(), f2[:L].numpy()
    C = x2.shape[1]
    dt = 1.0 / rate if rate else 1.0
    t = np.arange(L) * dt
    xlabel = f"time ({time_unit})" if rate else step_name
    fig = _figure((max(5.0, min(10.0, 3.0 + 0.05 * L)), 4.2))
    ax_s, ax_c = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.0, 1.0], "hspace": 0.08})
    sig = x2[:, 0] if C == 1 else x2.mean(1)
    ax_s.step(np.append(t, L * dt), np.append(sig, sig[-1]), where="post", color="k", lw=1.0)  # step k: [k, k+1)
    ax_s.set_ylabel(signal_name if C == 1 else f"{signal_name}\n(mean of {C} channels)", fontsize=8)
    ax_s.axhline(0.0, color="0.6", lw=0.5)
    ax_s.set_title(title, fontsize=9)
    n = int(v.numel())
    vv = v.numpy()
    windows = bool((f2 == f2[:, :1]).all())  # one feature per time step: windows along time
    if windows:
        ids = f2[:, 0]
        for j in np.unique(ids[ids >= 0]):
            if j >= n:
                continue
            steps = np.nonzero(ids == j)[0]
            a, b = int(steps.min()), int(steps.max()) + 1
            ax_c.bar(a * dt, vv[j], width=(b - a) * dt, align="edge", color=POS if vv[j] >= 0 else NEG,
                     edgecolor="k", linewidth=0.3, alpha=0.8)
            if b < L:
                ax_c.axvline(b * dt, color="0.85", lw=0.5, zorder=0)
        ax_c.set_ylabel("φ per window", fontsize=8)
    else:  # patches over [T, C]: each patch's φ spread evenly over its cells, summed over channels
        counts = np.bincount(fm[fm >= 0].reshape(-1).numpy(), minlength=n).astype(float)
        full = np.concatenate([vv / np.maximum(counts[:n], 1.0), [0.0]])
        dens = full[np.where(f2 >= 0, f2, n)].sum(1)
        edges = np.append(t, L * dt)
        ax_c.stairs(np.where(dens >= 0, dens, 0.0), edges, fill=True, color=POS, alpha=0.7, label="φ > 0")
        ax_c.stairs(np.where(dens < 0, dens, 0.0), edges, fill=True, color=NEG, alpha=0.7, label="φ < 0")
        ax_c.stairs(dens, edges, color="k", lw=0.6)
        ax_c.set_ylabel(f"φ per {step_name}\n(patches spread, Σ channels)", fontsize=8)
    ax_c.axhline(0.0, color="k", lw=0.8)
    ax_c.set_xlabel(xlabel, fontsize=8)
    ax_c.set_xlim(0.0, L * dt)
    for ax in (ax_s, ax_c):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    return fig


def plot_series_contributions(signal: Tensor, values: Tensor, fmap: Tensor, path: str | Path, title: str = "",
                              length: int | None = None, rate: float | None = None, time_unit: str = "s",
                              step_name: str = "time step", signal_name: str = "signal") -> Path:
    """``signal`` [T] / [T, C] (one channel drawn as is, several as their mean) against time — seconds
    when ``rate`` (steps per second) is known, else steps — above a panel of the contributions on the
    same axis: one bar per window (``fmap`` [T] / [T, C] = feature id per element, −1 = never masked;
    ``values`` φ per feature) or, for patches over [T, C], φ per time step. Only the first ``length``
    steps (the valid part of a padded sequence) are drawn."""
    return _save(series_contributions_figure(signal, values, fmap, title, length, rate, time_unit, step_name,
                                             signal_name), path)


# ----------------------------------------------------------------------------------------- feature bars
def feature_bars_figure(values: Tensor, labels: Sequence[str], title: str = "", xlabel: str = ""):
    v = torch.as_tensor(values).detach().double().cpu().numpy().reshape(-1)
    lim = float(np.abs(v).max()) if v.size else 1.0
    lim = lim if lim > 0 else 1.0
    from matplotlib import colormaps

    colors = colormaps["RdBu_r"]((v / lim + 1) / 2)
    fig = _figure((max(3.5, 0.35 * len(v) + 1.5), 2.8))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(len(v)), v, color=colors, edgecolor="k", linewidth=0.3)
    ax.axhline(0, color="k", linewidth=0.5)
    ax.set_xticks(np.arange(len(v)))
    ax.set_xticklabels(list(labels), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("φ")
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def plot_feature_bars(values: Tensor, labels: Sequence[str], path: str | Path, title: str = "",
                      xlabel: str = "") -> Path:
    """One bar per feature in order (e.g. tokens, numeric columns), height and colour = φ."""
    return _save(feature_bars_figure(values, labels, title, xlabel), path)


# ------------------------------------------------------------------------------- modality metadata
def modality_display_info(data: Any) -> dict[str, dict[str, Any]]:
    """What the per-sample figures know about each modality of ``data`` (a dataset; anything else: {}):
    ``{m: {"kind": ..., "feature_names": [...], "rate": steps per second, "time_unit": "s"}}``.

    From a user table's fitted pipeline (``data.pipeline``: numeric columns' names, the audio loader's
    frame rate), then from the dataset's own ``feature_names`` (``{modality: [name, ...]}``) and
    ``modality_info`` (``{modality: {...}}``) attributes when it has them."""
    info: dict[str, dict[str, Any]] = {}
    loaders = getattr(getattr(data, "pipeline", None), "loaders", None)
    if isinstance(loaders, Mapping):
        for m, ld in loaders.items():
            kind = str(getattr(ld, "loader_name", "") or "")
            d: dict[str, Any] = {"kind": kind}
            if kind == "numeric":
                d["feature_names"] = [str(c) for c in getattr(ld, "columns", [])]
            elif kind == "audio":
                d.update(rate=1000.0 / AUDIO_HOP_MS, time_unit="s", step_name="frame")
            info[str(m)] = d
    for attr, key in (("feature_names", "feature_names"), ("modality_info", None)):
        extra = getattr(data, attr, None)
        if isinstance(extra, Mapping):
            for m, v in extra.items():
                if key is not None:
                    info.setdefault(str(m), {})[key] = [str(c) for c in v]
                elif isinstance(v, Mapping):
                    info.setdefault(str(m), {}).update(v)
    return info


def is_series(modality: str, x: Tensor, layout_kind: str, info: Mapping[str, Any] | None = None) -> bool:
    """Whether a modality's per-sample figure is a time-series plot: windows along time, a modality the
    dataset declares audio / series, or a 2-D [T, C] input named like a signal (audio, sensor, ...)
    explained by patches (an image is [C, H, W], or [H, W] named otherwise)."""
    kind = str((info or {}).get("kind", ""))
    if kind in ("audio", "series", "timeseries", "time_series"):
        return True
    if kind in ("image", "video", "text", "numeric"):
        return False
    if layout_kind == "windows":
        return True
    return layout_kind == "patches" and x.dim() == 2 and bool(SERIES_NAME.search(modality))


def feature_labels(n: int, fmap: Tensor | None = None, names: Sequence[str] | None = None) -> tuple[list[str], str]:
    """(tick labels, axis label) of ``n`` vector features: the schema's column ``names`` when the dataset
    has them (a chunk of several columns: "first…last"), else ``v0``, ``v1``, … with an axis label
    saying ``vi`` is feature i of the input."""
    if names:
        names = [str(c) for c in names]
        if n == len(names):
            return names, "feature (column)"
        if fmap is not None and fmap.numel() == len(names):
            ids = torch.as_tensor(fmap).reshape(-1)
            out = []
            for j in range(n):
                cols = [names[i] for i in torch.nonzero(ids == j).reshape(-1).tolist()]
                out.append("?" if not cols else cols[0] if len(cols) == 1 else f"{cols[0]}…{cols[-1]}")
            return out, "chunk of columns"
    return [f"v{k}" for k in range(n)], "feature i (vi = input feature i; the dataset has no column names)"
