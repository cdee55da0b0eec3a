"""A public check suite for every registry, in the spirit of scikit-learn's ``check_estimator``.

Every registered entry declares, at registration, the tasks it supports and its own tiny options::

    @FUSIONS.register("my_op", test_options={"dim": 4})
    class MyOp(FusionOp): ...

and the checks read them, so a new entry is checked the moment it is registered::

    from mmfuse.registry import FUSIONS
    from mmfuse.testing import check_entry, parametrize_with_checks

    check_entry(FUSIONS, "my_op")                 # AssertionError naming the entry and the check

    @parametrize_with_checks(FUSIONS)             # ids like fusion[my_op]-multiclass-check_no_leak
    def test_fusions(entry, check):
        check(entry)

Kinds and what an entry may declare (``Registry.register(..., tasks=..., test_options=..., **info)``):

* ``fusion`` (FUSIONS): ``test_options`` = operator options; ``test_dims`` (or ``test_shapes``): an
  ``{modality: width}`` dict or a list of them (default: one, two equal, two unequal, three
  modalities; configurations the operator rejects with ConfigError are left out).
* ``late`` (LATE_COMBINERS): ``test_options``; ``test_modalities`` (default audio, text, video).
* ``encoder`` (ENCODERS): ``test_options`` including ``input_shape`` (or info ``test_shapes``; default
  ``(6,)``); ``vocab_size`` in the options means token-id inputs; ``test_skip="reason"`` for
  entries that cannot be built offline (pretrained weights).
* ``head`` (HEADS): ``test_options``; ``test_in_dim`` (default 5).
* ``imputer`` (IMPUTERS): ``test_options``; ``test_dims`` (default ``{"a": 4, "b": 3, "c": 2}``).
* ``model`` (MODELS): ``test_options`` = the family's tiny ``model`` config; ``test_shapes``
  (``{modality: one sample's shape}``), ``test_vocab`` (``{modality: vocab_size}``), ``test_no_grad``
  (parameter-name prefixes the training loss of a freshly built model does not reach by design).

Every entry may also set ``test_skip`` (a reason) to opt out; it then shows as one skipped item.
Fusions, encoders and imputers never see the task: under :func:`parametrize_with_checks` their
checks run once per entry and the outcome is reported under each task (``check_entry`` runs once).
The checks are listed by :func:`all_checks`; see the modules ``mmfuse.testing.fusion``, ``.late``,
``.encoders``, ``.heads``, ``.imputers`` and ``.models`` for what each one asserts.
"""

from __future__ import annotations

from typing import Any, Callable

from ..registry import ENCODERS, FUSIONS, HEADS, IMPUTERS, LATE_COMBINERS, MODELS, Registry
from . import encoders as _encoders, fusion as _fusion, heads as _heads, imputers as _imputers, late as _late  # noqa: F401
from . import models as _models  # noqa: F401
from ._core import CHECKS, NUM_OUTPUTS, Case, CheckSkipped
from .fusion import DEFAULT_DIMS as FUSION_DIMS, check_fusion_op

KINDS: dict[str, Registry] = {
    "fusion": FUSIONS,
    "late": LATE_COMBINERS,
    "encoder": ENCODERS,
    "head": HEADS,
    "imputer": IMPUTERS,
    "model": MODELS,
}
_ALIASES = {"fusions": "fusion", "late_combiners": "late", "late_combiner": "late", "combiner": "late",
            "encoders": "encoder", "heads": "head", "imputers": "imputer", "models": "model", "family": "model",
            "families": "model"}


def _load_registries() -> None:
    from .. import encoders, families, fusion, late, missing  # noqa: F401  (fill the registries)
    from ..models import heads  # noqa: F401


def _resolve(registry: Registry | str, kind: str | None = None) -> tuple[str, Registry]:
    """(kind, registry): a built-in registry or kind name, or the user's own Registry with ``kind``."""
    if isinstance(registry, Registry) and kind is not None:
        return _kind(kind), registry
    k = _kind(registry)
    return k, KINDS[k]


