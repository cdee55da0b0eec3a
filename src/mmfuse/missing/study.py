"""The missing-modality study of SMIL's av-MNIST figure: accuracy against η.

``run_missing_study(config)`` trains, for every η (fraction of training samples that keep the
second modality) and every seed, each method below, and tests it with the first ("full")
modality only and with both modalities. It writes ``results.csv`` (one row per run and test
setting), ``summary.csv`` / ``summary.md`` (mean ± std over seeds) and ``accuracy_vs_eta.png``
(two panels like the paper's figure). ``missing_study_main(argv)`` is the CLI entry behind
``mmfuse missing-study CONFIG``.

Methods (all start from the same pre-trained encoders of a seed, so they differ only in how the
missing modality is handled):

=============  =========================================================================================
``lower``      full modality alone (encoder + MLP head trained on every training sample); η-independent
``upper``      zero-imputation fusion trained on complete pairs (η = 1); η-independent
``zero``       fusion with absent embeddings set to zero, trained on all samples
``mean``       fusion with the running mean embedding imputed
``learned``    fusion with a learned token per modality imputed
``dropout``    ``zero`` plus :class:`ModalityDropout` on the missing modality (``dropout_rate``)
``ae``         a regressor from the full modality's embedding to the missing one's (trained with MSE on
               the pairs, weight ``ae_weight``) fills absent embeddings — the paper's AE baseline
``smil``       SMIL, preset "code" (:func:`fit_smil`); ``smil_paper``: preset "paper"
=============  =========================================================================================

Shared stages per seed: the lower-bound model's encoder (stage 0) initialises every fusion model;
per (η, seed) the missing-modality encoder pre-trained on the pairs (stage 1) initialises every
fusion model except ``upper`` (which pre-trains on all pairs).

Config (YAML or dict); unknown keys raise :class:`~mmfuse.errors.ConfigError` naming close matches::

    dataset: {name: avmnist-smil, options: {variant: clean}}   # load_dataset(name, eta=, seed=, **options)
    full_modality: image
    missing_modality: audio
    etas: [0.1, 0.2]
    methods: [lower, upper, zero, dropout, ae, smil]
    seeds: [0, 1, 2]
    encoders: smil            # or {image: {name: lenet|snet|<ENCODERS name>, ...kwargs}, audio: {...}}
    epochs: {full: 50, missing: 15, fused: 15, pairs: 60, meta_steps: 400}
                              # full: lower bound / image pre-training; missing: audio pre-training on the pairs;
                              # fused: every baseline's fusion training (all samples); pairs: SMIL stage 2 (pairs);
                              # meta_steps: SMIL outer steps
    batch_size: 64
    missing_batch_size: 16
    meta_batch_size: 64
    dropout_rate: 0.5
    ae_weight: 1.0
    smil: {k: 10}             # extra fit_smil options (inner_lr, inner_params, second_order, ...)
    threads: 1                # torch intra-op threads per process
    workers: 1                # processes running seeds in parallel (results do not depend on it)
    reuse: []                 # result directories of earlier runs with the same settings: their
                              # (method, eta, seed) results are taken instead of recomputed
    output: benchmarks/results/smil
    progress: true
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, MMFuseError
from ..registry import close_matches
from .baselines import ImputedFusionModel, UnimodalClassifier
from .dropout import ModalityDropout
from .imputation import CrossModalImputer, LearnedTokenImputer, MeanImputer, ZeroImputer
from .loops import accuracy, make_loader, presence_indices, seed_everything, train_classifier, without
from .meta import fit_smil
from .smil import LeNetEncoder, SNetEncoder

METHODS = ("lower", "upper", "zero", "mean", "learned", "dropout", "ae", "smil", "smil_paper")
TESTS = ("full_only", "both")
SYNTHETIC = "synthetic-pairs"

#: av-MNIST numbers of the paper (η = 20 %), as read from its figure (spec 02, §2.6), in %.
PAPER_AVMNIST = {
    ("lower", "full_only"): 92.0,
    ("lower", "both"): 92.0,
    ("smil", "full_only"): 94.9,
    ("smil", "both"): 96.0,
    ("ae", "full_only"): 89.8,
    ("ae", "both"): 94.0,
}

DEFAULTS: dict[str, Any] = {
    "dataset": {"name": "avmnist-smil", "options": {}},
    "full_modality": "image",
    "missing_modality": "audio",
    "etas": [0.1, 0.2],
    "methods": ["lower", "upper", "zero", "dropout", "ae", "smil"],
    "seeds": [0, 1, 2],
    "encoders": "smil",
    "epochs": {"full": 50, "missing": 15, "fused": 15, "pairs": 60, "meta_steps": 400},
    "batch_size": 64,
    "missing_batch_size": 16,
    "meta_batch_size": 64,
    "dropout_rate": 0.5,
    "ae_weight": 1.0,
    "smil": {},
    "threads": None,
    "workers": 1,
    "reuse": [],
    "output": "missing_study",
    "progress": True,
}
EPOCH_KEYS = ("full", "missing", "fused", "pairs", "meta_steps")


# --------------------------------------------------------------------------- config
def _unknown(key: str, where: str, known: Sequence[str]) -> str:
    close = close_matches(key, list(known))
    hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"known keys: {', '.join(sorted(known))}"
    return f"{where}: unknown key {key!r}; {hint}"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_config(config: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """The validated config with defaults filled in; every problem is reported in one ConfigError."""
    if isinstance(config, (str, os.PathLike)):
        config = load_config_file(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"missing-study config: expected a mapping, got {type(config).__name__}")
    errors: list[str] = []
    for k in config:
        if k not in DEFAULTS:
            errors.append(_unknown(str(k), "missing-study config", list(DEFAULTS)))
    cfg = copy.deepcopy(DEFAULTS)
    for k, v in config.items():
        if k in DEFAULTS:
            cfg[k] = copy.deepcopy(v)
    # dataset
    ds = cfg["dataset"]
    if isinstance(ds, str):
        ds = {"name": ds, "options": {}}
    if not isinstance(ds, Mapping):
        errors.append("dataset: expected a name or {name: ..., options: {...}}")
        ds = {"name": "", "options": {}}
    for k in ds:
        if k not in ("name", "options"):
            errors.append(_unknown(str(k), "dataset", ["name", "options"]))
    ds = {"name": ds.get("name", ""), "options": dict(ds.get("options") or {})}
    if not isinstance(ds["name"], str) or not ds["name"]:
        errors.append(f"dataset.name: expected a dataset name, got {ds['name']!r}")
    for k in ("eta", "seed"):
        if k in ds["options"]:
            errors.append(f"dataset.options.{k}: set by the study (use the top-level 'etas' / 'seeds')")
    cfg["dataset"] = ds
    # modalities
    for k in ("full_modality", "missing_modality"):
        if not isinstance(cfg[k], str) or not cfg[k]:
            errors.append(f"{k}: expected a modality name, got {cfg[k]!r}")
    if cfg["full_modality"] == cfg["missing_modality"]:
        errors.append("full_modality and missing_modality must differ")
    # etas / seeds / methods
    etas = cfg["etas"]
    if not isinstance(etas, (list, tuple)) or not etas:
        errors.append(f"etas: expected a non-empty list of fractions in (0, 1], got {etas!r}")
    else:
        for e in etas:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 < float(e) <= 1.0:
                errors.append(f"etas: {e!r} is not a fraction in (0, 1] (e.g. 0.2 = 20 % of training pairs keep the modality)")
        cfg["etas"] = sorted({float(e) for e in etas if isinstance(e, (int, float)) and not isinstance(e, bool)})
    seeds = cfg["seeds"]
    if _is_int(seeds):
        seeds = list(range(int(seeds)))
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(_is_int(s) for s in seeds):
        errors.append(f"seeds: expected a list of ints (or a count), got {cfg['seeds']!r}")
    else:
        cfg["seeds"] = [int(s) for s in seeds]
    methods = cfg["methods"]
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, (list, tuple)) or not methods:
        errors.append(f"methods: expected a non-empty list from {list(METHODS)}")
    else:
        for m in methods:
            if m not in METHODS:
                close = close_matches(str(m), list(METHODS))
                errors.append(f"methods: unknown method {m!r}; " + (f"did you mean {' or '.join(map(repr, close))}?"
                                                                      if close else f"choose from {list(METHODS)}"))
        cfg["methods"] = list(dict.fromkeys(methods))
    # epochs
    ep = cfg["epochs"]
    if not isinstance(ep, Mapping):
        errors.append(f"epochs: expected a mapping with keys {EPOCH_KEYS}")
    else:
        full_ep = dict(DEFAULTS["epochs"])
        for k, v in ep.items():
            if k not in EPOCH_KEYS:
                errors.append(_unknown(str(k), "epochs", EPOCH_KEYS))
            elif not _is_int(v) or v < 0:
                errors.append(f"epochs.{k}: expected an int >= 0, got {v!r}")
            else:
                full_ep[k] = int(v)
        cfg["epochs"] = full_ep
    for k in ("batch_size", "missing_batch_size", "meta_batch_size"):
        if not _is_int(cfg[k]) or cfg[k] < 1:
            errors.append(f"{k}: expected a positive int, got {cfg[k]!r}")
    if isinstance(cfg["dropout_rate"], bool) or not isinstance(cfg["dropout_rate"], (int, float)) \
            or not 0.0 <= cfg["dropout_rate"] <= 1.0:
        errors.append(f"dropout_rate: expected a number in [0, 1], got {cfg['dropout_rate']!r}")
    if isinstance(cfg["ae_weight"], bool) or not isinstance(cfg["ae_weight"], (int, float)) or cfg["ae_weight"] < 0:
        errors.append(f"ae_weight: expected a number >= 0, got {cfg['ae_weight']!r}")
    if cfg["threads"] is not None and (not _is_int(cfg["threads"]) or cfg["threads"] < 1):
        errors.append(f"threads: expected a positive int or null, got {cfg['threads']!r}")
    if not _is_int(cfg["workers"]) or cfg["workers"] < 1:
        errors.append(f"workers: expected a positive int (processes running seeds in parallel), got {cfg['workers']!r}")
    if isinstance(cfg["reuse"], (str, os.PathLike)):
        cfg["reuse"] = [cfg["reuse"]]
    if not isinstance(cfg["reuse"], (list, tuple)) or not all(isinstance(r, (str, os.PathLike)) for r in cfg["reuse"]):
        errors.append(f"reuse: expected a list of result directories of earlier runs, got {cfg['reuse']!r}")
    else:
        cfg["reuse"] = [str(r) for r in cfg["reuse"]]
    if not isinstance(cfg["progress"], bool):
        errors.append(f"progress: expected true or false, got {cfg['progress']!r}")
    if not isinstance(cfg["output"], (str, os.PathLike)) or not str(cfg["output"]):
        errors.append(f"output: expected a directory path, got {cfg['output']!r}")
    # smil options
    smil = cfg["smil"]
    smil_known = ["preset", "k", "hidden", "dropout", "recon_mode", "reg_op", "learn_sigma", "regularize",
                  "regularize_real", "prior", "inner_steps", "inner_lr", "outer_lr", "weight_decay", "inner_params",
                  "second_order", "align_weights", "kl_weight", "real_ce_weight", "inner_lr_every", "inner_lr_gamma", "outer_step_size",
                  "outer_gamma"]
    if not isinstance(smil, Mapping):
        errors.append("smil: expected a mapping of fit_smil options")
    else:
        for k in smil:
            if k not in smil_known:
                errors.append(_unknown(str(k), "smil", smil_known))
        if "preset" in smil:
            errors.append("smil.preset: choose the preset with the method name ('smil' = code, 'smil_paper' = paper)")
    # encoders
    enc = cfg["encoders"]
    if isinstance(enc, str):
        if enc != "smil":
            errors.append(f"encoders: expected 'smil' or a mapping {{modality: {{name: ..., ...}}}}, got {enc!r}")
    elif isinstance(enc, Mapping):
        for m, spec in enc.items():
            if m not in (cfg["full_modality"], cfg["missing_modality"]):
                errors.append(_unknown(str(m), "encoders", [cfg["full_modality"], cfg["missing_modality"]]))
            elif not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
                errors.append(f"encoders.{m}: expected {{name: lenet|snet|<encoder registry name>, ...options}}")
            elif spec["name"] not in ("lenet", "snet"):
                from ..registry import ENCODERS

                _ensure_encoders_registered()
                if spec["name"] not in ENCODERS:
                    close = close_matches(spec["name"], ENCODERS.list() + ["lenet", "snet"])
                    errors.append(f"encoders.{m}.name: unknown encoder {spec['name']!r}"
                                  + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ""))
    else:
        errors.append("encoders: expected 'smil' or a mapping")
    if ds["name"] and ds["name"] != SYNTHETIC and not errors:
        try:
            from ..datasets import DATASETS  # type: ignore[attr-defined]

            if ds["name"] not in DATASETS:
                close = close_matches(ds["name"], list(DATASETS.list()) + [SYNTHETIC])
                errors.append(f"dataset.name: unknown dataset {ds['name']!r}"
                              + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ""))
        except ImportError:
            pass
    if errors:
        raise ConfigError("missing-study config has " + (f"{len(errors)} problems:\n  - " if len(errors) > 1 else "a problem: ")
                          + "\n  - ".join(errors))
    return cfg


def _ensure_encoders_registered() -> None:
    try:  # importing the encoders package registers the built-ins
        import mmfuse.encoders  # noqa: F401
    except ImportError:
        pass


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"missing-study: config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"missing-study: {p}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"missing-study: {p}: the top level must be a mapping of options")
    return data


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``key.sub=value`` overrides (values parsed as YAML)."""
    import yaml

    out = copy.deepcopy(dict(config))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set epochs.meta_steps=100")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {} if p not in node or node[p] is None else dict(node[p]) if isinstance(node[p], Mapping) else {}
            node = node[p]
        node[parts[-1]] = value
    return out


