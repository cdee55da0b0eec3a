"""``mmfuse compare``: methods of any model family × seeds (× grid points) on the same data, and a leaderboard.

Methods (``compare.methods``), each a config overlay on the base config:

=========================  ==========================================================================
``fusion:<operator>``      ``family: fusion, strategy: feature`` with a ``FUSIONS`` operator
``fusion:late``            late fusion with ``model.late`` (default combiner ``mean_prob``)
``late:<combiner>``        late fusion with a ``LATE_COMBINERS`` entry
``fusion:early``           early fusion (``model.early``)
``intermediate:<block>``   ``family: intermediate`` with an ``INTERACTIONS`` block (``intermediate`` = mmtm)
``mea`` / ``smil``         that family with its defaults and the base's shared keys (mea: no encoders)
``ngiam:<setting>``        ``family: ngiam, setting: fusion | cross_modality | shared``
``unimodal:<modality>``    feature fusion (concat) on that one modality
any ``compare.overlays``   ``name -> overlay``: nested sections or dotted keys, e.g.
                           ``{model.missing.imputer: zero, data.missing.present_fraction: 1.0}``;
                           sections merge key by key, an empty mapping clears one
=========================  ==========================================================================

When a method changes ``model.family``, only the keys every family shares (modalities, encoders,
head, missing, init_from) are kept from the base model section, and ``training.scheme`` /
``scheme_options`` go back to the family default unless the overlay sets them. Without
``compare.methods`` the older switches (``fusions``, ``late``, ``early``, ``intermediate``,
``unimodal``) give the methods, labelled ``concat``, ``late:mean_prob``, ``early``, ``mmtm``,
``unimodal:<m>``.

``compare.grid`` (dotted key -> values) adds axes: every method × seed runs at every grid point
(applied before the method's overlay, so an overlay can pin a grid key). The data seed is the
base config's (``data.seed`` or ``seed``); each run re-seeds initialisation and batch order with its
own seed. Every run goes through :func:`mmfuse.fit`; as soon as it finishes its result is stored in
``runs/<key>.json`` (atomically; the key a hash of the run's resolved config) with its checkpoint in
``runs/<key>/checkpoint``, and a rerun into the same folder trains only runs not yet stored (it prints
``k of n runs already done``; a run stopped mid-training continues from its last finished epoch).
SIGTERM / SIGINT end the worker processes and stop with exit code 143 / 130; the stored runs stay.
All method names, overlays, grid points and models are validated before any training.

Writes into ``output_dir``: ``runs/``, ``runs.csv`` (one row per run), ``leaderboard.csv`` and
``leaderboard.md`` (one row per grid point and method: mean ± std over seeds, parameters, train
time, the metric per missing-modality pattern), ``learning_curves.png``, ``leaderboard.png``,
``tsne.png``, ``summary.json`` and ``best/checkpoint``: the best method's run (first grid point, first seed),
usable by ``mmfuse evaluate / predict / explain`` without retraining (``best_checkpoint`` in the summary).
Without ``compare.save_checkpoints`` only each method's first-seed run at the first grid point keeps its
checkpoint; the other runs' folders are removed at the end.

The fair protocol (issue 14):

- ``compare.tuning.trials: N`` (:mod:`mmfuse.tuning`): every method × grid point gets the same N Optuna trials
  (seeded TPE; each trial an ordinary stored run with early stopping on ``val_<metric>``; studies in
  ``OUT/tuning.db``, resumable), then its best setting is retrained on every seed of ``compare.seeds``; those
  runs make the leaderboard. Trial runs keep their ``runs/<key>.json``; their folders are removed.
- Paired tests (:mod:`mmfuse.stats`, ``compare.test: ttest | wilcoxon``, ``compare.alpha``): each method
  against the best method of its grid point, paired by seed, Holm-corrected.
- Convergence (:func:`convergence`): a method is ``converged`` when every seed's run stopped early or had its
  best validation epoch before its last ``patience`` epochs.
- ``compare.ensemble: {size, top}`` (:mod:`mmfuse.ensemble`): a Caruana ensemble per seed over the top methods'
  stored predictions (``runs/<key>.preds.npz``: ``val_scores``, ``val_target``, ``test_scores``,
  ``test_target``, raw outputs of the best weights), one more leaderboard row of kind ``ensemble``.

Files that other tools read (the HTML report) and their columns:

- ``runs.csv``: one row per run: ``method``, ``kind``, ``seed``, the grid keys, ``run`` (the key), ``params``,
  ``train_seconds``, ``best_epoch`` (0-based), ``epochs_run``, ``max_epochs``, ``patience`` (0 = none),
  ``wall_seconds``, ``n_train``, ``test_<metric>`` for every metric, ``pattern[<mods>]_<metric>`` (simulated),
  ``observed[<mods>]_<metric>`` / ``observed[<mods>]_n`` (real), ``<split>_<modality>_present`` / ``_masked``;
  from the run's diagnostics: ``chance[<m>]``, ``grad_ratio[<m>]``, ``collapsed[<m>]`` (the share of m's encoder
  output dimensions constant over the test rows, :func:`mmfuse.diagnostics.encoder_collapse`).
- ``leaderboard.csv``: one row per grid point and method, best first (the ensemble row last): the grid keys,
  ``method``, ``kind``, ``seeds``, ``params``, ``train_seconds``, ``<metric>_mean`` / ``<metric>_std`` for every
  test metric and pattern column, ``vs_best`` (``best`` | ``≈ best`` | ``worse`` | ``untested`` | ``—`` for the
  ensemble), ``p`` and ``p_holm`` (raw and Holm-corrected p against the best), ``converged`` (``converged`` |
  ``not converged (still improving at epoch E of N)`` | ``unknown``).
- ``summary.json`` (strict JSON, NaN written as null): ``metric``, ``best_method``, ``grid_point``,
  ``best_fusion`` / ``best_unimodal`` (+ ``_mean`` / ``_std``), ``margin``, ``budget`` (``trials_per_method``,
  ``trial_max_epochs``, ``max_epochs``, ``patience``, ``seeds``, ``test``, ``alpha``, ``workers``,
  ``wall_seconds`` (this invocation), ``tuning_wall_seconds``, ``final_runs_compute_seconds``,
  ``trial_runs_compute_seconds`` (sums of the stored runs' own wall times)), ``paired_test`` (``test``,
  ``alpha``, ``correction``, ``methods``: label -> ``mark``, ``p``, ``p_holm``), ``convergence`` (label ->
  mark), ``tuning`` (when tuned: per method ``study``, ``trials``, ``completed``, ``best_value``,
  ``best_params``, ``space``, ``trial_runs``), ``ensemble`` (when on: ``label``, ``mean_weights``,
  ``per_seed``), ``best_checkpoint``, ``best_run``, ``best_seed``, ``skipped``; ``diagnostics`` is reserved for
  the per-run diagnostics section (issue 14 item 2). Paths in it (``best_checkpoint`` = ``best/checkpoint``,
  ``tuning.storage``) and ``runs/<key>.json``'s ``checkpoint`` are relative to the study folder (``OUT``), so a
  moved or copied folder still works: resolve them as ``OUT / path``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from .config import ExperimentConfig, FAMILY_CONFIGS, NgiamModelConfig, _ModelBase, parse_config
from .errors import ConfigError
# pandas, tqdm, plots and evaluation are imported inside the functions that run a study, so that validating a
# config (which checks compare.methods through this module) stays as quick as importing torch

SHARED_MODEL_KEYS = tuple(_ModelBase.model_fields)
NGIAM_SETTINGS = NgiamModelConfig.model_fields["setting"].annotation.__args__
METHOD_FORMS = ("fusion:<operator>", "fusion:late", "fusion:early", "late:<combiner>", "intermediate:<block>",
                "mea", "smil", "ngiam:<setting>", "unimodal:<modality>", "<a name of compare.overlays>")


@dataclass
class Method:
    label: str
    kind: str  # feature | late | early | intermediate | unimodal | mea | smil | ngiam | overlay
    overlay: dict[str, Any]  # nested config sections, e.g. {"model": {"family": "intermediate"}}
    modality: str | None = None  # unimodal:<modality>

    @property
    def model_update(self) -> dict[str, Any]:  # the older name: the overlay's model section
        return self.overlay.get("model", {})


# --------------------------------------------------------------------------- method names
def _registries():
    from . import registry
    from .config import _ensure_registries

    _ensure_registries()
    return registry


def known_method_names(compare: dict) -> list[str]:
    """Every spelled-out method name (for close-match suggestions)."""
    reg = _registries()
    return (list(compare.get("overlays") or {}) + [f"fusion:{f}" for f in reg.FUSIONS.list()] + ["fusion:late", "fusion:early"]
            + [f"late:{c}" for c in reg.LATE_COMBINERS.list()] + [f"intermediate:{b}" for b in reg.INTERACTIONS.list()]
            + ["mea", "smil"] + [f"ngiam:{s}" for s in NGIAM_SETTINGS] + ["unimodal:<modality>"])


def method_problems(compare: Any) -> list[str]:
    """One line per bad ``compare.methods`` / ``compare.grid`` entry (a raw or validated compare section)."""
    c = compare.model_dump() if hasattr(compare, "model_dump") else dict(compare or {})
    names, out = c.get("methods"), []
    for key, values in (c.get("grid") or {}).items():
        if isinstance(values, list) and not values:
            out.append(f"compare.grid.{key}: expected a non-empty list of values, got []")
    if names is None:
        return out
    seen = set()
    for i, name in enumerate(names if isinstance(names, list) else []):
        if name in seen:
            out.append(f"compare.methods[{i}]: {name!r} is listed twice")
        seen.add(name)
        try:
            resolve_method(name, c)
        except ConfigError as exc:
            out.append(f"compare.methods[{i}]: {exc}")
    if isinstance(names, list) and not names:
        out.append("compare.methods: empty; list methods such as fusion:concat, fusion:late, intermediate:mmtm, "
                   "unimodal:<modality>, or remove the key to use compare.fusions / late / unimodal")
    return out


def resolve_method(name: str, compare: dict) -> Method:
    """The overlay of one method name; an unknown name raises ConfigError with the closest names."""
    reg = _registries()
    overlays = compare.get("overlays") or {}
    fusion_options = compare.get("fusion_options") or {}
    if not isinstance(name, str):
        raise ConfigError(f"a method name must be a string, got {name!r}")
    if name in overlays:
        ov = overlays[name]
        if not isinstance(ov, dict):
            raise ConfigError(f"compare.overlays.{name}: expected a mapping of config keys, got {ov!r}")
        return Method(name, "overlay", nest(ov))
    fam, _, arg = name.partition(":")
    bad = None
    if fam == "fusion" and arg in ("late", "early"):
        return Method(name, arg, {"model": {"family": "fusion", "strategy": arg}})
    if fam == "fusion" and arg:
        if arg in reg.FUSIONS:
            return Method(name, "feature", {"model": {"family": "fusion", "strategy": "feature",
                                                      "fusion": {"name": arg, "options": fusion_options.get(arg, {})}}})
        bad = f"unknown fusion operator {arg!r}"
    elif fam == "late" and arg:
        if arg in reg.LATE_COMBINERS:
            return Method(name, "late", {"model": {"family": "fusion", "strategy": "late", "late": {"name": arg, "options": {}}}})
        bad = f"unknown late combiner {arg!r}"
    elif fam == "intermediate":
        block = arg or "mmtm"
        if block in reg.INTERACTIONS:
            return Method(name, "intermediate", {"model": {"family": "intermediate", "block": block}})
        bad = f"unknown interaction block {block!r}"
    elif fam == "mea" and not arg:  # MEA has its own per-modality front end: no encoders
        return Method(name, fam, {"model": {"family": fam, "encoders": {}}})
    elif fam == "smil" and not arg:
        return Method(name, fam, {"model": {"family": fam}})
    elif fam == "ngiam":
        setting = arg or "fusion"
        if setting in NGIAM_SETTINGS:
            return Method(name, "ngiam", {"model": {"family": "ngiam", "setting": setting}})
        bad = f"unknown Ngiam setting {setting!r} (one of {list(NGIAM_SETTINGS)})"
    elif fam == "unimodal" and arg:
        return Method(name, "unimodal", {"model": {"family": "fusion", "strategy": "feature", "modalities": [arg],
                                                   "fusion": {"name": "concat", "options": {}}}}, modality=arg)
    from .registry import suggestion

    hint = suggestion(name, known_method_names(compare))
    raise ConfigError(f"unknown method {name!r}" + (f" ({bad})" if bad else "") + f"; {hint} "
                      f"(method forms: {', '.join(METHOD_FORMS)})")


def methods_of(cfg: ExperimentConfig, modalities: list[str]) -> list[Method]:
    """The methods of ``cfg.compare``: ``methods`` when set, else the older switches."""
    c = cfg.compare
    raw = c.model_dump()
    if c.methods is not None:
        problems = method_problems(raw)
        if problems:
            raise ConfigError("invalid compare section:\n  " + "\n  ".join(problems))
        return [resolve_method(n, raw) for n in c.methods]
    out = []
    for f in c.fusions:
        m = resolve_method(f"fusion:{f}", raw)
        out.append(Method(f, m.kind, m.overlay))
    out += [resolve_method(f"late:{name}", raw) for name in c.late]
    if c.early:
        out.append(Method("early", "early", {"model": {"family": "fusion", "strategy": "early"}}))
    if c.intermediate:
        out.append(Method("mmtm", "intermediate", {"model": {"family": "intermediate", "block": "mmtm"}}))
    if c.unimodal:
        out += [resolve_method(f"unimodal:{m}", raw) for m in modalities]
    return out


# --------------------------------------------------------------------------- overlays and run configs
def nest(overlay: dict) -> dict:
    """Dotted keys (``model.missing.imputer``) -> nested sections; nested sections are kept."""
    out: dict = {}
    for key, value in overlay.items():
        parts = str(key).split(".")
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"overlay key {key!r}: {p!r} is set both as a value and as a section")
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(cur.get(leaf), dict):
            cur[leaf] = merge(cur[leaf], nest(value))
        else:
            cur[leaf] = nest(value) if isinstance(value, dict) else copy.deepcopy(value)
    return out


def merge(base: dict, overlay: dict) -> dict:
    """A deep merge: sections merge key by key, any other value replaces; an empty mapping clears a section
    (``model.encoders: {}`` for a family without encoders, such as mea), and a component naming another
    registry entry (``head: {name: linear}``) replaces the base's component with its options."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        old = out.get(k)
        deep = isinstance(v, dict) and v and isinstance(old, dict) and not ("name" in v and v["name"] != old.get("name"))
        out[k] = merge(old, v) if deep else copy.deepcopy(v)
    return out


