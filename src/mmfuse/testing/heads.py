"""Checks for heads: ``factory(in_dim, out_dim) -> head`` with ``head(Tensor[B, in_dim]) -> Tensor[B, K]``.

K depends on the task (see ``NUM_OUTPUTS``); the head returns raw scores for every task.
"""

from __future__ import annotations

import torch

from ._core import round_trip, grads_of, Case, accumulate, check, close, fail, grads_reach, target, task_loss


def _setup(case: Case, offset: int, batch: int = 5):
    d, k = int(case.spec.get("in_dim", 5)), case.num_outputs
    gen = torch.Generator().manual_seed(case.seed + offset)
    return d, k, gen, torch.randn(batch, d, generator=gen)


@check("head")
def check_output_width(case: Case) -> None:
    """Finite float Tensor[B, K], K = the task's number of outputs."""
    d, k, _, x = _setup(case, 0)
    head = case.build(d, k).eval()
    with torch.no_grad():
        y = head(x)
    if tuple(y.shape) != (len(x), k) or not y.is_floating_point() or not torch.isfinite(y).all():
        fail(f"expected a finite float ({len(x)}, {k}) output for a {case.task} task, got {tuple(y.shape)} {y.dtype}")


@check("head")
def check_gradients(case: Case) -> None:
    """The task loss is a finite scalar and reaches every parameter and the input."""
    d, k, gen, x = _setup(case, 1)
    head = case.build(d, k).train()
    totals: dict[str, float] = {}
    for _ in range(2):
        head.zero_grad()
        xi = (torch.randn(len(x), d, generator=gen)).requires_grad_(True)
        loss = task_loss(case.task, head(xi), target(case.task, len(x), k, gen))
        if loss.dim() != 0 or not torch.isfinite(loss):
            fail(f"the {case.task} loss is not a finite scalar: {loss}")
        grads_of(loss)
        if xi.grad is None or float(xi.grad.abs().sum()) == 0.0:
            fail("the output does not depend on the input")
        accumulate(head, totals)
    grads_reach(head, totals)


@check("head")
def check_state_dict(case: Case) -> None:
    """state_dict loaded into an instance built with another seed gives identical outputs."""
    d, k, _, x = _setup(case, 2)
    head = case.build(d, k).eval()
    other = case.build(d, k, seed=case.seed + 7919).eval()
    round_trip(head, other, lambda m: m(x))


@check("head")
def check_batch_independence(case: Case) -> None:
    """In eval mode, row 0 does not change when the other rows change."""
    d, k, gen, x = _setup(case, 3)
    head = case.build(d, k).eval()
    with torch.no_grad():
        x2 = x.clone()
        x2[1:] = torch.randn(len(x) - 1, d, generator=gen) * 3
        if not close(head(x2)[0], head(x)[0], 1e-5):
            fail("row 0 changed when only the other rows changed")


@check("head")
def check_determinism(case: Case) -> None:
    """The same seed builds the same head; eval calls repeat exactly (no dropout in eval)."""
    d, k, _, x = _setup(case, 4)
    a, b = case.build(d, k).eval(), case.build(d, k).eval()
    with torch.no_grad():
        y = a(x)
        if not torch.equal(y, b(x)) or not torch.equal(y, a(x)):
            fail("two heads built with the same seed (or two eval calls) give different outputs")
