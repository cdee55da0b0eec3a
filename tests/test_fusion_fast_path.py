"""The no-absent-modality fast path of the fusion operators equals the masked path bitwise."""

from __future__ import annotations

import pytest
import torch

from mmfuse.fusion import create_fusion
from mmfuse.fusion.elementwise import SumFusion
from mmfuse.fusion.base import masked_max

CASES = [
    ("sum", {"a": 3, "b": 3, "c": 3}, {}), ("mean", {"a": 3, "b": 3, "c": 3}, {}),
    ("max", {"a": 3, "b": 5}, {}), ("product", {"a": 4, "b": 4, "c": 4}, {}), ("sum", {"a": 3, "b": 5}, {"dim": 4}),
    ("concat", {"a": 2, "b": 3}, {}), ("gated", {"a": 3, "b": 5, "c": 2}, {"dim": 4}),
    ("tensor", {"a": 2, "b": 3, "c": 1}, {}), ("low_rank", {"a": 3, "b": 2, "c": 4}, {"rank": 3, "output_dim": 5}),
]


@pytest.mark.parametrize("name,dims,options", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_fast_path_is_bitwise_the_masked_path(name, dims, options):
    torch.manual_seed(0)
    op = create_fusion(name, dims, **options)
    assert op.has_fast_path()
    x = {m: torch.randn(6, d, requires_grad=True) for m, d in dims.items()}
    full = {m: torch.ones(6, dtype=torch.bool) for m in dims}
    xs, present = op._check(x, full)
    slow = op.fuse(xs, present)  # the masked path with an all-True mask
    fast = op.fuse_all_present(xs)
    assert torch.equal(fast, slow)  # the where(True, x, neutral) ops are identities: bitwise equal
    assert torch.equal(op(x, full), slow) and torch.equal(op(x), slow)  # forward takes the fast path
    g_slow = torch.autograd.grad(slow.square().sum(), list(x.values()))
    g_fast = torch.autograd.grad(op(x, full).square().sum(), list(x.values()))
    assert all(torch.equal(a, b) for a, b in zip(g_fast, g_slow))
    # one absent row: forward must take the masked path (the absent row's placeholder cannot leak)
    part = dict(full, a=torch.tensor([True, False, True, True, True, True]))
    poisoned = dict(x, a=x["a"].detach().clone().index_fill_(0, torch.tensor([1]), float("nan")))
    out = op(poisoned, part)
    assert torch.isfinite(out).all()
    xs2, present2 = op._check(poisoned, part)
    assert torch.equal(out, op.fuse(xs2, present2))


def test_a_subclass_with_its_own_reduction_keeps_the_masked_path():
    class Doubled(SumFusion):
        reduce = staticmethod(lambda x, present: 2 * masked_max(x, present))

    class OwnFuse(SumFusion):
        def fuse(self, xs, present):
            return super().fuse(xs, present) + 1

    x = {"a": torch.ones(2, 3), "b": torch.full((2, 3), 2.0)}
    assert not Doubled({"a": 3, "b": 3}).has_fast_path()
    assert torch.equal(Doubled({"a": 3, "b": 3})(x), torch.full((2, 3), 4.0))
    assert not OwnFuse({"a": 3, "b": 3}).has_fast_path()
    assert torch.equal(OwnFuse({"a": 3, "b": 3})(x), torch.full((2, 3), 4.0))
    assert not create_fusion("multconcat", {"a": 3, "b": 3}).has_fast_path()  # no fast path defined
