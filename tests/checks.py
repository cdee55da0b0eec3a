"""A public check suite for fusion operators, in the spirit of sklearn's ``check_estimator``.

>>> from functools import partial
>>> from mmfuse.fusion import create_fusion
>>> from checks import check_fusion_op
>>> check_fusion_op(partial(create_fusion, "gated", dim=4), {"audio": 3, "video": 5})

``factory(input_dims)`` must build a fresh operator (a registered name works too, with options as
keyword arguments). Every check runs on tiny random inputs; a failure raises AssertionError whose
message starts with the check's name. The checks (run in this order):

* ``output_shape``      output is a finite float Tensor[B, output_dim]; ``mask=None`` = all present
* ``patterns``          every pattern of present/absent modalities, including none present, gives
                        finite outputs and finite gradients
* ``gradients``         with every modality present and loss = Σ out², every parameter and every
                        input gets a non-zero, finite gradient (several batches, for ops such as
                        ``max`` that route gradient to the winners only)
* ``state_dict``        every parameter is in ``state_dict``; loading it into an instance built with
                        another seed reproduces the outputs exactly (catches plain-list parameters)
* ``batch_independence`` in eval mode, row b's output does not change when other rows (values and
                        masks) change
* ``determinism``       the same seed builds the same operator (identical outputs)
* ``no_leak``           replacing an absent modality's placeholder (zeros) with random values
                        changes nothing
* ``bad_inputs``        a missing modality, a wrong width and a wrong mask shape raise the matching
                        ``MMFuseError`` subclass naming the modality
* ``sequences``         (operators with ``accepts_sequences``) padded sequences with ``token_mask``:
                        shape, padding values do not leak, row independence
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from mmfuse.errors import MissingModalityError, MMFuseError, ShapeError

Factory = Callable[[Mapping[str, int]], nn.Module]


def _fail(check: str, message: str) -> None:
    raise AssertionError(f"[{check}] {message}")


def _inputs(input_dims: Mapping[str, int], batch: int, gen: torch.Generator, scale: float = 1.0) -> dict[str, Tensor]:
    return {m: torch.randn(batch, d, generator=gen) * scale for m, d in input_dims.items()}


def _mixed_mask(input_dims: Mapping[str, int], batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Row 0 all present, row 1 none present, then (while rows last) row 2+i with only the i-th
    modality absent, the remaining rows random."""
    mask = {m: torch.rand(batch, generator=gen) < 0.5 for m in input_dims}
    for i, m in enumerate(sorted(input_dims)):
        mask[m][0] = True
        mask[m][1] = False
        for j in range(len(input_dims)):
            if 2 + j < batch:
                mask[m][2 + j] = i != j
    return mask


def _zero_absent(x: dict[str, Tensor], mask: dict[str, Tensor]) -> dict[str, Tensor]:
    return {m: v * mask[m].view(-1, *([1] * (v.dim() - 1))).to(v.dtype) for m, v in x.items()}


def _build(factory: Factory, input_dims: Mapping[str, int], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    op = factory(dict(input_dims))
    if not isinstance(op, nn.Module):
        _fail("output_shape", f"factory returned {type(op).__name__}, expected an nn.Module")
    return op


def _close(a: Tensor, b: Tensor, tol: float = 1e-6) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol)


def check_output_shape(factory: Factory, input_dims: Mapping[str, int], batch: int, seed: int) -> None:
    op = _build(factory, input_dims, seed).eval()
    gen = torch.Generator().manual_seed(seed)
    x = _inputs(input_dims, batch, gen)
    dim = getattr(op, "output_dim", None)
    if not isinstance(dim, int) or dim < 1:
        _fail("output_shape", f"output_dim must be a positive int, got {dim!r}")
    with torch.no_grad():
        out = op(x, {m: torch.ones(batch, dtype=torch.bool) for m in input_dims})
        out_none = op(x, None)
    if not isinstance(out, Tensor) or tuple(out.shape) != (batch, dim):
        _fail("output_shape", f"expected shape ({batch}, {dim}), got {getattr(out, 'shape', type(out))}")
    if not out.is_floating_point() or not torch.isfinite(out).all():
        _fail("output_shape", "output must be a finite floating-point tensor")
    if not _close(out, out_none):
        _fail("output_shape", "mask=None must mean every modality present")


def check_gradients(factory: Factory, input_dims: Mapping[str, int], batch: int, seed: int, rounds: int = 3) -> None:
    op = _build(factory, input_dims, seed).train()
    gen = torch.Generator().manual_seed(seed + 1)
    mask = {m: torch.ones(batch, dtype=torch.bool) for m in input_dims}
    input_grad = {m: 0.0 for m in input_dims}
    for _ in range(rounds):
        x = {m: v.requires_grad_(True) for m, v in _inputs(input_dims, batch, gen).items()}
        op(x, mask).pow(2).sum().backward()
        for m, v in x.items():
            if v.grad is None or not torch.isfinite(v.grad).all():
                _fail("gradients", f"input of modality {m!r} got no (or a non-finite) gradient")
            input_grad[m] += float(v.grad.abs().sum())
    for m, g in input_grad.items():
        if g == 0.0:
            _fail("gradients", f"the output does not depend on modality {m!r} (zero input gradient)")
    for name, p in op.named_parameters():
        if p.grad is None or float(p.grad.abs().sum()) == 0.0:
            _fail("gradients", f"parameter {name!r} got no gradient; is it used in forward?")
        if not torch.isfinite(p.grad).all():
            _fail("gradients", f"parameter {name!r} got a non-finite gradient")


