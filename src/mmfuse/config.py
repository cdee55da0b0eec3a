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
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .registry import close_matches, suggestion


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Component(_Strict):
    """A registry entry by name plus its keyword options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class MissingDataConfig(_Strict):
    """``data.missing``: simulate a modality missing from a fraction of the samples of some splits.

    In each split of ``splits``, among the rows where ``modality`` is present, ``round(present_fraction
    * n)`` keep it (per class for a multiclass task when ``stratify``, like SMIL's η), chosen with the data
    seed; the others get it masked absent (mask False). No sample is removed; the counts are reported on
    the dataset (``dataset.missing_report``) and in ``mmfuse compare``'s runs.csv / leaderboard.md.
    """

    modality: str
    present_fraction: float = Field(ge=0, le=1)
    splits: list[Literal["train", "val", "test"]] = Field(default_factory=lambda: ["train"], min_length=1)
    stratify: bool = True


class DataConfig(_Strict):
    name: str = "avmnist"
    options: dict[str, Any] = Field(default_factory=dict)
    # the seed of the data (split, noise, data.missing); None = the experiment's seed
    seed: int | None = None
    missing: MissingDataConfig | None = None
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    num_workers: int = Field(0, ge=0)
    # regression only: train on (y - mean) / std with the training rows' mean / std per output; predictions,
    # metrics and explanations are given on the original scale (mmfuse.datasets.target_scale). false: raw scale
    standardize_target: bool = True


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

    @field_validator("modality_dropout")
    @classmethod
    def _rate_in_unit_interval(cls, v):
        rates = v.items() if isinstance(v, dict) else [(None, v)]
        for m, r in rates:
            if not 0.0 <= r <= 1.0:
                where = "" if m is None else f" for modality {m!r}"
                raise ValueError(f"a drop probability must be in [0, 1], got {r}{where}; use e.g. 0.3 (0 = never drop)")
        return v


class _ModelBase(_Strict):
    """Keys every model family shares (so ``--set model.family=NAME`` works on a shared base config)."""

    modalities: list[str] | None = None  # a subset to use (e.g. one modality for a unimodal baseline)
    encoders: dict[str, Component] = Field(default_factory=dict)
    head: Component = Field(default_factory=lambda: Component(name="mlp"))
    missing: MissingConfig = Field(default_factory=MissingConfig)
    # warm start: a checkpoint folder; every parameter whose name and shape match is copied before training
    init_from: str | None = None


class FusionModelConfig(_ModelBase):
    """``family: fusion``: early (one encoder on joined inputs), feature (an operator) or late fusion."""

    family: Literal["fusion"] = "fusion"
    strategy: Literal["early", "feature", "late"] = "feature"
    fusion: Component = Field(default_factory=lambda: Component(name="concat"))
    late: Component = Field(default_factory=lambda: Component(name="mean_prob"))
    early: EarlyConfig = Field(default_factory=EarlyConfig)


class IntermediateModelConfig(_ModelBase):
    """``family: intermediate``: interaction blocks (MMTM, ...) between the stages of staged encoders."""

    family: Literal["intermediate"] = "intermediate"
    # None: one block after each of the top stages, aligned from the end; [] : no block (late fusion)
    fusion_points: list[dict[str, int]] | None = None
    block: str = "mmtm"
    block_options: dict[str, Any] = Field(default_factory=dict)
    combine: Literal["sum", "mean"] = "sum"


class MEAModelConfig(_ModelBase):
    """``family: mea``: modality-exclusive and -agnostic representations for asynchronous sequences."""

    family: Literal["mea"] = "mea"
    dim: int = Field(32, ge=1)
    heads: int = Field(4, ge=1)
    psa_layers: int = Field(2, ge=1)
    hca_layers: int = Field(2, ge=1)
    mu: float = Field(0.25, ge=0, le=1)
    graph_rounds: int = Field(2, ge=1)
    alpha: float = Field(0.02, ge=0)  # disparity (HSIC) weight
    beta: float = Field(0.03, ge=0)  # adversarial weight
    grl_lambda: float = Field(1.0, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    hsic_kernel: Literal["rbf", "linear"] = "rbf"
    #: shared keys this family does not use: dropped when a shared base config switches family (--set model.family)
    unused_shared_keys: ClassVar[tuple[str, ...]] = ("encoders",)

    @model_validator(mode="after")
    def _dim_divisible_by_heads(self):
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads}) for multi-head attention; "
                             "e.g. dim: 32, heads: 4")
        if self.encoders:
            raise ValueError(f"encoders: MEA has its own per-modality front end (Conv1d over time + positions) and "
                             f"takes no encoders; remove model.encoders (got {sorted(self.encoders)})")
        if self.missing.imputer:
            raise ValueError("missing.imputer: MEA has no per-modality embedding to impute (absent modalities are "
                             "masked out of attention, the graph and the constraints); remove it")
        return self


class SMILModelConfig(_ModelBase):
    """``family: smil``: SMIL (Ma et al. 2021), one modality reconstructed from the other."""

    family: Literal["smil"] = "smil"
    full: str | None = None  # the modality every row has (None: the first modality in sorted order)
    reconstructed: str | None = None  # the modality that may be absent (None: the other one)
    preset: Literal["code", "paper"] = "code"
    k: int = Field(10, ge=1)  # number of priors (clusters of the reconstructed modality's features)
    prior: Literal["kmeans", "pca"] = "kmeans"
    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    # None = the preset's value
    recon_mode: Literal["code", "paper"] | None = None
    reg_op: Literal["add", "mul"] | None = None
    learn_sigma: bool | None = None
    regularize: list[Literal["fc1", "fc2"]] = Field(default_factory=lambda: ["fc1", "fc2"])
    regularize_real: bool = False


class NgiamModelConfig(_ModelBase):
    """``family: ngiam``: Ngiam et al. 2011 representations (bimodal DBN, video-only / bimodal deep AE).

    Exactly two modalities, each sample flattened to a vector; ``encoders`` are not used (the
    representation reads the flattened inputs). See :mod:`mmfuse.families.ngiam`.
    """

    unused_shared_keys: ClassVar[tuple[str, ...]] = ("encoders",)

    family: Literal["ngiam"] = "ngiam"
    model: Literal["dbn", "bimodal_ae", "video_only_ae"] = "bimodal_ae"
    # which modalities the supervised head sees in training and at test time (Ngiam Table 1):
    # fusion = both / both; cross_modality = source / source; shared = source / whatever is present
    setting: Literal["fusion", "cross_modality", "shared"] = "fusion"
    # the modality trained on (video-only AE's input; cross_modality / shared); None = the first in sorted order
    source: str | None = None
    hidden_dims: int | dict[str, int] = 64  # first-layer size, one for both modalities or {modality: size}
    shared_dim: int = Field(32, ge=1)  # the joint (shared) layer
    # weight of the squared reconstruction error added to the task loss in fine-tuning (0 = none)
    reconstruction_weight: float = Field(1.0, ge=0)
    denoising: bool = True  # bimodal_ae: the paper's augmentation (1/3 first zeroed, 1/3 second, 1/3 both)
    sparsity_target: float = Field(0.1, gt=0, lt=1)  # RBM sparsity ρ (every RBM of the stack)
    sparsity_cost: float = Field(0.0, ge=0)  # RBM sparsity λ (0 = no regulariser)
    sigma: float = Field(1.0, gt=0)  # σ of the first-layer Gaussian RBMs
    output: Literal["linear", "sigmoid"] = "linear"  # autoencoders' reconstruction units
    infer_steps: int = Field(10, ge=1)  # dbn: mean-field steps that infer an absent modality
    # z-score each input feature with training statistics (set by the greedy_pretrain scheme; stored in the checkpoint)
    standardize: bool = True
    # train only the head on the (pre-trained) representation, as the paper's linear classifier on features
    freeze_representation: bool = False

    @model_validator(mode="after")
    def _no_encoders(self):
        if self.encoders:
            raise ValueError(f"encoders: the Ngiam representations read the flattened inputs and take no encoders; "
                             f"remove model.encoders (got {sorted(self.encoders)})")
        return self


#: every model family's sub-config, keyed by ``model.family``
FAMILY_CONFIGS: dict[str, type[_ModelBase]] = {
    "fusion": FusionModelConfig, "intermediate": IntermediateModelConfig, "mea": MEAModelConfig,
    "smil": SMILModelConfig, "ngiam": NgiamModelConfig,
}
ModelSpec = Annotated[
    Union[FusionModelConfig, IntermediateModelConfig, MEAModelConfig, SMILModelConfig, NgiamModelConfig],
    Field(discriminator="family"),
]
#: backwards-compatible name: the fusion family's config
ModelConfig = FusionModelConfig


def normalize_model_raw(raw: Any) -> Any:
    """Fill ``family`` in a raw model section: absent means ``fusion``, except the old spelling
    ``strategy: intermediate`` (with an ``intermediate:`` subsection), which becomes ``family: intermediate``."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    if "family" not in raw:
        if raw.get("strategy") == "intermediate":
            raw.pop("strategy")
            sub = raw.pop("intermediate", None) or {}
            for k in ("fusion", "late", "early"):
                raw.pop(k, None)
            raw.update(sub if isinstance(sub, dict) else {})
            raw["family"] = "intermediate"
        else:
            raw["family"] = "fusion"
    return raw


def _drop_foreign_keys(model_raw: dict, keep: set[str] = frozenset()) -> dict:
    """After ``--set model.family=NAME``: drop the keys that only other families have (a shared base config).
    Keys in ``keep`` (those the user set with ``--set`` too) stay, so a wrong one is reported, not ignored."""
    fam = FAMILY_CONFIGS.get(model_raw.get("family"))
    if fam is None:
        return model_raw
    others = set().union(*(set(c.model_fields) for n, c in FAMILY_CONFIGS.items())) - set(fam.model_fields)
    others.add("intermediate")  # the old spelling's subsection (strategy: intermediate), no family has it now
    others |= set(getattr(fam, "unused_shared_keys", ()))
    return {k: v for k, v in model_raw.items() if k not in others or k in keep}


def parse_model_config(raw: Any):
    """The family sub-config of a raw ``model`` section (or a sub-config returned as is)."""
    if isinstance(raw, _ModelBase):
        return raw
    try:
        return _MODEL_ADAPTER.validate_python(normalize_model_raw(dict(raw or {})))
    except ValidationError as exc:
        lines = format_validation_error(exc, prefix=("model",))
        raise ConfigError("invalid model config:\n  " + "\n  ".join(lines)) from None


FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32


class TrainingConfig(_Strict):
    max_epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    # a registered training scheme (mmfuse.schemes): joint | per_stream | smil_meta | greedy_pretrain;
    # "auto" = the model family's default
    scheme: str = "auto"
    scheme_options: dict[str, Any] = Field(default_factory=dict)  # validated by the scheme's Options model
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
    # continue the run saved in <output>/last (mmfuse train --resume): bit-identical to an uninterrupted run on CPU
    resume: bool = False
    # a memory budget (GB) checked before the model is built (mmfuse.guards); the machine's available memory always is
    memory_limit_gb: float | None = Field(None, gt=0)
    # refuse a fusion operator whose fused vector is wider than this (e.g. TFN over 4 modalities of width 32:
    # 33^4 = 1.19 M features and a 76 M-parameter head); null disables the check
    max_fused_width: int | None = Field(1_000_000, ge=1)
    # frozen encoders' outputs computed once per split and cached on disk (mmfuse.embedding_cache); auto = on
    # whenever an encoder is frozen (float32 training); results are identical with and without it
    embedding_cache: Literal["auto", "off"] = "auto"

    @field_validator("lr", "weight_decay")
    @classmethod
    def _finite_float32(cls, v: float, info) -> float:
        # the optimiser computes in float32: a larger (or infinite / NaN) value overflows inside torch
        if not (v <= FLOAT32_MAX):
            example = "1e-3" if info.field_name == "lr" else "1e-4 (0 = none)"
            raise ValueError(f"{v!r} is not a finite float32 (at most {FLOAT32_MAX:.4g}), which the optimiser "
                             f"computes in; set training.{info.field_name} to a usual value, e.g. {example}")
        return v

    @field_validator("embedding_cache", mode="before")
    @classmethod
    def _cache_bool(cls, v):  # YAML reads a bare `off` as false
        return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v
    # the test split evaluated once per simulated missing-modality pattern (2^M - 1 passes): true | false | "auto"
    # ("auto": only when those passes cost no more test samples than the run trained on, so a tiny run stays tiny)
    evaluate_patterns: bool | Literal["auto"] = "auto"
    # mmfuse train's learning_curve.png: true | false | "auto" (only when there are at least two epochs to draw)
    plots: bool | Literal["auto"] = "auto"
    # diagnostics of every run (mmfuse.diagnostics): each modality's only-present test metric, a linear probe on its
    # encoder's embeddings, the ignored-modality warning and the per-modality encoder gradient norms;
    # "no_probe": all but the probe (its few seconds saved where unimodal runs give the reference, e.g. compare)
    diagnostics: bool | Literal["no_probe"] = True


ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")


def check_devices(training: TrainingConfig | dict) -> list[str]:
    """``training.accelerator`` / ``training.devices`` against this machine: one line per problem (naming
    the key and the fix), e.g. a GPU asked for where torch sees none, or more CPU processes than cores.
    Checked by :func:`parse_config` and at the start of ``fit``, before any data loads (not when a saved
    checkpoint is read, so a model trained on a GPU still evaluates on a CPU)."""
    import os

    import torch

    t = training.model_dump() if isinstance(training, BaseModel) else dict(training or {})
    acc = str(t.get("accelerator", "cpu")).strip().lower()
    devices = t.get("devices", 1)
    if acc not in ACCELERATORS:
        return [f"training.accelerator: unknown accelerator {acc!r}; {suggestion(acc, list(ACCELERATORS))} "
                "(this machine: cpu)"]
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    fix_acc = "set training.accelerator=cpu (or auto)"
    if acc == "gpu" and not (cuda or mps):
        return [f"training.accelerator: 'gpu' requested but this machine has no GPU that torch can use "
                f"(torch.cuda.is_available() is False, no MPS); {fix_acc}"]
    if acc == "cuda" and not cuda:
        return [f"training.accelerator: 'cuda' requested but torch.cuda.is_available() is False on this machine; {fix_acc}"]
    if acc == "mps" and not mps:
        return [f"training.accelerator: 'mps' requested but torch.backends.mps.is_available() is False on this "
                f"machine; {fix_acc}"]
    if acc == "tpu":
        try:
            from lightning.fabric.accelerators.xla import XLAAccelerator

            tpu = XLAAccelerator.is_available()
        except Exception:  # noqa: BLE001 - torch_xla missing or broken: no TPU
            tpu = False
        if not tpu:
            return [f"training.accelerator: 'tpu' requested but no TPU (torch_xla) is available; {fix_acc}"]
        return []
    if acc == "auto":
        acc = "cuda" if cuda else "mps" if mps else "cpu"
    kind = "cpu" if acc == "cpu" else "mps" if acc == "mps" or (acc == "gpu" and not cuda) else "cuda"
    have = {"cpu": os.cpu_count() or 1, "cuda": torch.cuda.device_count() if cuda else 0, "mps": 1}[kind]
    what = {"cpu": "CPU core(s) (one training process per device)", "cuda": "CUDA GPU(s)", "mps": "MPS device"}[kind]
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return []
    if isinstance(devices, str) and not text.isdigit():
        if kind == "cpu":
            return [f"training.devices: {devices!r} is not a number of processes; on the CPU give a count such as "
                    f"training.devices=1 (this machine has {have} {what})"]
        ids = [x.strip() for x in text.strip("[]").split(",") if x.strip()]
        bad = [x for x in ids if not x.isdigit() or int(x) >= have]
        if bad or not ids:
            return [f"training.devices: {devices!r} names device(s) {', '.join(bad) or text} that do not exist; "
                    f"this machine has {have} {what} (ids 0..{have - 1}); set training.devices=1"]
        return []
    n = int(text)
    if n < 1:
        return [f"training.devices: {devices!r} is not a device count; set training.devices=1, a count up to {have}, "
                "or auto"]
    if n > have:
        return [f"training.devices: {n} requested but this machine has {have} {what}; "
                f"set training.devices=1 (at most {have}) or auto"]
    return []


class TuningConfig(_Strict):
    """``compare.tuning`` (see :mod:`mmfuse.tuning`): the same number of Optuna trials for every method."""

    trials: int = Field(0, ge=0)  # trials per method (and grid point); 0 = no tuning
    seed: int = 0  # the TPE sampler's seed
    epochs: int | None = Field(None, ge=1)  # max epochs of a trial (None = training.max_epochs)
    patience: int = Field(3, ge=1)  # early stopping when tuning, unless training.patience is set
    sampler: Literal["tpe"] = "tpe"
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)  # dotted key -> {low, high, log} | {choices}


