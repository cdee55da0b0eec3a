"""Equal-budget hyper-parameter tuning for ``mmfuse compare`` (Optuna, imported only when tuning runs).

``compare.tuning: {trials: N, seed: 0, epochs: null, patience: 3, sampler: tpe, space: {}}`` (N = 0: off).
Every method (at every grid point) gets the same N trials of a seeded ``TPESampler``. A trial is one ordinary
compare run (``runs/<key>.json``, the same workers and resume) of the method with the trial's parameters,
trained on the first seed of ``compare.seeds`` for at most ``epochs`` epochs (default ``training.max_epochs``)
with early stopping on the validation metric (``training.monitor`` = ``val_<metric>``, patience
``training.patience`` or ``tuning.patience``); its objective is the best validation metric over its epochs.
A new study's first trial is the method's own setting (:func:`config_trial`: the config's values of the keys
whose value lies in the space; keys it does not set, e.g. an operator's default width, are sampled).
The best trial's parameters are then retrained on every seed of ``compare.seeds`` (``training.max_epochs``, the
same early stopping): those runs make the leaderboard.

Search spaces: a shared default (:data:`DEFAULT_SPACE`: learning rate, weight decay, the head's dropout), plus
what the method's registry entries declare with ``register(..., search_space={dotted key: spec})``: its model
family (``MODELS``), and its fusion operator / late combiner / interaction block. ``compare.tuning.space``
adds or replaces keys for every method. A spec is ``{"low": a, "high": b, "log": bool}`` (ints: an integer
range, ``"step"`` optional) or ``{"choices": [...]}``. A per-modality key ``model.encoders.*.options.<opt>``
(e.g. the ``fusion`` and ``intermediate`` families' embedding width ``output_dim``) becomes one key per modality
the method uses whose configured encoder (``model.encoders.<m>.name``) takes ``<opt>``. Every key must be a valid
config path for the method, checked before any study is opened: by parsing the method's config with the spec's
bounds / choices, for a component's ``options.<name>`` by the component's signature, and by building the
method's model (meta device) at the low and high bound and at every choice (the other keys at the method's own
setting): an invalid value (e.g. a dropout of 1.5) is refused naming ``compare.tuning.space.<key>`` or the
entry's declared key. A trial that still fails (a combination of values) is marked FAIL and the error names
its parameters. A default-space key that the method's component does not take (e.g. ``dropout`` of a
``linear`` head) is left out for that method.

Studies live in ``OUT/tuning.db`` (Optuna's SQLite storage), one per method and grid point (study name: the
method label, plus `` @ <grid point>``), created with ``load_if_exists``: a rerun into the same folder runs only
the missing trials (it prints ``k of n trials done``); a trial that was running when the study stopped is run
again with its own parameters (its run may already be stored). Each trial is sampled by a fresh
``TPESampler(seed=tuning.seed + trial number)`` (:func:`reseed`), so its parameters depend only on the seed, its
number and the finished trials before it: a resumed study samples the same trials as an uninterrupted one.
A study whose search space or budget differs from the stored one is refused (use another folder).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from typing import Any

from .errors import ConfigError

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "training.lr": {"low": 1e-4, "high": 3e-2, "log": True},
    "training.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "model.head.options.dropout": {"low": 0.0, "high": 0.5},
}
DEFAULT_PATIENCE = 3


# --------------------------------------------------------------------------- spaces
def _spec_problem(key: str, spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return f"expected a mapping {{low, high[, log]}} or {{choices: [...]}}, got {spec!r}"
    if "choices" in spec:
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            return f"choices must be a non-empty list, got {spec['choices']!r}"
        extra = set(spec) - {"choices"}
        return f"unknown keys {sorted(extra)} beside choices" if extra else None
    extra = set(spec) - {"low", "high", "log", "step"}
    if extra:
        return f"unknown keys {sorted(extra)}; a range takes low, high, log, step"
    lo, hi = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
        return f"low and high must be numbers, got low={lo!r}, high={hi!r}"
    if not lo < hi:
        return f"low ({lo}) must be below high ({hi})"
    if spec.get("log") and lo <= 0:
        return f"a log range needs low > 0, got {lo}"
    return None


def _is_int(spec: dict) -> bool:
    return "choices" not in spec and isinstance(spec["low"], int) and isinstance(spec["high"], int)


def _probe_values(spec: dict) -> list[Any]:
    return list(spec["choices"]) if "choices" in spec else [spec["low"], spec["high"]]


def _entries(rc) -> list[tuple[str, str, dict]]:
    """(registry kind, entry name, declared search space) of the method's model family and components."""
    from . import registry as R
    from .config import _ensure_registries

    _ensure_registries()
    m = rc.model
    out = [("MODELS", m.family, R.MODELS.info(m.family).get("search_space") or {})]
    if m.family == "fusion" and m.strategy == "feature":
        out.append(("FUSIONS", m.fusion.name, R.FUSIONS.info(m.fusion.name).get("search_space") or {}))
    elif m.family == "fusion" and m.strategy == "late":
        out.append(("LATE_COMBINERS", m.late.name, R.LATE_COMBINERS.info(m.late.name).get("search_space") or {}))
    elif m.family == "intermediate" and getattr(m, "fusion_points", None) != []:  # [] = no block: nothing to tune
        out.append(("INTERACTIONS", m.block, R.INTERACTIONS.info(m.block).get("search_space") or {}))
    return out