def _kind(registry: Registry | str) -> str:
    if isinstance(registry, str):
        kind = _ALIASES.get(registry, registry)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {registry!r}; kinds are {list(KINDS)}")
        return kind
    for kind, reg in KINDS.items():
        if reg is registry:
            return kind
    raise ValueError(f"no checks for {registry!r}; checked registries: {', '.join(r.kind for r in KINDS.values())}; "
                     f"for your own Registry pass kind= one of {list(KINDS)}")


def all_checks(kind: Registry | str) -> list[Callable[[Case], None]]:
    """The check functions for a kind (``"fusion"``, ``"late"``, ``"encoder"``, ``"head"``,
    ``"imputer"``, ``"model"``) or its registry, in the order they run."""
    return list(CHECKS[_kind(kind)].values())


def make_case(registry: Registry | str, name: str, task: str | None = None, *, seed: int = 0,
              kind: str | None = None) -> Case:
    """A :class:`Case` for the registered entry ``name`` under ``task`` (default: its first task),
    built from what the entry declared at registration. ``kind`` is needed only for a user's own
    :class:`~mmfuse.registry.Registry` (built-in registries are recognised)."""
    _load_registries()
    kind, reg = _resolve(registry, kind)
    info = reg.info(name)
    task = task or info["tasks"][0]
    reg.check_task(name, task, f"mmfuse.testing ({kind}[{name}])")
    opts: dict[str, Any] = dict(info.get("test_options") or {})
    spec: dict[str, Any] = {}
    if kind == "fusion":
        dims = info.get("test_dims", info.get("test_shapes", FUSION_DIMS))
        spec["dims"] = [dims] if isinstance(dims, dict) else list(dims)

        def factory(input_dims):
            return reg.create(name, input_dims=input_dims, **opts)
    elif kind == "late":
        if "test_modalities" in info:
            spec["modalities"] = list(info["test_modalities"])

        def factory(modalities, num_classes, task):
            return reg.create(name, modalities=modalities, num_classes=num_classes, task=task, **opts)
    elif kind == "encoder":
        opts.setdefault("input_shape", tuple(info.get("test_shapes", (6,))))
        spec["input_shape"] = tuple(opts["input_shape"])
        spec["vocab_size"] = opts.get("vocab_size")

        def factory():
            return reg.create(name, **opts)
    elif kind == "head":
        spec["in_dim"] = int(info.get("test_in_dim", 5))

        def factory(in_dim, out_dim):
            return reg.create(name, in_dim=in_dim, out_dim=out_dim, **opts)
    elif kind == "imputer":
        if "test_dims" in info or "test_shapes" in info:
            spec["dims"] = dict(info.get("test_dims", info.get("test_shapes")))

        def factory(input_dims):
            return reg.create(name, input_dims=input_dims, **opts)
    else:
        from ..models.build import build_model

        spec["shapes"] = info.get("test_shapes")
        spec["vocab"] = info.get("test_vocab")
        spec["no_grad"] = tuple(info.get("test_no_grad") or ())

        def factory(input_shapes, num_outputs, task):
            if reg is MODELS:  # the one front door: config validation, task check, the family's builder
                return build_model({**opts, "family": name}, input_shapes, num_outputs, task)
            return reg.get(name)({**opts, "family": name}, input_shapes, num_outputs, task)
    if "test_num_outputs" in info:
        spec["num_outputs"] = dict(info["test_num_outputs"])
    return Case(kind, name, task, factory, spec, seed=seed, skip=info.get("test_skip"))