def grid_points(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Every combination of ``compare.grid`` values ([{}] without a grid)."""
    keys = list(cfg.compare.grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(cfg.compare.grid[k] for k in keys))]


def run_config(cfg: ExperimentConfig, method: Method, seed: int, point: dict[str, Any] | None = None) -> ExperimentConfig:
    """The resolved config of one run: base config, grid point, method overlay, seed; validated."""
    raw = cfg.model_dump()
    raw["compare"] = {}
    raw["seed"] = seed
    if raw["data"].get("seed") is None:
        raw["data"]["seed"] = cfg.seed
    base_family = raw["model"]["family"]
    raw = merge(raw, nest(dict(point or {})))
    ov = method.overlay
    family = (ov.get("model") or {}).get("family", raw["model"].get("family"))
    if family != raw["model"].get("family") or family != base_family:
        unused = set(getattr(FAMILY_CONFIGS.get(family), "unused_shared_keys", ()))  # e.g. mea/ngiam: no encoders
        raw["model"] = {k: v for k, v in raw["model"].items() if k in SHARED_MODEL_KEYS and k not in unused}
        training = ov.get("training") or {}
        raw["training"]["scheme"] = training.get("scheme", "auto")
        raw["training"]["scheme_options"] = training.get("scheme_options", {})
    raw = merge(raw, ov)
    try:
        return parse_config(raw)
    except ConfigError as exc:
        where = f"method {method.label!r}" + (f" at grid point {point}" if point else "")
        raise ConfigError(f"{where}: {exc}") from None


def run_key(cfg: ExperimentConfig) -> str:
    """A hash of everything in a run's resolved config that can change its result."""
    d = cfg.model_dump()
    for k in ("output_dir", "compare"):
        d.pop(k, None)
    d["training"].pop("progress", None)
    d["training"].pop("memory_limit_gb", None)  # a budget, not a setting that changes results
    text = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def kind_of(cfg: ExperimentConfig, modalities: list[str]) -> str:
    m = cfg.model
    if len(m.modalities or modalities) == 1:
        return "unimodal"
    return m.strategy if m.family == "fusion" else m.family


def _data_key(cfg: ExperimentConfig, raw_only: bool = False) -> str:
    d = cfg.data.model_dump(exclude={"batch_size", "eval_batch_size", "num_workers"} | ({"missing"} if raw_only else set()))
    return json.dumps(d, sort_keys=True, default=str)


def _grid_value(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v, sort_keys=True)


MAX_PATTERN_COLUMNS = 15  # leaderboard.md shows every simulated pattern up to M = 4 modalities, then 2M + 1 of them


def _fmt(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.4f} ± " + ("—" if std is None or math.isnan(std) else f"{std:.4f}")


# --------------------------------------------------------------------------- the study
@dataclass
class _Job:
    method: Method
    seed: int
    point: dict[str, Any]
    cfg: ExperimentConfig
    key: str
    data_key: str
    kind: str = ""


@dataclass
class _Plan:
    jobs: list[_Job]
    datasets: dict[str, dict]
    reports: dict[str, list[dict]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # method label -> why it would not fit in memory


def plan(cfg: ExperimentConfig, datasets: dict | None = None) -> _Plan:
    """Validate every method, grid point and model and load every distinct data config; nothing trains."""
    from .datasets.pairing import apply_missing, missing_reports
    from .models import build_model
    from .training.fit import data_seed, load_data

    problems = method_problems(cfg.compare)
    if problems:
        raise ConfigError("invalid compare section:\n  " + "\n  ".join(problems))
    points = grid_points(cfg)
    base_cfgs = {}
    for point in points:  # the data of every grid point, loaded once per distinct data config
        pc = run_config(cfg, Method("base", "base", {}), cfg.seed, point)
        base_cfgs[_data_key(pc)] = pc
    raw_cache: dict[str, dict] = {}
    loaded: dict[str, dict] = {}
    for key, pc in base_cfgs.items():
        rk = _data_key(pc, raw_only=True)
        if rk not in raw_cache:
            if datasets is not None:
                if raw_cache:
                    raise ConfigError("compare: the grid changes data.name / options / seed, but the datasets were "
                                      "given in memory; only data.missing can vary over given datasets")
                raw_cache[rk] = dict(datasets)
            else:
                raw_cache[rk] = load_data(pc.model_copy(update={"data": pc.data.model_copy(update={"missing": None})}))
        loaded[key] = apply_missing(raw_cache[rk], pc.data.missing, data_seed(pc))
    first = next(iter(loaded.values()))["train"]
    methods = methods_of(cfg, sorted(cfg.model.modalities or first.modalities))
    if not methods:
        raise ConfigError("compare: nothing to compare; list methods in compare.methods (or compare.fusions / "
                          "compare.late), or switch on compare.unimodal / early / intermediate")
    for m in methods:
        if m.modality is not None and m.modality not in first.modalities:
            from .registry import suggestion

            raise ConfigError(f"compare.methods: {m.label!r}: the data has no modality {m.modality!r}; "
                              f"{suggestion(m.modality, list(first.modalities))}")
    from .guards import input_dtypes, memory_problem

    jobs: list[_Job] = []
    built: set[str] = set()
    too_big: dict[str, str] = {}  # model key -> the memory guard's message
    skipped: dict[str, str] = {}
    processes = max(1, min(cfg.compare.workers, len(points) * len(methods) * len(cfg.compare.seeds)))
    for point in points:
        for m in methods:
            for seed in cfg.compare.seeds:
                rc = run_config(cfg, m, seed, point)
                dk = _data_key(rc)
                if dk not in loaded:  # the overlay changed the data (e.g. an upper bound without data.missing)
                    rk = _data_key(rc, raw_only=True)
                    if rk not in raw_cache:
                        if datasets is not None:
                            raise ConfigError(f"method {m.label!r} changes data.name / options / seed, but the "
                                              "datasets were given in memory")
                        raw_cache[rk] = load_data(rc.model_copy(update={"data": rc.data.model_copy(update={"missing": None})}))
                    loaded[dk] = apply_missing(raw_cache[rk], rc.data.missing, data_seed(rc))
                train = loaded[dk]["train"]
                mkey = json.dumps(rc.model.model_dump(), sort_keys=True, default=str) + dk
                if mkey not in built and mkey not in too_big:  # bad options fail before any training
                    task = getattr(train, "task", "multiclass")
                    # a model that would not fit in memory is skipped (and reported), estimated without building it
                    err = memory_problem(rc, train.shapes, int(train.num_classes), task, processes=processes,
                                         dtypes=input_dtypes(train))
                    if err is not None:
                        too_big[mkey] = str(err)
                    else:
                        build_model(rc.model, train.shapes, int(train.num_classes), task)
                        built.add(mkey)
                if mkey in too_big:
                    skipped.setdefault(_display(m.label, point), too_big[mkey])
                    continue
                kind = kind_of(rc, sorted(train.modalities))
                jobs.append(_Job(m, seed, point, rc, run_key(rc), dk, kind))
    reports = {k: missing_reports(v) for k, v in loaded.items()}
    if not jobs and skipped:
        raise ConfigError("compare: no method fits in memory:\n  " + "\n  ".join(f"{k}: {v}" for k, v in skipped.items()))
    return _Plan(jobs, loaded, reports, skipped)


def run_compare(cfg: ExperimentConfig, out_dir: str | Path | None = None, progress: bool = True,
                datasets: dict | None = None) -> pd.DataFrame:
    """Train every (grid point, method, seed) not stored yet; returns the leaderboard (one row per grid
    point and method; ``runs.csv`` in the folder holds the runs).

    Each run is persisted as it finishes: ``runs/<key>.json`` (written atomically) and its checkpoint in
    ``runs/<key>/checkpoint``; a run interrupted mid-training continues from its per-epoch ``runs/<key>/last``
    on a rerun. A rerun into the same folder trains only the runs not stored yet and says so. The best
    method's run (first grid point, first seed) is copied to ``OUT/best/checkpoint`` (``best_checkpoint`` in
    ``summary.json``), ready for ``mmfuse evaluate / predict / explain``; without ``compare.save_checkpoints``
    only each method's first-seed run at the first grid point keeps its checkpoint. SIGTERM / SIGINT stop
    the study: worker processes are ended, stored runs stay, and
    :class:`mmfuse.training.signals.TrainingInterrupted` is raised."""
    import pandas as pd
    from tqdm.auto import tqdm
    from . import plots
    from .evaluation import primary_metric
    from .training.checkpoint import FolderLock

    out = Path(out_dir or cfg.output_dir)
    warn_few_seeds(cfg)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    pl = plan(cfg, datasets)
    train0 = next(iter(pl.datasets.values()))["train"]
    task = train0.task
    metric, direction = primary_metric(task)
    # the budget's wall time: from the data loading (t_start, set before plan) to the leaderboard (t-SNE, plots and the
    # HTML report come after it)
    with FolderLock(out):  # a second compare into the same folder fails at once, naming the holder
        tuning_info = None
        if cfg.compare.tuning.trials > 0:  # equal-budget tuning first; its best settings are then retrained
            pl.jobs, tuning_info = _tune(cfg, pl, out, metric, direction, progress, tqdm)
        results = _train_runs(cfg, pl, out, metric, progress, tqdm)
        rows, curves = [], {}
        for job in pl.jobs:  # fixed order, whatever order the runs finished in
            r = results[job.key]
            label = _display(job.method.label, job.point)
            row = {"method": job.method.label, "kind": job.kind, "seed": job.seed,
                   **{k: _grid_value(v) for k, v in job.point.items()}, "run": job.key, **r["metrics"]}
            rows.append(row)
            curves.setdefault(label, []).append(r["curve"])
        runs = pd.DataFrame(rows)
        _write_atomic(out / "runs.csv", runs.to_csv(index=False))
        grid_cols = list(cfg.compare.grid)
        board = annotate(leaderboard(runs, metric, direction, grid_cols), runs, cfg, metric, direction, grid_cols)
        ranked = board  # the methods (the ensemble row, when any, is appended below and never "best")
        ens = _ensemble(cfg, pl, out, board, task, metric, direction) if cfg.compare.ensemble.size else None
        if ens is not None:
            board = pd.concat([board, pd.DataFrame([ens["row"]])], ignore_index=True)
        budget = _budget(cfg, runs, results, tuning_info, time.perf_counter() - t_start, out)
        _write_atomic(out / "leaderboard.csv", board.to_csv(index=False))
        md = leaderboard_markdown(board, metric, cfg, pl.reports, budget=budget,
                                  dataset=None if datasets is None else _dataset_name(train0))
        if pl.skipped:  # methods that would not fit in memory: reported, not trained
            md += "\nSkipped (would not fit in memory; estimated before building, nothing was trained):\n" + "".join(
                f"- `{k}`: {v}\n" for k, v in pl.skipped.items())
            import warnings

            for k, v in pl.skipped.items():
                warnings.warn(f"compare: skipped {k}: {v}", stacklevel=2)
        _write_atomic(out / "leaderboard.md", md)
        plots.learning_curves(curves, out / "learning_curves.png", f"val_{metric}", seeds=list(cfg.compare.seeds))
        names = [_display(r["method"], {k: r[k] for k in grid_cols}) for _, r in board.iterrows()]
        plots.bar_chart(names, list(board[f"{metric}_mean"]), list(board[f"{metric}_std"].fillna(0)),
                        out / "leaderboard.png", metric, highlight={n for n, k in zip(names, board["kind"]) if k == "unimodal"},
                        seeds=list(cfg.compare.seeds))
        if cfg.compare.tsne and task == "multiclass":
            _tsne(board, pl, cfg, out)
        summ = summary(ranked, metric, direction, grid_cols, runs=runs, test=cfg.compare.test)
        summ["budget"] = budget
        summ["paired_test"] = {"test": cfg.compare.test, "alpha": cfg.compare.alpha, "correction": "holm",
                               "paired_by": "seed", "warning": few_seeds_warning(cfg), "methods": {
                                   _display(r["method"], {c: r[c] for c in grid_cols}):
                                       {"mark": r["vs_best"], "p": _num(r["p"]), "p_holm": _num(r["p_holm"])}
                                   for _, r in ranked.iterrows()}}
        summ["convergence"] = {_display(r["method"], {c: r[c] for c in grid_cols}): r["converged"]
                               for _, r in ranked.iterrows()}
        if tuning_info is not None:
            summ["tuning"] = tuning_info
        if ens is not None:
            summ["ensemble"] = ens["info"]
        summ["diagnostics"] = compare_diagnostics(ranked, runs, metric, direction, grid_cols)
        if any(d["ignored"] or d.get("collapsed") for d in summ["diagnostics"]):
            _write_atomic(out / "leaderboard.md", md + diagnostics_markdown(summ["diagnostics"]))
        best = _best_job(pl, summ, cfg)
        summ.update(_publish_best(best, pl, out, results[best.key]))
        if not cfg.compare.save_checkpoints:  # kept: each method's first-seed run at the first grid point (so
            # that a rerun with more seeds or methods finds its best run's checkpoint without training it again)
            first = pl.jobs[0].point
            _prune_checkpoints(pl, out, keep={best.key} | {j.key for j in pl.jobs if j.point == first
                                                           and j.seed == cfg.compare.seeds[0]})
        if tuning_info is not None:  # the trials' run folders (checkpoints); their runs/<key>.json stay
            final = {j.key for j in pl.jobs}
            for t in tuning_info["methods"].values():
                _remove(*(out / "runs" / k for k in t["trial_runs"] if k not in final))
        if pl.skipped:
            summ["skipped"] = dict(pl.skipped)
        _write_atomic(out / "summary.json", json.dumps(_strict_json(summ), indent=2, default=str, allow_nan=False))
    return board


def _tuned_method(m: Method, params: dict, extra: dict) -> Method:
    """The method with a trial's (or the best trial's) parameters and the tuning protocol's training keys."""
    return Method(m.label, m.kind, merge(m.overlay, nest({**params, **extra})), m.modality)


def _tune(cfg: ExperimentConfig, pl: _Plan, out: Path, metric: str, direction: str, progress: bool,
          tqdm) -> tuple[list[_Job], dict]:
    """``compare.tuning``: the same number of Optuna trials for every (grid point, method), each trial one
    stored run; returns the retraining jobs (best parameters × every seed) and what the studies found."""
    import optuna

    from . import tuning as T

    tc = cfg.compare.tuning
    n = tc.trials
    patience = cfg.training.patience or tc.patience
    trial_epochs = tc.epochs or cfg.training.max_epochs
    protocol = {"training.patience": patience, "training.monitor": f"val_{metric}"}
    # a trial's only output is its objective: no per-run diagnostics (the retrained runs keep the config's)
    trial_extra = {"training.diagnostics": False} if "diagnostics" in type(cfg.training).model_fields else {}
    seed0 = cfg.compare.seeds[0]
    groups: dict[tuple, _Job] = {}
    for j in pl.jobs:  # the first job of each (method, grid point): its seed-0 config
        groups.setdefault((j.method.label, json.dumps(j.point, sort_keys=True, default=str)), j)
    states, problems = [], []
    for j in groups.values():  # every search space is checked before any trial runs
        base = run_config(cfg, j.method, seed0, j.point)
        space, bad = T.method_space(cfg, j.method, j.point, base, data=pl.datasets[j.data_key]["train"])
        problems += bad
        states.append({"job": j, "space": space, "base_key": run_key(base), "base": base.model_dump(), "trials": []})
    if problems:
        raise ConfigError("compare.tuning: invalid search space:\n  " + "\n  ".join(dict.fromkeys(problems)))
    for st in states:
        j = st["job"]
        st["name"] = T.study_name(j.method.label, j.point)
        fp = T.fingerprint(st["space"], {"epochs": trial_epochs, "patience": patience, "seed": seed0,
                                         "monitor": protocol["training.monitor"]}, st["base_key"])
        st["study"] = T.open_study(out, st["name"], direction, tc.seed, fp)
        if not st["study"].trials:  # trial 0: the method's own (untuned) setting
            st["study"].enqueue_trial(T.config_trial(st["space"], st["base"]))
        k = min(len(T.done_trials(st["study"])), n)
        print(f"compare: tuning {st['name']}: {k} of {n} trials done", flush=True)
    left = sum(max(0, n - len(T.done_trials(st["study"]))) for st in states)
    bar = tqdm(total=left, desc="tuning", unit="trial", disable=not progress or not left)
    t0 = time.perf_counter()
    try:
        while True:
            batch = []
            for st in states:  # one trial per study per round: the rounds run in compare.workers processes
                study, j = st["study"], st["job"]
                if len(T.done_trials(study)) >= n:
                    continue
                stale = T.stale_trials(study)  # asked but never told (the study stopped): run it again
                if stale:
                    number, params = stale[0].number, dict(stale[0].params)
                else:
                    T.reseed(study, tc.seed)  # trial n's sampling: a function of (seed, n, finished trials)
                    trial = study.ask()
                    number, params = trial.number, T.suggest(trial, st["space"])
                m = _tuned_method(j.method, params, {**protocol, **trial_extra, "training.max_epochs": trial_epochs})
                try:
                    rc = run_config(cfg, m, seed0, j.point)
                except ConfigError as exc:  # marked FAIL (never left RUNNING), named with its parameters
                    study.tell(number, state=optuna.trial.TrialState.FAIL)
                    raise _trial_error(st["name"], number, params, exc) from None
                batch.append((st, number, params, _Job(j.method, seed0, j.point, rc, run_key(rc), j.data_key, j.kind)))
            if not batch:
                break
            try:
                results = _train_runs(cfg, _Plan([b[3] for b in batch], pl.datasets, pl.reports), out, metric,
                                      progress, tqdm, bar=bar, quiet=True)
            except Exception as exc:  # a trial's setting failed: FAIL it (named), the others stay to be rerun
                from .training.signals import TrainingInterrupted

                if isinstance(exc, TrainingInterrupted):
                    raise  # stopped: the asked trials stay RUNNING and are rerun with their parameters
                _fail_trials(cfg, batch, out, pl, exc)
                raise
            for st, number, params, job in batch:
                value = T.objective(results[job.key]["curve"], direction)
                if math.isfinite(value):
                    st["study"].tell(number, value)
                else:  # a diverged run: a failed trial (it counts in the budget)
                    st["study"].tell(number, state=optuna.trial.TrialState.FAIL)
    finally:
        bar.close()
    info: dict[str, Any] = {}
    jobs: list[_Job] = []
    best: dict[tuple, dict] = {}
    for key, st in zip(groups, states):
        trials = [t for t in T.done_trials(st["study"]) if t.state == optuna.trial.TrialState.COMPLETE]
        params = dict(st["study"].best_trial.params) if trials else {}
        best[key] = params
        keys = set()
        for t in T.done_trials(st["study"]):
            m = _tuned_method(st["job"].method, dict(t.params), {**protocol, **trial_extra,
                                                                   "training.max_epochs": trial_epochs})
            keys.add(run_key(run_config(cfg, m, seed0, st["job"].point)))
        info[_display(st["job"].method.label, st["job"].point)] = {
            "study": st["name"], "trials": len(T.done_trials(st["study"])), "completed": len(trials),
            "best_value": st["study"].best_value if trials else None, "best_params": params,
            # the best trial is the enqueued first one (the config's own setting): tuning found nothing better
            "best_is_config": bool(trials) and "fixed_params" in st["study"].best_trial.system_attrs,
            "space": st["space"], "trial_runs": sorted(keys)}
    for j in pl.jobs:
        key = (j.method.label, json.dumps(j.point, sort_keys=True, default=str))
        m = _tuned_method(j.method, best[key], {**protocol, "training.max_epochs": cfg.training.max_epochs})
        rc = run_config(cfg, m, j.seed, j.point)
        jobs.append(_Job(j.method, j.seed, j.point, rc, run_key(rc), j.data_key, j.kind))
    return jobs, {"methods": info, "trials_per_method": n, "trial_max_epochs": trial_epochs, "patience": patience,
                  "sampler": f"{tc.sampler} (seed {tc.seed})", "storage": "tuning.db",
                  "tuning_wall_seconds": time.perf_counter() - t0}


def _trial_error(study: str, number: int, params: dict, exc: Exception) -> ConfigError:
    return ConfigError(f"compare.tuning: trial {number} of study {study!r} failed with parameters "
                       f"{json.dumps(params, default=str)}: {exc}\n  the trial is marked FAIL; narrow the range of "
                       "these keys in compare.tuning.space (or the entry's search_space) and rerun")


def _fail_trials(cfg: ExperimentConfig, batch: list, out: Path, pl: _Plan, exc: Exception) -> None:
    """After an error (not a stop signal) while training a tuning round: mark the failing trial(s) FAIL and raise an error
    naming their parameters. Sequential training stops at the failing run: the first one not stored. In worker
    processes: the unstored trials whose model does not build; if none, every unstored trial of the round."""
    import optuna

    from . import tuning as T

    left = [b for b in batch if not (out / "runs" / f"{b[3].key}.json").is_file()]
    if cfg.compare.workers > 1 and len(batch) > 1:
        culprits = [b for b in left if T.build_problem(b[3].cfg, pl.datasets[b[3].data_key]["train"])] or left
    else:
        culprits = left[:1]
    for st, number, params, job in culprits:
        st["study"].tell(number, state=optuna.trial.TrialState.FAIL)
    if culprits:
        st, number, params, _ = culprits[0]
        raise _trial_error(st["name"], number, params, exc) from None


def _write_atomic(path: Path, text: str) -> None:
    """Write a text file whole or not at all (see :func:`mmfuse._io.atomic_write`)."""
    from ._io import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(text), fsync=True)


def _train_runs(cfg: ExperimentConfig, pl: _Plan, out: Path, metric: str, progress: bool, tqdm,
                preds: bool = True, bar=None, quiet: bool = False) -> dict[str, dict]:
    """The result of every run of the plan: read from ``runs/<key>.json`` when stored, else trained (in
    ``compare.workers`` processes) and stored as soon as it finishes. ``preds``: the runs write their val / test
    predictions (``runs/<key>.preds.npz``); ``bar``: an outer progress bar to advance (tuning's rounds);
    ``quiet``: no "k of n runs already done" line."""
    from .training.signals import TrainingInterrupted, signal_name

    results: dict[str, dict] = {}
    for job in pl.jobs:  # resume: runs already stored in this folder
        path = out / "runs" / f"{job.key}.json"
        if job.key not in results and path.is_file():
            try:
                results[job.key] = json.loads(path.read_text())
            except ValueError:  # unreadable (written by an older version without the atomic rename): rerun it
                pass
    todo, seen = [], set()
    for job in pl.jobs:
        if job.key not in results and job.key not in seen:
            todo.append(job)
            seen.add(job.key)
    n = len(set(j.key for j in pl.jobs))
    if results and not quiet:
        print(f"compare: {len(results)} of {n} runs already done in {out / 'runs'}, training the other {n - len(results)}",
              flush=True)
    own_bar = bar is None
    if own_bar:
        bar = tqdm(total=len(todo), desc="compare", unit="run", disable=not progress or not todo)

    def done(job: _Job, res: dict) -> None:
        res["config"] = job.cfg.model_dump()
        if not cfg.compare.save_checkpoints:  # the per-epoch resume state of a finished run is not needed
            _remove(out / "runs" / job.key / "last", out / "runs" / job.key / "best")
        _write_atomic(out / "runs" / f"{job.key}.json", json.dumps(res, indent=1, default=float))
        results[job.key] = res
        bar.update(1)
        bar.set_postfix_str(f"{job.method.label} seed {job.seed}: {metric} "
                            f"{res['metrics'].get('test_' + metric, float('nan')):.3f}")

    def interrupted(signum: int) -> TrainingInterrupted:
        left = n - len(results)
        return TrainingInterrupted(signum, f"interrupted by {signal_name(signum)}; {len(results)} of {n} runs are "
                                           f"stored in {out / 'runs'}; rerun the same command to train the other {left}")

    args = [(j.cfg, j.kind, metric, j.data_key, cfg.compare.missing_patterns, str(out / "runs" / j.key), preds)
            for j in todo]
    try:
        with _stop_signals() as stop:
            if cfg.compare.workers > 1 and len(todo) > 1:
                _run_pool(cfg.compare.workers, pl.datasets, todo, args, done, stop, interrupted)
            else:
                for j, a in zip(todo, args):
                    if stop:
                        raise interrupted(stop[0])
                    try:
                        res = _run_one(*a, datasets=pl.datasets)
                    except TrainingInterrupted as exc:  # a signal during fit: its last epoch is in runs/<key>/last
                        raise interrupted(exc.signum) from None
                    done(j, res)
                if stop:
                    raise interrupted(stop[0])
    finally:
        if own_bar:
            bar.close()
    return results


@contextlib.contextmanager
def _stop_signals():
    """Record SIGTERM / SIGINT in the yielded list instead of dying (main thread only). :func:`mmfuse.fit`
    installs its own handlers while a run trains in this process and restores these afterwards."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        received.append(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _run_pool(workers: int, datasets: dict, todo: list[_Job], args: list[tuple], done, stop: list[int],
              interrupted) -> None:
    """Train ``todo`` in worker processes, storing each run as it finishes. On a stop signal, or any error,
    the workers are ended before this returns (none outlives the study)."""
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(datasets, os.getpid()))
    try:
        futures = {pool.submit(_run_one, *a): j for j, a in zip(todo, args)}
        pending = set(futures)
        while pending:
            if stop:
                raise interrupted(stop[0])
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in finished:
                try:
                    res = fut.result()
                except BrokenProcessPool:
                    if stop:
                        raise interrupted(stop[0]) from None
                    raise ConfigError("compare: a worker process died (killed, or out of memory?); the finished "
                                      "runs are stored, rerun the same command to train the others "
                                      "(or set compare.workers: 1)") from None
                if "interrupted" in res:  # the worker itself got the signal (e.g. Ctrl-C to the process group)
                    raise interrupted(res["interrupted"])
                done(futures[fut], res)
    finally:
        _end_workers(pool)


def _end_workers(pool: ProcessPoolExecutor, grace: float = 10.0) -> None:
    """Stop every worker process of ``pool``: SIGTERM (a run in training stops after its batch, its last
    finished epoch saved for a rerun), then SIGKILL after ``grace`` seconds."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)


def _remove(*paths: Path) -> None:
    import shutil

    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _best_job(pl: _Plan, summ: dict, cfg: ExperimentConfig) -> _Job:
    """The run whose checkpoint stands for the study: the best method at the first grid point, first seed."""
    point = pl.jobs[0].point
    for j in pl.jobs:
        if j.point == point and j.method.label == summ["best_method"] and j.seed == cfg.compare.seeds[0]:
            return j
    return next(j for j in pl.jobs if j.method.label == summ["best_method"])


def _publish_best(job: _Job, pl: _Plan, out: Path, result: dict) -> dict:
    """Copy the best run's checkpoint to ``OUT/best/checkpoint`` (atomically), training it again only when its
    checkpoint was removed by an earlier study in this folder whose best method differed."""
    import os
    import shutil

    src = out / "runs" / job.key / "checkpoint"
    if not (src / "config.json").is_file():
        print(f"compare: the checkpoint of the best run ({job.method.label}, seed {job.seed}) was not kept; training "
              f"it again into {src.parent}", flush=True)
        from .training.fit import fit

        fit(job.cfg, pl.datasets[job.data_key], out_dir=src.parent, save=True, progress=False,
            evaluate_patterns=False)
        _remove(src.parent / "last", src.parent / "best")
    dest = out / "best"
    tmp = out / f".best.{os.getpid()}.tmp"
    _remove(tmp)
    tmp.mkdir()
    shutil.copytree(src, tmp / "checkpoint")
    info = {"method": job.method.label, "seed": job.seed, "grid_point": job.point, "run": job.key,
            "metrics": result.get("metrics", {})}
    (tmp / "run.json").write_text(json.dumps(info, indent=1, default=float))
    old = out / f".best.{os.getpid()}.old"
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    _remove(old)
    # relative to the study folder (summary.json's paths): a moved or copied folder still works
    return {"best_checkpoint": "best/checkpoint", "best_run": job.key, "best_seed": job.seed}


def _prune_checkpoints(pl: _Plan, out: Path, keep: set[str]) -> None:
    """Remove the run folders (checkpoints, logs) of this study's finished runs, except ``keep``."""
    for key in {j.key for j in pl.jobs} - keep:
        if (out / "runs" / f"{key}.json").is_file():
            _remove(out / "runs" / key)


def _display(label: str, point: dict) -> str:
    return label if not point else f"{label} @ " + ", ".join(f"{k.split('.')[-1]}={_grid_value(v)}" for k, v in point.items())


_WORKER_DATA: dict | None = None


def _init_worker(datasets, parent: int | None = None) -> None:
    """Each worker process: one torch thread (the runs themselves are the parallelism); Ctrl-C in the terminal
    (SIGINT to the whole process group) is left to the parent, which ends the workers."""
    import torch

    global _WORKER_DATA
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _WORKER_DATA = datasets


def _die_with_parent(parent: int | None = None) -> None:
    """A worker ends when its parent dies, even by SIGKILL (e.g. the kernel's out-of-memory killer), instead of
    living on as an orphan holding its memory: Linux's PR_SET_PDEATHSIG, plus a watchdog thread elsewhere (and
    as a second guard) that exits once the parent's pid is no longer our parent."""
    import os
    import sys
    import threading

    parent = os.getppid() if parent is None else int(parent)  # the pid the parent passed: no race with its death
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1: SIGTERM when the parent thread exits
        except OSError:  # pragma: no cover - no libc: the watchdog below still covers it
            pass
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watchdog, name="mmfuse-parent-watchdog", daemon=True).start()


