"""Checks for late combiners: ``factory(modalities, num_classes, task) -> comb`` with
``comb(logits: {m: Tensor[B, K]}, mask) -> Tensor[B, K]``."""

from __future__ import annotations

import torch

from ..errors import MissingModalityError, ShapeError
from ._core import round_trip, grads_of, Case, check, close, describe_row, fail, pattern_mask, target, task_loss

DEFAULT_MODALITIES = ("audio", "text", "video")


def _setup(case: Case, seed_offset: int, scale: float = 2.0):
    mods = list(case.spec.get("modalities", DEFAULT_MODALITIES))
    k = case.num_outputs
    gen = torch.Generator().manual_seed(case.seed + seed_offset)
    mask = pattern_mask(mods, 2, gen)
    batch = len(mask[mods[0]])
    logits = {m: torch.randn(batch, k, generator=gen) * scale for m in sorted(mods)}
    return mods, k, gen, mask, batch, logits


def _build(case: Case, mods, k, seed=None):
    return case.build(list(mods), k, case.task, seed=seed)


@check("late")
def check_output_shape(case: Case) -> None:
    """Finite float Tensor[B, K] for every presence pattern; ``mask=None`` = all present; a row with
    no modality present gets zeros (uniform logits)."""
    mods, k, _, mask, batch, logits = _setup(case, 0)
    comb = _build(case, mods, k).eval()
    with torch.no_grad():
        out = comb(logits, mask)
        full = comb(logits, {m: torch.ones(batch, dtype=torch.bool) for m in mods})
        none = comb(logits, None)
    if tuple(out.shape) != (batch, k) or not out.is_floating_point():
        fail(f"expected a float tensor of shape ({batch}, {k}), got {tuple(out.shape)} {out.dtype}")
    for r in range(batch):
        if not torch.isfinite(out[r]).all():
            fail(f"non-finite output for presence pattern {describe_row(mask, r)}")
    if not close(full, none):
        fail("mask=None must mean every modality present")
    if not torch.equal(out[0], torch.zeros(k)):  # row 0: nothing present
        fail(f"a row with no modality present must give zeros, got {out[0].tolist()}")


@check("late")
def check_gradients(case: Case) -> None:
    """The task loss reaches every parameter and every present modality's logits, finitely."""
    mods, k, gen, mask, batch, logits = _setup(case, 1)
    comb = _build(case, mods, k).train()
    x = {m: v.clone().requires_grad_(True) for m, v in logits.items()}
    loss = task_loss(case.task, comb(x, mask), target(case.task, batch, k, gen))
    if loss.dim() != 0 or not torch.isfinite(loss):
        fail(f"the {case.task} loss on the combined logits is not a finite scalar: {loss}")
    if not loss.requires_grad:
        fail("the combined logits carry no gradient")
    grads_of(loss)
    for m, v in x.items():
        g = v.grad
        if g is None or not torch.isfinite(g).all():
            fail(f"logits of modality {m!r} got no (or a non-finite) gradient")
        if float(g[mask[m]].abs().sum()) == 0.0:
            fail(f"the output does not depend on the present logits of modality {m!r}")
    for name, p in comb.named_parameters():
        if p.grad is None or float(p.grad.abs().sum()) == 0.0 or not torch.isfinite(p.grad).all():
            fail(f"parameter {name!r} got no (or a non-finite) gradient")


@check("late")
def check_state_dict(case: Case) -> None:
    """state_dict loaded into an instance built with another seed gives identical outputs."""
    mods, k, _, mask, _, logits = _setup(case, 2)
    comb = _build(case, mods, k).eval()
    with torch.no_grad():
        for p in comb.parameters():  # move away from a constant init so the round trip is informative
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    fresh = _build(case, mods, k, seed=case.seed + 7919).eval()
    round_trip(comb, fresh, lambda m: m(logits, mask))


@check("late")
def check_batch_independence(case: Case) -> None:
    """Row b's output does not change when the other rows' logits and masks change."""
    mods, k, gen, mask, batch, logits = _setup(case, 3)
    comb = _build(case, mods, k).eval()
    with torch.no_grad():
        ref = comb(logits, mask)
        for b in range(batch):
            others = torch.arange(batch) != b
            mask2 = {m: torch.where(others, torch.rand(batch, generator=gen) < 0.5, v) for m, v in mask.items()}
            x2 = {m: torch.where(others.unsqueeze(1), torch.randn(batch, k, generator=gen) * 3, v) for m, v in logits.items()}
            if not close(comb(x2, mask2)[b], ref[b], 1e-5):
                fail(f"row {b} changed when only the other rows changed")


@check("late")
def check_determinism(case: Case) -> None:
    """The same seed builds the same combiner; eval calls repeat exactly."""
    mods, k, _, mask, _, logits = _setup(case, 4)
    a, b = _build(case, mods, k).eval(), _build(case, mods, k).eval()
    with torch.no_grad():
        out = a(logits, mask)
        if not torch.equal(out, b(logits, mask)) or not torch.equal(out, a(logits, mask)):
            fail("two combiners built with the same seed (or two eval calls) give different outputs")


@check("late")
def check_no_leak(case: Case) -> None:
    """Under every presence pattern, an absent modality's logits (anything) change nothing."""
    mods, k, gen, mask, batch, logits = _setup(case, 5)
    comb = _build(case, mods, k).eval()
    with torch.no_grad():
        ref = comb(logits, mask)
        for m in mods:
            x2 = {**logits, m: torch.where(mask[m].unsqueeze(1), logits[m], torch.randn(batch, k, generator=gen) * 50)}
            out = comb(x2, mask)
            for r in range(batch):
                if not close(out[r], ref[r], 1e-5):
                    fail(f"absent modality {m!r}'s logits changed the output for pattern {describe_row(mask, r)}")


@check("late")
def check_bad_inputs(case: Case) -> None:
    """Missing modality, wrong logits width, wrong mask shape: the matching error naming the modality."""
    mods, k, _, mask, batch, logits = _setup(case, 6)
    comb = _build(case, mods, k).eval()
    m = sorted(mods)[-1]
    cases = [
        ("missing modality", {n: v for n, v in logits.items() if n != m}, mask, MissingModalityError),
        ("wrong width", {**logits, m: torch.randn(batch, k + 1)}, mask, ShapeError),
        ("wrong mask shape", logits, {**mask, m: torch.ones(batch + 1, dtype=torch.bool)}, ShapeError),
    ]
    for what, xx, mm, err in cases:
        try:
            comb(xx, mm)
        except err as exc:
            if m not in str(exc):
                fail(f"{what}: the message does not name modality {m!r}: {exc}")
        except Exception as exc:  # noqa: BLE001
            fail(f"{what}: expected {err.__name__}, got {type(exc).__name__}: {exc}")
        else:
            fail(f"{what}: no error raised")
