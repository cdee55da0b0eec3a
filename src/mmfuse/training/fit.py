"""``fit(config)``: build data and model, train with Lightning, evaluate, save a checkpoint."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ExperimentConfig
from ..errors import ConfigError
from .checkpoint import FolderLock, save_checkpoint
from .signals import catch_stop_signals

# Lightning is imported by _fit, where it is used (through training.system.import_lightning, which keeps
# torchmetrics from loading transformers / matplotlib / scipy.signal): importing this module (e.g. for
# load_checkpoint or load_data) stays cheap.


@dataclass
class RunResult:
    model: torch.nn.Module
    config: ExperimentConfig
    task: str
    history: list[dict[str, float]]
    test: dict[str, Any]
    val: dict[str, Any]
    params: int
    train_seconds: float
    best_epoch: int
    checkpoint: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def resolve_task(cfg: ExperimentConfig, dataset) -> str:
    task = getattr(dataset, "task", "multiclass")
    if cfg.task != "auto" and cfg.task != task:
        raise ConfigError(f"task: config says {cfg.task!r} but dataset {cfg.data.name!r} is {task!r}; remove `task` or fix it")
    return task


def check_monitor(monitor: str, task: str) -> None:
    from ..evaluation.metrics import METRIC_NAMES
    from ..registry import suggestion

    valid = ["val_loss"] + [f"val_{m}" for m in METRIC_NAMES[task]]
    if monitor not in valid:
        raise ConfigError(f"training.monitor: {monitor!r} is not logged for a {task} task; {suggestion(monitor, valid)}")


def data_seed(cfg: ExperimentConfig) -> int:
    """The seed of the data: ``data.seed``, or the experiment's seed when it is not set."""
    return cfg.seed if cfg.data.seed is None else cfg.data.seed


def load_data(cfg: ExperimentConfig) -> dict:
    """The splits of ``cfg.data`` (seeded by :func:`data_seed`), with ``data.missing`` applied."""
    from ..datasets import load_dataset
    from ..datasets.pairing import apply_missing

    seed = data_seed(cfg)
    return apply_missing(load_dataset(cfg.data.name, seed=seed, **cfg.data.options), cfg.data.missing, seed)


def quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*treespec.*")
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode at the start of training.*")  # frozen encoders
    # small data: fewer batches per epoch than Trainer(log_every_n_steps); the epoch-level losses are logged anyway
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


PRETRAINED_TEXT_ENCODERS = ("sentence_transformer", "hf_auto")


def check_text_inputs(cfg: ExperimentConfig, train) -> None:
    """A pretrained text encoder needs its own tokenizer's ids: vocabulary ids from a table's text column would be
    read as unrelated word pieces (silently wrong). A ConfigError naming the fix, before any training."""
    pipeline = getattr(train, "pipeline", None)
    loaders = getattr(pipeline, "loaders", {}) or {}
    for m, comp in cfg.model.encoders.items():
        kind = getattr(loaders.get(m), "token_kind", None)
        if comp.name in PRETRAINED_TEXT_ENCODERS and kind is not None and not kind.startswith("pretrained:"):
            raise ConfigError(
                f"model.encoders.{m}: {comp.name!r} reads its own tokenizer's ids, but the table's text column gives "
                f"{'vocabulary word ids' if kind == 'vocab' else 'fixed embeddings'}; set `tokenizer: minilm` (or the "
                f"model's folder, the encoder's path) on modality {m!r} in the schema, or use a gru / transformer encoder")


def warm_start(model: torch.nn.Module, checkpoint: str | Path) -> list[str]:
    """Copy every parameter and buffer of ``checkpoint`` whose name and shape match into ``model``.

    Returns the names copied; a ConfigError when none match (the checkpoint is for another model).
    """
    from .checkpoint import read_meta, read_weights

    meta = read_meta(checkpoint)
    state = read_weights(meta)
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not take:
        raise ConfigError(f"model.init_from: no parameter of {str(checkpoint)!r} matches this model by name and shape; "
                          "point it at a checkpoint whose encoders have the same names and widths")
    model.load_state_dict(take, strict=False)
    return sorted(take)


