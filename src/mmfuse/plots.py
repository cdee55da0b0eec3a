"""Matplotlib figures (PNG files): learning curves, leaderboard bars, t-SNE, confusion.

Matplotlib is imported when the first figure is drawn, not with this module. Figures are drawn on
``matplotlib.figure.Figure`` with an Agg canvas: no pyplot state and no global backend switch.

* :func:`style_cycle` — (colour, line style, marker) per series, all triples distinct for any number
  of series (10 colours × 28 line-style / marker pairs = 280 before colours are sampled from a
  continuous colour map instead).
* :func:`learning_curves` — mean ± std band over seeds only when a curve has ≥ 2 runs; the title
  says what was averaged ("mean ± std over 3 seeds" / "single run (seed 0)").
* :func:`bar_chart`, :func:`tsne_panels`, :func:`confusion`.

Each ``<name>`` function writes a PNG and returns its path; ``<name>_figure`` returns the figure (tests
read the drawn artists back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

# matplotlib's tab10, spelled out so that the style cycle needs no matplotlib import
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("None", "o", "s", "^", "D", "v", "P")  # 4 and 7 are coprime: 28 distinct (style, marker) pairs
SCATTER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LEGEND_OUTSIDE = 8  # more series than this: the legend goes to the right of the axes


def style_cycle(n: int) -> list[dict[str, str]]:
    """``n`` line styles ``{"color", "linestyle", "marker"}``, no two sharing all three.

    Series ``i`` takes colour ``i % 10`` and, per block ``b = i // 10`` of ten, line style
    ``b % 4`` and marker ``b % 7`` (the first ten: solid lines, no marker). Beyond 280 series the
    colours are sampled evenly from a continuous colour map (triples stay distinct up to ~6,900 series)."""
    if n < 0:
        raise ValueError(f"style_cycle: n must be >= 0, got {n}")
    k = len(PALETTE)
    pairs = len(LINESTYLES) * len(MARKERS)
    if n <= k * pairs:
        return [{"color": PALETTE[i % k], "linestyle": LINESTYLES[(i // k) % len(LINESTYLES)],
                 "marker": MARKERS[(i // k) % len(MARKERS)]} for i in range(n)]
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["turbo"]
    # turbo has 256 entries: series sharing an entry are neighbours (|i - j| < n / 256 + 1), whose
    # (style, marker) pairs differ as long as n / 256 < 27
    return [{"color": to_hex(cmap(i / (n - 1))), "linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)]} for i in range(n)]


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110, bbox_inches="tight")  # "tight": a legend outside the axes is kept
    return p


def _legend(ax, n: int) -> None:
    if n == 0:
        return
    if n <= LEGEND_OUTSIDE:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  ncol=1 if n <= 24 else 2, handlelength=3.0)


def _seed_list(seeds: Any, method: str, n_runs: int) -> list[int] | None:
    if seeds is None:
        return None
    s = seeds.get(method) if isinstance(seeds, Mapping) else seeds
    if s is None:
        return None
    s = [int(v) for v in s]
    return s if len(s) == n_runs else None


def _seed_text(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds[:8]) + (", ..." if len(seeds) > 8 else "")


def averaging_title(n_runs: Sequence[int], seeds: Sequence[list[int] | None] = ()) -> str:
    """What a curve / bar was averaged over: ``n_runs`` = runs per series, ``seeds`` = their seeds
    (None when unknown). "mean ± std over N seeds (...)" only when every series has N ≥ 2 runs."""
    ns = sorted(set(int(n) for n in n_runs))
    if not ns:
        return "no runs"
    if ns == [1]:
        known = {tuple(s) for s in seeds if s}
        if len(known) == 1 and len(seeds) == len(n_runs) and all(seeds):
            return f"single run (seed {next(iter(known))[0]})"
        return "single run per curve" + ("" if len(n_runs) == 1 else " (seeds differ)" if known else "")
    if ns[0] >= 2:
        if len(ns) == 1:
            known = {tuple(s) for s in seeds if s}
            tail = f" ({_seed_text(list(next(iter(known))))})" if len(known) == 1 and all(seeds) else ""
            return f"mean ± std over {ns[0]} seeds{tail}"
        return f"mean ± std over {ns[0]}–{ns[-1]} seeds per method"
    multi = [n for n in ns if n >= 2]
    return (f"mean ± std over {multi[0]}{'–' + str(multi[-1]) if len(multi) > 1 else ''} seeds; "
            "series marked (1 run) are single runs, without a band")


def learning_curves_figure(curves: Mapping[str, Sequence[Sequence[float]]], metric: str = "val_accuracy",
                           seeds: Sequence[int] | Mapping[str, Sequence[int]] | None = None):
    """The figure of :func:`learning_curves`."""
    items = [(m, [list(r) for r in runs]) for m, runs in sorted(curves.items())]
    items = [(m, runs) for m, runs in items if runs and max(len(r) for r in runs) > 0]
    n = len(items)
    styles = style_cycle(n)
    ncol = 0 if n <= LEGEND_OUTSIDE else (1 if n <= 24 else 2)
    fig = _figure((8 + 2.3 * ncol, 5))
    ax = fig.add_subplot(1, 1, 1)
    counts, seed_lists = [], []
    for (method, runs), st in zip(items, styles):
        T = max(len(r) for r in runs)
        arr = np.full((len(runs), T), np.nan)
        for i, r in enumerate(runs):
            arr[i, :len(r)] = np.asarray(r, dtype=float)
        x = np.arange(1, T + 1)
        have = np.isfinite(arr).sum(0)
        with np.errstate(all="ignore"):
            mean = np.where(have > 0, np.nansum(arr, 0) / np.maximum(have, 1), np.nan)
        counts.append(len(runs))
        seed_lists.append(_seed_list(seeds, method, len(runs)))
        label = method if len(runs) >= 2 or not any(len(v) >= 2 for _, v in items) else f"{method} (1 run)"
        ax.plot(x, mean, label=label, lw=1.5, markersize=4, markevery=max(1, T // 12), **st)
        if len(runs) >= 2:  # a band needs ≥ 2 runs at an epoch (early-stopped runs end earlier)
            band = have >= 2
            with np.errstate(all="ignore"):
                std = np.array([np.nanstd(arr[:, t], ddof=1) if band[t] else np.nan for t in range(T)])
            ax.fill_between(x, mean - std, mean + std, where=band, alpha=0.15 if n <= LEGEND_OUTSIDE else 0.07,
                            color=st["color"], linewidth=0)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers: no 2.5 tick
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch: {averaging_title(counts, seed_lists)}", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, n)
    return fig


def learning_curves(curves: dict[str, list[list[float]]], path: str | Path, metric: str = "val_accuracy",
                    seeds: Sequence[int] | Mapping[str, Sequence[int]] | None = None) -> Path:
    """``curves[method]`` = one list of per-epoch values per run (seed). Each method is one line in its own
    (colour, line style, marker); with ≥ 2 runs the line is the mean and a band shows ± the sample std
    (ddof 1) over the runs that reached that epoch; a single run is drawn alone. ``seeds``: the seeds of
    the runs (one list for every method, or per method), named in the title."""
    return _save(learning_curves_figure(curves, metric, seeds), path)


BAR_LABEL_WIDTH = 24  # characters per line of a bar's label; longer names wrap (at spaces) instead of running off


def wrap_label(name: str, width: int = BAR_LABEL_WIDTH) -> str:
    """``name`` on lines of about ``width`` characters, broken after spaces (e.g. the ensemble's
    ``ensemble(a×0.60, b×0.20, ...)``); a word longer than ``width`` is kept whole. Joining the lines with
    spaces gives ``name`` back."""
    import textwrap

    return "\n".join(textwrap.wrap(str(name), width, break_long_words=False, break_on_hyphens=False)) or str(name)


def bar_chart_figure(names: list[str], means: list[float], stds: list[float], metric: str = "accuracy",
                     highlight: set[str] | None = None, seeds: Sequence[int] | None = None):
    labels = [wrap_label(n) for n in names]
    lines = max((lb.count("\n") + 1 for lb in labels), default=1)
    longest = max((len(x) for lb in labels for x in lb.split("\n")), default=0)
    # the labels are drawn at 35°: the figure grows with their lines and length instead of clipping them
    fig = _figure((max(6.0, 0.65 * len(names) + 1.0), 3.6 + 0.08 * longest + 0.12 * lines))
    ax = fig.add_subplot(1, 1, 1)
    colors = [PALETTE[1] if highlight and n in highlight else PALETTE[0] for n in names]
    n_runs = None if seeds is None else len(list(seeds))
    err = None if n_runs == 1 else stds
    ax.bar(range(len(names)), means, yerr=err, color=colors, capsize=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(labels, rotation=35, ha="right", rotation_mode="anchor", fontsize=8)
    if means:
        s = [0.0] * len(means) if err is None else [0.0 if not np.isfinite(v) else v for v in stds]
        lo, hi = min(m - d for m, d in zip(means, s)), max(m + d for m, d in zip(means, s))
        pad = 0.05 * max(hi - lo, 1e-6)
        top = min(1.0, hi + pad) if hi <= 1.0 else hi + pad
        ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, top)
    ax.set_ylabel(f"test {metric}")
    what = ("mean ± std over seeds" if seeds is None else
            averaging_title([n_runs] * len(names), [list(seeds)] * len(names)))
    ax.set_title(f"test {metric} ({what})" + ("; orange = unimodal" if highlight else ""), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def bar_chart(names: list[str], means: list[float], stds: list[float], path: str | Path, metric: str = "accuracy",
              highlight: set[str] | None = None, seeds: Sequence[int] | None = None) -> Path:
    """Leaderboard bars; ``seeds`` (the runs' seeds) names what was averaged; one seed: no error bars."""
    return _save(bar_chart_figure(names, means, stds, metric, highlight, seeds), path)


def tsne_panels(embeddings: dict[str, np.ndarray], labels: np.ndarray, path: str | Path, seed: int = 0,
                class_names: list[str] | None = None) -> Path:
    """One t-SNE panel per embedding (e.g. fused vs each modality's), coloured by class (colour and
    marker shape: distinct for any number of classes)."""
    from sklearn.manifold import TSNE

    fig = _figure((4.2 * len(embeddings) + 1.2, 4.2))
    axes = fig.subplots(1, len(embeddings), squeeze=False)
    classes = np.unique(labels)
    styles = style_cycle(len(classes))
    for ax, (name, emb) in zip(axes[0], embeddings.items()):
        emb = np.asarray(emb, dtype=np.float64)
        if len(emb) < 4 or not np.isfinite(emb).all() or float(emb.std(0).max(initial=0.0)) < 1e-12:
            # no spread (a constant embedding) or too few rows: sklearn's PCA init divides by zero and its
            # Barnes-Hut step can crash the process; say so in the panel instead
            ax.text(0.5, 0.5, "no spread: the embedding is constant\nover these rows (t-SNE skipped)"
                    if len(emb) >= 4 else "too few rows for t-SNE", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
            ax.set_title(name, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        perp = float(min(30, max(1, (len(emb) - 1) // 3)))
        xy = TSNE(2, perplexity=perp, init="pca", random_state=seed, max_iter=500).fit_transform(emb)
        for j, k in enumerate(classes):
            sel = labels == k
            name_k = class_names[int(k)] if class_names and int(k) < len(class_names) else str(k)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=styles[j]["color"],
                       marker=SCATTER_MARKERS[(j // len(PALETTE)) % len(SCATTER_MARKERS)], label=name_k)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = next((h for h in (ax.get_legend_handles_labels() for ax in axes[0]) if h[0]), ([], []))
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2,
               ncol=1 if len(names) <= 24 else 2)
    fig.tight_layout()
    return _save(fig, path)


def confusion(cm: np.ndarray, path: str | Path, class_names: list[str] | None = None) -> Path:
    fig = _figure((5, 5))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(cm, cmap="Blues")
    n = cm.shape[0]
    names = class_names or [str(i) for i in range(n)]
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6)
    fig.tight_layout()
    return _save(fig, path)
