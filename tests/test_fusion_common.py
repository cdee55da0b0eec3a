"""Fusion operators beyond the registry-wide check suite (tests/test_registry_checks.py runs
``mmfuse.testing`` on every registered operator with the options it declares at registration)."""

from __future__ import annotations

import pytest
import torch

from mmfuse.errors import ConfigError
from mmfuse.fusion import create_fusion, list_fusions
from mmfuse.registry import FUSIONS
from mmfuse.testing import check_fusion_op


def test_every_builtin_is_registered():
    expected = {"concat", "sum", "max", "product", "mean", "gated", "multconcat", "tensor", "low_rank", "cross_attention"}
    assert expected <= set(list_fusions())


def test_check_suite_accepts_a_name_with_options():
    check_fusion_op("gated", {"x": 2, "y": 3}, dim=3, batch_size=4)


@pytest.mark.parametrize("name", ["gated", "cross_attention"])
def test_operators_needing_two_modalities_say_so(name):
    with pytest.raises(ConfigError, match="at least 2"):
        create_fusion(name, {"a": 3}, **FUSIONS.info(name)["test_options"])


# --- the check suite itself must catch broken operators -------------------------------------


class _PlainListParams(torch.nn.Module):
    """The MultiBench bug: parameters kept in a plain list are not registered."""

    def __init__(self, input_dims):
        super().__init__()
        self.input_dims = dict(sorted(input_dims.items()))
        self.weights = [torch.nn.Parameter(torch.randn(d, 2)) for d in self.input_dims.values()]
        self.output_dim = 2

    def forward(self, embeddings, mask=None):
        from mmfuse.fusion import create_fusion as _cf

        _cf("concat", self.input_dims)(embeddings, mask)  # reuse validation
        out = 0
        for (m, _), w in zip(self.input_dims.items(), self.weights):
            x = embeddings[m] if mask is None else embeddings[m] * mask[m].unsqueeze(1)
            out = out + x @ w
        return out


class _LeakyMean(torch.nn.Module):
    """Ignores the mask: the zeros of an absent modality are averaged in."""

    def __init__(self, input_dims):
        super().__init__()
        self.inner = create_fusion("mean", input_dims)
        self.output_dim = self.inner.output_dim

    def forward(self, embeddings, mask=None):
        return self.inner(embeddings, None)


class _BatchCoupled(torch.nn.Module):
    """Normalises across the batch: rows depend on each other."""

    def __init__(self, input_dims):
        super().__init__()
        self.inner = create_fusion("concat", input_dims)
        self.output_dim = self.inner.output_dim

    def forward(self, embeddings, mask=None):
        out = self.inner(embeddings, mask)
        return out - out.mean(dim=0, keepdim=True)


class _NaNWhenEmpty(torch.nn.Module):
    """Naive masked mean: 0/0 when no modality is present."""

    def __init__(self, input_dims):
        super().__init__()
        self.inner = create_fusion("sum", input_dims)
        self.output_dim = self.inner.output_dim

    def forward(self, embeddings, mask=None):
        mask = mask or {m: torch.ones(len(embeddings[m]), dtype=torch.bool) for m in embeddings}
        count = sum(mask[m].float() for m in sorted(embeddings)).unsqueeze(1)
        return self.inner(embeddings, mask) / count


class _UnusedParameter(torch.nn.Module):
    def __init__(self, input_dims):
        super().__init__()
        self.inner = create_fusion("gated", input_dims, dim=2)
        self.extra = torch.nn.Linear(2, 2)
        self.output_dim = 2

    def forward(self, embeddings, mask=None):
        return self.inner(embeddings, mask)


@pytest.mark.parametrize(
    "broken, check",
    [
        (_PlainListParams, "state_dict"),
        (_LeakyMean, "no_leak"),
        (_BatchCoupled, "batch_independence"),
        (_NaNWhenEmpty, "patterns"),
        (_UnusedParameter, "gradients"),
    ],
)
def test_check_suite_catches_broken_operators(broken, check):
    with pytest.raises(AssertionError, match=rf"fusion\[{broken.__name__}\]-multiclass check_{check}: "):
        check_fusion_op(broken, {"a": 3, "b": 3})
