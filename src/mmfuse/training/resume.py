"""The resumable training state of a ``last`` checkpoint, without pickle.

``trainer_state.safetensors`` holds every tensor (optimiser moments, the torch RNG, the train loader's
shuffle generator, the best weights so far, EarlyStopping's best score); ``trainer_state.json`` holds the
rest (epoch, optimiser param groups and scalar state, scheduler state, python and numpy RNG, the scheme's
counters, the history, BestWeights' and EarlyStopping's counters) with tensors referenced by key.

Resuming (``training.resume: true`` / ``mmfuse train CFG --resume``) builds the model, optimisers and
loaders as a fresh run does, sets Lightning's epoch counter to the saved epoch, and restores this state
at the start of the first resumed epoch (after ``on_train_start``, before the epoch's data iterator is
created), so the resumed run draws the same batches and the same random numbers as an uninterrupted
run: on CPU at a fixed thread count the final weights and metrics are bit-identical.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, ConfigError

STATE_JSON, STATE_TENSORS = "trainer_state.json", "trainer_state.safetensors"
LAST, BEST = "last", "best"
FORMAT = "mmfuse-trainer-state-1"
# keys that may differ between the interrupted run's config and the resumed one
RESUME_FREE = ("training.resume", "training.progress", "training.max_epochs")


class _Tensors:
    """Collects tensors under unique keys; JSON refers to them as {"__tensor__": key}."""

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}

    def put(self, key: str, t: torch.Tensor) -> dict:
        self.tensors[key] = t.detach().cpu().contiguous().clone()
        return {"__tensor__": key}


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=True)
        return True
    except (TypeError, ValueError):
        return False


def _flatten(obj: Any, prefix: str, store: _Tensors) -> Any:
    """A nested dict / list of tensors and JSON values -> JSON with tensors moved into ``store``."""
    if torch.is_tensor(obj):
        return store.put(prefix, obj)
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise CheckpointError(f"training state {prefix}: keys must be str or int, got {list(obj)[:3]}")
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}", store)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}.{i}", store) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    raise CheckpointError(f"training state {prefix}: cannot save a {type(obj).__name__} without pickle")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"{STATE_TENSORS}: lacks {key!r}; the checkpoint is damaged")
            return tensors[key]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def loader_generators(loader) -> list[torch.Generator]:
    """The torch generators that decide a DataLoader's batch order (sampler and base-seed generators)."""
    gens: list[torch.Generator] = []
    objs = [loader]
    for attr in ("sampler", "batch_sampler"):
        o = getattr(loader, attr, None)
        objs += [o, getattr(o, "sampler", None)]
    for o in objs:
        g = getattr(o, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in gens):
            gens.append(g)
    return gens


def train_loader_of(trainer):
    loader = trainer.train_dataloader
    if isinstance(loader, dict):
        loader = next(iter(loader.values()))
    elif isinstance(loader, (list, tuple)):
        loader = loader[0]
    return loader


def _scheme_state(scheme) -> dict[str, Any]:
    return {k: v for k, v in vars(scheme).items() if k != "options" and not k.startswith("__") and _jsonable(v)}


def _numpy_state() -> list:
    st = np.random.get_state()
    return [st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4])]


def capture(trainer, system, best, early) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON document, tensors) of everything a resumed run needs beyond the model's weights."""
    store = _Tensors()
    loop = trainer.fit_loop
    doc: dict[str, Any] = {
        "format": FORMAT,
        "epochs_done": int(trainer.current_epoch) + 1,  # called at the end of epoch `current_epoch`
        "stopped": bool(trainer.should_stop),
        "global_step": int(trainer.global_step),
        "batches_that_stepped": int(loop.epoch_loop._batches_that_stepped),
        "optimizers": [_flatten(o.state_dict(), f"opt{i}", store) for i, o in enumerate(trainer.optimizers)],
        "schedulers": [_flatten(c.scheduler.state_dict(), f"sched{i}", store)
                       for i, c in enumerate(trainer.lr_scheduler_configs)],
        "scheme": _scheme_state(system.scheme),
        "history": system.history,
        "rng": {"torch": store.put("rng.torch", torch.get_rng_state()),
                "python": _flatten(random.getstate(), "rng.python", store),
                "numpy": _numpy_state(),
                "loader": [store.put(f"rng.loader{i}", g.get_state())
                           for i, g in enumerate(loader_generators(train_loader_of(trainer)))]},
        "best": {"value": best.best, "epoch": best.best_epoch, "has_state": best.state is not None},
        "early_stopping": None,
    }
    clock = getattr(system, "train_clock", None)  # (start of this fit's training, seconds of earlier parts)
    if clock is not None:
        import time

        doc["train_seconds"] = float(clock[1] + time.perf_counter() - clock[0])
    if best.state is not None:
        for k, t in best.state.items():
            store.put(f"best.{k}", t)
    if early is not None:
        doc["early_stopping"] = _flatten(early.state_dict(), "early", store)
    if torch.cuda.is_available():
        doc["rng"]["cuda"] = [store.put(f"rng.cuda{i}", s) for i, s in enumerate(torch.cuda.get_rng_state_all())]
    return doc, store.tensors


def write_state(folder: Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(Path(folder) / STATE_TENSORS))
    (Path(folder) / STATE_JSON).write_text(json.dumps(doc, indent=1))