def _run_one(rc: ExperimentConfig, kind: str, metric: str, data_key: str, patterns: bool, run_dir: str,
             preds: bool = True, datasets: dict | None = None) -> dict:
    """Train one run through :func:`mmfuse.fit` into ``run_dir`` (per-epoch checkpoints; a run interrupted
    earlier continues from ``run_dir/last``); returns its metrics, learning curve and checkpoint path.
    ``preds``: also write the best weights' raw outputs on the val and test rows to ``<run_dir>.preds.npz``
    (atomically; arrays ``val_scores``, ``val_target``, ``test_scores``, ``test_target``; the ensemble's input).
    In a worker process, a stop signal during training ends the worker once its last epoch is saved."""
    from .datasets.pairing import missing_reports
    from .training.fit import fit

    data = (datasets if datasets is not None else _WORKER_DATA)[data_key]
    t0 = time.perf_counter()
    from .training.signals import TrainingInterrupted

    try:
        res = fit(rc, data, out_dir=run_dir, save=True, resume=True, progress=False,
                  evaluate_patterns=patterns and kind != "unimodal")
    except TrainingInterrupted as exc:
        if datasets is None:  # a worker: the parent is ending the study; leave at once (nothing else to run)
            import os

            os._exit(exc.exit_code)
        raise
    if preds:
        _write_preds(res.model, data, rc, Path(f"{run_dir}.preds.npz"))
    mets = {"params": res.params, "train_seconds": res.train_seconds, "best_epoch": res.best_epoch,
            "epochs_run": len(res.history), "max_epochs": rc.training.max_epochs,
            "patience": rc.training.patience or 0,
            "wall_seconds": time.perf_counter() - t0, "n_train": len(data["train"])}
    for rep in missing_reports(data):
        mets[f"{rep['split']}_{rep['modality']}_present"] = rep["present_after"]
        mets[f"{rep['split']}_{rep['modality']}_masked"] = rep["masked"]
    mets.update({f"test_{k}": v for k, v in res.test.get("metrics", {}).items()})
    for pat, m in res.test.get("patterns", {}).items():
        mets[f"pattern[{pat}]_{metric}"] = m.get(metric, float("nan"))
    for pat, o in res.test.get("observed", {}).items():  # test rows grouped by the modalities they really have
        mets[f"observed[{pat}]_{metric}"] = o["metrics"].get(metric, float("nan"))
        mets[f"observed[{pat}]_n"] = o["n"]
    if "rows_without_modality" in res.test:
        mets["test_rows_no_modality"] = res.test["rows_without_modality"]["n"]
    diag = res.test.get("diagnostics") or {}  # the run's diagnostics (training.diagnostics): compare's section
    for m, c in (diag.get("chance") or {}).items():
        mets[f"chance[{m}]"] = c
    for m, r in ((diag.get("grad_norm") or {}).get("mean_ratio") or {}).items():
        mets[f"grad_ratio[{m}]"] = r
    for m, st in (diag.get("collapse") or {}).items():  # share of m's embedding dimensions constant on the test rows
        mets[f"collapsed[{m}]"] = st["fraction"]
    return {"metrics": mets, "curve": [h.get(f"val_{metric}", float("nan")) for h in res.history],
            # relative to the study folder (run_dir = OUT/runs/<key>), like summary.json's paths
            "checkpoint": _relative(res.checkpoint, Path(run_dir).parent.parent) if res.checkpoint else None}


