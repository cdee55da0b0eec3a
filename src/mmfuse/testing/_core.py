"""The machinery shared by every kind of check: cases, check registration, failure messages."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.autograd import backward as fill_grads

from ..registry import TASKS

#: kind -> {check name: check function}; filled by the ``@check(kind)`` decorator
CHECKS: dict[str, dict[str, Callable[["Case"], None]]] = {}

#: outputs per task used by the checks (distinct, so a width mix-up is caught)
NUM_OUTPUTS = {"multiclass": 3, "multilabel": 4, "regression": 2}


class CheckSkipped(Exception):
    """A check that does not apply to this entry (e.g. ``sequences`` for an operator without them)."""


@dataclass
class Case:
    """One registered entry (or a user's own factory) under one task, ready to be checked.

    ``factory`` builds a fresh module; its arguments depend on ``kind``:

    * ``fusion``:  ``factory(input_dims)``                       (``spec["dims"]``: list of input_dims)
    * ``late``:    ``factory(modalities, num_classes, task)``    (``spec["modalities"]``)
    * ``encoder``: ``factory()``                                 (``spec["input_shape"]``, ``spec["vocab_size"]``)
    * ``head``:    ``factory(in_dim, out_dim)``                  (``spec["in_dim"]``)
    * ``imputer``: ``factory(input_dims)``                       (``spec["dims"]``)
    * ``model``:   ``factory(input_shapes, num_outputs, task)``  (``spec["shapes"]``, ``spec["vocab"]``)
    """

    kind: str
    name: str
    task: str
    factory: Callable[..., nn.Module]
    spec: dict[str, Any] = field(default_factory=dict)
    batch: int = 6
    seed: int = 0
    skip: str | None = None  # a reason to skip every check of this entry

    @property
    def id(self) -> str:
        return f"{self.kind}[{self.name}]-{self.task}"

    @property
    def num_outputs(self) -> int:
        return int(self.spec.get("num_outputs", {}).get(self.task, NUM_OUTPUTS[self.task]))

    def build(self, *args: Any, seed: int | None = None) -> nn.Module:
        torch.manual_seed(self.seed if seed is None else seed)
        module = self.factory(*args)
        if not isinstance(module, nn.Module):
            raise AssertionError(f"the factory returned {type(module).__name__}, expected an nn.Module")
        return module

    def __repr__(self) -> str:  # short pytest ids
        return self.id


def check(kind: str):
    """Register a check for ``kind``; its AssertionError messages get the entry and check names."""

    def deco(fn: Callable[[Case], None]) -> Callable[[Case], None]:
        @functools.wraps(fn)
        def wrapper(case: Case) -> None:
            if case.skip:
                raise CheckSkipped(case.skip)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny tensors: thread start-up costs more than it saves
            try:
                fn(case)
            except AssertionError as exc:
                raise AssertionError(f"{case.id} {fn.__name__}: {exc}") from None
            finally:
                torch.set_num_threads(threads)

        wrapper.kind = kind  # type: ignore[attr-defined]
        CHECKS.setdefault(kind, {})[fn.__name__] = wrapper
        return wrapper

    return deco


def grads_of(loss: Tensor) -> None:
    """Fill ``.grad`` of every leaf that ``loss`` depends on (the checks read gradients; nothing is trained:
    no optimiser ever steps here, so this is not a training loop)."""
    fill_grads(loss)


def round_trip(module: nn.Module, fresh: nn.Module, run: Callable[[nn.Module], Any]) -> None:
    """Load ``module``'s state_dict into ``fresh`` (built with another seed); ``run(m)`` must then give identical
    results (a Tensor, or a dict of Tensors) for both."""
    try:
        fresh.load_state_dict(module.state_dict(), strict=True)
    except RuntimeError as exc:
        fail(f"state_dict does not load into a fresh instance: {exc}")
    with torch.no_grad():
        a, b = run(module), run(fresh)
    pairs = [(k, a[k], b[k]) for k in a] if isinstance(a, dict) else [(None, a, b)]
    for k, x, y in pairs:
        if not torch.equal(x, y):
            fail("a fresh instance loaded with state_dict gives different outputs" + (f" for {k!r}" if k else "")
                 + " (is some parameter or buffer not registered, e.g. kept in a plain list?)")


def fail(message: str) -> None:
    raise AssertionError(message)


def close(a: Tensor, b: Tensor, tol: float = 1e-6) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol)


def inputs(input_dims: dict[str, int], batch: int, gen: torch.Generator, scale: float = 1.0) -> dict[str, Tensor]:
    return {m: torch.randn(batch, d, generator=gen) * scale for m, d in input_dims.items()}


def mixed_mask(mods, batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Row 0 all present, row 1 none present, then (while rows last) row 2+i with only the i-th
    modality absent, the remaining rows random."""
    mods = sorted(mods)
    mask = {m: torch.rand(batch, generator=gen) < 0.5 for m in mods}
    for i, m in enumerate(mods):
        mask[m][0] = True
        mask[m][1] = False
        for j in range(len(mods)):
            if 2 + j < batch:
                mask[m][2 + j] = i != j
    return mask


def pattern_mask(mods, extra: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Every present/absent pattern of ``mods`` once (row r: bit i of r = modality i present),
    then ``extra`` random rows."""
    mods = sorted(mods)
    n = 2 ** len(mods)
    rows = torch.arange(n)
    return {m: torch.cat([(rows >> i) & 1 == 1, torch.rand(extra, generator=gen) < 0.5]) for i, m in enumerate(mods)}


def describe_row(mask: dict[str, Tensor], row: int) -> str:
    return "{" + ", ".join(f"{m}: {'present' if bool(v[row]) else 'absent'}" for m, v in sorted(mask.items())) + "}"


def zero_absent(x: dict[str, Tensor], mask: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for m, v in x.items():
        keep = mask[m].view(-1, *([1] * (v.dim() - 1)))
        out[m] = v * keep.to(v.dtype) if v.is_floating_point() else torch.where(keep, v, torch.zeros((), dtype=v.dtype))
    return out


def target(task: str, batch: int, k: int, gen: torch.Generator) -> Tensor:
    if task == "multiclass":
        return torch.randint(0, k, (batch,), generator=gen)
    if task == "multilabel":
        return (torch.rand(batch, k, generator=gen) < 0.5).float()
    return torch.randn(batch, k, generator=gen)


def task_loss(task: str, scores: Tensor, y: Tensor) -> Tensor:
    """The one task loss of the training path (:func:`mmfuse.training.losses.task_loss`)."""
    from ..training.losses import task_loss as _task_loss

    return _task_loss(task, scores, y)


def grads_reach(module: nn.Module, totals: dict[str, float], what: str = "parameter", exempt=()) -> None:
    """Every trainable parameter (except names starting with one of ``exempt``) got a finite,
    non-zero (accumulated) gradient."""
    for name, p in module.named_parameters():
        if not p.requires_grad or any(name.startswith(e) for e in exempt):
            continue
        if name not in totals:
            fail(f"{what} {name!r} got no gradient; is it used in forward?")
        if totals[name] != totals[name] or totals[name] in (float("inf"),):
            fail(f"{what} {name!r} got a non-finite gradient")
        if totals[name] == 0.0:
            fail(f"{what} {name!r} got a zero gradient; is it used in forward?")


def accumulate(module: nn.Module, totals: dict[str, float]) -> None:
    for name, p in module.named_parameters():
        if p.grad is not None:
            if not torch.isfinite(p.grad).all():
                fail(f"parameter {name!r} got a non-finite gradient")
            totals[name] = totals.get(name, 0.0) + float(p.grad.abs().sum())


__all__ = ["Case", "CheckSkipped", "CHECKS", "NUM_OUTPUTS", "TASKS", "check"]
