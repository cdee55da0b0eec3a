"""Guards that run *before* any compute: memory needed by a model, output paths, finite weights.

* :func:`estimate_memory` — a model's parameter count and its memory at the configured batch sizes,
  computed without allocating anything: the model is built on torch's ``meta`` device (parameters have
  shapes, no storage) and, when its forward pass runs on meta tensors, every leaf module's output size is
  measured at the batch size; otherwise the activations are estimated from the widest layer input (for
  feature fusion: the operator's fused width, e.g. TFN's ``Π_m (d_m + 1)``) × the batch size.
* :func:`check_memory` — a :class:`MemoryBudgetError` (a ``ConfigError``) when that estimate exceeds the
  budget: ``training.memory_limit_gb`` when set, and in any case the memory available on this machine
  (``MemAvailable`` of ``/proc/meminfo``) shared among the processes that train at once.
* :func:`check_output_path` — an output file or folder (``--out``) that cannot be written is a one-line
  ``ConfigError`` before any work is done.
* :func:`check_finite_weights` — non-finite parameters are never saved.

The estimate (float32 unless the parameters say otherwise)::

    weights   = P × bytes × (1 parameter + 1 gradient + optimiser states: 2 for adam / adamw, 1 for sgd)
    training  = 2 × Σ_leaf-modules |output| at data.batch_size × bytes     (kept for backward + its gradient)
    inference = 2 × max_leaf-module |output| at data.eval_batch_size × bytes (one layer's input and output)
    total     = weights + max(training, inference)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, DataError

GB = 1024 ** 3
#: the share of the available memory a training run may plan to use (the rest: Python, data, the OS)
AVAILABLE_SHARE = 0.8
#: a variable sequence length (a ``None`` axis in a dataset's shape) is estimated at this many steps
VARIABLE_LENGTH = 64


class MemoryBudgetError(ConfigError):
    """The configured model would not fit in memory (raised before it is built)."""

    def __init__(self, message: str, estimate: "MemoryEstimate | None" = None):
        super().__init__(message)
        self.estimate = estimate


@dataclass
class MemoryEstimate:
    params: int
    weight_bytes: int  # parameters + gradients + optimiser states
    train_bytes: int  # activations of one training batch (+ their gradients)
    eval_bytes: int  # the largest layer at the evaluation batch size
    fused_width: int | None  # the fusion operator's output width (feature fusion)
    operator: str  # what the error names, e.g. "model.fusion 'tensor'"
    measured: bool  # activations measured by a forward pass on meta tensors (else estimated)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + max(self.train_bytes, self.eval_bytes)

    def describe(self) -> str:
        parts = [f"about {self.total_bytes / GB:.2f} GB ({self.params:,} parameters: {self.weight_bytes / GB:.2f} GB "
                 f"with gradients and optimiser state; activations {max(self.train_bytes, self.eval_bytes) / GB:.2f} GB)"]
        if self.fused_width is not None:
            parts.append(f"fused width {self.fused_width:,}")
        return "; ".join(parts)


def operator_of(model_cfg) -> str:
    """The config key and name of the part of the model that decides its size (for messages)."""
    fam = getattr(model_cfg, "family", "fusion")
    if fam == "fusion":
        strategy = getattr(model_cfg, "strategy", "feature")
        if strategy == "feature":
            return f"model.fusion {model_cfg.fusion.name!r}"
        if strategy == "late":
            return f"model.late {model_cfg.late.name!r} (late fusion)"
        return f"model.early encoder {model_cfg.early.encoder.name!r}"
    if fam == "intermediate":
        return f"model.block {model_cfg.block!r} (family intermediate)"
    return f"model.family {fam!r}"


def _optimizer_states(training) -> int:
    name = getattr(training, "optimizer", "adamw")
    return 1 if name == "sgd" else 2


def _meta_batch(shapes: Mapping[str, tuple], batch: int, num_outputs: int, task: str, dtypes: Mapping[str, Any]):
    import torch

    from .batch import MultimodalBatch

    inputs, mask, lengths = {}, {}, {}
    for m, shape in shapes.items():
        dims = tuple(VARIABLE_LENGTH if s is None else int(s) for s in shape)
        inputs[m] = torch.zeros((batch,) + dims, dtype=dtypes.get(m, torch.float32), device="meta")
        mask[m] = torch.ones(batch, dtype=torch.bool, device="meta")
        if shape and shape[0] is None:
            lengths[m] = torch.full((batch,), dims[0], dtype=torch.long, device="meta")
    target = (torch.zeros(batch, dtype=torch.long, device="meta") if task == "multiclass"
              else torch.zeros((batch, num_outputs), device="meta"))
    return MultimodalBatch(inputs, mask, target, lengths, torch.arange(batch, device="meta"))


def _leaf_outputs(model, batch) -> tuple[int, int] | None:
    """(Σ, max) of the element counts of every leaf module's tensor outputs in one forward pass on meta
    tensors; None when the model cannot run on meta tensors (data-dependent control flow)."""
    import torch

    sizes: list[int] = []

    def hook(_mod, _inp, out):
        outs = out if isinstance(out, (tuple, list)) else (out,)
        sizes.extend(o.numel() for o in outs if isinstance(o, torch.Tensor))

    handles = [mod.register_forward_hook(hook) for mod in model.modules() if not list(mod.children())]
    try:
        model.train()
        model(batch)
    except Exception:  # noqa: BLE001 - e.g. `.item()` / `if mask.any()` on meta tensors: use the fallback
        return None
    finally:
        for h in handles:
            h.remove()
    return (sum(sizes), max(sizes, default=0)) if sizes else None


def estimate_memory(cfg, shapes: Mapping[str, tuple], num_outputs: int, task: str,
                    dtypes: Mapping[str, Any] | None = None) -> MemoryEstimate | None:
    """The memory the run of ``cfg`` (an ExperimentConfig) needs, without allocating the model.

    None when the model cannot even be built on the meta device (then nothing is checked here; building it
    for real reports any config error)."""
    import torch

    from .models import build_model

    model_cfg = cfg.model
    try:
        with torch.device("meta"):
            model = build_model(model_cfg, shapes, int(num_outputs), task)
    except Exception:  # noqa: BLE001 - a builder that needs real tensors or files (data-fitted buffers, pretrained
        return None  # weights loaded with from_pretrained): no estimate; building it for real reports any config error
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    pbytes = max((p.element_size() for p in params), default=4)
    weight_bytes = n_params * pbytes * (2 + _optimizer_states(cfg.training))
    fusion = getattr(model, "fusion", None)
    fused = getattr(fusion, "output_dim", None) if fusion is not None else None
    fused = int(fused) if fused is not None else None
    bs, ebs = int(cfg.data.batch_size), int(cfg.data.eval_batch_size)
    measured = None
    try:
        measured = _leaf_outputs(model, _meta_batch(shapes, bs, num_outputs, task, dtypes or {}))
    except Exception:  # noqa: BLE001 - a batch the model does not accept on meta: fallback below
        measured = None
    if measured is not None:
        total, widest = measured
        widest_row = math.ceil(widest / bs)
        train_bytes = 2 * total * pbytes
        eval_bytes = 2 * widest_row * ebs * pbytes
    else:  # the widest layer input (the fused width for feature fusion) × the batch
        widths = [int(m.in_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
        widest_row = max([fused or 0] + widths + [1])
        train_bytes = 2 * 2 * widest_row * bs * pbytes
        eval_bytes = 2 * widest_row * ebs * pbytes
    return MemoryEstimate(n_params, weight_bytes, train_bytes, eval_bytes, fused, operator_of(model_cfg),
                          measured is not None)


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else physical pages × page size; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_problem(cfg, shapes: Mapping[str, tuple], num_outputs: int, task: str, *, processes: int = 1,
                   dtypes: Mapping[str, Any] | None = None) -> MemoryBudgetError | None:
    """The :class:`MemoryBudgetError` the run of ``cfg`` would raise (None when it fits or cannot be estimated).

    ``processes``: runs training at the same time on this machine (``compare.workers``; DDP devices), each
    getting an equal share of the available memory."""
    est = estimate_memory(cfg, shapes, num_outputs, task, dtypes)
    if est is None:
        return None
    limit_gb = getattr(cfg.training, "memory_limit_gb", None)
    budgets = []
    if limit_gb is not None:
        budgets.append((float(limit_gb) * GB, f"training.memory_limit_gb={limit_gb:g}"))
    avail = available_memory_bytes()
    if avail is not None:
        share = avail * AVAILABLE_SHARE / max(int(processes), 1)
        each = f" shared by {processes} processes" if processes > 1 else ""
        budgets.append((share, f"{AVAILABLE_SHARE:.0%} of the {avail / GB:.1f} GB available on this machine{each}"))
    hints = []
    if est.operator == "model.fusion 'tensor'":
        hints.append("use model.fusion.name=low_rank (LMF: the same interactions in rank-R factors, no fused tensor)")
    hints.append("give the encoders a smaller output_dim (model.encoders.<m>.options.output_dim)")
    budget, why = min(budgets, key=lambda b: b[0]) if budgets else (None, "")
    if budget is not None and est.total_bytes > budget:
        hints.append(f"lower data.batch_size (now {cfg.data.batch_size}) / data.eval_batch_size "
                     f"(now {cfg.data.eval_batch_size}) or the head's hidden widths")
        return MemoryBudgetError(
            f"{est.operator}: this model needs {est.describe()} at batch size {cfg.data.batch_size}, over the budget "
            f"of {budget / GB:.2f} GB ({why}); " + "; or ".join(hints), est)
    max_width = getattr(cfg.training, "max_fused_width", None)
    if max_width is not None and est.fused_width is not None and est.fused_width > max_width:
        return MemoryBudgetError(
            f"{est.operator}: its fused vector has {est.fused_width:,} features ({est.describe()}), over "
            f"training.max_fused_width={max_width:,}: a head on it is mostly parameters no data can fit; "
            + "; or ".join(hints) + "; or raise training.max_fused_width (null disables the check)", est)
    return None


def check_memory(cfg, shapes: Mapping[str, tuple], num_outputs: int, task: str, *, processes: int = 1,
                 dtypes: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`MemoryBudgetError` (a ConfigError naming the operator) when the run would not fit."""
    err = memory_problem(cfg, shapes, num_outputs, task, processes=processes, dtypes=dtypes)
    if err is not None:
        raise err


