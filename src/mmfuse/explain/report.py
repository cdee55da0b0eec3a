"""Dataset-level explanation reports: per-sample tables, breakdowns, figures.

The entry point used by ``mmfuse explain``::

    explain_dataset(
        model,                      # callable: model(MultimodalBatch) -> ModelOutput (.logits [B, C]) or logits
        data,                       # MultimodalDataset / torch Dataset of sample dicts, DataLoader of
                                    # MultimodalBatch, an iterable of batches, or one MultimodalBatch
        method="shapley",           # "shapley": modality-level (absent = batch mask) | "mmshap": feature level
        out_dir="explain",          # created if needed
        *,
        target="predicted",         # "predicted" | "class" | "logit" (see mmfuse.explain.scoring)
        class_index=None,           # int, or "target" to explain each sample's true class (multiclass)
        task=None,                  # "multiclass" | "multilabel" | "regression"; default data.task
                                    # (else model.task, else "multiclass")
        modalities=None,            # players (default all; two names = MM-SHAP pair mode)
        maskers=None,               # mmshap: {modality: FeatureMasker | name | {"kind": ..., **kw}}
        n_permutations=10,          # permutation estimators
        shapley_method="auto",      # shapley: "auto" | "exact" | "permutation"
        max_samples=None,           # stop after this many samples
        batch_size=16,              # when ``data`` is a Dataset
        seed=0,                     # permutations are drawn from torch.Generator().manual_seed(seed)
        n_examples=3,               # mmshap: per-sample figures for the first samples
        class_names=None,           # default: data.class_names when present
        vocab=None,                 # token labels for token bar plots: sequence or callable id -> str
        zero_total="nan",           # share of a sample with no contribution: "nan" (skipped) | "equal"
        device=None,                # move batches there before explaining
        plots=True,
        max_rows=None,              # rows per model call (default: memory budget, ≤ 512)
        ids=None,                   # each sample's identifier, by position (default: from the dataset)
        interactions="auto",        # shapley: also the pairwise Shapley interaction index (exact, same
                                    # coalition evaluations): True | False | "auto" (when exact is used, M ≥ 2)
    ) -> dict

It writes ``per_sample.csv`` (one row per sample, ``sample`` = its position in the iteration
order of ``data``, i.e. the dataset index for a Dataset; ``id`` = the row's identifier in its source
when known: ``ids`` when given, else a dataset's own ids as ``mmfuse predict`` keys rows (a table's
``id`` column, else its row number; :func:`mmfuse.explain.rows.sample_ids`); then target, prediction, correctness, f(full),
f(none), share/contribution per modality), ``breakdown.csv`` (mean ± std share per modality over
all samples, per true class, for correct vs incorrect predictions), ``shares_by_class.png``,
``shares_by_correctness.png`` and, for MM-SHAP, ``examples/sample<k>_<modality>.png`` (patch
heatmaps over the image, coloured bars over tokens / windows). It returns a summary dict with
``method``, ``task``, ``explained``, ``n_samples``, ``modalities``, ``mean_share``, ``std_share``,
``by_class``, ``by_correctness``, ``accuracy``, ``n_evaluations``, ``seconds``, ``out_dir`` and ``files``.

Pairwise modality interactions (``method="shapley"``, at least two modalities, exact enumeration:
``interactions=True``, or ``"auto"`` whenever the Shapley values are computed exactly anyway): the Shapley
interaction index I_ab of every modality pair from the same 2^M coalition evaluations as the values
(:mod:`mmfuse.explain.interaction`). ``per_sample.csv`` gets ``interaction_<a>+<b>`` (signed; the mean over
outputs for a multi-output score); ``interactions.csv`` has one row per (group, level, pair) with columns
``group`` ("all" | "class" | "correctness" | "label" | "output"), ``level``, ``pair`` ("a+b", sorted), ``n``,
``mean``, ``std`` (signed I: > 0 synergy, < 0 redundancy); ``interactions.json`` holds
``{"explained", "pairs", "mean": {pair: I}, "by_class": {class: {pair: I}}, "by_correctness":
{"correct"|"incorrect": {pair: I}}}``, which is also the summary's ``interactions`` entry.

Per task (the score is task-aware, see :mod:`mmfuse.explain.scoring`):

* multiclass: as above;
* multilabel: every label's sigmoid is explained separately; ``per_sample.csv`` has
  ``target[<label>]``, ``predicted[<label>]`` (0/1), ``f_full[<label>]``, ``share_<m>[<label>]``,
  ``value_<m>[<label>]`` and ``share_<m>`` = the mean over labels of the per-label shares;
  ``breakdown.csv`` has one ``label`` row per label (no per-class or correctness rows);
  ``shares_by_label.png``; the summary has ``by_label`` and ``accuracy`` None;
* regression: the prediction itself is explained (each output); ``target`` / ``prediction``
  columns (``[<k>]`` per output when there are several), no class or correctness breakdown, no
  accuracy; the summary reports ``mean_prediction`` instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..batch import MultimodalBatch, collate
from ..errors import ConfigError, DataError, ShapeError
from ..registry import TASKS
from .estimators import check_count, exact_is_cheaper
from .interaction import MAX_MODALITIES, ModalityInteractions, modality_interactions
from .mmshap import FeatureExplanation, MMShapResult, mmshap
from .rows import sample_ids
from .plots import (feature_labels, is_series, modality_display_info, plot_feature_bars, plot_patch_heatmap,
                    plot_series_contributions, plot_share_bars)
from .scoring import make_score_fn
from .shapley import ModalityShapley, modality_shapley, resolve_players

EXPLAIN_METHODS = ("shapley", "mmshap")


def shares_frame(result: ModalityShapley | MMShapResult, targets: Tensor | None = None,
                 predicted: Tensor | None = None, class_names: Sequence[str] | None = None,
                 index: Tensor | None = None, zero_total: str = "nan", task: str = "multiclass",
                 ids: Sequence[Any] | None = None) -> pd.DataFrame:
    """One row per sample: ``sample``, ``id`` (when ``ids`` is given: one per sample), ``target``, ``predicted``, ``correct``, ``f_full``, ``f_base``,
    ``share_<m>``, ``contrib_<m>`` (|φ_m| or Φ_m) and, for modality-level results, ``value_<m>`` (signed φ_m).

    ``task`` multilabel / regression: targets, predictions and scores get one column per output
    (``target[<name>]`` ...; a single regression output keeps the plain names, ``predicted`` is the
    prediction), no ``correct`` column, and per-output ``share_<m>[<name>]`` / ``value_<m>[<name>]``
    next to the means over outputs ``share_<m>`` / ``value_<m>`` / ``contrib_<m>``."""
    B = result.base.shape[0]
    df = pd.DataFrame({"sample": (index if index is not None else torch.arange(B)).cpu().numpy()})
    if ids is not None:
        if len(ids) != B:
            raise ShapeError(f"shares_frame: {len(ids)} ids for {B} samples")
        df["id"] = list(ids)
    if task != "multiclass":
        return _outputs_frame(df, result, targets, predicted, class_names, zero_total, task)
    if targets is not None and targets.dim() == 1:
        df["target"] = targets.cpu().numpy()
        if class_names is not None:
            df["target_name"] = [class_names[int(t)] if 0 <= int(t) < len(class_names) else str(int(t))
                                 for t in targets]
    if predicted is not None:
        df["predicted"] = predicted.cpu().numpy()
        if "target" in df:
            df["correct"] = df["target"] == df["predicted"]
    if result.classes is not None:
        df["explained_class"] = result.classes.cpu().numpy()
    df["f_full"] = result.full.numpy()
    df["f_base"] = result.base.numpy()
    shares = result.shares(zero_total).numpy()
    contrib = result.values.abs() if isinstance(result, ModalityShapley) else result.contributions
    for j, m in enumerate(result.modalities):
        df[f"share_{m}"] = shares[:, j]
        df[f"contrib_{m}"] = contrib[:, j].numpy()
        if isinstance(result, ModalityShapley):
            df[f"value_{m}"] = result.values[:, j].numpy()
    return df


def output_names(n: int, class_names: Sequence[str] | None) -> list[str]:
    """Names of the n outputs (labels / regression outputs): ``class_names`` when it fits, else 0..n-1."""
    if class_names is not None and len(class_names) == n:
        return [str(c) for c in class_names]
    return [str(k) for k in range(n)]


def _columns(df: pd.DataFrame, prefix: str, values: Tensor, names: list[str]) -> None:
    v = values.detach().cpu().double().reshape(len(df), -1).numpy()
    if v.shape[1] == 1 and len(names) <= 1:
        df[prefix] = v[:, 0]
    else:
        for k, n in enumerate(names):
            df[f"{prefix}[{n}]"] = v[:, k]


def _outputs_frame(df: pd.DataFrame, result, targets, predicted, class_names, zero_total: str,
                   task: str) -> pd.DataFrame:
    full = result.full
    multi = full.dim() == 2
    n_out = full.shape[1] if multi else (predicted.reshape(len(df), -1).shape[1] if predicted is not None else 1)
    names = output_names(n_out, class_names)
    if targets is not None:
        _columns(df, "target", targets.float(), names)
    if predicted is not None:
        _columns(df, "predicted" if task == "multilabel" else "prediction", predicted, names)
    if result.classes is not None:
        df["explained_output"] = result.classes.cpu().numpy()
    if multi:
        _columns(df, "f_full", full, names)
        _columns(df, "f_base", result.base, names)
    else:
        df["f_full"] = full.numpy()
        df["f_base"] = result.base.numpy()
    shares = result.shares(zero_total).numpy()
    contrib = result.values.abs() if isinstance(result, ModalityShapley) else result.contributions
    per_out = result.output_shares(zero_total).numpy() if multi else None
    for j, m in enumerate(result.modalities):
        df[f"share_{m}"] = shares[:, j]
        df[f"contrib_{m}"] = (contrib[:, j].mean(-1) if multi else contrib[:, j]).numpy()
        if isinstance(result, ModalityShapley):
            df[f"value_{m}"] = (result.values[:, j].mean(-1) if multi else result.values[:, j]).numpy()
        if multi:
            for k, n in enumerate(names):
                df[f"share_{m}[{n}]"] = per_out[:, j, k]
                if isinstance(result, ModalityShapley):
                    df[f"value_{m}[{n}]"] = result.values[:, j, k].numpy()
    return df


def _stats(df: pd.DataFrame, modalities: Sequence[str], group: str, level: Any) -> dict:
    row: dict[str, Any] = {"group": group, "level": level, "n": len(df)}
    for m in modalities:
        col = df[f"share_{m}"]
        row[f"share_{m}_mean"] = float(col.mean()) if col.notna().any() else float("nan")
        row[f"share_{m}_std"] = float(col.std(ddof=0)) if col.notna().any() else float("nan")
    return row


def breakdown(df: pd.DataFrame, modalities: Sequence[str], task: str = "multiclass",
              labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean ± std share per modality (NaN shares skipped) over all samples, per true class
    (``target_name`` or ``target``), and for correct vs incorrect predictions.

    Only multiclass has classes and correctness; for ``task="multilabel"`` the rows after "all"
    are one ``label`` row per label (its per-label shares ``share_<m>[<label>]``), for regression
    there is only the "all" row (and one ``output`` row per output when there are several).

    Columns: ``group`` ("all" | "class" | "correctness" | "label" | "output"), ``level``, ``n``,
    ``share_<m>_mean``, ``share_<m>_std``.
    """
    rows = [_stats(df, modalities, "all", "all")]
    if task != "multiclass":
        group = "label" if task == "multilabel" else "output"
        for lab in labels or []:
            if all(f"share_{m}[{lab}]" in df for m in modalities):
                sub = df[[f"share_{m}[{lab}]" for m in modalities]]
                sub.columns = [f"share_{m}" for m in modalities]
                rows.append(_stats(sub, modalities, group, lab))
        return pd.DataFrame(rows)
    cls_col = "target_name" if "target_name" in df else ("target" if "target" in df else None)
    if cls_col is not None:
        order = df.sort_values("target")[cls_col].unique() if "target" in df else sorted(df[cls_col].unique())
        rows += [_stats(df[df[cls_col] == c], modalities, "class", c) for c in order]
    if "correct" in df:
        for flag, name in ((True, "correct"), (False, "incorrect")):
            sub = df[df["correct"] == flag]
            if len(sub):
                rows.append(_stats(sub, modalities, "correctness", name))
    return pd.DataFrame(rows)