def read_state(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """(checkpoint meta, state document, tensors) of a resumable checkpoint; every file's sha256 verified."""
    from .checkpoint import read_meta

    meta = read_meta(folder)
    d = Path(meta["_dir"])
    for name in (STATE_JSON, STATE_TENSORS):
        if not (d / name).is_file():
            raise CheckpointError(f"{d}: lacks {name}; it is not a resumable checkpoint (only `last` is)")
        if name not in (meta.get("files") or {}):
            raise CheckpointError(f"{d}: config.json records no sha256 of {name}; the checkpoint was edited")
    try:
        doc = json.loads((d / STATE_JSON).read_text())
        tensors = load_file(str(d / STATE_TENSORS))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{d}: cannot read the training state ({type(exc).__name__}: {exc})") from None
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{d / STATE_JSON}: unknown training-state format {doc.get('format')!r}")
    return meta, doc, tensors


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


#: Config keys added after runs were saved, with the value that reproduces what those runs did (a run saved before
#: ``data.standardize_target`` existed trained on the raw targets): a saved config without the key reads as that value.
LEGACY_DEFAULTS: dict[str, Any] = {"data.standardize_target": False}


def check_compatible(cfg, meta: dict[str, Any], folder: Path, train) -> None:
    """The resumed run must be the interrupted one: same config (but ``RESUME_FREE``) and same data shapes."""
    now = _flat(json.loads(json.dumps(cfg.model_dump(mode="json"))))
    then = {**{k: v for k, v in LEGACY_DEFAULTS.items() if k in now}, **_flat(meta["config"])}
    diff = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k) and k not in RESUME_FREE)
    if diff:
        shown = "; ".join(f"{k}: {then.get(k)!r} then, {now.get(k)!r} now" for k in diff[:6])
        raise ConfigError(f"training.resume: the config differs from the one of the run saved in {folder} ({shown}"
                          f"{'; …' if len(diff) > 6 else ''}); resume with the same config, or train into another "
                          "output folder without --resume")
    shapes = {m: list(s) for m, s in train.shapes.items()}
    if shapes != meta["input_shapes"] or int(train.num_classes) != int(meta["num_outputs"]):
        raise ConfigError(f"training.resume: the data's input shapes / outputs ({shapes}, {train.num_classes}) differ "
                          f"from those of the run saved in {folder} ({meta['input_shapes']}, {meta['num_outputs']}); "
                          "the data changed, train into another output folder without --resume")


def restore_results(system, best, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """History and best weights (enough for a run that had already finished)."""
    system.history = [dict(h) for h in doc["history"]]
    b = doc["best"]
    best.best, best.best_epoch = float(b["value"]), int(b["epoch"])
    if b["has_state"]:
        best.state = {k[len("best."):]: t for k, t in tensors.items() if k.startswith("best.")}


def restore(trainer, system, best, early, doc: dict[str, Any], tensors: dict[str, torch.Tensor],
            weights: dict[str, torch.Tensor]) -> None:
    """Everything :func:`capture` saved, into a trainer at the start of the first resumed epoch."""
    with torch.no_grad():
        system.model.load_state_dict(weights)
    opts = trainer.optimizers
    if len(opts) != len(doc["optimizers"]):
        raise CheckpointError(f"the saved training state has {len(doc['optimizers'])} optimiser(s), this run {len(opts)}")
    for opt, sd in zip(opts, doc["optimizers"]):
        sd = _unflatten(sd, tensors)
        sd["state"] = {int(k): v for k, v in sd["state"].items()}
        opt.load_state_dict(sd)
    for cfg, sd in zip(trainer.lr_scheduler_configs, doc["schedulers"]):
        cfg.scheduler.load_state_dict(_unflatten(sd, tensors))
    for k, v in doc["scheme"].items():
        setattr(system.scheme, k, v)
    restore_results(system, best, doc, tensors)
    if early is not None and doc.get("early_stopping") is not None:
        early.load_state_dict(_unflatten(doc["early_stopping"], tensors))
    loop = trainer.fit_loop.epoch_loop
    loop.automatic_optimization.optim_progress.optimizer.step.total.ready = doc["global_step"]
    loop.automatic_optimization.optim_progress.optimizer.step.total.completed = doc["global_step"]
    loop.manual_optimization.optim_step_progress.total.ready = doc["global_step"]
    loop.manual_optimization.optim_step_progress.total.completed = doc["global_step"]
    loop._batches_that_stepped = doc["batches_that_stepped"]
    rng = doc["rng"]
    gens = loader_generators(train_loader_of(trainer))
    if len(gens) != len(rng["loader"]):
        raise CheckpointError("the saved training state's data-order generators do not match this run's loader")
    for g, ref in zip(gens, rng["loader"]):
        g.set_state(_unflatten(ref, tensors))
    py = _unflatten(rng["python"], tensors)
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = _unflatten(rng["numpy"], tensors)
    np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), *npst[2:]))
    torch.set_rng_state(_unflatten(rng["torch"], tensors))
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unflatten(r, tensors) for r in rng["cuda"]])


def set_start_epoch(trainer, epochs_done: int) -> None:
    """Make Lightning's fit loop start at epoch ``epochs_done`` (``trainer.current_epoch``)."""
    p = trainer.fit_loop.epoch_progress
    for tracker in (p.current, p.total):
        tracker.ready = tracker.started = tracker.processed = tracker.completed = int(epochs_done)
