"""The experiment configuration: pydantic models, YAML in, dotted ``--set`` overrides.

``load_config(path, overrides)`` validates the *whole* config before any compute and raises one
:class:`ConfigError` listing every problem with its dotted path, what was found and the closest
valid name (unknown keys, misspelt registry names, wrong types).

Example (YAML)::

    seed: 0
    data: {name: avmnist, options: {variant: hard}, batch_size: 64}
    model:
      strategy: feature            # early | feature | late | intermediate
      encoders:
        image: {name: cnn2d, options: {channels: [16, 32]}}
        audio: {name: cnn1d}
      fusion: {name: concat}
      head: {name: mlp, options: {hidden: [64]}}
    training: {max_epochs: 10, lr: 0.001}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .registry import close_matches


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Component(_Strict):
    """A registry entry by name plus its keyword options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Strict):
    name: str = "avmnist"
    options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    num_workers: int = Field(0, ge=0)


class EarlyConfig(_Strict):
    modalities: list[str] = Field(default_factory=list)
    axis: int = 0
    encoder: Component = Field(default_factory=lambda: Component(name="cnn2d"))


class IntermediateConfig(_Strict):
    # None: one block after each of the top stages, aligned from the end; [] : no block (late fusion)
    fusion_points: list[dict[str, int]] | None = None
    block: str = "mmtm"
    block_options: dict[str, Any] = Field(default_factory=dict)


class MissingConfig(_Strict):
    modality_dropout: float | dict[str, float] = 0.0
    imputer: str | None = None


class ModelConfig(_Strict):
    strategy: Literal["early", "feature", "late", "intermediate"] = "feature"
    modalities: list[str] | None = None  # a subset to use (e.g. one modality for a unimodal baseline)
    encoders: dict[str, Component] = Field(default_factory=dict)
    fusion: Component = Field(default_factory=lambda: Component(name="concat"))
    head: Component = Field(default_factory=lambda: Component(name="mlp"))
    late: Component = Field(default_factory=lambda: Component(name="mean_prob"))
    early: EarlyConfig = Field(default_factory=EarlyConfig)
    intermediate: IntermediateConfig = Field(default_factory=IntermediateConfig)
    missing: MissingConfig = Field(default_factory=MissingConfig)


class TrainingConfig(_Strict):
    max_epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    scheme: Literal["joint", "per_stream"] = "joint"
    unimodal_loss_weight: float = Field(0.0, ge=0)  # auxiliary per-modality losses (late fusion always uses them)
    patience: int | None = Field(None, ge=1)  # early stopping on the validation monitor
    monitor: str = "val_loss"
    gradient_clip: float | None = Field(None, gt=0)
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"  # e.g. "ddp" for several GPUs or nodes
    precision: str = "32-true"
    progress: bool = True
    limit_train_batches: float | int | None = None


class CompareConfig(_Strict):
    fusions: list[str] = Field(default_factory=lambda: ["concat", "sum", "max", "gated", "tensor", "low_rank"])
    fusion_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    late: list[str] = Field(default_factory=lambda: ["mean_prob"])
    early: bool = False
    intermediate: bool = False
    unimodal: bool = True
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    missing_patterns: bool = True
    tsne: bool = True
    tsne_samples: int = Field(600, ge=10)
    workers: int = Field(1, ge=1)  # parallel training processes (one torch thread each)


class ExperimentConfig(_Strict):
    seed: int = 0
    task: Literal["auto", "multiclass", "multilabel", "regression"] = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    output_dir: str = "runs/experiment"


def _model_fields(model: type[BaseModel], path: list) -> list[str]:
    """The valid keys at ``path`` inside ``model`` (for close-match suggestions)."""
    cur: Any = model
    for p in path:
        if isinstance(cur, type) and issubclass(cur, BaseModel) and p in cur.model_fields:
            ann = cur.model_fields[p].annotation
            if getattr(ann, "__origin__", None) is not dict:  # unwrap Optional/Union to the model type
                ann = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), ann)
            cur = ann
        elif isinstance(p, str) and getattr(cur, "__origin__", None) is dict:
            cur = cur.__args__[1]
        else:
            return []
    return list(cur.model_fields) if isinstance(cur, type) and issubclass(cur, BaseModel) else []


