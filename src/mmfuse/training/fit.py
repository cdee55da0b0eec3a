"""``fit(config)``: build data and model, train with Lightning, evaluate, save a checkpoint."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger

from ..config import ExperimentConfig
from ..errors import ConfigError
from ..evaluation import evaluate, make_loader
from .callbacks import BestWeights
from .checkpoint import save_checkpoint
from .system import FusionSystem


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
        save: bool = True, progress: bool | None = None, evaluate_patterns: bool = True) -> RunResult:
    """Train the configured model; the same seed, data and config give the same metrics on CPU."""
    from ..models import build_model

    from ..config import check_devices

    bad = check_devices(cfg.training)  # a GPU or device count this machine lacks: one line, before any data loads
    if bad:
        raise ConfigError(bad[0])
    quiet_lightning()
    datasets = datasets if datasets is not None else load_data(cfg)
    for split in ("train", "val"):
        if split not in datasets or len(datasets[split]) == 0:
            raise ConfigError(f"data: the dataset {cfg.data.name!r} has no {split!r} split (or it is empty)")
    train = datasets["train"]
    task = resolve_task(cfg, train)
    check_monitor(cfg.training.monitor, task)
    check_text_inputs(cfg, train)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg.model, train.shapes, int(train.num_classes), task)
    if cfg.model.init_from:
        warm_start(model, cfg.model.init_from)
    system = FusionSystem(model, task, cfg.training, cfg.model.family)
    best = BestWeights(cfg.training.monitor)
    callbacks: list[L.Callback] = [best]
    if cfg.training.patience:
        callbacks.append(EarlyStopping(cfg.training.monitor, patience=cfg.training.patience,
                                       mode=best.mode))
    out = Path(out_dir or cfg.output_dir)
    show = cfg.training.progress if progress is None else progress
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
    t0 = time.perf_counter()
    trainer.fit(system, train_loader, val_loader)
    seconds = time.perf_counter() - t0
    best.restore(model)
    model.eval()
    val = evaluate(model, datasets["val"], task, g.eval_batch_size, per_pattern=False)
    test = (evaluate(model, datasets["test"], task, g.eval_batch_size, per_pattern=evaluate_patterns)
            if "test" in datasets and len(datasets["test"]) else {})
    params = sum(p.numel() for p in model.parameters())
    result = RunResult(model, cfg, task, system.history, test, val, params, seconds, best.best_epoch)
    if save:
        meta = {
            "family": cfg.model.family,
            "input_shapes": {m: list(s) for m, s in train.shapes.items()},
            "num_outputs": int(train.num_classes), "task": task,
            "class_names": list(getattr(train, "class_names", None) or []),
            "modalities": list(train.modalities), "metrics": {"val": val, "test": test},
            "best_epoch": best.best_epoch, "train_seconds": seconds, "params": params,
        }
        result.checkpoint = save_checkpoint(out / "checkpoint", model, cfg, meta,
                                            pipeline=getattr(train, "pipeline", None))
    return result