def check_state_dict(factory: Factory, input_dims: Mapping[str, int], batch: int, seed: int) -> None:
    op = _build(factory, input_dims, seed).eval()
    state = op.state_dict()
    missing = [n for n, _ in op.named_parameters() if n not in state]
    if missing:
        _fail("state_dict", f"parameters missing from state_dict: {missing}")
    fresh = _build(factory, input_dims, seed + 7919).eval()
    try:
        fresh.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        _fail("state_dict", f"state_dict does not load into a fresh instance: {exc}")
    gen = torch.Generator().manual_seed(seed + 2)
    mask = _mixed_mask(input_dims, batch, gen)
    x = _zero_absent(_inputs(input_dims, batch, gen), mask)
    with torch.no_grad():
        if not torch.equal(op(x, mask), fresh(x, mask)):
            _fail("state_dict", "a fresh instance loaded with state_dict gives different outputs "
                  "(is some parameter or buffer not registered, e.g. kept in a plain list?)")


def check_batch_independence(factory: Factory, input_dims: Mapping[str, int], batch: int, seed: int) -> None:
    op = _build(factory, input_dims, seed).eval()
    gen = torch.Generator().manual_seed(seed + 3)
    mask = _mixed_mask(input_dims, batch, gen)
    x = _zero_absent(_inputs(input_dims, batch, gen), mask)
    with torch.no_grad():
        ref = op(x, mask)
        for b in sorted({0, 1, batch - 1}):  # all present, none present, random
            others = torch.arange(batch) != b
            mask2 = {m: torch.where(others, torch.rand(batch, generator=gen) < 0.5, v) for m, v in mask.items()}
            new = _inputs(input_dims, batch, gen, scale=3.0)
            x2 = _zero_absent({m: torch.where(others.unsqueeze(1), new[m], v) for m, v in x.items()}, mask2)
            out = op(x2, mask2)
            if not _close(out[b], ref[b], 1e-5):
                _fail("batch_independence", f"row {b} changed when only the other rows changed")


def check_determinism(factory: Factory, input_dims: Mapping[str, int], batch: int, seed: int) -> None:
    a = _build(factory, input_dims, seed).eval()
    b = _build(factory, input_dims, seed).eval()
    gen = torch.Generator().manual_seed(seed + 4)
    mask = _mixed_mask(input_dims, batch, gen)
    x = _zero_absent(_inputs(input_dims, batch, gen), mask)
    with torch.no_grad():
        if not torch.equal(a(x, mask), b(x, mask)):
            _fail("determinism", "two operators built with the same seed give different outputs")


def check_no_leak(factory: Factory, input_dims: Mapping[str, int], batch: int, seed: int) -> None:
    op = _build(factory, input_dims, seed).eval()
    gen = torch.Generator().manual_seed(seed + 5)
    mask = _mixed_mask(input_dims, batch, gen)
    x = _zero_absent(_inputs(input_dims, batch, gen), mask)
    with torch.no_grad():
        ref = op(x, mask)
        for m in input_dims:
            noise = torch.randn(x[m].shape, generator=gen) * 10.0
            x2 = dict(x)
            x2[m] = torch.where(mask[m].unsqueeze(1), x[m], noise)
            if not _close(op(x2, mask), ref, 1e-5):
                _fail("no_leak", f"the placeholder values of absent modality {m!r} changed the output")


def check_patterns(factory: Factory, input_dims: Mapping[str, int], batch: int, seed: int) -> None:
    op = _build(factory, input_dims, seed).train()
    gen = torch.Generator().manual_seed(seed + 6)
    mods = sorted(input_dims)
    for pattern in itertools.product([False, True], repeat=len(mods)):
        mask = {m: torch.full((batch,), p) for m, p in zip(mods, pattern)}
        x = {m: v.requires_grad_(True) for m, v in _zero_absent(_inputs(input_dims, batch, gen), mask).items()}
        op.zero_grad()
        out = op(x, mask)
        name = "{" + ", ".join(f"{m}: {'present' if p else 'absent'}" for m, p in zip(mods, pattern)) + "}"
        if not torch.isfinite(out).all():
            _fail("patterns", f"non-finite output for presence pattern {name}")
        out.pow(2).sum().backward()
        for pname, p in op.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                _fail("patterns", f"non-finite gradient of {pname!r} for presence pattern {name}")