def check_entry(registry: Registry | str, name: str, task: str | None = None, *, checks=None,
                kind: str | None = None) -> dict[str, str]:
    """Run every check (or the named ``checks``) on the registered entry ``name``, under ``task`` or
    every task it supports. Raises AssertionError listing each failing check with the entry's name;
    returns ``{"<task>-<check>": reason}`` for the checks that did not apply."""
    _load_registries()
    kind, reg = _resolve(registry, kind)
    tasks = [task] if task else list(reg.info(name)["tasks"])
    fns = all_checks(kind)
    if checks is not None:
        wanted = {c if c.startswith("check_") else "check_" + c for c in checks}
        unknown = wanted - {f.__name__ for f in fns}
        if unknown:
            raise ValueError(f"unknown checks {sorted(unknown)} for {kind}; known: {[f.__name__ for f in fns]}")
        fns = [f for f in fns if f.__name__ in wanted]
    if task is None and kind in TASK_AGNOSTIC:
        tasks = tasks[:1]  # the module never sees the task: one run covers them all
    failures, skipped = [], {}
    for t in tasks:
        case = make_case(reg, name, t, kind=kind)
        for fn in fns:
            try:
                fn(case)
            except CheckSkipped as exc:
                skipped[f"{t}-{fn.__name__}"] = str(exc)
            except AssertionError as exc:
                failures.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - an entry that crashes fails the check, named
                failures.append(f"{case.id} {fn.__name__}: raised {type(exc).__name__}: {exc}")
    if failures:
        raise AssertionError(f"{len(failures)} check(s) failed:\n" + "\n".join(failures))
    return skipped


#: kinds whose modules never see the task: a check's outcome is the same under every task
TASK_AGNOSTIC = ("fusion", "encoder", "imputer")
_OUTCOMES: dict[tuple, BaseException | None] = {}


def _runner(fn: Callable[[Case], None], key: tuple | None = None) -> Callable[[Case], None]:
    """``fn`` for pytest: CheckSkipped becomes a skip; with ``key`` (task-agnostic kinds) the
    outcome is computed once and replayed for the entry's other tasks."""

    def run(case: Case) -> None:
        if key is not None and key in _OUTCOMES:
            exc = _OUTCOMES[key]
        else:
            try:
                fn(case)
                exc = None
            except (AssertionError, CheckSkipped) as e:
                exc = e
            if key is not None:
                _OUTCOMES[key] = exc
        if isinstance(exc, CheckSkipped):
            import pytest

            pytest.skip(f"{case.id} {fn.__name__}: {exc}")
        if exc is not None:
            raise AssertionError(str(exc))

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def parametrize_with_checks(registry: Registry | str, tasks: bool = True, names=None, *, kind: str | None = None):
    """A ``pytest.mark.parametrize("entry, check", ...)`` over every registered entry (or ``names``) ×
    every task it supports (only its first when ``tasks`` is False) × every check, with ids like
    ``fusion[gated]-multilabel-check_no_leak``. The test body is ``check(entry)``."""
    import pytest

    _load_registries()
    kind, reg = _resolve(registry, kind)
    params, ids = [], []
    for name in (reg.list() if names is None else list(names)):
        supported = list(reg.info(name)["tasks"])
        if reg.info(name).get("test_skip"):  # one skipped item says why, rather than one per check
            case = make_case(reg, name, supported[0], kind=kind)
            params.append((case, _runner(all_checks(kind)[0])))
            ids.append(f"{kind}[{name}]-skipped")
            continue
        for task in (supported if tasks else supported[:1]):
            case = make_case(reg, name, task, kind=kind)
            for fn in all_checks(kind):
                key = None
                if kind in TASK_AGNOSTIC:
                    info = reg.info(name)
                    key = (kind, id(reg), name, id(reg.get(name)), repr(info.get("test_options")),
                           repr({k: v for k, v in info.items() if k.startswith("test_")}), fn.__name__)
                params.append((case, _runner(fn, key)))
                ids.append(f"{case.id}-{fn.__name__}")
    return pytest.mark.parametrize("entry, check", params, ids=ids)


__all__ = ["Case", "CheckSkipped", "KINDS", "NUM_OUTPUTS", "all_checks", "check_entry", "check_fusion_op",
           "make_case", "parametrize_with_checks"]
