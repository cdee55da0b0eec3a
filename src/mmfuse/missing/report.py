"""The missing-modality study (SMIL's av-MNIST figure) as a grid of ``mmfuse compare``, and its report.

``mmfuse missing-study CONFIG`` takes an ordinary experiment config (``examples/missing_study.yaml``):
``data.missing`` names the modality that is absent from part of the training samples, the grid axis
``data.missing.present_fraction`` is η, and each method is a ``compare.overlays`` entry, e.g.

=============  ==================================================================================
``lower``      ``model.modalities: [image]`` — the full modality alone (η-independent)
``upper``      ``data.missing.present_fraction: 1.0`` — every training sample complete
``zero``       ``model.missing.imputer: zero`` (``mean``, ``learned_token`` likewise)
``dropout``    zero imputation plus ``model.missing.modality_dropout: {audio: 0.5}``
``ae``         ``model.missing.imputer: cross_modal`` — a regressor from the other embeddings
``smil``       ``model.family: smil`` (the ``smil_meta`` scheme)
=============  ==================================================================================

:func:`run_missing_study` runs them with :func:`mmfuse.compare.run_compare` (same seeds, resume,
``runs/``), then writes ``summary.csv`` / ``summary.md`` (accuracy in % with the full modality only and
with both modalities at test time, mean ± std over seeds, per η; the paper's av-MNIST numbers beside
ours; whether SMIL beats zero imputation and the AE baseline) and ``accuracy_vs_eta.png``.
Warm-started encoders go through ``model.init_from: CHECKPOINT`` in an overlay.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError

TESTS = ("full_only", "both")

#: av-MNIST numbers of the paper (η = 20 %), as read from its figure (spec 02, §2.6), in %.
PAPER_AVMNIST = {
    ("lower", "full_only"): 92.0,
    ("lower", "both"): 92.0,
    ("smil", "full_only"): 94.9,
    ("smil", "both"): 96.0,
    ("ae", "full_only"): 89.8,
    ("ae", "both"): 94.0,
}


@dataclass
class StudyResult:
    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    markdown: str
    paths: dict[str, str] = field(default_factory=dict)
    board: pd.DataFrame | None = None


def study_layout(cfg) -> dict[str, Any]:
    """The modalities (full, missing), the η grid key and the dataset name of a study config."""
    spec = cfg.data.missing
    if spec is None:
        raise ConfigError("missing-study: set data.missing: {modality: <the modality absent from part of the "
                          "training samples>, present_fraction: η} and a grid over data.missing.present_fraction")
    eta_key = next((k for k in cfg.compare.grid if k.endswith("present_fraction")), None)
    return {"missing": spec.modality, "eta_key": eta_key, "eta": spec.present_fraction, "dataset": cfg.data.name}


def study_records(runs: pd.DataFrame, layout: Mapping[str, Any], full: str, metric: str = "accuracy") -> list[dict]:
    """One record per (run, test setting): accuracy with ``full`` only and with every modality."""
    out = []
    pat = f"pattern[{full}]_{metric}"
    for _, r in runs.iterrows():
        eta = float(r[layout["eta_key"]]) if layout["eta_key"] else float(layout["eta"])
        both = float(r[f"test_{metric}"])
        full_only = float(r[pat]) if pat in r and not pd.isna(r[pat]) else both  # a model of the full modality alone
        for t, acc in (("full_only", full_only), ("both", both)):
            out.append({"method": r["method"], "eta": eta, "seed": int(r["seed"]), "test": t, "accuracy": acc})
    return out


def summarize(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std (population std over seeds) per (method, eta, test), in %; methods in order of appearance."""
    groups: dict[tuple, list[float]] = {}
    order = list(dict.fromkeys(r["method"] for r in records))
    for r in records:
        groups.setdefault((r["method"], float(r["eta"]), r["test"]), []).append(float(r["accuracy"]))
    out = []
    for (m, e, t), accs in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1], kv[0][2])):
        a = np.asarray(accs) * 100
        out.append({"method": m, "eta": e, "test": t, "mean": float(a.mean()), "std": float(a.std()), "n": len(a)})
    return out


def _fmt(mean: float, std: float, n: int = 2) -> str:
    """``mean ± std``; with one seed (``n`` 1) there is no spread: ``mean ± —`` (as compare's leaderboard), not ± 0.0."""
    if math.isnan(mean):
        return "—"
    return f"{mean:.1f} ± " + ("—" if n < 2 or std is None or math.isnan(std) else f"{std:.1f}")


def verdicts(summary: Sequence[Mapping[str, Any]], max_eta: float = 0.2) -> list[str]:
    """Lines saying whether SMIL beats zero imputation and the AE baseline at η ≤ max_eta."""
    idx = {(s["method"], s["eta"], s["test"]): s for s in summary}
    lines = []
    for smil in ("smil", "smil_paper"):
        for base in ("zero", "ae"):
            for (m, e, t), s in sorted(idx.items(), key=lambda kv: (kv[0][1], kv[0][2])):
                if m != smil or e > max_eta or (base, e, t) not in idx:
                    continue
                b = idx[(base, e, t)]
                diff = s["mean"] - b["mean"]
                word = "beats" if diff > 0 else "does not beat"
                spread = (f"; std {s['std']:.1f} / {b['std']:.1f}" if min(s.get("n", 2), b.get("n", 2)) >= 2
                          else "; one seed: no spread, no evidence either way")
                lines.append(f"- η = {e:g}, test {t}: {smil} {word} {base} ({s['mean']:.1f} vs {b['mean']:.1f}, "
                             f"{diff:+.1f} points{spread})")
    return lines


