"""Matplotlib figures (Agg backend, PNG files): learning curves, leaderboard bars, t-SNE, confusion.

Matplotlib is imported when the first figure is drawn, not with this module."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(curves: dict[str, list[list[float]]], path: str | Path, metric: str = "val_accuracy") -> Path:
    """``curves[method]`` = one list of per-epoch values per seed; plots mean ± std per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for method, runs in sorted(curves.items()):
        n = min(len(r) for r in runs)
        if n == 0:
            continue
        arr = np.array([r[:n] for r in runs], dtype=float)
        x = np.arange(1, n + 1)
        mean, std = arr.mean(0), arr.std(0)
        ax.plot(x, mean, label=method, lw=1.5)
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def bar_chart(names: list[str], means: list[float], stds: list[float], path: str | Path, metric: str = "accuracy",
              highlight: set[str] | None = None) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4.5))
    colors = ["tab:orange" if highlight and n in highlight else "tab:blue" for n in names]
    ax.bar(range(len(names)), means, yerr=stds, color=colors, capsize=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    if means:
        lo, hi = min(m - s for m, s in zip(means, stds)), max(m + s for m, s in zip(means, stds))
        pad = 0.05 * max(hi - lo, 1e-6)
        top = min(1.0, hi + pad) if hi <= 1.0 else hi + pad
        ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, top)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"test {metric} (mean ± std over seeds); orange = unimodal")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def tsne_panels(embeddings: dict[str, np.ndarray], labels: np.ndarray, path: str | Path, seed: int = 0,
                class_names: list[str] | None = None) -> Path:
    """One t-SNE panel per embedding (e.g. fused vs each modality's), colored by class."""
    plt = _pyplot()
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(1, len(embeddings), figsize=(4.2 * len(embeddings), 4.2), squeeze=False)
    for ax, (name, emb) in zip(axes[0], embeddings.items()):
        emb = np.asarray(emb, dtype=np.float64)
        perp = float(min(30, max(5, (len(emb) - 1) // 3)))
        xy = TSNE(2, perplexity=perp, init="pca", random_state=seed, max_iter=500).fit_transform(emb)
        cmap = plt.get_cmap("tab10" if labels.max() < 10 else "tab20")
        for k in np.unique(labels):
            sel = labels == k
            name_k = class_names[int(k)] if class_names and int(k) < len(class_names) else str(k)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(int(k) % cmap.N), label=name_k)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7, markerscale=2)
    return _save(fig, path)


def confusion(cm: np.ndarray, path: str | Path, class_names: list[str] | None = None) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
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
    return _save(fig, path)


def _save(fig, path) -> Path:
    plt = _pyplot()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