def fit(cfg: ExperimentConfig, datasets: dict | None = None, out_dir: str | Path | None = None,
        save: bool = True, progress: bool | None = None, evaluate_patterns: bool | None = None,
        resume: bool | None = None, callbacks: list | None = None) -> RunResult:
    """Train the configured model; the same seed, data and config give the same metrics on CPU.

    With ``save``: every epoch writes the resumable ``OUT/last`` and (when the monitor improves) ``OUT/best``
    checkpoints, the end writes ``OUT/checkpoint`` (the best weights); the output folder is locked while this
    runs. ``resume`` (default ``training.resume``): continue the run saved in ``OUT/last`` (bit-identical to
    an uninterrupted run on CPU); without ``OUT/last`` the run starts from the beginning. SIGTERM / SIGINT
    stop at the end of the current batch with :class:`mmfuse.training.signals.TrainingInterrupted`.
    ``callbacks``: extra Lightning callbacks. ``evaluate_patterns`` (default ``training.evaluate_patterns``):
    also evaluate the test split once per simulated missing-modality pattern (see :func:`pattern_evaluation_due`).
    """
    from ..config import check_devices

    bad = check_devices(cfg.training)  # a GPU or device count this machine lacks: one line, before any data loads
    if bad:
        raise ConfigError(bad[0])
    out = Path(out_dir or cfg.output_dir)
    resume = cfg.training.resume if resume is None else resume
    if resume and not save:
        raise ConfigError("training.resume: resuming needs the run's saved checkpoints (fit(..., save=True))")
    from ..guards import launched_rank

    # distributed (ddp) processes of rank > 0 never write: only rank 0 holds the lock and saves
    lock = FolderLock(out).acquire() if save and launched_rank() == 0 else None  # a second writer fails here
    try:
        with catch_stop_signals():
            return _fit(cfg, datasets, out, save, progress, evaluate_patterns, resume, callbacks or [])
    finally:
        if lock is not None:
            lock.release()


def pattern_evaluation_due(setting, n_test: int, n_modalities: int, trained_samples: int) -> bool:
    """``training.evaluate_patterns``: ``True`` / ``False`` as given; ``"auto"``: evaluate the 2^M - 1 simulated
    patterns only when those passes over the test split cost no more samples than the run trained on, i.e.
    n_test * (2^M - 1) <= trained samples (epochs x training rows seen per epoch). A smoke run of a few batches is
    not charged 2^M - 1 test passes; a real run may need more than one epoch to qualify: AV-MNIST hard (2100
    training, 600 test rows) qualifies after one epoch with M = 2 (600 * 3 = 1800), but with M = 3 only from the
    second (600 * 7 = 4200 > 2100). Set ``true`` to always evaluate them."""
    if setting is None or setting == "auto":
        return n_modalities > 1 and n_test * (2 ** n_modalities - 1) <= trained_samples
    return bool(setting)


def unfinished_epochs(last: Path) -> int | None:
    """Epochs done by the run saved in ``last`` (``OUT/last``) when it stopped before its end (interrupted: not
    early-stopped, fewer epochs than its ``max_epochs``); None when there is none, it finished, or it is unreadable."""
    import json as _json

    from .resume import STATE_JSON

    try:
        doc = _json.loads((last / STATE_JSON).read_text())
        conf = _json.loads((last / "config.json").read_text())
        done = int(doc["epochs_done"])
        planned = (conf.get("config") or conf).get("training", {}).get("max_epochs")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if doc.get("stopped") or planned is None or done >= int(planned):
        return None
    return done


def _warn_unfinished(last: Path) -> None:
    """A fresh run into a folder whose ``last`` holds an interrupted run replaces it: say so before it is gone."""
    done = unfinished_epochs(last)
    if done is not None:
        import warnings

        warnings.warn(f"{last} holds an interrupted run ({done} epoch(s) done); this run starts from epoch 1 and "
                      "replaces it. To continue that run instead, stop and rerun with --resume "
                      "(training.resume=true, or fit(..., resume=True))", UserWarning, stacklevel=3)