# ---------------------------------------------------------------------- output paths
def _nearest_existing(path: Path) -> Path:
    cur = path
    while not cur.exists() and cur != cur.parent:
        cur = cur.parent
    return cur


def check_output_path(path: str | os.PathLike | None, kind: str = "dir", what: str = "--out") -> Path | None:
    """Check before any compute that ``path`` can be written; returns it as a Path (None stays None).

    ``kind="dir"``: an output folder; it may exist (as a folder) or be created, with any missing parents,
    under the nearest existing folder, which must be writable. ``kind="file"``: an output file; its folder
    must exist and be writable, and the path must not be a folder. Problems are one-line ConfigErrors.
    """
    if path is None:
        return None
    p = Path(path).expanduser()
    if kind == "dir":
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{what}: {str(path)!r} is an existing file, but an output folder is expected; "
                              "give a folder path (it is created if missing)")
        base = _nearest_existing(p.absolute())
        if not base.is_dir():
            raise ConfigError(f"{what}: cannot create the folder {str(path)!r}: {str(base)!r} is a file, not a "
                              "folder; choose another path")
        if not os.access(base, os.W_OK | os.X_OK):
            raise ConfigError(f"{what}: cannot write into {str(base)!r} (permission denied); choose a writable "
                              "folder")
        return p
    if p.is_dir():
        raise ConfigError(f"{what}: {str(path)!r} is a folder, but an output file is expected; give a file name, "
                          f"e.g. {str(p / 'out.csv')!r}")
    parent = p.absolute().parent
    if not parent.exists():
        raise ConfigError(f"{what}: the folder {str(parent)!r} of {str(path)!r} does not exist; create it first or "
                          "choose another path")
    if not parent.is_dir():
        raise ConfigError(f"{what}: {str(parent)!r} is a file, not a folder; choose another path for {str(path)!r}")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{what}: cannot write {str(path)!r} (permission denied); choose a writable location")
    return p


