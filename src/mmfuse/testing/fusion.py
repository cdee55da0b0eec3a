"""Checks for fusion operators: ``factory(input_dims) -> op`` with ``op(embeddings, mask) -> Tensor[B, output_dim]``.

Each check runs on every input-width configuration of ``case.spec["dims"]`` the operator accepts
(a configuration it rejects with ConfigError, e.g. one modality for ``gated``, is left out; at least
one must be accepted).
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError, MissingModalityError, ShapeError
from ._core import round_trip, grads_of, Case, CheckSkipped, check, close, fail, inputs, mixed_mask, zero_absent

#: the input-width configurations an operator is checked on, unless its entry declares ``test_dims``
DEFAULT_DIMS = [
    {"a": 3},
    {"audio": 4, "video": 4},
    {"audio": 3, "video": 5},
    {"a": 2, "b": 4, "c": 3},
]


def _configs(case: Case) -> Iterator[tuple[dict[str, int], Callable[[int], nn.Module]]]:
    accepted = 0
    rejected = []
    for dims in case.spec.get("dims", DEFAULT_DIMS):
        dims = dict(dims)
        try:
            case.build(dims)
        except ConfigError as exc:
            rejected.append(f"{dims}: {exc}")
            continue
        accepted += 1
        yield dims, (lambda seed, d=dims: case.build(d, seed=seed))
    if not accepted:
        fail("the operator accepts none of the input_dims it is checked on: " + "; ".join(rejected))


def _each(case: Case, fn) -> None:
    for dims, build in _configs(case):
        try:
            fn(build, dims, case.batch, case.seed)
        except AssertionError as exc:
            raise AssertionError(f"input_dims {dims}: {exc}") from None


@check("fusion")
def check_output_shape(case: Case) -> None:
    """Output is a finite float Tensor[B, output_dim]; ``mask=None`` means every modality present."""

    def one(build, dims, batch, seed):
        op = build(seed).eval()
        dim = getattr(op, "output_dim", None)
        if not isinstance(dim, int) or dim < 1:
            fail(f"output_dim must be a positive int, got {dim!r}")
        x = inputs(dims, batch, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            out = op(x, {m: torch.ones(batch, dtype=torch.bool) for m in dims})
            out_none = op(x, None)
        if not isinstance(out, Tensor) or tuple(out.shape) != (batch, dim):
            fail(f"expected shape ({batch}, {dim}), got {getattr(out, 'shape', type(out))}")
        if not out.is_floating_point() or not torch.isfinite(out).all():
            fail("output must be a finite floating-point tensor")
        if not close(out, out_none):
            fail("mask=None must mean every modality present")

    _each(case, one)


@check("fusion")
def check_patterns(case: Case) -> None:
    """Every present/absent pattern, including none present, gives finite outputs and gradients."""

    def one(build, dims, batch, seed):
        op = build(seed).train()
        gen = torch.Generator().manual_seed(seed + 6)
        mods = sorted(dims)
        for pattern in itertools.product([False, True], repeat=len(mods)):
            mask = {m: torch.full((batch,), p) for m, p in zip(mods, pattern)}
            x = {m: v.requires_grad_(True) for m, v in zero_absent(inputs(dims, batch, gen), mask).items()}
            op.zero_grad()
            out = op(x, mask)
            name = "{" + ", ".join(f"{m}: {'present' if p else 'absent'}" for m, p in zip(mods, pattern)) + "}"
            if not torch.isfinite(out).all():
                fail(f"non-finite output for presence pattern {name}")
            grads_of(out.pow(2).sum())
            for pname, p in op.named_parameters():
                if p.grad is not None and not torch.isfinite(p.grad).all():
                    fail(f"non-finite gradient of {pname!r} for presence pattern {name}")

    _each(case, one)


@check("fusion")
def check_gradients(case: Case, rounds: int = 3) -> None:
    """All present, loss = sum(out^2): every parameter and input gets a non-zero finite gradient
    (over several batches, for operators such as ``max`` that route gradient to the winners only)."""

    def one(build, dims, batch, seed):
        op = build(seed).train()
        gen = torch.Generator().manual_seed(seed + 1)
        mask = {m: torch.ones(batch, dtype=torch.bool) for m in dims}
        input_grad = {m: 0.0 for m in dims}
        for _ in range(rounds):
            x = {m: v.requires_grad_(True) for m, v in inputs(dims, batch, gen).items()}
            grads_of(op(x, mask).pow(2).sum())
            for m, v in x.items():
                if v.grad is None or not torch.isfinite(v.grad).all():
                    fail(f"input of modality {m!r} got no (or a non-finite) gradient")
                input_grad[m] += float(v.grad.abs().sum())
        for m, g in input_grad.items():
            if g == 0.0:
                fail(f"the output does not depend on modality {m!r} (zero input gradient)")
        for name, p in op.named_parameters():
            if p.grad is None or float(p.grad.abs().sum()) == 0.0:
                fail(f"parameter {name!r} got no gradient; is it used in forward?")
            if not torch.isfinite(p.grad).all():
                fail(f"parameter {name!r} got a non-finite gradient")

    _each(case, one)


@check("fusion")
def check_state_dict(case: Case) -> None:
    """Every parameter is in state_dict; loading it into an instance built with another seed
    reproduces the outputs exactly (catches parameters kept in plain lists)."""

    def one(build, dims, batch, seed):
        op = build(seed).eval()
        state = op.state_dict()
        missing = [n for n, _ in op.named_parameters() if n not in state]
        if missing:
            fail(f"parameters missing from state_dict: {missing}")
        gen = torch.Generator().manual_seed(seed + 2)
        mask = mixed_mask(dims, batch, gen)
        x = zero_absent(inputs(dims, batch, gen), mask)
        round_trip(op, build(seed + 7919).eval(), lambda m: m(x, mask))

    _each(case, one)


@check("fusion")
def check_batch_independence(case: Case) -> None:
    """In eval mode, row b's output does not change when other rows (values and masks) change."""

    def one(build, dims, batch, seed):
        op = build(seed).eval()
        gen = torch.Generator().manual_seed(seed + 3)
        mask = mixed_mask(dims, batch, gen)
        x = zero_absent(inputs(dims, batch, gen), mask)
        with torch.no_grad():
            ref = op(x, mask)
            for b in sorted({0, 1, batch - 1}):  # all present, none present, random
                others = torch.arange(batch) != b
                mask2 = {m: torch.where(others, torch.rand(batch, generator=gen) < 0.5, v) for m, v in mask.items()}
                new = inputs(dims, batch, gen, scale=3.0)
                x2 = zero_absent({m: torch.where(others.unsqueeze(1), new[m], v) for m, v in x.items()}, mask2)
                if not close(op(x2, mask2)[b], ref[b], 1e-5):
                    fail(f"row {b} changed when only the other rows changed")

    _each(case, one)