class EnsembleConfig(_Strict):
    size: int = Field(0, ge=0)  # Caruana selection steps (with replacement); 0 = no ensemble
    top: int = Field(5, ge=1)  # the best methods of the leaderboard that may enter


class CompareConfig(_Strict):
    # methods from any family, e.g. ["fusion:concat", "fusion:late", "intermediate:mmtm", "mea", "smil",
    # "ngiam:shared", "unimodal:image"] or names of ``overlays``; when set, replaces fusions/late/early/intermediate
    methods: list[str] | None = None
    overlays: dict[str, dict[str, Any]] = Field(default_factory=dict)  # method name -> config overlay
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # dotted key -> values: one more axis of the study
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
    save_checkpoints: bool = False  # a checkpoint per run in output_dir/runs/<key>/ (else only for t-SNE)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    # paired test of each method against the best, by seed (mmfuse.stats): ttest | wilcoxon; Holm-corrected
    test: Literal["ttest", "wilcoxon"] = "ttest"
    alpha: float = Field(0.05, gt=0, lt=1)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)

    # fewer than 3 seeds with tuning is allowed (smoke runs need it); mmfuse.compare.warn_few_seeds warns once per
    # config when the study starts (not here: a validator's warning points at pydantic and repeats on every re-parse)


class ExperimentConfig(_Strict):
    seed: int = 0
    task: Literal["auto", "multiclass", "multilabel", "regression"] = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSpec = Field(default_factory=FusionModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    output_dir: str = "runs/experiment"

    @field_validator("model", mode="before")
    @classmethod
    def _family(cls, v: Any) -> Any:
        return normalize_model_raw(v)



_MODEL_ADAPTER = TypeAdapter(ModelSpec)


def register_family_config(cls: type[_ModelBase]) -> type[_ModelBase]:
    """Add a model family's sub-config to the ``model.family`` union (a third-party family; the built-in
    ones are declared above). ``cls`` subclasses ``_ModelBase`` with ``family: Literal["name"] = "name"``.
    Register its builder with ``@MODELS.register("name", ...)``. Usable as a class decorator."""
    global _MODEL_ADAPTER
    if not (isinstance(cls, type) and issubclass(cls, _ModelBase)):
        raise ConfigError(f"register_family_config: expected a subclass of mmfuse.config._ModelBase, got {cls!r}")
    field = cls.model_fields.get("family")
    args = getattr(field.annotation, "__args__", ()) if field is not None else ()
    if len(args) != 1 or not isinstance(args[0], str) or field.default != args[0]:
        raise ConfigError(f"register_family_config: {cls.__name__} needs `family: Literal['name'] = 'name'`")
    FAMILY_CONFIGS[args[0]] = cls
    union = Union[tuple(FAMILY_CONFIGS.values())]  # type: ignore[valid-type]
    ExperimentConfig.model_fields["model"].annotation = union
    ExperimentConfig.model_rebuild(force=True)
    _MODEL_ADAPTER = TypeAdapter(Annotated[union, Field(discriminator="family")])
    return cls


def _unwrap(ann: Any) -> Any:
    """Optional/Union/Annotated -> the BaseModel type inside (or ``ann`` itself)."""
    if getattr(ann, "__origin__", None) is dict:
        return ann
    for a in getattr(ann, "__args__", (ann,)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return ann


def _model_fields(model: type[BaseModel], path: list, family: str | None = None) -> list[str]:
    """The valid keys at ``path`` inside ``model`` (for close-match suggestions)."""
    cur: Any = model
    for p in path:
        if isinstance(cur, type) and issubclass(cur, BaseModel) and p in cur.model_fields:
            ann = cur.model_fields[p].annotation
            cur = FAMILY_CONFIGS[family or "fusion"] if p == "model" and cur is ExperimentConfig else _unwrap(ann)
        elif isinstance(p, str) and getattr(cur, "__origin__", None) is dict:
            cur = cur.__args__[1]
        else:
            return []
    return list(cur.model_fields) if isinstance(cur, type) and issubclass(cur, BaseModel) else []


def format_validation_error(exc: ValidationError, root: type[BaseModel] | None = None,
                            prefix: tuple = ()) -> list[str]:
    """One line per error: dotted path (``prefix`` + location, without pydantic's union tags), what was
    found, and for unknown keys the closest valid ones. ``root`` is the model validated (None: the experiment
    config, or a model family's sub-config when ``prefix`` is ``("model",)``)."""
    lines = []
    for err in exc.errors():
        rel, tag = list(err["loc"]), None
        tag_at = next((i for i, p in enumerate(rel) if p in FAMILY_CONFIGS
                       and (list(prefix) + rel[:i])[-1:] == ["model"]), None)
        if tag_at is not None:
            tag = rel[tag_at]
            rel = rel[:tag_at] + rel[tag_at + 1:]
        path = ".".join(str(p) for p in list(prefix) + rel) or "<root>"
        if err["type"] == "extra_forbidden":
            if root is None and prefix == ("model",):
                known = _model_fields(FAMILY_CONFIGS[tag or "fusion"], rel[:-1])
            else:
                known = _model_fields(root or ExperimentConfig, rel[:-1], tag)
            hits = close_matches(str(rel[-1]), known)
            hint = (f"did you mean {' or '.join(map(repr, hits))}?" if hits else
                    f"valid keys: {', '.join(known)}" if known else "this section takes no keys; remove it")
            where = f" (model family {tag!r})" if tag and len(rel) == (1 if prefix == ("model",) else 2) else ""
            lines.append(f"{path}: unknown key; {hint}{where}")
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            got = (err.get("ctx") or {}).get("tag")
            lines.append(f"{path}.family: unknown model family {got!r}; {suggestion(str(got), list(FAMILY_CONFIGS))}")
        elif err["type"] == "value_error":  # our own validators: "key: what is wrong and how to fix it"
            msg = str(err["msg"]).removeprefix("Value error, ")
            key, sep, rest = msg.partition(": ")
            if sep and " " not in key:
                path, msg = f"{path}.{key}" if path != "<root>" else key, rest
            lines.append(f"{path}: {msg}")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r}); {_pydantic_fix(path, err)}")
    return lines