# ---------------------------------------------------------------------- training values
def check_finite_loss(loss: Any, epoch: int, step: int, batch_idx: int | None = None) -> None:
    """A non-finite loss stops training: a DataError naming the epoch and step, and what to change."""
    import torch

    if isinstance(loss, torch.Tensor):
        if loss.numel() == 0 or bool(torch.isfinite(loss.detach()).all()):
            return
        value = float(loss.detach().reshape(-1)[0]) if loss.numel() == 1 else "non-finite"
    else:
        value = float(loss)
        if math.isfinite(value):
            return
    where = f"epoch {epoch}, step {step}" + (f" (batch {batch_idx} of the epoch)" if batch_idx is not None else "")
    raise DataError(f"training: the loss is {value} at {where}; training stopped and nothing was saved. "
                    "Lower training.lr, set training.gradient_clip (e.g. 1.0), or check the inputs for NaN / inf "
                    "values")


def check_finite_weights(model, epoch: int | None = None) -> None:
    """Non-finite parameters or buffers are never saved: a DataError naming the first few.

    ``model`` is a module or a state dict (name -> tensor); ``epoch`` (0-based) names the epoch whose
    per-epoch checkpoint was about to be written."""
    import torch

    items = (list(model.items()) if hasattr(model, "items") else
             list(model.named_parameters()) + list(model.named_buffers()))
    bad = [name for name, t in items if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        when = "" if epoch is None else f" after epoch {epoch + 1}"
        raise DataError(f"training: the trained weights{when} hold NaN or inf values ({shown}); no checkpoint was "
                        "saved for them. Lower training.lr or set training.gradient_clip")


def training_processes(training) -> int:
    """How many training processes share this machine's memory: CPU devices (DDP processes), else 1."""
    acc = str(getattr(training, "accelerator", "cpu")).lower()
    dev = str(getattr(training, "devices", 1)).strip()
    return int(dev) if acc == "cpu" and dev.isdigit() and int(dev) > 0 else 1


def input_dtypes(dataset) -> dict[str, Any]:
    """The tensor dtype of each modality (from one real row of ``dataset``; {} when it cannot be read)."""
    try:
        batch = dataset.batch([0])
        return {m: x.dtype for m, x in batch.inputs.items()}
    except Exception:  # noqa: BLE001 - any dataset without .batch: float32 is assumed
        return {}


def launched_rank() -> int:
    """This process's global rank as a distributed launcher set it (Lightning's ddp launcher, torchrun, SLURM):
    0 in the process the user started (before any launch) and in a single-process run."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(key)
        if value is not None and value.strip().isdigit():
            rank = int(value)
            if key == "LOCAL_RANK":
                node = os.environ.get("NODE_RANK", "0")
                rank += int(node) if node.isdigit() and int(node) > 0 else 0  # a non-zero node is never rank 0
            return rank
    return 0
