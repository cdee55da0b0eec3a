"""Checks for imputers: ``factory(input_dims) -> imp`` with ``imp(embeddings, mask) -> embeddings``
(present rows untouched, absent rows filled) and ``imp.output_mask(mask)``."""

from __future__ import annotations

import torch

from ._core import round_trip, grads_of, Case, accumulate, check, close, describe_row, fail, grads_reach, inputs, pattern_mask, zero_absent

DEFAULT_DIMS = {"a": 4, "b": 3, "c": 2}


def _setup(case: Case, offset: int, extra: int = 3):
    dims = dict(case.spec.get("dims", DEFAULT_DIMS))
    gen = torch.Generator().manual_seed(case.seed + offset)
    mask = pattern_mask(dims, extra, gen)
    batch = len(next(iter(mask.values())))
    return dims, gen, mask, batch, zero_absent(inputs(dims, batch, gen), mask)


def _fit(imp, dims, gen, rounds: int = 2):
    """A few training-mode passes so that learned statistics (e.g. a running mean) move from their init."""
    imp.train()
    for _ in range(rounds):
        mask = pattern_mask(dims, 3, gen)
        b = len(next(iter(mask.values())))
        imp(zero_absent(inputs(dims, b, gen, scale=2.0), mask), mask)
    with torch.no_grad():
        for p in imp.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    return imp.eval()


@check("imputer")
def check_present_rows_untouched(case: Case) -> None:
    """Under every presence pattern: present rows come back bit-identical, absent rows are finite
    and of the embedding's shape."""
    dims, _, mask, batch, x = _setup(case, 0)
    imp = case.build(dims).eval()
    with torch.no_grad():
        out = imp(x, mask)
    if set(out) != set(dims):
        fail(f"returned modalities {sorted(out)}, expected {sorted(dims)}")
    for m in dims:
        if tuple(out[m].shape) != tuple(x[m].shape):
            fail(f"embeddings[{m!r}] came back with shape {tuple(out[m].shape)}, expected {tuple(x[m].shape)}")
        for r in range(batch):
            if bool(mask[m][r]) and not torch.equal(out[m][r], x[m][r]):
                fail(f"present row {r} of {m!r} was changed (pattern {describe_row(mask, r)})")
            if not torch.isfinite(out[m][r]).all():
                fail(f"non-finite imputed values of {m!r} for pattern {describe_row(mask, r)}")


@check("imputer")
def check_output_mask(case: Case) -> None:
    """``output_mask``: all True when ``mark_present`` (default), the input mask otherwise; None stays None."""
    dims, _, mask, _, _ = _setup(case, 1)
    imp = case.build(dims)
    out = imp.output_mask(mask)
    if imp.output_mask(None) is not None:
        fail("output_mask(None) must be None")
    mark = getattr(imp, "mark_present", True)
    for m in dims:
        want = torch.ones_like(mask[m]) if mark else mask[m]
        if not torch.equal(out[m].to(torch.bool), want):
            fail(f"output_mask[{m!r}] is {out[m].tolist()}, expected {want.tolist()} (mark_present={mark})")


@check("imputer")
def check_no_leak(case: Case) -> None:
    """Under every presence pattern, an absent row's placeholder values change nothing."""
    dims, gen, mask, batch, x = _setup(case, 2)
    imp = _fit(case.build(dims), dims, gen)
    with torch.no_grad():
        ref = imp(x, mask)
        for m in dims:
            x2 = {**x, m: torch.where(mask[m].unsqueeze(1), x[m], torch.randn(x[m].shape, generator=gen) * 10)}
            out = imp(x2, mask)
            for k in dims:
                for r in range(batch):
                    if not close(out[k][r], ref[k][r], 1e-5):
                        fail(f"the placeholder of absent {m!r} changed {k!r} in pattern {describe_row(mask, r)}")


@check("imputer")
def check_gradients(case: Case) -> None:
    """Gradient flows through present rows unchanged (d out / d x = 1 where every modality is present)
    and reaches every parameter, finitely."""
    dims, gen, mask, batch, x = _setup(case, 3)
    imp = case.build(dims).train()
    xs = {m: v.clone().requires_grad_(True) for m, v in x.items()}
    out = imp(xs, mask)
    grads_of(sum(v.sum() for v in out.values()))
    full = torch.stack([mask[m] for m in dims], 1).all(1)
    for m, v in xs.items():
        if v.grad is None or not torch.isfinite(v.grad).all():
            fail(f"embeddings of {m!r} got no (or a non-finite) gradient")
        if not torch.equal(v.grad[full], torch.ones_like(v.grad[full])):
            fail(f"the gradient through the present rows of {m!r} is not the identity")
    totals: dict[str, float] = {}
    accumulate(imp, totals)
    grads_reach(imp, totals)


@check("imputer")
def check_state_dict(case: Case) -> None:
    """After training-mode passes, state_dict (parameters and buffers) loaded into a fresh instance
    reproduces the eval outputs exactly."""
    dims, gen, mask, _, x = _setup(case, 4)
    imp = _fit(case.build(dims), dims, gen)
    fresh = case.build(dims, seed=case.seed + 7919).eval()
    round_trip(imp.eval(), fresh, lambda m: dict(m(x, mask)))


@check("imputer")
def check_batch_independence(case: Case) -> None:
    """In eval mode, row b's output does not change when the other rows (values and masks) change."""
    dims, gen, mask, batch, x = _setup(case, 5)
    imp = _fit(case.build(dims), dims, gen)
    with torch.no_grad():
        ref = imp(x, mask)
        for b in range(batch):
            others = torch.arange(batch) != b
            mask2 = {m: torch.where(others, torch.rand(batch, generator=gen) < 0.5, v) for m, v in mask.items()}
            new = inputs(dims, batch, gen, scale=3.0)
            x2 = zero_absent({m: torch.where(others.unsqueeze(1), new[m], v) for m, v in x.items()}, mask2)
            out = imp(x2, mask2)
            for m in dims:
                if not close(out[m][b], ref[m][b], 1e-5):
                    fail(f"row {b} of {m!r} changed when only the other rows changed")


@check("imputer")
def check_determinism(case: Case) -> None:
    """The same seed builds the same imputer; eval calls repeat exactly."""
    dims, _, mask, _, x = _setup(case, 6)
    a, b = case.build(dims).eval(), case.build(dims).eval()
    with torch.no_grad():
        ya, yb, ya2 = a(x, mask), b(x, mask), a(x, mask)
    for m in dims:
        if not torch.equal(ya[m], yb[m]) or not torch.equal(ya[m], ya2[m]):
            fail(f"two imputers built with the same seed (or two eval calls) impute {m!r} differently")
