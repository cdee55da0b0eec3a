"""Checkpoints: weights in safetensors plus the resolved config and data facts as JSON.

A checkpoint is a folder holding ``model.safetensors`` and ``config.json`` (plus ``pipeline.json`` /
``pipeline.safetensors`` for a user table, and ``trainer_state.*`` in a resumable ``last`` checkpoint).

Writing is atomic for the WHOLE folder: every file goes into a temporary folder next to the target
(``.NAME.tmp-PID-TOKEN``), which is then renamed into place; an existing checkpoint is renamed away
first (``.NAME.old-PID-TOKEN``) and deleted after the new one is in place. A killed writer leaves only
dot-folders whose PID is dead; the next write into the same parent removes them. ``config.json``
records the sha256 of every other file and the mmfuse version; :func:`load_checkpoint` verifies them,
so a mixture of two runs or a damaged file is a :class:`CheckpointError` naming the file. Nothing is
unpickled when loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ..config import ExperimentConfig
from ..errors import CheckpointError

WEIGHTS, META = "model.safetensors", "config.json"
LOCK = ".mmfuse.lock"


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version() -> str:
    from .. import __version__

    return __version__


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_stale(parent: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporary / replaced checkpoint folders (``.NAME.tmp-PID-*``, ``.NAME.old-PID-*``) and the
    temporary files (``.FILE.*.tmp``) that writers which are no longer running left in ``parent``."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        n = p.name
        if not n.startswith("."):
            continue
        pid = None
        for tag in (".tmp-", ".old-"):
            if tag in n and (name is None or n.startswith(f".{name}{tag}")):
                try:
                    pid = int(n.split(tag, 1)[1].split("-", 1)[0])
                except ValueError:
                    pid = None
        if pid is not None:
            if pid_alive(pid) and pid != os.getpid():
                continue
            if pid == os.getpid() and ".tmp-" in n:
                continue  # possibly a concurrent write of this process
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
        elif n.endswith(".tmp") and p.is_file():  # a file-level temporary of an older writer (mkstemp names)
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_checkpoint_folder(directory: str | Path, write: Callable[[Path], None],
                            meta: dict[str, Any] | Callable[[], dict[str, Any]]) -> Path:
    """Write a checkpoint folder atomically: ``write(tmp)`` fills a temporary folder, then ``config.json``
    (``meta``, or ``meta()`` called after ``write``, + the sha256 of every file ``write`` made + the mmfuse version) is added and the folder is
    renamed into place (an existing one is renamed away, then deleted)."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise CheckpointError(f"{str(d)!r} is a file, not a checkpoint folder; choose another output folder")
    parent = d.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the folder {str(parent)!r} for a checkpoint ({exc})") from None
    clean_stale(parent, d.name)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = parent / f".{d.name}.tmp-{token}"
    tmp.mkdir()
    try:
        write(tmp)
        files = {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name != META}
        payload = {"format": "mmfuse-checkpoint-1", "mmfuse_version": _version(),
                   **(meta() if callable(meta) else meta), "files": files}
        (tmp / META).write_text(json.dumps(payload, indent=2, default=str))
        for p in tmp.iterdir():
            _fsync(p)
        _fsync(tmp)
        old = None
        if d.exists():
            old = parent / f".{d.name}.old-{token}"
            os.rename(d, old)
        os.rename(tmp, d)
        _fsync(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(directory: str | Path, model: torch.nn.Module | dict, config: ExperimentConfig, meta: dict[str, Any],
                    pipeline: Any = None, extra: Callable[[Path], None] | None = None) -> Path:
    """Write a checkpoint folder (``model.safetensors``, ``config.json``, the table pipeline) atomically.

    ``model``: a module or a state dict. ``pipeline``: the fitted data pipeline of a user table
    (:class:`mmfuse.datasets.pipeline.TablePipeline`), written as ``pipeline.json`` + ``pipeline.safetensors``.
    ``extra(folder)`` writes further files (e.g. the resumable training state) into the temporary folder.
    ``config.json`` records the sha256 of every file (checked by :func:`load_checkpoint`).
    """
    state = model if isinstance(model, dict) else state_of(model)
    meta = dict(meta)

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS))
        if pipeline is not None:
            meta["pipeline"] = {"files": pipeline.save(tmp), "class_names": pipeline.class_names,
                                "modalities": sorted(pipeline.loaders)}
        if extra is not None:
            extra(tmp)

    return write_checkpoint_folder(directory, write, lambda: {"config": config.model_dump(mode="json"), **meta})