def interaction_columns(df: pd.DataFrame, res: ModalityInteractions) -> None:
    """Add ``interaction_<a>+<b>`` (signed I_ab; the mean over outputs of a multi-output score) to ``df``."""
    for pair, v in res.pair_values().items():
        df[f"interaction_{pair}"] = (v.mean(-1) if v.dim() == 2 else v).numpy()


def interaction_breakdown(df: pd.DataFrame, pairs: Sequence[str], task: str = "multiclass",
                          labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean ± std interaction per modality pair over all samples, per true class and for correct vs incorrect
    predictions (multiclass), from the ``interaction_<pair>`` columns of ``df``.

    Columns: ``group`` ("all" | "class" | "correctness"), ``level``, ``pair``, ``n``, ``mean``, ``std``."""
    groups: list[tuple[str, Any, pd.DataFrame]] = [("all", "all", df)]
    if task == "multiclass":
        cls_col = "target_name" if "target_name" in df else ("target" if "target" in df else None)
        if cls_col is not None:
            order = df.sort_values("target")[cls_col].unique() if "target" in df else sorted(df[cls_col].unique())
            groups += [("class", c, df[df[cls_col] == c]) for c in order]
        if "correct" in df:
            groups += [("correctness", name, df[df["correct"] == flag])
                       for flag, name in ((True, "correct"), (False, "incorrect")) if (df["correct"] == flag).any()]
    rows = []
    for group, level, sub in groups:
        for p in pairs:
            col = sub[f"interaction_{p}"]
            rows.append({"group": group, "level": level, "pair": p, "n": int(col.notna().sum()),
                         "mean": float(col.mean()) if col.notna().any() else float("nan"),
                         "std": float(col.std(ddof=0)) if col.notna().any() else float("nan")})
    return pd.DataFrame(rows, columns=["group", "level", "pair", "n", "mean", "std"])


def _model_inputs(batch: MultimodalBatch, model: Any) -> MultimodalBatch:
    """``batch`` without the modalities ``model`` does not read (a model trained on a subset of the data's
    modalities, ``model.modalities``): they cannot change its output, so their Shapley value is exactly 0 and they
    are left out of the players rather than encoded by an encoder the model does not have."""
    used = getattr(model, "modalities", None)
    if not isinstance(used, (list, tuple)) or not used or not set(batch.modalities) - set(used):
        return batch
    keep = [m for m in batch.modalities if m in used]
    if not keep:
        raise DataError(f"explain_dataset: the data holds none of the model's modalities {list(used)} "
                        f"(it has {batch.modalities}); explain the model on data with those modalities")
    return MultimodalBatch(inputs={m: batch.inputs[m] for m in keep}, mask={m: batch.mask[m] for m in keep},
                           target=batch.target, lengths={m: v for m, v in batch.lengths.items() if m in keep},
                           index=batch.index)


def _batches(data: Any, batch_size: int) -> Iterator[MultimodalBatch]:
    if isinstance(data, MultimodalBatch):
        yield data
        return
    if isinstance(data, Mapping):
        raise ConfigError(
            f"explain_dataset: got a mapping with keys {sorted(data)[:5]} (dataset splits?); pass one split, "
            "e.g. load_dataset(...)['test']"
        )
    if isinstance(data, Dataset):
        if callable(getattr(data, "batch", None)):  # mmfuse's in-memory datasets
            from ..evaluation import make_loader  # the one loader factory (batches carry the rows' index)

            data = make_loader(data, batch_size)
        else:  # a user's Dataset of sample dicts, with its own collate_fn (which takes a list of samples)
            data = DataLoader(data, batch_size=batch_size, shuffle=False,
                              collate_fn=getattr(data, "collate_fn", None) or collate)
    if not isinstance(data, Iterable):
        raise ConfigError(
            f"explain_dataset: data must be a dataset, a DataLoader of MultimodalBatch or a MultimodalBatch, "
            f"got {type(data).__name__}"
        )
    for k, b in enumerate(data):
        if not isinstance(b, MultimodalBatch):
            raise DataError(
                f"explain_dataset: batch {k} is a {type(b).__name__}, not a MultimodalBatch; "
                "use the dataset's collate_fn (mmfuse.batch.Collator) in the DataLoader"
            )
        yield b


def _example_figures(ex: FeatureExplanation, batch: MultimodalBatch, row: int, sample_id: int, out: Path,
                     vocab: Sequence[str] | Callable[[int], str] | None,
                     info: dict[str, dict] | None = None) -> list[Path]:
    files = []
    for m, lay in ex.layouts.items():
        if lay.n == 0:
            continue
        path = out / f"sample{sample_id}_{m}.png"
        title = f"sample {sample_id} · {m} · Φ={float(ex.values_of(m).abs().sum()):.3g}"
        x = batch.inputs[m][row]
        mi = (info or {}).get(m, {})
        if is_series(m, x, lay.kind, mi) and x.dim() in (1, 2):  # signal against time + φ per window
            length = lay.info.get("length")
            if length is None and batch.lengths and m in batch.lengths:
                length = int(batch.lengths[m][row])
            files.append(plot_series_contributions(
                x, ex.values_of(m), lay.fmap, path, title, length=length, rate=mi.get("rate"),
                time_unit=mi.get("time_unit", "s"), step_name=mi.get("step_name", "time step"), signal_name=m))
        elif lay.kind in ("patches", "video"):
            vm = ex.value_map(m)
            while vm.dim() > 2:  # channels, frames: average the (identical or per-window) values
                vm = vm.nanmean(0)
            img = x if lay.kind == "patches" else x.reshape(-1, *x.shape[-3:]).mean(0)[0]
            files.append(plot_patch_heatmap(img, vm, path, title))
        else:
            vals = ex.values_of(m)
            vals = vals.mean(1) if vals.dim() == 2 else vals  # multi-output: mean φ over outputs
            if lay.kind == "tokens":
                ids = [int(x[p]) for p in lay.info["positions"]]
                labels = [vocab(i) if callable(vocab) else (vocab[i] if vocab is not None and i < len(vocab) else str(i))
                          for i in ids]
                xlabel = "token"
            else:  # the schema's column names when the dataset has them
                labels, xlabel = feature_labels(len(vals), lay.fmap, mi.get("feature_names"))
            files.append(plot_feature_bars(vals, labels, path, title, xlabel))
    return files


def explain_dataset(model: Callable, data: Any, method: str = "shapley", out_dir: str | Path = "explain", *,
                    target: str = "predicted", class_index: int | str | None = None,
                    modalities: Sequence[str] | None = None, maskers: Mapping[str, Any] | None = None,
                    n_permutations: int = 10, shapley_method: str = "auto", max_samples: int | None = None,
                    batch_size: int = 16, seed: int = 0, n_examples: int = 3,
                    class_names: Sequence[str] | None = None, vocab: Any = None, zero_total: str = "nan",
                    device: str | torch.device | None = None, plots: bool = True,
                    max_rows: int | None = None, task: str | None = None,
                    ids: Sequence[Any] | None = None, interactions: bool | str = "auto") -> dict[str, Any]:
    """Explain every sample of ``data`` and write CSV + PNG breakdowns; see the module docstring."""
    if method not in EXPLAIN_METHODS:
        raise ConfigError(f"method must be one of {EXPLAIN_METHODS}, got {method!r}")
    task = task or getattr(data, "task", None) or getattr(model, "task", None) or "multiclass"
    if task not in TASKS:
        raise ConfigError(f"task must be one of {list(TASKS)}, got {task!r}")
    if class_index == "target" and task != "multiclass":
        raise ConfigError(f"class_index='target' explains each sample's true class, which a {task} task does "
                          "not have; give a label / output index, or None to explain every output")
    check_count("batch_size", batch_size)
    check_count("n_permutations", n_permutations)
    check_count("n_examples", n_examples, minimum=0)
    if max_samples is not None:
        check_count("max_samples", max_samples)
    if interactions not in (True, False, "auto"):
        raise ConfigError(f"interactions must be True, False or 'auto', got {interactions!r}")
    if isinstance(class_index, str) and class_index != "target":
        raise ConfigError(f"class_index must be an int, None or 'target', got {class_index!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    class_names = class_names if class_names is not None else getattr(data, "class_names", None)
    ids = list(ids) if ids is not None else (sample_ids(data) if isinstance(data, Dataset) else None)
    if ids is not None and isinstance(data, Dataset) and len(ids) != len(data):
        raise ConfigError(f"explain_dataset: {len(ids)} ids for a dataset of {len(data)} samples; give one per sample")
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    frames, results, files, done = [], [], [], 0
    with_inter = None  # decided on the first batch (the players are known then)
    for batch in _batches(data, batch_size):
        if max_samples is not None and done >= max_samples:
            break
        if max_samples is not None and done + batch.batch_size > max_samples:
            batch = batch.select(slice(0, max_samples - done))
        if device is not None:
            batch = batch.to(device)
        batch = _model_inputs(batch, model)
        ci = class_index
        if class_index == "target":
            if batch.target is None or batch.target.dim() != 1:
                raise DataError("explain_dataset: class_index='target' needs integer class targets Tensor[B]")
            ci = batch.target.long()
        score_fn = make_score_fn(model, target, ci, task)
        logits = score_fn.logits(batch).cpu()
        if task == "multiclass":
            predicted = logits.argmax(1)
        elif task == "multilabel":
            predicted = (logits > 0).long()
        else:
            predicted = logits
        inter = None
        if method == "shapley" and with_inter is None:
            M = len(resolve_players(batch, modalities))
            exact = shapley_method == "exact" or (shapley_method == "auto" and M <= 10
                                                  and exact_is_cheaper(M, n_permutations))
            with_inter = M >= 2 and (interactions is True or (interactions == "auto" and exact and M <= MAX_MODALITIES))
            if with_inter and M > MAX_MODALITIES:
                raise ConfigError(f"explain_dataset: interactions=True with {M} modalities; the interaction index is "
                                  f"exact only, for at most {MAX_MODALITIES}: pass modalities=[...] or interactions=False")
        if method == "shapley" and with_inter:  # φ and the pairwise interactions from one set of evaluations
            inter = modality_interactions(score_fn, batch, modalities, max_rows=max_rows)
            res = inter.shapley()
        elif method == "shapley":
            res = modality_shapley(score_fn, batch, modalities, shapley_method, n_permutations,
                                   generator=gen, max_rows=max_rows)
        else:
            res = mmshap(score_fn, batch, maskers, modalities, n_permutations=n_permutations,
                         generator=gen, max_rows=max_rows)
            if plots:
                for r, ex in enumerate(res.samples):
                    if done + r >= n_examples:
                        break
                    files += _example_figures(ex, batch, r, done + r, out / "examples", vocab,
                                              modality_display_info(data))
        index = torch.arange(done, done + batch.batch_size)  # position in the data's iteration order
        tgt = batch.target.cpu() if batch.target is not None else None
        # the batch's dataset indices (mmfuse loaders carry them) pick the rows' ids; else the position
        pos = batch.index if batch.index is not None and isinstance(data, Dataset) else index
        batch_ids = None if ids is None else [ids[int(i)] for i in pos]
        frame = shares_frame(res, tgt, predicted, class_names, index, zero_total, task, batch_ids)
        if inter is not None:
            interaction_columns(frame, inter)
        frames.append(frame)
        results.append(res)
        done += batch.batch_size
    if not frames:
        raise DataError("explain_dataset: the data produced no samples")
    df = pd.concat(frames, ignore_index=True)
    mods = list(results[0].modalities)
    n_out = int(predicted.reshape(predicted.shape[0], -1).shape[1]) if task != "multiclass" else 0
    labels = output_names(n_out, class_names) if n_out > 1 else []
    table = breakdown(df, mods, task, labels)
    df.to_csv(out / "per_sample.csv", index=False)
    table.to_csv(out / "breakdown.csv", index=False)
    files = [out / "per_sample.csv", out / "breakdown.csv"] + files
    inter_summary = None
    if with_inter:
        import json

        pairs = [c[len("interaction_"):] for c in df.columns if c.startswith("interaction_")]
        itable = interaction_breakdown(df, pairs, task)
        itable.to_csv(out / "interactions.csv", index=False)

        def pair_levels(group: str) -> dict:
            sub = itable[itable["group"] == group]
            return {str(lv): {r["pair"]: float(r["mean"]) for _, r in g.iterrows()} for lv, g in sub.groupby("level", sort=False)}

        inter_summary = {"explained": "pairwise Shapley interaction index (SII) of the modalities, signed: > 0 synergy, "
                                      "< 0 redundancy; mean over samples" + (" and outputs" if task != "multiclass" else ""),
                         "pairs": pairs, "mean": pair_levels("all").get("all", {}),
                         "by_class": pair_levels("class"), "by_correctness": pair_levels("correctness")}
        (out / "interactions.json").write_text(json.dumps(inter_summary, indent=2, default=str))
        files += [out / "interactions.csv", out / "interactions.json"]
    if plots:
        groups = {"multiclass": (("class", "shares_by_class.png"), ("correctness", "shares_by_correctness.png")),
                  "multilabel": (("label", "shares_by_label.png"),),
                  "regression": (("output", "shares_by_output.png"),) if labels else ()}[task]
        for group, name in groups:
            sub = table[table["group"].isin(["all", group])]
            files.append(plot_share_bars(sub, mods, out / name, f"{method}: share per modality by {group}"))
    allrow = table.iloc[0]

    def level_dict(group: str) -> dict:
        sub = table[table["group"] == group]
        return {str(r["level"]): {m: float(r[f"share_{m}_mean"]) for m in mods} for _, r in sub.iterrows()}

    explained = {"multiclass": f"{'logit' if target == 'logit' else 'softmax probability'} of the "
                               f"{'given' if class_index is not None else 'predicted'} class",
                 "multilabel": f"{'logit' if target == 'logit' else 'sigmoid probability'} of "
                               f"{'the given label' if class_index is not None else 'each label separately'}",
                 "regression": "the prediction" + (" (the given output)" if class_index is not None else "")}[task]
    summary = {
        "method": method,
        "task": task,
        "explained": explained,
        "n_samples": int(len(df)),
        "modalities": mods,
        "mean_share": {m: float(allrow[f"share_{m}_mean"]) for m in mods},
        "std_share": {m: float(allrow[f"share_{m}_std"]) for m in mods},
        "by_class": level_dict("class"),
        "by_correctness": level_dict("correctness"),
        "accuracy": float(df["correct"].mean()) if task == "multiclass" and "correct" in df else None,
        "n_evaluations": int(sum(r.n_evaluations for r in results)),
        "seconds": round(time.perf_counter() - t0, 3),
        "out_dir": str(out),
        "files": [str(f) for f in files],
    }
    if task == "multilabel":
        summary["by_label"] = level_dict("label")
    if task == "regression":
        summary["by_output"] = level_dict("output")
        pred_cols = [c for c in df.columns if c == "prediction" or c.startswith("prediction[")]
        summary["mean_prediction"] = {c: float(df[c].mean()) for c in pred_cols}
        del summary["accuracy"]
    if inter_summary is not None:
        summary["interactions"] = inter_summary
    if method == "shapley":
        summary["mean_value"] = {m: float(np.mean(df[f"value_{m}"])) for m in mods}
    return summary