def _component_accepts(rc, key: str) -> bool | None:
    """For ``...<component>.options.<opt>`` / ``model.block_options.<opt>``: does the component's factory take
    ``opt``? None when the key is not a component option."""
    from . import registry as R

    parts = key.split(".")
    if parts[:2] == ["model", "block_options"] and len(parts) == 3 and rc.model.family == "intermediate":
        factory, opt = R.INTERACTIONS.get(rc.model.block), parts[2]
    elif len(parts) >= 4 and parts[0] == "model" and parts[-2] == "options":
        comp = parts[1:-2]
        opt = parts[-1]
        regs = {"fusion": R.FUSIONS, "head": R.HEADS, "late": R.LATE_COMBINERS}
        if comp[0] == "encoders" and len(comp) == 2:
            spec = rc.model.encoders.get(comp[1])
            reg = R.ENCODERS
        elif len(comp) == 1 and comp[0] in regs:
            spec = getattr(rc.model, comp[0], None)
            reg = regs[comp[0]]
        else:
            return None
        if spec is None:
            return False
        factory = reg.get(spec.name)
    else:
        return None
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return True
    ps = sig.parameters.values()
    return opt in sig.parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ps)


WILDCARD = "model.encoders.*."  # a per-modality key: one key per modality of the method (see _expand)


def _expand(rc, key: str, spec: dict) -> list[str]:
    """``model.encoders.*.options.<opt>`` -> ``model.encoders.<m>.options.<opt>`` for every modality ``m`` the
    method uses (``model.modalities``, else every configured encoder) whose configured encoder takes ``opt``
    (an encoder not named in ``model.encoders.<m>`` is the default for the data's shape: left out). Any other
    key: itself."""
    if not key.startswith(WILDCARD):
        return [key]
    encoders = getattr(rc.model, "encoders", None) or {}
    used = getattr(rc.model, "modalities", None) or list(encoders)
    out = []
    for m in sorted(used):
        k = key.replace("*", m, 1)
        if m in encoders and _component_accepts(rc, k):
            out.append(k)
    return out


def build_problem(rc, data) -> str | None:
    """Build the model of the run config ``rc`` for the data (``data``: a training dataset: ``shapes``,
    ``num_classes``, ``task``) without training: on the meta device (no memory, no initialisation cost), again
    on the CPU if the meta build fails for another reason than the config. Returns the error text, or None."""
    import torch

    from .models import build_model

    task = getattr(data, "task", "multiclass")
    err = None
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                build_model(rc.model, data.shapes, int(data.num_classes), task)
            return None
        except ConfigError as exc:
            return str(exc)
        except Exception as exc:  # e.g. torch's "dropout probability has to be between 0 and 1"
            err = f"{type(exc).__name__}: {exc}"
    return err


def method_space(cfg, method, point: dict, base_rc=None, data=None) -> tuple[dict[str, dict], list[str]]:
    """The search space of one method (default, declared entries, ``compare.tuning.space``) and a list of
    problems (each naming the entry and the key). ``base_rc``: the method's resolved run config; ``data``: its
    training dataset — then every bound / choice of every key is also checked by building the method's model
    (:func:`build_problem`) with that value (the other keys at the method's own setting), before any trial.
    A per-modality key ``model.encoders.*.options.<opt>`` becomes one key per modality (:func:`_expand`)."""
    from .compare import merge, nest, run_config, Method

    rc = base_rc if base_rc is not None else run_config(cfg, method, cfg.compare.seeds[0], point)
    space: dict[str, dict] = {}
    problems: list[str] = []
    sources: dict[str, str] = {}
    for k, spec in DEFAULT_SPACE.items():
        if _component_accepts(rc, k) is False:
            continue  # e.g. a linear head has no dropout: the shared default leaves it out
        space[k], sources[k] = spec, "the shared default space"
    for kind, name, declared in _entries(rc):
        if not isinstance(declared, dict):
            problems.append(f"{kind} {name!r}: search_space must be a mapping of dotted config keys, got {declared!r}")
            continue
        for k, spec in declared.items():
            for kk in _expand(rc, k, spec):  # a per-modality key no modality's encoder takes: left out
                space[kk], sources[kk] = spec, f"{kind} {name!r} search_space key {k!r}"
    for k, spec in (cfg.compare.tuning.space or {}).items():
        keys = _expand(rc, k, spec)
        if not keys:
            problems.append(f"method {method.label!r}: compare.tuning.space.{k}: no modality of this method has "
                            "a configured encoder (model.encoders.<modality>.name) that takes this option")
        for kk in keys:
            space[kk], sources[kk] = spec, f"compare.tuning.space.{k}"
    for k, spec in space.items():
        where = f"method {method.label!r}: {sources[k]}" + ("" if sources[k].endswith((f".{k}", f" key {k!r}"))
                                                             else f" (key {k!r})")
        bad = _spec_problem(k, spec)
        if bad:
            problems.append(f"{where}: {bad}")
            continue
        if _component_accepts(rc, k) is False:
            problems.append(f"{where}: the component of this method does not take option {k.split('.')[-1]!r}; "
                            f"fix the key or remove it from the search space")
            continue
        for v in _probe_values(spec):
            probe = Method(method.label, method.kind, merge(method.overlay, nest({k: v})), method.modality)
            try:
                prc = run_config(cfg, probe, cfg.compare.seeds[0], point)
            except ConfigError as exc:
                problems.append(f"{where}: not a valid config path / value for this method ({v!r}): {exc}")
                break
            if not _path_exists(prc.model_dump(), k):
                problems.append(f"{where}: not a config key of this method (the key is not in its resolved config); "
                                "fix the dotted path")
                break
            err = build_problem(prc, data) if data is not None else None
            if err is not None:
                what = "choice" if "choices" in spec else ("low" if v == spec["low"] else "high")
                problems.append(f"{where}: the {what} value {v!r} is invalid for this method (building its model "
                                f"with {k}={v!r} fails: {err}); narrow the range / fix the choices")
                break
    return space, problems