@check("fusion")
def check_determinism(case: Case) -> None:
    """The same seed builds the same operator (identical outputs)."""

    def one(build, dims, batch, seed):
        a, b = build(seed).eval(), build(seed).eval()
        gen = torch.Generator().manual_seed(seed + 4)
        mask = mixed_mask(dims, batch, gen)
        x = zero_absent(inputs(dims, batch, gen), mask)
        with torch.no_grad():
            if not torch.equal(a(x, mask), b(x, mask)):
                fail("two operators built with the same seed give different outputs")

    _each(case, one)


@check("fusion")
def check_no_leak(case: Case) -> None:
    """Replacing an absent modality's placeholder (zeros) with random values changes nothing,
    in every row (all present, none present, each one absent, random)."""

    def one(build, dims, batch, seed):
        op = build(seed).eval()
        gen = torch.Generator().manual_seed(seed + 5)
        mask = mixed_mask(dims, batch, gen)
        x = zero_absent(inputs(dims, batch, gen), mask)
        with torch.no_grad():
            ref = op(x, mask)
            for m in dims:
                noise = torch.randn(x[m].shape, generator=gen) * 10.0
                x2 = {**x, m: torch.where(mask[m].unsqueeze(1), x[m], noise)}
                if not close(op(x2, mask), ref, 1e-5):
                    fail(f"the placeholder values of absent modality {m!r} changed the output")

    _each(case, one)


@check("fusion")
def check_bad_inputs(case: Case) -> None:
    """A missing modality, a wrong width and a wrong mask shape raise the matching MMFuseError
    subclass naming the modality."""

    def one(build, dims, batch, seed):
        op = build(seed).eval()
        x = inputs(dims, batch, torch.Generator().manual_seed(seed + 7))
        mask = {m: torch.ones(batch, dtype=torch.bool) for m in dims}
        m = sorted(dims)[-1]
        cases = [
            ("missing modality", {k: v for k, v in x.items() if k != m}, mask, MissingModalityError),
            ("wrong width", {**x, m: torch.randn(batch, dims[m] + 1)}, mask, ShapeError),
            ("wrong mask shape", x, {**mask, m: torch.ones(batch + 1, dtype=torch.bool)}, ShapeError),
        ]
        for what, xx, mm, err in cases:
            try:
                op(xx, mm)
            except err as exc:
                if m not in str(exc):
                    fail(f"{what}: the message does not name modality {m!r}: {exc}")
            except Exception as exc:  # noqa: BLE001 - report the wrong type
                fail(f"{what}: expected {err.__name__}, got {type(exc).__name__}: {exc}")
            else:
                fail(f"{what}: no error raised")

    _each(case, one)