# --------------------------------------------------------------------------- data
class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, samples: list[dict], shapes: dict[str, tuple], num_classes: int):
        from ..batch import Collator

        self.samples, self.shapes, self.num_classes = samples, shapes, num_classes
        self.modalities = sorted(shapes)
        self.task = "multiclass"
        self.collate_fn = Collator(self.modalities, shapes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


def synthetic_pairs(eta: float = 1.0, seed: int = 0, n_train: int = 20, n_test: int = 10, num_classes: int = 3,
                    image_shape: tuple = (1, 16, 16), audio_shape: tuple = (8, 6), noise: float = 0.8) -> dict[str, _ListDataset]:
    """A tiny two-modality dataset for smoke tests: per class a random image and audio pattern plus
    noise; ``n_train``/``n_test`` samples per class; ``round(eta·n_train)`` training samples per class
    keep their audio."""
    rng = np.random.default_rng([seed, 99])
    protos = {m: rng.normal(size=(num_classes,) + s).astype(np.float32) for m, s in
              (("image", image_shape), ("audio", audio_shape))}
    keep = int(round(eta * n_train))
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        samples = []
        for c in range(num_classes):
            for j in range(n):
                s = {m: (p[c] + noise * rng.normal(size=p[c].shape)).astype(np.float32) for m, p in protos.items()}
                if split == "train" and j >= keep:
                    s["audio"] = None
                s["target"] = c
                samples.append(s)
        out[split] = _ListDataset(samples, {"image": image_shape, "audio": audio_shape}, num_classes)
    return out


def _load(cfg: dict[str, Any], eta: float, seed: int) -> dict[str, Any]:
    name, opts = cfg["dataset"]["name"], cfg["dataset"]["options"]
    if name == SYNTHETIC:
        try:
            return synthetic_pairs(eta=eta, seed=seed, **opts)
        except TypeError as exc:
            raise ConfigError(f"dataset {SYNTHETIC!r}: {exc}") from None
    from ..datasets import load_dataset

    return load_dataset(name, eta=eta, seed=seed, **opts)


def _check_dataset(splits: Mapping[str, Any], cfg: dict[str, Any]) -> None:
    for s in ("train", "test"):
        if s not in splits:
            raise ConfigError(f"dataset {cfg['dataset']['name']!r} has no {s!r} split (has {sorted(splits)})")
    mods = list(getattr(splits["train"], "modalities", []))
    for k in ("full_modality", "missing_modality"):
        if mods and cfg[k] not in mods:
            close = close_matches(cfg[k], mods)
            raise ConfigError(f"{k}: dataset {cfg['dataset']['name']!r} has no modality {cfg[k]!r}; it has {mods}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""))
    if getattr(splits["train"], "task", "multiclass") != "multiclass":
        raise ConfigError("missing-study: only multiclass datasets are supported (accuracy is the metric)")


# --------------------------------------------------------------------------- methods
def _build_encoder(cfg: dict[str, Any], modality: str, shape: Sequence[int | None]) -> nn.Module:
    role = "full" if modality == cfg["full_modality"] else "missing"
    spec = cfg["encoders"]
    if spec == "smil":
        spec = {"name": "lenet" if role == "full" else "snet"}
    else:
        spec = dict(spec.get(modality) or {"name": "lenet" if role == "full" else "snet"})
    name = spec.pop("name")
    shape = tuple(20 if s is None else s for s in shape)
    if name == "lenet":
        return LeNetEncoder(shape, **spec)
    if name == "snet":
        return SNetEncoder(shape, **spec)
    from ..registry import ENCODERS

    _ensure_encoders_registered()
    enc = ENCODERS.create(name, input_shape=shape, **spec)
    if getattr(enc, "output_kind", "vector") != "vector":
        raise ConfigError(f"encoders.{modality}: {name!r} gives {enc.output_kind} outputs; the study needs vector embeddings")
    return enc


def _num_classes(ds: Any) -> int:
    n = getattr(ds, "num_classes", None)
    if n is None:
        n = int(max(int(ds[i]["target"]) for i in range(len(ds)))) + 1
    return int(n)


@dataclass
class _SeedCache:
    lower: UnimodalClassifier | None = None
    lower_key: Any = None
    upper_scores: dict[str, float] | None = None


def _fusion_model(cfg, enc_full, enc_miss, num_classes, method):
    full, miss = cfg["full_modality"], cfg["missing_modality"]
    encoders = {full: copy.deepcopy(enc_full), miss: copy.deepcopy(enc_miss)}
    dims = {m: e.output_dim for m, e in encoders.items()}
    drop = None
    if method in ("zero", "upper", "dropout"):
        imp = ZeroImputer(dims)
        if method == "dropout":
            drop = ModalityDropout({miss: float(cfg["dropout_rate"])})
    elif method == "mean":
        imp = MeanImputer(dims)
    elif method == "learned":
        imp = LearnedTokenImputer(dims)
    elif method == "ae":
        imp = CrossModalImputer(dims, targets=[miss])
    else:  # pragma: no cover - guarded by validate_config
        raise ConfigError(f"unknown fusion method {method!r}")
    return ImputedFusionModel(encoders, num_classes, imputer=imp, modality_dropout=drop)


def _train_fusion(cfg, model, train, seed):
    ae_w = float(cfg["ae_weight"])
    extra = None
    if isinstance(model.imputer, CrossModalImputer) and ae_w > 0:
        extra = lambda mdl, b, out: ae_w * mdl.auxiliary_loss(b, out)  # noqa: E731
    train_classifier(model, make_loader(train, cfg["batch_size"], True, seed + 11), cfg["epochs"]["fused"],
                     extra_loss=extra)


def _scores(cfg, model, test_loader, forward=None) -> dict[str, float]:
    miss = cfg["missing_modality"]
    return {
        "full_only": accuracy(model, test_loader, transform=lambda b: without(b, miss), forward=forward),
        "both": accuracy(model, test_loader, forward=forward),
    }


def _pretrain_missing(cfg, train, paired, seed, num_classes):
    miss = cfg["missing_modality"]
    shape = getattr(train, "shapes", {}).get(miss) or tuple(train[paired[0]][miss].shape)
    clf = UnimodalClassifier(_build_encoder(cfg, miss, shape), miss, num_classes, hidden=(160, 32))
    train_classifier(clf, make_loader(train, cfg["missing_batch_size"], True, seed + 1, paired),
                     cfg["epochs"]["missing"], step_size=10, gamma=0.5)
    return clf


def _run_one_eta_seed(cfg, eta, seed, cache: _SeedCache, bar=None) -> list[dict[str, Any]]:
    full, miss = cfg["full_modality"], cfg["missing_modality"]
    reused = cfg.get("_reused") or {}
    done = [m for m in cfg["methods"] if (m, eta, seed) in reused]
    rows: list[dict[str, Any]] = [r for m in done for r in reused[(m, eta, seed)]]
    if bar is not None and done:
        bar.update(len(done))
    todo = [m for m in cfg["methods"] if m not in done]
    if not todo:
        return rows
    splits = _load(cfg, eta, seed)
    _check_dataset(splits, cfg)
    train, test = splits["train"], splits["test"]
    num_classes = _num_classes(train)
    test_loader = make_loader(test, 256, False)
    paired, unpaired = presence_indices(train, miss)
    if not paired:
        raise ConfigError(f"eta={eta}: no training sample keeps {miss!r}; raise eta")

    def record(method: str, scores: dict[str, float], seconds: float) -> None:
        for t in TESTS:
            rows.append({"method": method, "eta": eta, "seed": seed, "test": t, "accuracy": scores[t],
                         "seconds": round(seconds, 2), "n_train": len(train), "n_paired": len(paired)})
        if bar is not None:
            bar.set_postfix_str(f"eta={eta} seed={seed} {method}: {scores['full_only']:.3f}/{scores['both']:.3f}")
            bar.update(1)

    # stage 0: the lower bound (shared by every method of this seed)
    key = (len(train), float(train[0][full].float().sum()) if torch.is_tensor(train[0][full])
           else float(np.asarray(train[0][full]).sum()))
    t0 = time.time()
    if cache.lower is None or cache.lower_key != key:
        seed_everything(seed)
        shape = getattr(train, "shapes", {}).get(full) or tuple(np.asarray(train[0][full]).shape)
        lower = UnimodalClassifier(_build_encoder(cfg, full, shape), full, num_classes, hidden=(32,))
        train_classifier(lower, make_loader(train, cfg["batch_size"], True, seed), cfg["epochs"]["full"],
                         transform=lambda b: without(b, miss))
        cache.lower, cache.lower_key = lower, key
    lower = cache.lower
    if "lower" in todo:
        s = accuracy(lower, test_loader, transform=lambda b: without(b, miss))
        record("lower", {"full_only": s, "both": s}, time.time() - t0)
    # upper bound: complete pairs (η = 1), once per seed
    if "upper" in todo:
        t0 = time.time()
        if cache.upper_scores is None:
            seed_everything(seed + 100)
            up = splits if eta == 1.0 else _load(cfg, 1.0, seed)
            up_train = up["train"]
            up_paired, _ = presence_indices(up_train, miss)
            aud = _pretrain_missing(cfg, up_train, up_paired, seed + 100, num_classes)
            model = _fusion_model(cfg, lower.encoder, aud.encoder, num_classes, "upper")
            _train_fusion(cfg, model, up_train, seed + 100)
            cache.upper_scores = _scores(cfg, model, make_loader(up["test"], 256, False))
        record("upper", cache.upper_scores, time.time() - t0)
    needs_missing = [m for m in todo if m not in ("lower", "upper")]
    if not needs_missing:
        return rows
    # stage 1: the missing modality's encoder on the pairs of this η
    seed_everything(seed + 1)
    aud = _pretrain_missing(cfg, train, paired, seed, num_classes)
    for method in needs_missing:
        t0 = time.time()
        seed_everything(seed + 1000 + METHODS.index(method))
        if method in ("smil", "smil_paper"):
            opts = dict(cfg["smil"])
            k = int(opts.pop("k", 10))
            k = min(k, len(paired))
            st = fit_smil(
                train, num_classes, full=full, missing=miss, preset="code" if method == "smil" else "paper",
                seed=seed, k=k, pretrained_full=lower, pretrained_missing=aud,
                fused_epochs=cfg["epochs"]["pairs"], meta_steps=cfg["epochs"]["meta_steps"],
                fused_batch_size=min(32, cfg["batch_size"]), meta_batch_size=cfg["meta_batch_size"],
                progress=False, **opts,
            )
            scores = _scores(cfg, st.model, test_loader)
        else:
            model = _fusion_model(cfg, lower.encoder, aud.encoder, num_classes, method)
            _train_fusion(cfg, model, train, seed)
            scores = _scores(cfg, model, test_loader)
        record(method, scores, time.time() - t0)
    return rows


# keys whose values must match for a run's results to be reused
REUSE_KEYS = ("dataset", "full_modality", "missing_modality", "encoders", "epochs", "batch_size", "missing_batch_size",
              "meta_batch_size", "dropout_rate", "ae_weight", "smil")


def load_reused(cfg: Mapping[str, Any]) -> dict[tuple, list[dict[str, Any]]]:
    """Records of earlier runs (``reuse`` directories with results.csv + config.json) whose settings
    match ``cfg`` on :data:`REUSE_KEYS`, keyed by (method, eta, seed). Every run is deterministic
    per (method, eta, seed), so a reused record equals what a new run would compute."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for d in cfg.get("reuse") or []:
        path = Path(d)
        res, conf = path / "results.csv", path / "config.json"
        if not res.is_file() or not conf.is_file():
            raise ConfigError(f"reuse: {str(path)!r} has no results.csv and config.json of an earlier missing-study run")
        old = json.loads(conf.read_text())
        mine = json.loads(json.dumps({k: cfg[k] for k in REUSE_KEYS}, default=str))
        diff = [k for k in REUSE_KEYS if old.get(k) != mine[k]]
        if diff:
            raise ConfigError(f"reuse: the run in {str(path)!r} used other settings for {diff}; its results cannot be reused")
        with open(res, newline="") as f:
            for r in csv.DictReader(f):
                row = {"method": r["method"], "eta": float(r["eta"]), "seed": int(r["seed"]), "test": r["test"],
                       "accuracy": float(r["accuracy"]), "seconds": float(r["seconds"]),
                       "n_train": int(r["n_train"]), "n_paired": int(r["n_paired"])}
                out.setdefault((row["method"], row["eta"], row["seed"]), []).append(row)
    return out


# --------------------------------------------------------------------------- outputs
def summarize(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std (population std over seeds) per (method, eta, test)."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault((r["method"], float(r["eta"]), r["test"]), []).append(float(r["accuracy"]))
    out = []
    for (m, e, t), accs in sorted(groups.items(), key=lambda kv: (METHODS.index(kv[0][0]), kv[0][1], kv[0][2])):
        a = np.asarray(accs) * 100
        out.append({"method": m, "eta": e, "test": t, "mean": float(a.mean()), "std": float(a.std()), "n": len(a)})
    return out


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}"


def verdicts(summary: Sequence[Mapping[str, Any]], max_eta: float = 0.2) -> list[str]:
    """Lines saying whether SMIL beats zero imputation and the AE baseline at η ≤ max_eta."""
    idx = {(s["method"], s["eta"], s["test"]): s for s in summary}
    lines = []
    for smil in ("smil", "smil_paper"):
        for base in ("zero", "ae"):
            for (m, e, t), s in sorted(idx.items(), key=lambda kv: (kv[0][1], kv[0][2])):
                if m != smil or e > max_eta or (base, e, t) not in idx:
                    continue
                b = idx[(base, e, t)]
                diff = s["mean"] - b["mean"]
                word = "beats" if diff > 0 else "does not beat"
                lines.append(f"- η = {e:g}, test {t}: {smil} {word} {base} ({s['mean']:.1f} vs {b['mean']:.1f}, "
                             f"{diff:+.1f} points; std {s['std']:.1f} / {b['std']:.1f})")
    return lines


def summary_markdown(summary: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any]) -> str:
    etas = sorted({s["eta"] for s in summary})
    methods = [m for m in METHODS if any(s["method"] == m for s in summary)]
    idx = {(s["method"], s["eta"], s["test"]): s for s in summary}
    labels = {"full_only": f"{cfg['full_modality']} only", "both": f"{cfg['full_modality']} + {cfg['missing_modality']}"}
    head = "| method | " + " | ".join(f"η={e:g} {labels[t]}" for e in etas for t in TESTS) + " |"
    lines = [head, "|" + "---|" * (1 + len(etas) * len(TESTS))]
    for m in methods:
        cells = []
        for e in etas:
            for t in TESTS:
                s = idx.get((m, e, t))
                cells.append(_fmt(s["mean"], s["std"]) if s else "")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    n = max((s["n"] for s in summary), default=0)
    text = [f"Accuracy (%) on the test split, mean ± std over {n} seeds.", "", *lines, ""]
    if cfg["dataset"]["name"] == "avmnist-smil" and 0.2 in etas:
        text += ["Beside the paper (av-MNIST, 100 % image + 20 % audio; numbers read from its figure):", "",
                 f"| method | ours {labels['full_only']} | paper | ours {labels['both']} | paper |", "|---|---|---|---|---|"]
        for m in ("lower", "ae", "smil", "smil_paper", "zero", "upper"):
            if (m, 0.2, "both") not in idx:
                continue
            pm = "smil" if m == "smil_paper" else m
            cells = []
            for t in TESTS:
                s = idx[(m, 0.2, t)]
                p = PAPER_AVMNIST.get((pm, t))
                cells += [_fmt(s["mean"], s["std"]), "" if p is None else f"{p:.1f}"]
            lines2 = f"| {m} | " + " | ".join(cells) + " |"
            text.append(lines2)
        text.append("")
    v = verdicts(summary)
    if v:
        text += ["SMIL against zero imputation and the AE baseline at η ≤ 20 %:", "", *v, ""]
    return "\n".join(text)


def plot_summary(summary: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    etas = sorted({s["eta"] for s in summary})
    labels = {"full_only": f"test: {cfg['full_modality']} only",
              "both": f"test: {cfg['full_modality']} + {cfg['missing_modality']}"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    for ax, t in zip(axes, TESTS):
        for m in METHODS:
            pts = sorted((s["eta"], s["mean"], s["std"]) for s in summary if s["method"] == m and s["test"] == t)
            if not pts:
                continue
            x, y, e = (np.array(v) for v in zip(*pts))
            if m in ("lower", "upper"):
                ax.axhline(float(y.mean()), ls="--", color=colors[m], label=f"{m} bound")
            else:
                ax.errorbar(x * 100, y, yerr=e, marker="o", capsize=3, color=colors[m], label=m)
        ax.set_title(labels[t])
        ax.set_xlabel(f"η: % of training samples with {cfg['missing_modality']}")
        ax.set_xticks([e * 100 for e in etas])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{cfg['dataset']['name']}: 100 % {cfg['full_modality']} + η % {cfg['missing_modality']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run_seed(cfg: dict[str, Any], seed: int, bar=None) -> list[dict[str, Any]]:
    """Every eta of one seed (the unit of work of a worker process)."""
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    cache = _SeedCache()
    rows: list[dict[str, Any]] = []
    for eta in cfg["etas"]:
        rows += _run_one_eta_seed(cfg, eta, seed, cache, bar)
    return rows


@dataclass
class StudyResult:
    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    markdown: str
    paths: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def run_missing_study(config: Mapping[str, Any] | str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      progress: bool | None = None) -> StudyResult:
    """Run the study (see the module docs); returns the records, the summary and the written paths."""
    cfg = validate_config(config)
    if out_dir is not None:
        cfg["output"] = str(out_dir)
    if progress is not None:
        cfg["progress"] = bool(progress)
    cfg["_reused"] = load_reused(cfg)
    # check the dataset and its modalities before any training
    _check_dataset(_load(cfg, cfg["etas"][0], cfg["seeds"][0]), cfg)
    threads_before = torch.get_num_threads()
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    n_methods = len(cfg["methods"])
    total = len(cfg["seeds"]) * len(cfg["etas"]) * n_methods
    bar = None
    if cfg["progress"]:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="missing-study", unit="run")
    records: list[dict[str, Any]] = []
    start = time.time()
    workers = min(int(cfg["workers"]), len(cfg["seeds"]))
    try:
        if workers <= 1:
            for seed in cfg["seeds"]:
                records += _run_seed(cfg, seed, bar)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_run_seed, cfg, seed, None): seed for seed in cfg["seeds"]}
                done: dict[int, list[dict[str, Any]]] = {}
                for fut in as_completed(futures):
                    done[futures[fut]] = fut.result()
                    if bar is not None:
                        bar.update(len(cfg["etas"]) * n_methods)
                        bar.set_postfix_str(f"seed {futures[fut]} done")
            for seed in cfg["seeds"]:
                records += done[seed]
    finally:
        if bar is not None:
            bar.close()
        torch.set_num_threads(threads_before)
    summary = summarize(records)
    md = summary_markdown(summary, cfg)
    out = Path(cfg["output"])
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": str(out / "results.csv"), "summary_csv": str(out / "summary.csv"),
             "summary_md": str(out / "summary.md"), "plot": str(out / "accuracy_vs_eta.png"),
             "config": str(out / "config.json")}
    with open(paths["results"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    with open(paths["summary_csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "eta", "test", "mean", "std", "n"])
        w.writeheader()
        w.writerows([{**s, "mean": round(s["mean"], 3), "std": round(s["std"], 3)} for s in summary])
    elapsed = time.time() - start
    Path(paths["summary_md"]).write_text(md + f"\nWall time: {elapsed:.0f} s.\n")
    Path(paths["config"]).write_text(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")}, indent=2,
                                                default=str))
    plot_summary(summary, cfg, paths["plot"])
    return StudyResult(records, summary, md, paths, cfg)


def missing_study_main(argv: Sequence[str] | None = None) -> int:
    """``mmfuse missing-study CONFIG [--out DIR] [--set key=value ...] [--no-progress]``; returns an exit code."""
    parser = argparse.ArgumentParser(prog="mmfuse missing-study",
                                     description="Accuracy against the fraction η of training samples that keep "
                                                 "the second modality (SMIL's av-MNIST study).")
    parser.add_argument("config", help="YAML file (see mmfuse.missing.study for the keys)")
    parser.add_argument("--out", default=None, help="output directory (overrides 'output')")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set epochs.meta_steps=100 --set seeds=[0,1]")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        cfg = apply_overrides(load_config_file(args.config), args.overrides)
        res = run_missing_study(cfg, out_dir=args.out, progress=False if args.no_progress else None)
    except MMFuseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(res.markdown)
    print("written: " + ", ".join(res.paths.values()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(missing_study_main())