def _fit(cfg: ExperimentConfig, datasets, out: Path, save: bool, progress, evaluate_patterns, resume: bool,
         extra_callbacks: list) -> RunResult:
    from .system import FusionSystem  # first: it imports Lightning without torchmetrics' unused extras
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from ..evaluation import evaluate, make_loader
    from ..models import build_model
    from .callbacks import BestWeights, EpochCheckpoints
    from . import resume as R

    quiet_lightning()
    datasets = datasets if datasets is not None else load_data(cfg)
    for split in ("train", "val"):
        if split not in datasets or len(datasets[split]) == 0:
            raise ConfigError(f"data: the dataset {cfg.data.name!r} has no {split!r} split (or it is empty)")
    train = datasets["train"]
    task = resolve_task(cfg, train)
    check_monitor(cfg.training.monitor, task)
    check_text_inputs(cfg, train)
    state = None
    if resume and (out / R.LAST).exists():
        lmeta, doc, tensors = R.read_state(out / R.LAST)
        R.check_compatible(cfg, lmeta, out / R.LAST, train)
        from .checkpoint import read_weights

        state = (doc, tensors, read_weights(lmeta))
    elif not resume and save:
        _warn_unfinished(out / R.LAST)
    from ..guards import check_memory, input_dtypes, launched_rank, training_processes

    # the model's memory at the configured batch sizes, estimated on the meta device (nothing allocated)
    check_memory(cfg, train.shapes, int(train.num_classes), task, processes=training_processes(cfg.training),
                 dtypes=input_dtypes(train))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg.model, train.shapes, int(train.num_classes), task)
    from ..datasets.target_scale import fit_target_scale

    # regression: the training rows' mean / std (data.standardize_target); the loss standardises the targets, the
    # outputs are inverted where they leave the model (evaluation, predictions, explanations)
    model.target_scale = fit_target_scale(cfg.data.standardize_target, train, task)
    if cfg.model.init_from and state is None:
        warm_start(model, cfg.model.init_from)
    if cfg.training.embedding_cache == "auto" and cfg.training.precision in ("32-true", "32", 32):
        from ..embedding_cache import attach_embedding_cache

        # frozen encoders: their embeddings of every split computed once (or read from disk), looked up by row
        attach_embedding_cache(model, datasets, specs=cfg.model.encoders, batch_size=cfg.data.eval_batch_size)
    system = FusionSystem(model, task, cfg.training, cfg.model.family)
    best = BestWeights(cfg.training.monitor)
    callbacks: list[L.Callback] = [best]
    early = None
    if cfg.training.patience:
        # checked after validation, so the epoch's `last` checkpoint (written at the epoch's end) holds its decision
        early = EarlyStopping(cfg.training.monitor, patience=cfg.training.patience, mode=best.mode,
                              check_on_train_epoch_end=False)
        callbacks.append(early)
    meta_base = {
        "family": cfg.model.family,
        "input_shapes": {m: list(s) for m, s in train.shapes.items()},
        "num_outputs": int(train.num_classes), "task": task,
        "class_names": list(getattr(train, "class_names", None) or []),
        "modalities": list(train.modalities),
        "target_scale": None if model.target_scale is None else model.target_scale.state_dict(),
    }
    pipeline = getattr(train, "pipeline", None)

    def save_epoch(folder, weights, metrics, extra):
        from .checkpoint import save_checkpoint

        meta = {**meta_base, "metrics": metrics, "epoch": metrics["val"].get("epoch"),
                "best_epoch": best.best_epoch}
        save_checkpoint(folder, weights, cfg, meta, pipeline=pipeline, extra=extra)

    # first: at an epoch's start it restores BestWeights' / EarlyStopping's state before they run
    epochs = EpochCheckpoints(out, best, early, save_epoch if save and launched_rank() == 0 else None)
    callbacks.insert(0, epochs)
    if cfg.training.diagnostics:  # per-modality encoder gradient norms; before `epochs`, so `last` holds them
        from .callbacks import GradNormMonitor

        callbacks.insert(0, GradNormMonitor())
    callbacks += list(extra_callbacks)
    show = cfg.training.progress if progress is None else progress
    if show and not any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in callbacks):
        from .progress import progress_bar

        callbacks.append(progress_bar())  # epochs counted from 1, as in every mmfuse message; no v_num
    trainer = L.Trainer(
        max_epochs=cfg.training.max_epochs, accelerator=cfg.training.accelerator, devices=cfg.training.devices,
        num_nodes=cfg.training.num_nodes, strategy=cfg.training.strategy, precision=cfg.training.precision,
        deterministic=True, callbacks=callbacks, logger=CSVLogger(str(out), name="logs") if save else False,
        enable_checkpointing=False, enable_progress_bar=show, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=10,
        gradient_clip_val=None, limit_train_batches=cfg.training.limit_train_batches,
    )
    g = cfg.data
    train_loader = make_loader(train, g.batch_size, shuffle=True, seed=cfg.seed, num_workers=g.num_workers)
    val_loader = make_loader(datasets["val"], g.eval_batch_size, num_workers=g.num_workers)
    resumed_from = None
    t0 = time.perf_counter()
    # training seconds of the run's earlier (interrupted) part, saved with `last`: a resumed run reports its total
    before = float(state[0].get("train_seconds") or 0.0) if state is not None else 0.0
    system.train_clock = (t0, before)  # read by resume.capture when an epoch's `last` is written
    if state is not None:
        doc, tensors, weights = state
        resumed_from = int(doc["epochs_done"])
        epochs.saved_epoch = resumed_from - 1
    if state is not None and (doc["stopped"] or resumed_from >= cfg.training.max_epochs):
        # the saved run had finished (early stopping, or max_epochs reached): nothing left to train
        model.load_state_dict(weights)
        R.restore_results(system, best, doc, tensors)
    else:
        if state is not None:
            R.set_start_epoch(trainer, resumed_from)
            epochs.resume = state
        try:
            trainer.fit(system, train_loader, val_loader)
        except SIGTERMException:  # Lightning's own SIGTERM check at an epoch's end (after our checkpoint)
            from .signals import TrainingInterrupted, signal_name
            import signal as _signal

            raise TrainingInterrupted(_signal.SIGTERM, f"interrupted by {signal_name(_signal.SIGTERM)}; the last finished "
                                      f"epoch is saved in {out / R.LAST}") from None
        _raise_if_signalled(out, save)
    seconds = time.perf_counter() - t0 + before
    best.restore(model)
    model.eval()
    val = evaluate(model, datasets["val"], task, g.eval_batch_size, per_pattern=False)
    has_test = "test" in datasets and len(datasets["test"]) > 0
    if has_test:
        if evaluate_patterns is None:
            lim, batches = cfg.training.limit_train_batches, len(train_loader)
            if lim is not None:
                batches = min(batches, int(lim) if isinstance(lim, int) else int(batches * lim))
            trained = min(len(train), batches * g.batch_size) * max(1, len(system.history))
            evaluate_patterns = pattern_evaluation_due(cfg.training.evaluate_patterns, len(datasets["test"]),
                                                       len(train.modalities), trained)
        test = evaluate(model, datasets["test"], task, g.eval_batch_size, per_pattern=evaluate_patterns)
        if cfg.training.diagnostics:
            test["diagnostics"] = _diagnostics(cfg, model, datasets, task, test, system.history)
    else:
        test = {}
    params = sum(p.numel() for p in model.parameters())
    result = RunResult(model, cfg, task, system.history, test, val, params, seconds, best.best_epoch)
    result.extras["resumed_from_epoch"] = resumed_from
    result.extras["global_zero"] = trainer.is_global_zero
    if save and trainer.is_global_zero:  # distributed training (ddp): only rank 0 writes the checkpoint
        from ..guards import check_finite_weights

        check_finite_weights(model)  # NaN / inf weights are never saved
        meta = {**meta_base, "metrics": {"val": val, "test": test},
                "best_epoch": best.best_epoch, "train_seconds": seconds, "params": params}
        result.checkpoint = save_checkpoint(out / "checkpoint", model, cfg, meta, pipeline=pipeline)
    return result


def _diagnostics(cfg: ExperimentConfig, model, datasets, task: str, test: dict, history: list) -> dict:
    """``report["diagnostics"]`` (:func:`mmfuse.diagnostics.diagnose`); a failure is recorded, not raised, so that
    a finished training is never lost to its diagnostics."""
    from ..diagnostics import diagnose

    try:
        return diagnose(model, datasets, task, test, history=history, family=cfg.model.family,
                        monitor=cfg.training.monitor, batch_size=cfg.data.eval_batch_size, seed=cfg.seed,
                        probe=cfg.training.diagnostics is True)
    except Exception as exc:  # noqa: BLE001  (reported in the run's report and printed by mmfuse train)
        return {"error": f"diagnostics failed: {type(exc).__name__}: {exc}", "ignored": []}


def _raise_if_signalled(out: Path, save: bool) -> None:
    """A stop signal that arrived after the last training batch (e.g. during the last validation)."""
    from .signals import TrainingInterrupted, requested, signal_name

    sig = requested()
    if sig is not None:
        where = f"the finished run is saved in {out / 'last'}" if save else "nothing was saved (save=False)"
        raise TrainingInterrupted(sig, f"interrupted by {signal_name(sig)} after training; {where}")