def _path_exists(d: dict, key: str) -> bool:
    cur: Any = d
    for p in key.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return False
        cur = cur[p]
    return True


def suggest(trial, space: dict[str, dict]) -> dict[str, Any]:
    """The trial's parameters (dotted key -> value)."""
    out = {}
    for k, spec in space.items():
        if "choices" in spec:
            out[k] = trial.suggest_categorical(k, spec["choices"])
        elif _is_int(spec):
            out[k] = trial.suggest_int(k, spec["low"], spec["high"], step=int(spec.get("step", 1)),
                                       log=bool(spec.get("log", False)))
        else:
            out[k] = trial.suggest_float(k, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)),
                                         step=spec.get("step"))
    return out


def config_trial(space: dict[str, dict], resolved: dict) -> dict[str, Any]:
    """The method's own setting (its resolved config's values) for every key of ``space`` whose value lies in
    the range / choices: enqueued as a new study's first trial, so tuning never ranks a method below its
    untuned config on the objective."""
    out = {}
    for k, spec in space.items():
        cur: Any = resolved
        for p in k.split("."):
            cur = cur.get(p) if isinstance(cur, dict) else None
        if cur is None or isinstance(cur, bool):
            continue
        if "choices" in spec:
            if cur in spec["choices"]:
                out[k] = cur
        elif isinstance(cur, (int, float)) and spec["low"] <= cur <= spec["high"]:
            if _is_int(spec) and not float(cur).is_integer():
                continue
            out[k] = int(cur) if _is_int(spec) else float(cur)
    return out


def study_name(label: str, point: dict) -> str:
    return label if not point else f"{label} @ " + json.dumps(point, sort_keys=True, default=str)


def fingerprint(space: dict, budget: dict, base_key: str) -> str:
    text = json.dumps({"space": space, "budget": budget, "base": base_key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def objective(curve: list[float], direction: str) -> float:
    """The best validation metric over a run's epochs (NaN when no epoch has a finite value)."""
    vals = [v for v in curve if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return float("nan")
    return max(vals) if direction == "max" else min(vals)


def open_study(out, name: str, direction: str, seed: int, fp: str):
    """Create or load the study ``name`` in ``OUT/tuning.db``; refuses a stored study with another
    fingerprint (search space / budget)."""
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    storage = f"sqlite:///{(out / 'tuning.db').resolve()}"
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                direction="maximize" if direction == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    old = study.user_attrs.get("fingerprint")
    if old is None:
        study.set_user_attr("fingerprint", fp)
    elif old != fp:
        raise ConfigError(f"compare.tuning: the study {name!r} in {out / 'tuning.db'} was made with another search "
                          "space or budget (trials' epochs / patience / base config); write into another output "
                          "folder, or delete tuning.db to start the tuning again")
    return study


def reseed(study, seed: int) -> None:
    """Before ``study.ask()``: a fresh TPE sampler seeded with ``seed + number of the next trial`` (no random
    state carried over from earlier asks, none to persist: a resumed study samples as an uninterrupted one)."""
    import optuna

    study.sampler = optuna.samplers.TPESampler(seed=int(seed) + len(study.get_trials(deepcopy=False)))


def done_trials(study) -> list:
    import optuna

    S = optuna.trial.TrialState
    return [t for t in study.get_trials(deepcopy=False) if t.state in (S.COMPLETE, S.FAIL)]


def stale_trials(study) -> list:
    import optuna

    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
