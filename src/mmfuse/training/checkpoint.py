"""Checkpoints: weights in safetensors plus the resolved config and data facts as JSON.

A checkpoint is a folder holding ``model.safetensors`` and ``config.json``. Both files are written
to temporary names and moved into place with ``os.replace`` (atomic on one file system), so a
crash never leaves a half-written checkpoint. Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import ExperimentConfig
from ..errors import CheckpointError

WEIGHTS, META = "model.safetensors", "config.json"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(directory: str | Path, model: torch.nn.Module, config: ExperimentConfig, meta: dict[str, Any],
                    pipeline: Any = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` atomically.

    ``pipeline``: the fitted data pipeline of a user table (:class:`mmfuse.datasets.pipeline.TablePipeline`),
    written as ``pipeline.json`` + ``pipeline.safetensors`` before ``config.json``, which records their sha256
    digests and the class order (both checked by :func:`load_checkpoint`).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic_write(d / WEIGHTS, lambda tmp: save_file(state, tmp))
    meta = dict(meta)
    if pipeline is not None:
        meta["pipeline"] = {"files": pipeline.save(d), "class_names": pipeline.class_names,
                            "modalities": sorted(pipeline.loaders)}
    else:
        from ..datasets.pipeline import PIPELINE_JSON, PIPELINE_TENSORS

        for name in (PIPELINE_JSON, PIPELINE_TENSORS):  # a stale pipeline of an earlier run in this folder
            if (d / name).exists():
                (d / name).unlink()
    payload = {"format": "mmfuse-checkpoint-1", "config": config.model_dump(mode="json"), **meta}
    _atomic_write(d / META, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2, default=str)))
    return d


def read_meta(directory: str | Path) -> dict[str, Any]:
    d = Path(directory)
    if d.is_file() and d.name in (WEIGHTS, META):
        d = d.parent
    if not (d / META).is_file() or not (d / WEIGHTS).is_file():
        raise CheckpointError(
            f"{str(d)!r} is not an mmfuse checkpoint: expected a folder with {WEIGHTS} and {META} "
            "(written by `mmfuse train`)"
        )
    try:
        meta = json.loads((d / META).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{str(d / META)!r} is not valid JSON ({exc}); the checkpoint is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != "mmfuse-checkpoint-1":
        fmt = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{str(d / META)!r}: unknown checkpoint format {fmt!r}")
    missing = [k for k in ("config", "input_shapes", "num_outputs", "task") if k not in meta]
    if missing:
        raise CheckpointError(f"{str(d / META)!r}: lacks {missing}; the file was edited or is damaged, retrain or restore it")
    meta["_dir"] = str(d)
    return meta


def read_weights(meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint (from :func:`read_meta`), read without unpickling."""
    try:
        return load_file(str(Path(meta["_dir"]) / WEIGHTS))
    except Exception as exc:
        raise CheckpointError(f"{meta['_dir']}/{WEIGHTS}: cannot read weights ({exc})") from None


def load_checkpoint(directory: str | Path):
    """(model in eval mode, ExperimentConfig, meta dict) from a checkpoint folder."""
    from ..models import build_model

    meta = read_meta(directory)
    try:
        cfg = ExperimentConfig.model_validate(meta["config"])
    except Exception as exc:  # pydantic error: the JSON was edited or is from another version
        raise CheckpointError(f"{meta['_dir']}: its config does not validate: {exc}") from None
    if meta.get("family", cfg.model.family) != cfg.model.family:
        raise CheckpointError(f"{meta['_dir']}: records family {meta.get('family')!r} but its config says "
                              f"{cfg.model.family!r}; the file was edited or is damaged")
    shapes = {m: tuple(s) for m, s in meta["input_shapes"].items()}
    model = build_model(cfg.model, shapes, int(meta["num_outputs"]), meta["task"])
    state = read_weights(meta)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{meta['_dir']}: weights do not fit the model its config describes: {exc}") from None
    model.eval()
    if meta.get("pipeline"):
        pipe = load_pipeline(meta)
        if list(pipe.class_names or []) != list(meta.get("class_names") or []):
            raise CheckpointError(f"{meta['_dir']}: config.json lists the classes {meta.get('class_names')} but the "
                                  f"fitted pipeline's class order is {pipe.class_names}; the file was edited or is "
                                  "damaged (predicted labels would be shifted), retrain or restore it")
        cfg.data.options["pipeline"] = meta["_dir"]  # evaluate / predict / explain reapply it, never refit
    return model, cfg, meta


def load_pipeline(checkpoint: str | Path | dict[str, Any]):
    """The fitted table pipeline of a checkpoint (folder or :func:`read_meta` dict), digests verified."""
    from ..datasets.pipeline import TablePipeline

    meta = checkpoint if isinstance(checkpoint, dict) else read_meta(checkpoint)
    info = meta.get("pipeline")
    if not info:
        raise CheckpointError(f"{meta['_dir']}: holds no fitted table pipeline (it was not trained on a user table)")
    pipe = TablePipeline.load(meta["_dir"], info.get("files"))
    if list(pipe.class_names or []) != list(info.get("class_names") or []):
        raise CheckpointError(f"{meta['_dir']}: the pipeline's class order {pipe.class_names} differs from the one "
                              f"recorded in config.json {info.get('class_names')}; the checkpoint is damaged")
    return pipe