def _yaml_where(exc: Exception) -> str:
    """'line L, column C: problem' of a YAML error, in one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def _pydantic_fix(path: str, err: dict) -> str:
    """How to fix a built-in pydantic error at ``path`` (bounds, choices, types, lengths)."""
    ctx = err.get("ctx") or {}
    bound = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
             "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}.get(err["type"])
    if bound:
        return f"set {path} to a value {bound[0]} {ctx.get(bound[1])}"
    if err["type"] == "literal_error":
        return f"choose one of {ctx.get('expected')} for {path}"
    if err["type"] == "too_short":
        return f"give {path} at least {ctx.get('min_length')} item(s)"
    if err["type"] == "too_long":
        return f"give {path} at most {ctx.get('max_length')} item(s)"
    if err["type"].startswith(("int_", "float_", "bool_", "string_", "list_", "dict_")):
        kind = err["type"].split("_")[0].replace("int", "a whole number").replace("float", "a number") \
            .replace("bool", "true or false").replace("string", "a string").replace("list", "a list") \
            .replace("dict", "a mapping")
        return f"set {path} to {kind}"
    return f"set {path} to a valid value"


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
            raise ConfigError(f"--set {item!r}: expected key=value; write it as e.g. --set training.max_epochs=5")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key.strip()}: value {text!r} is not valid YAML ({str(exc).splitlines()[0]}); "
                              "quote strings and close brackets, e.g. --set compare.seeds=[0,1]") from None
        _set_dotted(raw, key.strip(), value)
    return raw


def parse_config(raw: dict | None, overrides: list[str] | None = None, devices: bool = True) -> ExperimentConfig:
    """Validate a config dict (plus ``key=value`` overrides); all problems are reported at once.

    ``devices``: also check ``training.accelerator`` / ``training.devices`` against this machine
    (:func:`check_devices`); False for a config that will not train here (e.g. a checkpoint's, to evaluate)."""
    raw = apply_overrides(dict(raw or {}), overrides)
    keys = [o.split("=", 1)[0].strip() for o in overrides or []]
    if "model.family" in keys and isinstance(raw.get("model"), dict):
        raw["model"] = _drop_foreign_keys(raw["model"], {k.split(".")[1] for k in keys if k.startswith("model.") and k.count(".") >= 1})
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = format_validation_error(exc) + check_names(raw)
        train = raw.get("training")
        if devices and isinstance(train, dict) and not any(ln.startswith(("training.accelerator", "training.devices"))
                                                           for ln in lines):
            try:
                lines += check_devices({k: train[k] for k in ("accelerator", "devices") if k in train})
            except Exception:  # noqa: BLE001 - malformed values are already reported by pydantic
                pass
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
    problems = check_names(cfg)
    bad = check_devices(cfg.training) if devices else []
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems + bad))
    if bad:  # a device that is not there: one line, before any data loads
        raise ConfigError(bad[0])
    return cfg