def _relative(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX separators), or as given when it is not under ``root``."""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _write_preds(model, data: dict, rc: ExperimentConfig, path: Path) -> None:
    """The model's raw outputs (logits / regression outputs) and targets on val and test, one .npz, atomically."""
    from ._io import atomic_write
    from .evaluation import collect, make_loader

    arrays = {}
    for split in ("val", "test"):
        ds = data.get(split)
        if ds is None or len(ds) == 0:
            continue
        r = collect(model, make_loader(ds, rc.data.eval_batch_size))
        arrays[f"{split}_scores"] = r["scores"]
        if "target" in r:
            arrays[f"{split}_target"] = r["target"]

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def leaderboard(runs: pd.DataFrame, metric: str, direction: str, grid: list[str] | None = None) -> pd.DataFrame:
    """Mean ± std over seeds per (grid point, method), best first within each grid point."""
    import pandas as pd
    grid = list(grid or [])
    cols = [c for c in runs.columns if c.startswith(("test_", "pattern[", "observed[")) and c != "test_rows_no_modality"]
    agg = []
    for keys, g in runs.groupby(grid + ["method"], sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        r = dict(zip(grid + ["method"], keys))
        r.update({"kind": g["kind"].iloc[0], "seeds": len(g), "params": int(g["params"].iloc[0]),
                  "train_seconds": float(g["train_seconds"].mean())})
        for c in cols:
            name = c[5:] if c.startswith("test_") else c
            v = g[c].astype(float)
            r[f"{name}_mean"], r[f"{name}_std"] = float(v.mean()), float(v.std(ddof=0))
        agg.append(r)
    board = pd.DataFrame(agg)
    order = {c: {v: i for i, v in enumerate(dict.fromkeys(runs[c]))} for c in grid}
    for c in grid:
        board[f"_{c}"] = board[c].map(order[c])
    board = board.sort_values([f"_{c}" for c in grid] + [f"{metric}_mean"],
                              ascending=[True] * len(grid) + [direction == "min"], kind="stable")
    return board.drop(columns=[f"_{c}" for c in grid]).reset_index(drop=True)


def _point_mask(df: pd.DataFrame, row, grid: list[str]):
    mask = np.ones(len(df), bool)
    for c in grid:
        mask &= (df[c] == row[c]).to_numpy()
    return mask


def convergence(runs: pd.DataFrame, default_patience: int) -> str:
    """``converged`` when every seed's run stopped early or its best validation epoch lies before its last
    ``patience`` epochs (``training.patience``, else ``default_patience``); else ``not converged (still improving
    at epoch E)`` with E (1-based) the latest best epoch among the runs that were still improving."""
    cols = ("epochs_run", "best_epoch", "max_epochs", "patience")
    if len(runs) == 0 or any(c not in runs.columns or runs[c].isna().any() for c in cols):
        return "unknown"  # runs stored by an older mmfuse, without their epoch counts
    late, ran = [], 0
    for _, r in runs.iterrows():
        e, b = int(r["epochs_run"]), int(r["best_epoch"])
        ran = max(ran, e)
        pat = int(r["patience"]) or default_patience
        stopped = int(r["patience"]) > 0 and e < int(r["max_epochs"])
        if not (stopped or b < e - pat):
            late.append(b + 1)
    return "converged" if not late else f"not converged (still improving at epoch {max(late)} of {ran})"


def few_seeds_warning(cfg: ExperimentConfig) -> str | None:
    """The leaderboard's / summary's warning when ``compare.seeds`` has fewer than 3 seeds."""
    from .stats import MIN_SEEDS

    n = len(cfg.compare.seeds)
    if n >= MIN_SEEDS:
        return None
    tuned = " (the tuned settings are retrained on them)" if cfg.compare.tuning.trials > 0 else ""
    return (f"only {n} seed{'' if n == 1 else 's'}{tuned}: the paired test cannot separate methods with fewer "
            f"than {MIN_SEEDS} seeds, so no method is marked `≈ best` or `worse` (`untested ({n} "
            f"seed{'' if n == 1 else 's'})`); use compare.seeds with at least {MIN_SEEDS} seeds.")


_SEEDS_WARNED: set = set()  # (config source, seeds, trials) already warned about in this process


def warn_few_seeds(cfg: ExperimentConfig, once: bool = True) -> str | None:
    """Warn (``UserWarning``) when the study tunes (``compare.tuning.trials`` > 0) but retrains on fewer than 3
    seeds: allowed (smoke runs), but the paired test cannot separate the methods. Emitted by :func:`run_compare`
    when the study starts, once per process and config (``once``); a config read by ``load_config`` is named and
    the warning points at its ``seeds`` line (``cfg.yaml:7: UserWarning: ...``), else at the caller of
    ``run_compare``. Returns the message (None: nothing to warn about)."""
    import re
    import warnings

    from .config import config_source
    from .stats import MIN_SEEDS

    seeds, trials = list(cfg.compare.seeds), cfg.compare.tuning.trials
    if trials <= 0 or len(seeds) >= MIN_SEEDS:
        return None
    src = config_source(cfg)
    key = (src, tuple(seeds), trials)
    if once and key in _SEEDS_WARNED:
        return None
    _SEEDS_WARNED.add(key)
    msg = (f"{'config ' + repr(src) + ': ' if src else ''}compare.seeds: {len(seeds)} seed(s) {seeds} with "
           f"compare.tuning.trials > 0 ({trials}): the chosen settings are retrained on fewer than {MIN_SEEDS} seeds, "
           "so the paired test cannot separate the methods (marked 'untested'); use at least 3 seeds, e.g. "
           "compare.seeds: [0, 1, 2]")
    if src is None:
        warnings.warn(msg, UserWarning, stacklevel=3)  # the caller of run_compare
        return msg
    line = 1
    try:
        text = Path(src).read_text().splitlines()
        hit = [i for i, t in enumerate(text, 1) if re.search(r"\bseeds\s*:", t)] or \
              [i for i, t in enumerate(text, 1) if re.match(r"\s*compare\s*:", t)]
        line = hit[0] if hit else 1
    except OSError:
        pass
    warnings.warn_explicit(msg, UserWarning, src, line, module="mmfuse.compare")
    return msg


def annotate(board: pd.DataFrame, runs: pd.DataFrame, cfg: ExperimentConfig, metric: str, direction: str,
             grid: list[str] | None = None) -> pd.DataFrame:
    """Add to the leaderboard: ``vs_best`` (best | ≈ best | worse | untested (n seeds): fewer than 3 seeds, no
    test; :func:`few_seeds_warning`), ``p`` / ``p_holm`` (the paired test against
    the best method of the grid point, by seed, Holm-corrected across the methods; :mod:`mmfuse.stats`) and
    ``converged`` (:func:`convergence`)."""
    from .stats import compare_to_best

    grid = list(grid or [])
    board = board.copy()
    board["vs_best"], board["p"], board["p_holm"], board["converged"] = "", float("nan"), float("nan"), ""
    pat = cfg.training.patience or cfg.compare.tuning.patience
    col = f"test_{metric}"
    done: set = set()
    for i, row in board.iterrows():
        pkey = tuple(row[c] for c in grid)
        sub = runs[_point_mask(runs, row, grid)]
        board.at[i, "converged"] = convergence(sub[sub["method"] == row["method"]], pat)
        if pkey in done:
            continue
        done.add(pkey)
        rows = board[_point_mask(board, row, grid)]
        best = rows["method"].iloc[0]
        seeds = list(dict.fromkeys(sub["seed"]))
        scores = {m: [float(g.set_index("seed")[col].get(s, float("nan"))) if col in g else float("nan")
                      for s in seeds] for m, g in sub.groupby("method", sort=False)}
        res = compare_to_best(scores, best, direction, cfg.compare.test, cfg.compare.alpha)
        for j in rows.index:
            r = res.get(board.at[j, "method"], {})
            board.at[j, "vs_best"], board.at[j, "p"], board.at[j, "p_holm"] = r.get("mark", ""), r.get("p"), r.get("p_holm")
    return board


def compare_diagnostics(board: pd.DataFrame, runs: pd.DataFrame, metric: str, direction: str,
                        grid: list[str] | None = None) -> list[dict]:
    """Per grid point: the unimodal gap (each fused method against each ``unimodal:<m>`` method), the
    ignored-modality warnings (a fused method whose only-``m``-present test metric is near chance while the
    ``unimodal:<m>`` model is far above it; :func:`mmfuse.diagnostics.leaderboard_ignored`) and the mean
    encoder gradient-norm ratio per method (``grad_ratio[<m>]`` of the runs, mean over seeds); ``collapsed``: the
    collapsed-encoder warnings per method (``collapsed[<m>]`` of the runs, :func:`mmfuse.diagnostics.runs_collapsed`)."""
    from .diagnostics import leaderboard_ignored, runs_collapsed, unimodal_gap

    grid = list(grid or [])
    out = []
    for keys, rows in board.groupby(grid, sort=False, dropna=False) if grid else [((), board)]:
        keys = keys if isinstance(keys, tuple) else (keys,)
        point = {c: _grid_value(v) for c, v in zip(grid, keys)}
        sub = runs[_point_mask(runs, rows.iloc[0], grid)] if grid else runs
        ch_cols = [c for c in sub.columns if c.startswith("chance[")]
        chance = {c[7:-1]: float(sub[c].dropna().iloc[0]) for c in ch_cols if sub[c].notna().any()}
        recs = rows.to_dict("records")
        gap = unimodal_gap(recs, metric, direction)
        ignored = leaderboard_ignored(recs, metric, direction, chance) if chance and gap["unimodal"] else {}
        ratio_cols = [c for c in sub.columns if c.startswith("grad_ratio[")]
        grad = {m: {c[11:-1]: float(g[c].mean()) for c in ratio_cols if g[c].notna().any()}
                for m, g in sub.groupby("method", sort=False)} if ratio_cols else {}
        out.append({"point": point, "metric": metric, "unimodal_gap": gap, "chance": chance, "ignored": ignored,
                    "grad_norm_ratio": {m: v for m, v in grad.items() if v}, "collapsed": runs_collapsed(sub)})
    return out


def diagnostics_markdown(diags: list[dict]) -> str:
    """The ignored-modality warnings under the leaderboard."""
    lines = ["", "Diagnostics (ignored modalities, collapsed encoders):"]
    for d in diags:
        at = f" at {d['point']}" if d["point"] else ""
        for key in ("ignored", "collapsed"):
            for method, warns in (d.get(key) or {}).items():
                for w in warns:
                    lines.append(f"- warning{at}: `{method}`: {w['message']}")
    return "\n".join(lines) + "\n"


def _ensemble(cfg: ExperimentConfig, pl: _Plan, out: Path, board: pd.DataFrame, task: str, metric: str,
              direction: str) -> dict | None:
    """``compare.ensemble``: a Caruana ensemble per seed over the top methods of the first grid point, ranked
    by their validation metric (stored val predictions, mean over seeds; never by test); the leaderboard row
    and the summary's record."""
    from . import ensemble as E

    first = pl.jobs[0].point
    labels = [m for m in board["method"] if m in {j.method.label for j in pl.jobs if j.point == first}]
    labels = list(dict.fromkeys(labels))
    val: dict[str, dict] = {}
    test: dict[str, dict] = {}
    y = {}
    for j in pl.jobs:
        f = out / "runs" / f"{j.key}.preds.npz"
        if j.point != first or j.method.label not in labels or not f.is_file():
            continue
        with np.load(f) as z:
            if "test_scores" not in z or "val_target" not in z:
                continue
            val.setdefault(j.method.label, {})[j.seed] = z["val_scores"]
            test.setdefault(j.method.label, {})[j.seed] = z["test_scores"]
            y.setdefault("val", z["val_target"])
            y.setdefault("test", z["test_target"])
    val = {m: val[m] for m in labels if m in val}
    if not val:
        return None
    ranked = E.rank_by_val(val, y["val"], task, metric, direction)  # candidates chosen on validation
    top = [m for m, _ in ranked][: cfg.compare.ensemble.top]
    val = {m: val[m] for m in top}
    res = E.seedwise(val, test, y["val"], y["test"], task, metric, direction, cfg.compare.ensemble.size,
                     cfg.compare.seeds)
    if not res["per_seed"]:
        return None
    mean_w: dict[str, float] = {}
    for p in res["per_seed"]:
        for m, w in p["weights"].items():
            mean_w[m] = mean_w.get(m, 0.0) + w / len(res["per_seed"])
    mean_w = dict(sorted(mean_w.items(), key=lambda kv: -kv[1]))
    row: dict[str, Any] = {"method": E.label(mean_w), "kind": "ensemble", "seeds": len(res["per_seed"]),
                           "params": int(sum(board.loc[board["method"] == m, "params"].iloc[0] for m in mean_w)),
                           "train_seconds": float(sum(board.loc[board["method"] == m, "train_seconds"].iloc[0]
                                                      for m in mean_w)),
                           "vs_best": "—", "converged": "—"}
    for c in first:
        row[c] = _grid_value(first[c])
    for name in res["per_seed"][0]["test"]:
        v = np.array([p["test"].get(name, np.nan) for p in res["per_seed"]], float)
        row[f"{name}_mean"], row[f"{name}_std"] = float(np.nanmean(v)), float(np.nanstd(v))
    info = {"label": row["method"], "size": cfg.compare.ensemble.size, "candidates": list(val),
            "candidate_val": {m: _num(v) for m, v in ranked}, "ranked_by": f"val_{metric}",
            "mean_weights": mean_w, "per_seed": res["per_seed"], f"test_{metric}_mean": row[f"{metric}_mean"],
            f"test_{metric}_std": row[f"{metric}_std"]}
    return {"row": row, "info": info}


def _num(v) -> float | None:
    """A float for JSON (NaN -> null: summary.json stays strict JSON)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _strict_json(x):
    """NaN / inf -> null, numpy scalars -> Python numbers, recursively (summary.json is strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict_json(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(x)
    return x


def _budget(cfg: ExperimentConfig, runs: pd.DataFrame, results: dict, tuning_info: dict | None,
            wall: float, out: Path | None = None) -> dict:
    """The study's budget, stated on the leaderboard and in summary.json. ``wall_seconds``: this invocation
    (small when resumed); ``*_compute_seconds``: the sum of the stored runs' own wall times (any invocation)."""
    t = tuning_info or {}
    compute = float(runs["wall_seconds"].sum()) if "wall_seconds" in runs else 0.0
    trial_compute = 0.0
    final = set(runs["run"]) if "run" in runs else set()
    for m in (t.get("methods") or {}).values():
        for k in m.get("trial_runs", []):
            f = (out / "runs" / f"{k}.json") if out is not None else None
            if k not in final and f is not None and f.is_file():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    trial_compute += float(json.loads(f.read_text())["metrics"]["wall_seconds"])
    return {"trials_per_method": t.get("trials_per_method", 0), "trial_max_epochs": t.get("trial_max_epochs"),
            "max_epochs": cfg.training.max_epochs,
            "patience": t.get("patience", cfg.training.patience), "seeds": list(cfg.compare.seeds),
            "test": cfg.compare.test, "alpha": cfg.compare.alpha, "workers": cfg.compare.workers,
            "wall_seconds": round(wall, 1), "tuning_wall_seconds": round(t.get("tuning_wall_seconds", 0.0), 1),
            "final_runs_compute_seconds": round(compute, 1), "trial_runs_compute_seconds": round(trial_compute, 1),
            # methods whose best trial was the config's own setting (tuning found nothing better), of those tuned
            "config_best": sum(bool(m.get("best_is_config")) for m in (t.get("methods") or {}).values()),
            "tuned": len(t.get("methods") or {})}


def _dataset_name(ds) -> str:
    """The leaderboard header's name of datasets given in memory: their own name, else "user data"."""
    name = getattr(ds, "name", None)
    return name if isinstance(name, str) and name and name != "arrays" else "user data"


def budget_line(b: dict) -> str:
    n = b.get("trials_per_method") or 0
    te = b.get("trial_max_epochs")
    tr = (f"{n} Optuna trial{'s' if n != 1 else ''} per method (≤ {te} epoch{'s' if te != 1 else ''} each)"
          if n else "no tuning (every method with the config's settings)")
    pat = f"early stopping patience {b['patience']}" if b.get("patience") else "no early stopping"
    w = b["workers"]
    return (f"Budget: {tr}; retrained ≤ {b['max_epochs']} epochs, {pat}, seeds {b['seeds']}; "
            f"wall time {b['wall_seconds']:.0f} s (this invocation, {w} worker{'s' if w != 1 else ''}: data loading, "
            "tuning, training and evaluation; not the t-SNE, plots and HTML report); run compute "
            f"{b.get('trial_runs_compute_seconds', 0.0) + b['final_runs_compute_seconds']:.0f} s summed over the "
            "stored trial and final runs.")


def summary(board: pd.DataFrame, metric: str, direction: str, grid: list[str] | None = None,
            runs: pd.DataFrame | None = None, test: str = "ttest") -> dict:
    """The headline numbers (first grid point). With ``runs``: ``margin_p``, the paired test (``test``, by seed,
    uncorrected: one comparison) of the best fusion against the best unimodal model; None with fewer than 3
    paired seeds (``margin_test`` says so)."""
    grid = list(grid or [])
    first = board
    for c in grid:  # the headline numbers are those of the first grid point
        first = first[first[c] == board[c].iloc[0]]
    fused = first[~first["kind"].isin(["unimodal"])]
    uni = first[first["kind"] == "unimodal"]
    out = {"metric": metric, "best_method": first["method"].iloc[0], "grid_point": {c: board[c].iloc[0] for c in grid}}
    if len(fused) and len(uni):
        bf, bu = fused.iloc[0], uni.iloc[0]
        sign = 1 if direction == "max" else -1
        out.update({"best_fusion": bf["method"], "best_fusion_mean": bf[f"{metric}_mean"], "best_fusion_std": bf[f"{metric}_std"],
                    "best_unimodal": bu["method"], "best_unimodal_mean": bu[f"{metric}_mean"], "best_unimodal_std": bu[f"{metric}_std"],
                    "margin": sign * (bf[f"{metric}_mean"] - bu[f"{metric}_mean"])})
        col = f"test_{metric}"
        if runs is not None and col in runs.columns:
            from .stats import MIN_SEEDS, paired_p, untested_mark

            sub = runs[_point_mask(runs, bf, grid)] if grid else runs
            per = {m: sub[sub["method"] == m].set_index("seed")[col].astype(float) for m in (bf["method"], bu["method"])}
            seeds = [x for x in per[bf["method"]].index if x in per[bu["method"]].index]
            a = [per[bf["method"]][x] for x in seeds]
            b = [per[bu["method"]][x] for x in seeds]
            n = int(sum(not (math.isnan(x) or math.isnan(y)) for x, y in zip(a, b)))
            out["margin_p"] = paired_p(a, b, test) if n >= MIN_SEEDS else None
            out["margin_test"] = f"{test}, paired by seed, n={n}" if n >= MIN_SEEDS else untested_mark(n)
    return out


def _all_mods(board, obs: list[str]) -> str:
    """The observed pattern with the most modalities (every modality present)."""
    pats = [o[len("observed["):o.index("]")] for o in obs]
    return max(pats, key=lambda p: len(p.split("+"))) if pats else ""


def _mark(r) -> str:
    mark = r.get("vs_best", "") if hasattr(r, "get") else ""
    if not isinstance(mark, str) or not mark:
        return ""
    p = r.get("p_holm", float("nan"))
    return mark if mark in ("best", "—") or p is None or math.isnan(float(p)) else f"{mark} (p={float(p):.3g})"


def _caveats(board: pd.DataFrame, metric: str, cfg: ExperimentConfig, budget: dict | None,
             grid: list[str]) -> list[str]:
    """The lines under the table that say what the study could not show: tuning that did not improve on the
    config's own setting for most methods, and seeds too few to separate the methods from the best."""
    out = []
    b = budget or {}
    k, n = int(b.get("config_best") or 0), int(b.get("tuned") or 0)
    if n and 2 * k > n:
        t = b.get("trials_per_method")
        out.append(f"Tuning: the config's own setting (each study's first trial) was best for {k} of {n} methods; "
                   f"{t} trial{'s' if t != 1 else ''} per method rarely beat it, so the ranking mostly reflects "
                   "the config's settings (raise compare.tuning.trials for a real search).")
    col = f"{metric}_mean"
    near, worse = [], []
    for _, r in board.iterrows():
        if r.get("vs_best") not in ("≈ best", "worse"):
            continue
        pt = board[_point_mask(board, r, grid)]
        best = pt[pt["vs_best"] == "best"]
        if not len(best):
            continue
        gap = abs(float(r[col]) - float(best[col].iloc[0]))
        (near if r["vs_best"] == "≈ best" else worse).append((gap, _display(r["method"], {c: r[c] for c in grid})))
    if near:
        ns = len(cfg.compare.seeds)
        gap, who = max(near)
        tail = (f"; the smallest difference found significant was {min(worse)[0]:.3f} ({min(worse)[1]})"
                if worse else "")
        out.append(f"Seeds: with {ns} seed{'s' if ns != 1 else ''}, {len(near)} of {len(near) + len(worse)} methods "
                   f"cannot be separated from the best: differences up to {gap:.3f} in {metric} ({who}) are not "
                   f"significant after Holm correction{tail}; more seeds (compare.seeds) narrow this.")
    return out


def leaderboard_markdown(board: pd.DataFrame, metric: str, cfg: ExperimentConfig,
                         reports: dict[str, list[dict]] | None = None, budget: dict | None = None,
                         dataset: str | None = None) -> str:
    """``dataset``: the header's name of datasets given in memory (default: ``data.name`` and its options)."""
    grid = list(cfg.compare.grid)
    pats = [c[:-5] for c in board.columns if c.startswith("pattern[") and c.endswith("_mean")]
    n_pats = len(pats)
    if n_pats > MAX_PATTERN_COLUMNS:  # M ≥ 5 modalities: 2^M - 1 columns no one can read; the CSV keeps them all
        sets = {p: p[len("pattern["):p.index("]")].split("+") for p in pats}
        m_all = max(len(v) for v in sets.values())
        pats = [p for p in pats if len(sets[p]) in (1, m_all - 1, m_all)]
    extra = [m for m in ("macro_f1", "auroc", "f1_macro", "pearson_r") if f"{m}_mean" in board.columns and m != metric]
    # observed presence patterns of the test rows: shown only when the test rows really differ in what they have
    obs = [c[:-5] for c in board.columns if c.startswith("observed[") and c.endswith(f"_{metric}_mean")]
    # (a unimodal run's one pattern, its own modality, is not a difference between test rows)
    fused = board[board["kind"] != "unimodal"] if "kind" in board.columns else board
    differ = any(int(fused[c].notna().sum()) and c != f"observed[{_all_mods(fused, obs)}]_{metric}_mean"
                 for c in [o + "_mean" for o in obs]) if len(obs) > 1 else False
    obs = obs if differ else []
    obs_n = {o: board.get(f"{o[:-len(metric) - 1]}_n_mean") for o in obs}
    obs_head = []
    for o in obs:
        n = obs_n[o]
        same = n is not None and n.notna().all() and n.nunique() == 1
        obs_head.append(o.replace(f"_{metric}", "") + (f" n={int(n.iloc[0])}" if same else ""))
    marks = "vs_best" in board.columns
    head = (["#"] + grid + ["method", "kind", metric] + (["vs best (Holm p)", "converged"] if marks else [])
            + extra[:2] + ["params", "train s"]
            + [p.replace(f"_{metric}", "") for p in pats] + obs_head)
    src = f"`{dataset}` (given in memory)" if dataset else f"`{cfg.data.name}` {cfg.data.options or ''}"
    lines = [f"Dataset {src}; seeds {cfg.compare.seeds}; "
             f"test {metric} mean ± std over seeds.", ""]
    if budget:
        lines += [budget_line(budget), ""]
    if marks and few_seeds_warning(cfg):
        lines += [f"**Warning**: {few_seeds_warning(cfg)}", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in board.iterrows():
        one = r.get("seeds", 2) == 1  # one seed: no spread to show (— rather than a misleading ± 0), in every column

        def ms(col: str) -> str:
            return _fmt(r.get(f"{col}_mean", float("nan")), math.nan if one else r.get(f"{col}_std", float("nan")))

        cells = [str(i + 1)] + [str(r[c]) for c in grid] + [r["method"], r["kind"], ms(metric)]
        if marks:
            cells += [_mark(r), str(r.get("converged", ""))]
        cells += [ms(m) for m in extra[:2]]
        cells += [f"{int(r['params']):,}", f"{r['train_seconds']:.1f}"]
        cells += [ms(p) for p in pats]
        for o, h in zip(obs, obs_head):
            cell = ms(o)
            n = r.get(f"{o[:-len(metric) - 1]}_n_mean", float("nan"))
            cells.append(cell if " n=" in h or math.isnan(float(n)) else f"{cell} (n={float(n):g})")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    under = _caveats(board, metric, cfg, budget, grid) if marks else []
    if under:
        lines += under + [""]
    if marks:
        test = {"ttest": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test (exact)"}[cfg.compare.test]
        lines.append(f"`vs best`: {test} of each method against the best, paired by seed, Holm-corrected across the "
                     f"methods; `≈ best` = corrected p ≥ {cfg.compare.alpha:g} (no evidence of a difference), "
                     "`worse` = below." + (" With fewer than 6 seeds the Wilcoxon test cannot reach p < 0.05 "
                                            "(smallest two-sided p = 2/2^n: 0.25 for 3 seeds)."
                                            if cfg.compare.test == "wilcoxon" else ""))
        lines.append("`converged`: every seed's run stopped early or had its best validation epoch before its last "
                     "`patience` epochs; else the latest epoch at which it was still improving.")
        lines.append("`best`: the best mean; `better`: significantly better than the method ranked first; "
                     "`untested (n seeds)`: fewer than 3 seeds paired with the best, no test (with 2 seeds the "
                     "paired t-test has 1 degree of freedom and an exact test's smallest p is 0.5); with 1 seed "
                     "the std is shown as —.")
    lines.append(f"`pattern[x]`: simulated — test {metric} with only modalities x kept (the others hidden at test time "
                 "in every row)." + (f" Shown: {len(pats)} of the {n_pats} patterns (all modalities, each one dropped, "
                                     "each one alone); every pattern is in leaderboard.csv." if len(pats) < n_pats else ""))
    if obs:
        lines.append(f"`observed[x]`: real — test {metric} on the test rows that really have exactly modalities x "
                     "(n rows; `none` = rows with no modality present).")
    seen = set()
    for reps in (reports or {}).values():
        for rep in reps:
            key = json.dumps(rep, sort_keys=True)
            if key not in seen:
                seen.add(key)
                lines.append(f"data.missing: {rep['split']} split, {rep['modality']!r} kept on {rep['present_after']} of "
                             f"{rep['present_before']} rows (fraction {rep['present_fraction']:g}), masked absent on "
                             f"{rep['masked']}; no row removed ({rep['rows']} rows).")
    return "\n".join(lines) + "\n"


def _tsne(board: pd.DataFrame, pl: _Plan, cfg: ExperimentConfig, out: Path) -> None:
    from . import plots
    from .evaluation import collect, make_loader
    from .training import load_checkpoint

    first = pl.jobs[0].point
    ckpts = {}
    for j in pl.jobs:
        path = out / "runs" / j.key / "checkpoint"
        if j.point == first and j.kind == "feature" and j.method.label not in ckpts and (path / "config.json").is_file():
            ckpts[j.method.label] = (path, j.data_key)
    ranked = [m for m in board["method"] if m in ckpts]
    if not ranked:
        return
    model, _, _ = load_checkpoint(ckpts[ranked[0]][0])
    data = pl.datasets[ckpts[ranked[0]][1]]
    test = data.get("test") or data["val"]
    n = min(cfg.compare.tsne_samples, len(test))
    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(rng.choice(len(test), n, replace=False))
    sub = test.subset(idx) if hasattr(test, "subset") else _Subset(test, idx)
    res = collect(model, make_loader(sub, cfg.data.eval_batch_size), embeddings=True)
    panels = {f"fused ({ranked[0]})": res["fused"]}
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