def check_bad_inputs(factory: Factory, input_dims: Mapping[str, int], batch: int, seed: int) -> None:
    op = _build(factory, input_dims, seed).eval()
    gen = torch.Generator().manual_seed(seed + 7)
    x = _inputs(input_dims, batch, gen)
    mask = {m: torch.ones(batch, dtype=torch.bool) for m in input_dims}
    m = sorted(input_dims)[-1]
    cases = [
        ("missing modality", {k: v for k, v in x.items() if k != m}, mask, MissingModalityError),
        ("wrong width", {**x, m: torch.randn(batch, input_dims[m] + 1)}, mask, ShapeError),
        ("wrong mask shape", x, {**mask, m: torch.ones(batch + 1, dtype=torch.bool)}, ShapeError),
    ]
    for what, xx, mm, err in cases:
        try:
            op(xx, mm)
        except err as exc:
            if repr(m) not in str(exc) and m not in str(exc):
                _fail("bad_inputs", f"{what}: the message does not name modality {m!r}: {exc}")
        except Exception as exc:  # noqa: BLE001 - report the wrong type
            _fail("bad_inputs", f"{what}: expected {err.__name__}, got {type(exc).__name__}: {exc}")
        else:
            _fail("bad_inputs", f"{what}: no error raised")
    if not issubclass(ShapeError, MMFuseError):  # pragma: no cover - guards the hierarchy itself
        _fail("bad_inputs", "ShapeError must derive from MMFuseError")


def check_sequences(factory: Factory, input_dims: Mapping[str, int], batch: int, seed: int, length: int = 4) -> None:
    op = _build(factory, input_dims, seed).eval()
    if not getattr(op, "accepts_sequences", False):
        return
    gen = torch.Generator().manual_seed(seed + 8)
    mask = _mixed_mask(input_dims, batch, gen)
    x = _zero_absent(_inputs(input_dims, batch, gen), mask)
    seq = sorted(input_dims)[0]  # the first modality becomes a padded sequence
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length - 1 if length > 1 else 1
    token_mask = {seq: torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)}
    tokens = torch.randn(batch, length, input_dims[seq], generator=gen) * token_mask[seq].unsqueeze(-1)
    x[seq] = tokens * mask[seq].view(-1, 1, 1)
    with torch.no_grad():
        ref = op(x, mask, token_mask=token_mask)
        if tuple(ref.shape) != (batch, op.output_dim) or not torch.isfinite(ref).all():
            _fail("sequences", f"expected a finite ({batch}, {op.output_dim}) output, got {tuple(ref.shape)}")
        padded = dict(x)
        noise = torch.randn(x[seq].shape, generator=gen) * 10.0
        padded[seq] = torch.where(token_mask[seq].unsqueeze(-1), x[seq], noise)
        if not _close(op(padded, mask, token_mask=token_mask), ref, 1e-5):
            _fail("sequences", f"padding tokens of {seq!r} changed the output")
        longer = torch.cat([x[seq], torch.randn(batch, 2, input_dims[seq], generator=gen)], dim=1)
        tm_longer = torch.cat([token_mask[seq], torch.zeros(batch, 2, dtype=torch.bool)], dim=1)
        if not _close(op({**x, seq: longer}, mask, token_mask={seq: tm_longer}), ref, 1e-5):
            _fail("sequences", "extra padding (a longer padded length) changed the output")
        other = torch.arange(batch) != 0
        x2 = dict(x)
        x2[seq] = torch.where(other.view(-1, 1, 1), torch.randn(x[seq].shape, generator=gen), x[seq])
        if not _close(op(x2, mask, token_mask=token_mask)[0], ref[0], 1e-5):
            _fail("sequences", "row 0 changed when only the other rows' tokens changed")


CHECKS: dict[str, Callable[..., None]] = {
    "output_shape": check_output_shape,
    "patterns": check_patterns,
    "gradients": check_gradients,
    "state_dict": check_state_dict,
    "batch_independence": check_batch_independence,
    "determinism": check_determinism,
    "no_leak": check_no_leak,
    "bad_inputs": check_bad_inputs,
    "sequences": check_sequences,
}


def check_fusion_op(
    factory: Factory | str,
    input_dims: Mapping[str, int],
    *,
    batch_size: int = 6,
    seed: int = 0,
    skip: Iterable[str] = (),
    **options: Any,
) -> None:
    """Run every check of :data:`CHECKS` (except ``skip``) on operators built by ``factory``.

    ``factory`` is a callable ``f(input_dims) -> nn.Module`` or a registered fusion name (then
    ``options`` are passed to it). Raises AssertionError naming the first failing check.
    """
    if isinstance(factory, str):
        from mmfuse.fusion import create_fusion

        op_name = factory

        def factory(dims: Mapping[str, int]) -> nn.Module:
            return create_fusion(op_name, dims, **options)

    elif options:
        raise TypeError("options are only accepted with a registered name; use functools.partial for a factory")
    if batch_size < 3:
        raise ValueError("batch_size must be at least 3 (row 0: all present, row 1: none present, others random)")
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks to skip: {sorted(unknown)}; known: {list(CHECKS)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread start-up costs more than it saves
    try:
        for name, check in CHECKS.items():
            if name not in skip:
                check(factory, input_dims, batch_size, seed)
    finally:
        torch.set_num_threads(threads)