def read_config_file(path: str | Path, who: str = "config file") -> dict:
    """The raw mapping of a YAML config file (schema paths resolved next to it); clear errors, no traceback."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{who} {str(p)!r} does not exist; check the path (relative paths start at the current folder)")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{who} {str(p)!r} is not valid YAML ({_yaml_where(exc)}); fix the YAML syntax there") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{who} {str(p)!r}: the top level must be a mapping of sections")
    _resolve_schema_paths(raw, p.parent)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    cfg = parse_config(read_config_file(path), overrides)
    _remember_source(cfg, path)
    return cfg


_SOURCES: dict[int, tuple[Any, str]] = {}  # id(config) -> (weak reference, the file it was read from)


def _remember_source(cfg: ExperimentConfig, path: str | Path) -> None:
    import weakref

    key = id(cfg)
    _SOURCES[key] = (weakref.ref(cfg, lambda _ref, k=key: _SOURCES.pop(k, None)), str(path))


def config_source(cfg: ExperimentConfig) -> str | None:
    """The file ``cfg`` was read from by :func:`load_config` (None for a config built by ``parse_config``), for
    messages that name the config; kept outside the model so that configs still compare by their values."""
    entry = _SOURCES.get(id(cfg))
    return entry[1] if entry is not None and entry[0]() is cfg else None


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
    family = get(model, "family", default="fusion")
    strategy = get(model, "strategy", default="feature") if family == "fusion" else None
    task = get(raw, "task", default="auto")
    if task == "auto":  # the dataset may say its task without loading (e.g. avmnist target: sum -> regression)
        from .datasets.loading import dataset_task

        task = dataset_task(get(raw, "data", "name", default="avmnist"), get(raw, "data", "options", default={})) or "auto"
    if family in FAMILY_CONFIGS:  # an unknown family is reported by pydantic's union tag
        chk(registry.MODELS, family, "model.family")
    encs = get(model, "encoders", default={})
    for mod, comp in (encs.items() if isinstance(encs, dict) else []):
        chk(registry.ENCODERS, get(comp, "name"), f"model.encoders.{mod}.name")
    if strategy == "feature":
        chk(registry.FUSIONS, get(model, "fusion", "name", default="concat"), "model.fusion.name")
    if strategy == "late":
        late = get(model, "late", "name", default="mean_prob")
        chk(registry.LATE_COMBINERS, late, "model.late.name")
        if task != "auto":
            try:
                registry.LATE_COMBINERS.check_task(late, task, "model.late.name")
            except ConfigError as exc:
                out.append(str(exc))
    if strategy == "early":
        chk(registry.ENCODERS, get(model, "early", "encoder", "name", default="cnn2d"), "model.early.encoder.name")
    if family == "intermediate":
        chk(registry.INTERACTIONS, get(model, "block", default="mmtm"), "model.block")
    if task != "auto" and family in registry.MODELS:
        try:
            registry.MODELS.check_task(family, task, "model.family")
        except ConfigError as exc:
            out.append(str(exc))
    imputer = get(model, "missing", "imputer")
    if imputer is not None:
        chk(registry.IMPUTERS, imputer, "model.missing.imputer")
    chk(registry.HEADS, get(model, "head", "name", default="mlp"), "model.head.name")
    scheme = get(raw, "training", "scheme", default="auto")
    if scheme != "auto":
        chk(registry.SCHEMES, scheme, "training.scheme")
    from .schemes import check_scheme_options

    out.extend(check_scheme_options(cfg if isinstance(cfg, BaseModel) else raw))
    from .compare import method_problems

    out.extend(method_problems(get(raw, "compare", default={}) or {}))
    for key, reg in (("fusions", registry.FUSIONS), ("late", registry.LATE_COMBINERS)):
        names = get(raw, "compare", key, default=[])
        for i, f in enumerate(names if isinstance(names, list) else []):
            chk(reg, f, f"compare.{key}[{i}]")
    DATASETS = registry.DATASETS
    name = get(raw, "data", "name", default="avmnist")
    if isinstance(name, str) and not name.lower().endswith((".yaml", ".yml")):
        chk(DATASETS, name, "data.name")
    if isinstance(name, str) and (name == "table" or name.lower().endswith((".yaml", ".yml"))):
        from .datasets.table import check_table_options

        out.extend(check_table_options(get(raw, "data", "options", default={})))
    return out


def _ensure_registries() -> None:
    """Import the modules whose import fills the registries."""
    import importlib

    for mod in ("encoders", "fusion", "late", "models.heads", "interaction", "missing", "datasets", "families", "schemes"):
        try:
            importlib.import_module(f"mmfuse.{mod}")
        except ImportError as exc:  # a module still being written must not hide the others
            if f"mmfuse.{mod}" not in str(exc) and mod not in str(exc):
                raise