def summary_markdown(summary: Sequence[Mapping[str, Any]], layout: Mapping[str, Any], full: str) -> str:
    etas = sorted({s["eta"] for s in summary})
    methods = list(dict.fromkeys(s["method"] for s in summary))
    idx = {(s["method"], s["eta"], s["test"]): s for s in summary}
    labels = {"full_only": f"{full} only", "both": f"{full} + {layout['missing']}"}
    head = "| method | " + " | ".join(f"η={e:g} {labels[t]}" for e in etas for t in TESTS) + " |"
    lines = [head, "|" + "---|" * (1 + len(etas) * len(TESTS))]
    for m in methods:
        cells = [_fmt(idx[(m, e, t)]["mean"], idx[(m, e, t)]["std"], idx[(m, e, t)].get("n", 2)) if (m, e, t) in idx else ""
                 for e in etas for t in TESTS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    n = max((s["n"] for s in summary), default=0)
    text = [f"Accuracy (%) on the test split, mean ± std over {n} seed{'s' if n != 1 else ''}; η = fraction of training samples "
            f"with {layout['missing']}.", "", *lines, ""]
    if layout["dataset"] == "avmnist-smil" and 0.2 in etas:
        text += ["Beside the paper (av-MNIST, 100 % image + 20 % audio; numbers read from its figure):", "",
                 f"| method | ours {labels['full_only']} | paper | ours {labels['both']} | paper |", "|---|---|---|---|---|"]
        for m in methods:
            if (m, 0.2, "both") not in idx:
                continue
            pm = "smil" if m == "smil_paper" else m
            cells = []
            for t in TESTS:
                s = idx[(m, 0.2, t)]
                p = PAPER_AVMNIST.get((pm, t))
                cells += [_fmt(s["mean"], s["std"], s.get("n", 2)), "" if p is None else f"{p:.1f}"]
            text.append(f"| {m} | " + " | ".join(cells) + " |")
        text.append("")
    v = verdicts(summary)
    if v:
        text += ["SMIL against zero imputation and the AE baseline at η ≤ 20 %:", "", *v, ""]
    return "\n".join(text)


def plot_summary(summary: Sequence[Mapping[str, Any]], layout: Mapping[str, Any], full: str,
                 path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    etas = sorted({s["eta"] for s in summary})
    methods = list(dict.fromkeys(s["method"] for s in summary))
    labels = {"full_only": f"test: {full} only", "both": f"test: {full} + {layout['missing']}"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    from ..plots import style_cycle  # (colour, line style, marker) distinct for any number of methods

    styles = dict(zip(methods, style_cycle(len(methods))))
    colors = {m: st["color"] for m, st in styles.items()}
    for ax, t in zip(axes, TESTS):
        for m in methods:
            pts = sorted((s["eta"], s["mean"], s["std"]) for s in summary if s["method"] == m and s["test"] == t)
            if not pts:
                continue
            x, y, e = (np.array(v) for v in zip(*pts))
            if m in ("lower", "upper"):
                ax.axhline(float(y.mean()), ls="--", color=colors[m], label=f"{m} bound")
            else:
                ax.errorbar(x * 100, y, yerr=e, capsize=3, color=colors[m], ls=styles[m]["linestyle"],
                            marker="o" if styles[m]["marker"] == "None" else styles[m]["marker"], label=m)
        ax.set_title(labels[t])
        ax.set_xlabel(f"η: % of training samples with {layout['missing']}")
        ax.set_xticks([e * 100 for e in etas])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{layout['dataset']}: 100 % {full} + η % {layout['missing']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_missing_study(cfg, out_dir: str | os.PathLike | None = None, progress: bool = True,
                      datasets: dict | None = None) -> StudyResult:
    """``run_compare`` over the study's methods × seeds × η, then the study's table, verdicts and plot."""
    from ..compare import run_compare

    layout = study_layout(cfg)
    out = Path(out_dir or cfg.output_dir)
    board = run_compare(cfg, out, progress=progress, datasets=datasets)
    runs = pd.read_csv(out / "runs.csv")
    mods = sorted({c[len("pattern["):c.index("]")] for c in runs.columns if c.startswith("pattern[")} - {""})
    singles = [m for m in mods if "+" not in m and m != layout["missing"]]
    full = singles[0] if singles else next((m for m in (cfg.model.modalities or []) if m != layout["missing"]), "full")
    if "accuracy" not in {c[5:] for c in runs.columns if c.startswith("test_")}:
        raise ConfigError("missing-study: the metric is accuracy; use a multiclass dataset")
    records = study_records(runs, layout, full)
    summ = summarize(records)
    md = summary_markdown(summ, layout, full)
    paths = {"summary_csv": str(out / "summary.csv"), "summary_md": str(out / "summary.md"),
             "plot": str(out / "accuracy_vs_eta.png"), "leaderboard": str(out / "leaderboard.md")}
    with open(paths["summary_csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "eta", "test", "mean", "std", "n"])
        w.writeheader()
        w.writerows([{**s, "mean": round(s["mean"], 3), "std": round(s["std"], 3)} for s in summ])
    Path(paths["summary_md"]).write_text(md)
    plot_summary(summ, layout, full, paths["plot"])
    return StudyResult(records, summ, md, paths, board)
