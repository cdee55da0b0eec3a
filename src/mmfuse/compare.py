"""``mmfuse compare``: a grid of fusion methods × seeds on one dataset, and a leaderboard.

Methods come from the ``compare`` config section: every feature-level operator in ``fusions``,
every late combiner in ``late`` (as ``late:<name>``), ``early`` and ``mmtm`` (intermediate fusion)
when switched on, and one unimodal baseline per modality (``unimodal:<m>``). Every method uses the
encoders of the ``model`` section, so only the fusion differs. The data split is fixed by the
experiment's ``seed``; each run re-seeds initialisation and batch order with its own seed.
With ``compare.workers > 1`` runs go to that many processes (one torch thread each); results do
not depend on the number of workers.

Writes into ``output_dir``: ``runs.csv`` (one row per run), ``leaderboard.csv`` and
``leaderboard.md`` (mean ± std per method, parameters, train time, accuracy per missing-modality
pattern), ``learning_curves.png``, ``leaderboard.png`` and ``tsne.png``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import plots
from .config import ExperimentConfig
from .evaluation import collect, make_loader, primary_metric
from .models import build_model


@dataclass
class Method:
    label: str
    kind: str  # feature | late | early | intermediate | unimodal
    model_update: dict[str, Any]


def methods_of(cfg: ExperimentConfig, modalities: list[str]) -> list[Method]:
    c, out = cfg.compare, []
    for f in c.fusions:
        out.append(Method(f, "feature", {"strategy": "feature", "fusion": {"name": f, "options": c.fusion_options.get(f, {})}}))
    for name in c.late:
        out.append(Method(f"late:{name}", "late", {"strategy": "late", "late": {"name": name, "options": {}}}))
    if c.early:
        out.append(Method("early", "early", {"strategy": "early"}))
    if c.intermediate:
        out.append(Method("mmtm", "intermediate", {"strategy": "intermediate"}))
    if c.unimodal:
        for m in modalities:
            out.append(Method(f"unimodal:{m}", "unimodal", {"strategy": "feature", "modalities": [m],
                                                             "fusion": {"name": "concat", "options": {}}}))
    return out


def _variant(cfg: ExperimentConfig, method: Method, seed: int) -> ExperimentConfig:
    model = cfg.model.model_dump()
    model.update(method.model_update)
    return ExperimentConfig.model_validate({**cfg.model_dump(), "seed": seed, "model": model})


def _fmt(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def run_compare(cfg: ExperimentConfig, out_dir: str | Path | None = None, progress: bool = True,
                datasets: dict | None = None) -> pd.DataFrame:
    """Train every method for every seed; returns the leaderboard (one row per method)."""
    from .training.fit import load_data

    out = Path(out_dir or cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    datasets = datasets if datasets is not None else load_data(cfg)
    train = datasets["train"]
    mods = sorted(cfg.model.modalities or train.modalities)
    methods = methods_of(cfg, mods)
    if not methods:
        from .errors import ConfigError

        raise ConfigError("compare: nothing to compare; list operators in compare.fusions or compare.late, "
                          "or switch on compare.unimodal / early / intermediate")
    task = train.task
    metric, direction = primary_metric(task)
    jobs = [(method, seed) for method in methods for seed in cfg.compare.seeds]
    results: dict[tuple[str, int], dict] = {}
    bar = tqdm(total=len(jobs), desc="compare", unit="run", disable=not progress)

    def done(key, res):
        results[key] = res
        bar.update(1)
        bar.set_postfix_str(f"{key[0]} seed {key[1]}: {metric} {res['row'].get('test_' + metric, float('nan')):.3f}")

    if cfg.compare.workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(cfg.compare.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(datasets,)) as pool:
            futures = {pool.submit(_run_one, cfg, m, seed, metric, None): (m.label, seed) for m, seed in jobs}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    else:
        for m, seed in jobs:
            done((m.label, seed), _run_one(cfg, m, seed, metric, datasets))
    rows, curves, tsne_src = [], {}, {}
    for m, seed in jobs:  # fixed order, whatever order the runs finished in
        r = results[(m.label, seed)]
        rows.append(r["row"])
        curves.setdefault(m.label, []).append(r["curve"])
        if r["state"] is not None:
            model = build_model(_variant(cfg, m, seed).model, train.shapes, int(train.num_classes), task)
            model.load_state_dict(r["state"])
            tsne_src[m.label] = model.eval()
    bar.close()
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False)
    board = leaderboard(runs, metric, direction)
    board.to_csv(out / "leaderboard.csv", index=False)
    (out / "leaderboard.md").write_text(leaderboard_markdown(board, metric, cfg))
    plots.learning_curves(curves, out / "learning_curves.png", f"val_{metric}")
    plots.bar_chart(list(board["method"]), list(board[f"{metric}_mean"]), list(board[f"{metric}_std"].fillna(0)),
                    out / "leaderboard.png", metric, highlight={m for m in board["method"] if m.startswith("unimodal:")})
    if cfg.compare.tsne and task == "multiclass":
        _tsne(board, tsne_src, datasets, cfg, out)
    (out / "summary.json").write_text(json.dumps(summary(board, metric, direction), indent=2))
    return board


_WORKER_DATA: dict | None = None


def _init_worker(datasets) -> None:
    """Each worker process: one torch thread (the runs themselves are the parallelism)."""
    import torch

    global _WORKER_DATA
    torch.set_num_threads(1)
    _WORKER_DATA = datasets


def _run_one(cfg: ExperimentConfig, method: Method, seed: int, metric: str, datasets) -> dict:
    """Train one (method, seed) run; returns its leaderboard row, learning curve and (for t-SNE) weights."""
    from .training.fit import fit

    datasets = datasets if datasets is not None else _WORKER_DATA
    vcfg = _variant(cfg, method, seed)
    t0 = time.perf_counter()
    res = fit(vcfg, datasets, save=False, progress=False,
              evaluate_patterns=cfg.compare.missing_patterns and method.kind != "unimodal")
    row = {"method": method.label, "kind": method.kind, "seed": seed, "params": res.params,
           "train_seconds": res.train_seconds, "best_epoch": res.best_epoch, "wall_seconds": time.perf_counter() - t0}
    row.update({f"test_{k}": v for k, v in res.test.get("metrics", {}).items()})
    for pat, mets in res.test.get("patterns", {}).items():
        row[f"pattern[{pat}]_{metric}"] = mets.get(metric, float("nan"))
    keep = seed == cfg.compare.seeds[0] and cfg.compare.tsne and method.kind in ("feature", "unimodal")
    return {"row": row, "curve": [h.get(f"val_{metric}", float("nan")) for h in res.history],
            "state": {k: v.detach().clone() for k, v in res.model.state_dict().items()} if keep else None}


def leaderboard(runs: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    cols = [c for c in runs.columns if c.startswith("test_") or c.startswith("pattern[")]
    agg = []
    for method, g in runs.groupby("method", sort=False):
        r = {"method": method, "kind": g["kind"].iloc[0], "seeds": len(g), "params": int(g["params"].iloc[0]),
             "train_seconds": float(g["train_seconds"].mean())}
        for c in cols:
            name = c[5:] if c.startswith("test_") else c
            v = g[c].astype(float)
            r[f"{name}_mean"], r[f"{name}_std"] = float(v.mean()), float(v.std(ddof=0))
        agg.append(r)
    board = pd.DataFrame(agg)
    return board.sort_values(f"{metric}_mean", ascending=(direction == "min")).reset_index(drop=True)


def summary(board: pd.DataFrame, metric: str, direction: str) -> dict:
    fused = board[~board["kind"].isin(["unimodal"])]
    uni = board[board["kind"] == "unimodal"]
    out = {"metric": metric, "best_method": board["method"].iloc[0]}
    if len(fused) and len(uni):
        bf, bu = fused.iloc[0], uni.iloc[0]
        sign = 1 if direction == "max" else -1
        out.update({"best_fusion": bf["method"], "best_fusion_mean": bf[f"{metric}_mean"], "best_fusion_std": bf[f"{metric}_std"],
                    "best_unimodal": bu["method"], "best_unimodal_mean": bu[f"{metric}_mean"], "best_unimodal_std": bu[f"{metric}_std"],
                    "margin": sign * (bf[f"{metric}_mean"] - bu[f"{metric}_mean"])})
    return out


def leaderboard_markdown(board: pd.DataFrame, metric: str, cfg: ExperimentConfig) -> str:
    pats = [c[:-5] for c in board.columns if c.startswith("pattern[") and c.endswith("_mean")]
    extra = [m for m in ("macro_f1", "auroc", "f1_macro", "pearson_r") if f"{m}_mean" in board.columns and m != metric]
    head = ["#", "method", metric] + extra[:2] + ["params", "train s"] + [p.replace(f"_{metric}", "") for p in pats]
    lines = [f"Dataset `{cfg.data.name}` {cfg.data.options or ''}; seeds {cfg.compare.seeds}; "
             f"test {metric} mean ± std over seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in board.iterrows():
        cells = [str(i + 1), r["method"], _fmt(r[f"{metric}_mean"], r[f"{metric}_std"])]
        cells += [_fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in extra[:2]]
        cells += [f"{int(r['params']):,}", f"{r['train_seconds']:.1f}"]
        cells += [_fmt(r.get(f"{p}_mean", float("nan")), r.get(f"{p}_std", float("nan"))) for p in pats]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("`pattern[x]`: test accuracy with only modalities x present (the others masked absent at test time).")
    return "\n".join(lines) + "\n"


def _tsne(board, models: dict, datasets, cfg: ExperimentConfig, out: Path) -> None:
    feature = [m for m in board["method"] if m in models and not m.startswith("unimodal:")]
    if not feature:
        return
    best = models[feature[0]]
    test = datasets.get("test") or datasets["val"]
    n = min(cfg.compare.tsne_samples, len(test))
    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(rng.choice(len(test), n, replace=False))
    sub = test.subset(idx) if hasattr(test, "subset") else _Subset(test, idx)
    res = collect(best, make_loader(sub, cfg.data.eval_batch_size), embeddings=True)
    panels = {f"fused ({feature[0]})": res["fused"]}
    for k, v in res.items():
        if k.startswith("emb_"):
            panels[f"{k[4:]} embedding (same model)"] = v
    plots.tsne_panels(panels, res["target"], out / "tsne.png", cfg.seed, getattr(test, "class_names", None))


class _Subset:
    """A view of some rows of a dataset that keeps its collate_fn."""

    def __init__(self, ds, idx):
        self.ds, self.idx = ds, [int(i) for i in idx]
        self.collate_fn = ds.collate_fn

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.ds[self.idx[i]]