def verify_files(meta: dict[str, Any]) -> None:
    """Check every file recorded in ``config.json`` against its sha256 (a CheckpointError naming the file)."""
    d = Path(meta["_dir"])
    files = meta.get("files")
    if files is None:
        if meta.get("mmfuse_version") is not None:  # this version always records the digests: it was removed
            raise CheckpointError(f"{d / META}: has no 'files' entry (the sha256 of every file), which every "
                                  f"checkpoint written by mmfuse {meta['mmfuse_version']} records; the file was "
                                  "edited or damaged, so its weights cannot be verified. Restore the whole folder "
                                  "or retrain")
        return  # written before digests were recorded
    if not isinstance(files, dict):
        raise CheckpointError(f"{d / META}: 'files' is not a mapping of file name to sha256; the file was edited")
    for name, digest in files.items():
        p = d / name
        if not p.is_file():
            raise CheckpointError(f"{p}: missing; config.json lists it (sha256 {str(digest)[:12]}…). The checkpoint "
                                  "is incomplete, retrain or restore it")
        got = sha256(p)
        if got != digest:
            raise CheckpointError(f"{p}: its sha256 {got[:12]}… differs from {str(digest)[:12]}… recorded in "
                                  f"{META}; the file was modified, damaged, or comes from another run (a mixture of "
                                  "two checkpoints). Retrain or restore the whole folder")
    version = meta.get("mmfuse_version")
    if version is not None and version != _version():
        warnings.warn(f"{d}: written by mmfuse {version}, read by mmfuse {_version()}", stacklevel=3)


# ------------------------------------------------------------------ output-folder lock
class FolderLock:
    """An exclusive lock on an output folder: ``.mmfuse.lock`` holding the holder's pid and host.

    A second writer fails at once with a CheckpointError naming the holder; a lock whose pid is dead (on
    this host) is stale and taken over."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.held = False

    def acquire(self) -> "FolderLock":
        if self.folder.exists() and not self.folder.is_dir():
            raise CheckpointError(f"--out / output_dir: {str(self.folder)!r} is a file, not a folder; choose a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"--out / output_dir: cannot create {str(self.folder)!r} ({exc})") from None
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and (holder.get("host") != me["host"] or pid_alive(int(holder.get("pid", -1)))):
                    if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                        raise CheckpointError(f"{self.folder}: this process is already writing into it; use another "
                                              "output folder") from None
                    raise CheckpointError(
                        f"{self.folder}: another mmfuse process is writing into this folder (pid {holder.get('pid')} "
                        f"on {holder.get('host')}, lock {self.path}); wait for it, stop it, or use another output "
                        "folder (--out). If that process is gone, delete the lock file") from None
                self.path.unlink(missing_ok=True)  # stale: its holder is dead
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise CheckpointError(f"{self.folder}: cannot take the lock {self.path}; delete it if no mmfuse process runs")

    def _holder(self) -> dict | None:
        try:
            h = json.loads(self.path.read_text())
            return h if isinstance(h, dict) and "pid" in h else None
        except (OSError, ValueError):
            return None  # half-written or unreadable: treated as stale

    def release(self) -> None:
        if self.held:
            h = self._holder()
            if h is None or (h.get("pid") == os.getpid()):
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def read_meta(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder, checked; ``verify``: also every file's sha256."""
    d = Path(directory)
    if d.is_file() and d.name in (WEIGHTS, META):
        d = d.parent
    if not (d / META).is_file() or not (d / WEIGHTS).is_file():
        raise CheckpointError(
            f"{str(d)!r} is not an mmfuse checkpoint: expected a folder with {WEIGHTS} and {META} "
            "(written by `mmfuse train`)"
            + ("" if not d.is_dir() else
               f"; {' and '.join(n for n in (WEIGHTS, META) if not (d / n).is_file())} missing")
            + "; check the path, restore the folder, or train one with `mmfuse train CONFIG --out FOLDER`"
        )
    try:
        meta = json.loads((d / META).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{str(d / META)!r} is not valid JSON ({exc}); the checkpoint is damaged: restore the folder or retrain") from None
    if not isinstance(meta, dict) or meta.get("format") != "mmfuse-checkpoint-1":
        fmt = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{str(d / META)!r}: unknown checkpoint format {fmt!r}")
    missing = [k for k in ("config", "input_shapes", "num_outputs", "task") if k not in meta]
    if missing:
        raise CheckpointError(f"{str(d / META)!r}: lacks {missing}; the file was edited or is damaged, retrain or restore it")
    meta["_dir"] = str(d)
    if verify:
        verify_files(meta)
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
    from ..datasets.target_scale import TargetScale

    # regression trained on standardised targets (data.standardize_target): outputs are inverted with it
    model.target_scale = TargetScale.from_state(meta["target_scale"]) if meta.get("target_scale") else None
    if meta.get("pipeline"):
        pipe = load_pipeline(meta)
        if list(pipe.class_names or []) != list(meta.get("class_names") or []):
            raise CheckpointError(f"{meta['_dir']}: config.json lists the classes {meta.get('class_names')} but the "
                                  f"fitted pipeline's class order is {pipe.class_names}; the file was edited or is "
                                  "damaged (predicted labels would be shifted), retrain or restore it")
        fitted = getattr(pipe.target, "scale", None)
        if model.target_scale is not None and fitted is not None and fitted != model.target_scale:
            raise CheckpointError(f"{meta['_dir']}: config.json's target scale {model.target_scale} differs from the "
                                  f"fitted pipeline's {fitted}; the file was edited or is damaged, retrain or restore it")
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