@check("fusion")
def check_sequences(case: Case, length: int = 4) -> None:
    """(operators with ``accepts_sequences``) padded sequences with ``token_mask``: shape, padding
    values and extra padding do not leak, rows are independent."""
    seen = False

    def one(build, dims, batch, seed):
        nonlocal seen
        op = build(seed).eval()
        if not getattr(op, "accepts_sequences", False):
            return
        seen = True
        gen = torch.Generator().manual_seed(seed + 8)
        mask = mixed_mask(dims, batch, gen)
        x = zero_absent(inputs(dims, batch, gen), mask)
        seq = sorted(dims)[0]  # the first modality becomes a padded sequence
        lengths = torch.randint(1, length + 1, (batch,), generator=gen)
        lengths[0] = length - 1 if length > 1 else 1
        token_mask = {seq: torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)}
        tokens = torch.randn(batch, length, dims[seq], generator=gen) * token_mask[seq].unsqueeze(-1)
        x[seq] = tokens * mask[seq].view(-1, 1, 1)
        with torch.no_grad():
            ref = op(x, mask, token_mask=token_mask)
            if tuple(ref.shape) != (batch, op.output_dim) or not torch.isfinite(ref).all():
                fail(f"expected a finite ({batch}, {op.output_dim}) output, got {tuple(ref.shape)}")
            noise = torch.randn(x[seq].shape, generator=gen) * 10.0
            padded = {**x, seq: torch.where(token_mask[seq].unsqueeze(-1), x[seq], noise)}
            if not close(op(padded, mask, token_mask=token_mask), ref, 1e-5):
                fail(f"padding tokens of {seq!r} changed the output")
            longer = torch.cat([x[seq], torch.randn(batch, 2, dims[seq], generator=gen)], dim=1)
            tm_longer = torch.cat([token_mask[seq], torch.zeros(batch, 2, dtype=torch.bool)], dim=1)
            if not close(op({**x, seq: longer}, mask, token_mask={seq: tm_longer}), ref, 1e-5):
                fail("extra padding (a longer padded length) changed the output")
            other = (torch.arange(batch) != 0).view(-1, 1, 1)
            x2 = {**x, seq: torch.where(other, torch.randn(x[seq].shape, generator=gen), x[seq])}
            if not close(op(x2, mask, token_mask=token_mask)[0], ref[0], 1e-5):
                fail("row 0 changed when only the other rows' tokens changed")

    _each(case, one)
    if not seen:
        raise CheckSkipped("the operator does not accept sequences (accepts_sequences is False)")


def check_fusion_op(factory: Callable[[Mapping[str, int]], nn.Module] | str, input_dims: Mapping[str, int], *,
                    batch_size: int = 6, seed: int = 0, skip=(), **options) -> None:
    """Run every fusion check on operators built by ``factory(input_dims)`` (or the registered name
    ``factory`` with ``options``). Raises AssertionError naming the entry and the first failing check."""
    from ._core import CHECKS

    if isinstance(factory, str):
        from ..fusion import create_fusion

        name = factory

        def factory(dims):  # noqa: F811
            return create_fusion(name, dims, **options)
    else:
        if options:
            raise TypeError("options are only accepted with a registered name; use functools.partial for a factory")
        name = getattr(factory, "__name__", type(factory).__name__)
    if batch_size < 3:
        raise ValueError("batch_size must be at least 3 (row 0: all present, row 1: none present, others random)")
    checks = CHECKS["fusion"]
    unknown = {s if s.startswith("check_") else "check_" + s for s in skip} - set(checks)
    if unknown:
        raise ValueError(f"unknown checks to skip: {sorted(unknown)}; known: {list(checks)}")
    skip = {s if s.startswith("check_") else "check_" + s for s in skip}
    case = Case("fusion", name, "multiclass", factory, {"dims": [dict(input_dims)]}, batch=batch_size, seed=seed)
    for cname, fn in checks.items():
        if cname not in skip:
            try:
                fn(case)
            except CheckSkipped:
                pass
