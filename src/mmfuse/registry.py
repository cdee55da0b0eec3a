"""Named registries of factories: ``register``, ``create``, ``get``, ``list``.

A registry maps a name to a callable that builds an ``nn.Module`` (a class or a function).
Wherever a registry name is accepted, a user's own ``nn.Module`` instance is accepted too.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Iterator

from torch import nn

from .errors import ConfigError, UnknownNameError


def close_matches(name: str, known: list[str], n: int = 3) -> list[str]:
    """The known names closest to ``name`` (case-insensitive), best first."""
    lowered = {k.lower(): k for k in known}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def suggestion(name: str, known: list[str]) -> str:
    hits = close_matches(name, known)
    if hits:
        return "did you mean " + " or ".join(repr(h) for h in hits) + "?"
    return "known names: " + ", ".join(sorted(known))


TASKS = ("multiclass", "multilabel", "regression")


class Registry:
    """A mapping from names to factories, with helpful errors for unknown names.

    Each entry may declare, at registration, the ``tasks`` it supports and its own tiny
    ``test_options`` (keyword options that build a small instance). :mod:`mmfuse.testing`
    reads them, so a newly registered entry is tested without editing any test.
    """

    def __init__(self, kind: str, builtins: str | None = None):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._builtins = builtins  # the module whose import registers the built-in entries (imported on first use)

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            import importlib

            try:
                importlib.import_module(module)
            except BaseException:
                self._builtins = module  # try again next time rather than lose the built-ins for good
                raise

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, overwrite: bool = False,
                 tasks: tuple[str, ...] | list[str] = TASKS, test_options: dict[str, Any] | None = None,
                 **info: Any):
        """Register ``factory`` under ``name``; usable as a decorator when ``factory`` is None.

        ``tasks``: the task types the entry supports; ``test_options``: keyword options of a tiny
        instance for the check suite; any further keyword is kept in :meth:`info`.
        """
        self._load_builtins()  # so that overwrite=True replaces a built-in entry instead of being overwritten by it
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"{self.kind} {name!r}: unknown task {bad[0]!r}; tasks are {list(TASKS)}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.kind} registry: a name must be a non-empty string, got {name!r}")

        def _add(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and not overwrite and self._entries[name] is not obj:
                raise ConfigError(
                    f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it"
                )
            self._entries[name] = obj
            self._info[name] = {"tasks": tuple(tasks), "test_options": dict(test_options or {}), **info}
            return obj

        return _add if factory is None else _add(factory)

    def get(self, name: str) -> Callable[..., Any]:
        self._load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}: {suggestion(name, list(self._entries))}"
            ) from None

    def info(self, name: str) -> dict[str, Any]:
        """What the entry declared at registration: ``tasks``, ``test_options`` and any extras."""
        self.get(name)
        return dict(self._info[name])

    def supports(self, name: str, task: str) -> bool:
        return task in self.info(name)["tasks"]

    def check_task(self, name: str, task: str, where: str) -> None:
        """A ConfigError naming ``where`` when the entry does not support ``task``."""
        if isinstance(name, str) and name in self and not self.supports(name, task):
            ok = self.info(name)["tasks"]
            raise ConfigError(f"{where}: {self.kind} {name!r} supports only {', '.join(ok)} tasks, "
                              f"not {task}; choose another {self.kind} or set the task")

    def create(self, name_or_module: str | nn.Module, /, **kwargs: Any) -> Any:
        """Build the entry called ``name_or_module``; an ``nn.Module`` instance is returned as is."""
        if isinstance(name_or_module, nn.Module):
            return name_or_module
        if not isinstance(name_or_module, str):
            raise ConfigError(
                f"{self.kind}: expected a registered name or an nn.Module, got {type(name_or_module).__name__}"
            )
        factory = self.get(name_or_module)
        try:
            return factory(**kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:  # wrong keyword or value: say which entry
            if isinstance(exc, ConfigError):
                raise
            unknown = self._unknown_options(factory, kwargs) if isinstance(exc, TypeError) else []
            if unknown:
                bad = unknown[0]
                valid = self._options_of(factory)
                hint = suggestion(bad, valid)
                raise ConfigError(f"{self.kind} {name_or_module!r}: unknown option {bad!r}; valid options: "
                                  f"{', '.join(valid) or '(none)'}" + (f"; {hint}" if hint.startswith("did") else "")
                                  ) from exc
            raise ConfigError(f"{self.kind} {name_or_module!r}: {exc}; check its options") from exc

    @staticmethod
    def _signature(factory: Any) -> inspect.Signature | None:
        try:
            return inspect.signature(factory)
        except (TypeError, ValueError):
            return None

    @classmethod
    def _options_of(cls, factory: Any) -> list[str]:
        """The keyword options ``factory`` accepts (positional-only and ``*args``/``**kwargs`` left out)."""
        sig = cls._signature(factory)
        if sig is None:
            return []
        return [n for n, p in sig.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]

    @classmethod
    def _unknown_options(cls, factory: Any, kwargs: dict[str, Any]) -> list[str]:
        """Keywords in ``kwargs`` that ``factory`` does not take (none when it takes ``**kwargs``)."""
        sig = cls._signature(factory)
        if sig is None or any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return []
        valid = set(cls._options_of(factory))
        return [k for k in kwargs if k not in valid]

    def list(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"


ENCODERS = Registry("encoder", "mmfuse.encoders")
FUSIONS = Registry("fusion operator", "mmfuse.fusion")
HEADS = Registry("head", "mmfuse.models.heads")
LATE_COMBINERS = Registry("late combiner", "mmfuse.late")
INTERACTIONS = Registry("interaction block", "mmfuse.interaction")
IMPUTERS = Registry("imputer", "mmfuse.missing")
DATASETS = Registry("dataset", "mmfuse.datasets")
#: model families: ``builder(config, input_shapes, num_outputs, task) -> nn.Module`` (see ``mmfuse.families``)
MODELS = Registry("model family", "mmfuse.families")
#: training schemes: classes with the hooks of ``mmfuse.schemes.base.Scheme`` (see ``mmfuse.schemes``)
SCHEMES = Registry("training scheme", "mmfuse.schemes")
#: column loaders of user tables: :class:`mmfuse.datasets.columns.ColumnLoader` subclasses (fit / transform / state)
COLUMN_LOADERS = Registry("column loader", "mmfuse.datasets.columns")