def format_validation_error(exc: ValidationError, root: type[BaseModel] = ExperimentConfig) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = [p for p in err["loc"]]
        path = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            known = _model_fields(root, loc[:-1])
            hits = close_matches(str(loc[-1]), known)
            hint = f"did you mean {' or '.join(map(repr, hits))}?" if hits else f"valid keys: {', '.join(known)}"
            lines.append(f"{path}: unknown key; {hint}")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return lines


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section (it holds {nxt!r})")
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. training.max_epochs=5")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key.strip()}: value {text!r} is not valid YAML ({str(exc).splitlines()[0]}); "
                              "quote strings and close brackets, e.g. --set compare.seeds=[0,1]") from None
        _set_dotted(raw, key.strip(), value)
    return raw


def parse_config(raw: dict | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Validate a config dict (plus ``key=value`` overrides); all problems are reported at once."""
    raw = apply_overrides(dict(raw or {}), overrides)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = format_validation_error(exc) + check_names(raw)
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
    problems = check_names(cfg)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r}: the top level must be a mapping of sections")
    _resolve_schema_paths(raw, p.parent)
    return parse_config(raw, overrides)


def _resolve_schema_paths(raw: dict, base: Path) -> None:
    """A table schema named relative to the config file is found next to it."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    name = data.get("name")
    if isinstance(name, str) and name.lower().endswith((".yaml", ".yml")) and not Path(name).is_absolute():
        if (base / name).is_file():
            data["name"] = str((base / name).resolve())
    opts = data.get("options")
    if isinstance(opts, dict) and isinstance(opts.get("schema"), str) and not Path(opts["schema"]).is_absolute():
        if (base / opts["schema"]).is_file():
            opts["schema"] = str((base / opts["schema"]).resolve())


def check_names(cfg: ExperimentConfig | dict) -> list[str]:
    """Registry names anywhere in the config (a validated config or a raw dict); one line per unknown name."""
    from . import registry
    from .registry import suggestion

    _ensure_registries()
    raw = cfg.model_dump() if isinstance(cfg, BaseModel) else cfg
    out: list[str] = []

    def get(d, *keys, default=None):
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return default
            d = d[k]
        return d

    def chk(reg: registry.Registry, name, path: str):
        if isinstance(name, str) and name not in reg:
            out.append(f"{path}: unknown {reg.kind} {name!r}; {suggestion(name, reg.list())}")

    model = get(raw, "model", default={}) or {}
    strategy = get(model, "strategy", default="feature")
    encs = get(model, "encoders", default={})
    for mod, comp in (encs.items() if isinstance(encs, dict) else []):
        chk(registry.ENCODERS, get(comp, "name"), f"model.encoders.{mod}.name")
    if strategy == "feature":
        chk(registry.FUSIONS, get(model, "fusion", "name", default="concat"), "model.fusion.name")
    if strategy == "late":
        chk(registry.LATE_COMBINERS, get(model, "late", "name", default="mean_prob"), "model.late.name")
    if strategy == "early":
        chk(registry.ENCODERS, get(model, "early", "encoder", "name", default="cnn2d"), "model.early.encoder.name")
    if strategy == "intermediate":
        chk(registry.INTERACTIONS, get(model, "intermediate", "block", default="mmtm"), "model.intermediate.block")
    chk(registry.HEADS, get(model, "head", "name", default="mlp"), "model.head.name")
    for key, reg in (("fusions", registry.FUSIONS), ("late", registry.LATE_COMBINERS)):
        names = get(raw, "compare", key, default=[])
        for i, f in enumerate(names if isinstance(names, list) else []):
            chk(reg, f, f"compare.{key}[{i}]")
    from .datasets import DATASETS

    name = get(raw, "data", "name", default="avmnist")
    if isinstance(name, str) and not name.lower().endswith((".yaml", ".yml")):
        chk(DATASETS, name, "data.name")
    return out


def _ensure_registries() -> None:
    """Import the modules whose import fills the registries."""
    import importlib

    for mod in ("encoders", "fusion", "late", "models.heads", "interaction"):
        try:
            importlib.import_module(f"mmfuse.{mod}")
        except ImportError as exc:  # a module still being written must not hide the others
            if f"mmfuse.{mod}" not in str(exc) and mod not in str(exc):
                raise
