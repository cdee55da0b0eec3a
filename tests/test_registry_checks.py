"""The public check suite (mmfuse.testing) on every registered entry of every registry, under
every task the entry supports. Each entry declares its own tiny options at registration
(``test_options`` / ``test_shapes`` / ...), so a newly registered entry is checked right away."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfuse.models.output import ModelOutput
from mmfuse.registry import Registry
from mmfuse.testing import KINDS, all_checks, check_entry, make_case, parametrize_with_checks


@parametrize_with_checks("fusion")
def test_fusions(entry, check):
    check(entry)


@parametrize_with_checks("late")
def test_late_combiners(entry, check):
    check(entry)


@parametrize_with_checks("encoder")
def test_encoders(entry, check):
    check(entry)


@parametrize_with_checks("head")
def test_heads(entry, check):
    check(entry)


@parametrize_with_checks("imputer")
def test_imputers(entry, check):
    check(entry)


@parametrize_with_checks("model")
def test_model_families(entry, check):
    check(entry)


def test_every_registry_has_entries_and_checks():
    for kind, reg in KINDS.items():
        assert len(reg) > 0 and all_checks(kind), kind
    assert [f.__name__ for f in all_checks("model")] == [f.__name__ for f in all_checks(KINDS["model"])]


# --- the API, and the checks catch broken entries of every kind ---------------------------------


def test_ids_name_entry_task_and_check():
    mark = parametrize_with_checks("fusion")
    ids = mark.kwargs["ids"]
    assert "fusion[gated]-multilabel-check_no_leak" in ids
    assert len(ids) == len(set(ids)) == len(mark.args[1])


def test_third_party_entry_in_its_own_registry():
    reg = Registry("my fusions")

    @reg.register("scaled_sum", tasks=("regression",), test_options={"scale": 2.0})
    class ScaledSum(nn.Module):
        def __init__(self, input_dims, scale=1.0):
            super().__init__()
            from mmfuse.fusion import create_fusion

            self.inner = create_fusion("sum", input_dims)
            self.scale = nn.Parameter(torch.tensor(scale))
            self.output_dim = self.inner.output_dim

        def forward(self, embeddings, mask=None):
            return self.scale * self.inner(embeddings, mask)

    skipped = check_entry(reg, "scaled_sum", kind="fusion")
    assert list(skipped) == ["regression-check_sequences"]  # only its task; no sequence support
    assert make_case(reg, "scaled_sum", kind="fusion").task == "regression"


def _broken(kind, name, cls, **info):
    reg = Registry("broken")
    reg.register(name, cls, **info)
    with pytest.raises(AssertionError) as err:
        check_entry(reg, name, kind=kind, task="multiclass")
    return str(err.value)


class _LeakyLate(nn.Module):  # ignores the mask
    def __init__(self, modalities, num_classes, task):
        super().__init__()
        self.modalities = sorted(modalities)

    def forward(self, logits, mask=None):
        return sum(logits[m] for m in self.modalities) / len(self.modalities)


class _ListParamEncoder(nn.Module):  # the weight is not registered
    def __init__(self, input_shape):
        super().__init__()
        self.w = [nn.Parameter(torch.randn(input_shape[0], 3))]
        self.output_dim, self.output_kind = 3, "vector"

    def forward(self, x, lengths=None):
        return x @ self.w[0]


class _PaddingBlindEncoder(nn.Module):  # averages over padding too
    def __init__(self, input_shape):
        super().__init__()
        self.lin = nn.Linear(input_shape[1], 4)
        self.output_dim, self.output_kind = 4, "vector"

    def forward(self, x, lengths=None):
        return self.lin(x).mean(1)


class _DropoutInEvalHead(nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return nn.functional.dropout(self.lin(x), 0.5, training=True)


class _ShiftingImputer(nn.Module):  # touches present rows
    mark_present = True

    def __init__(self, input_dims):
        super().__init__()

    def forward(self, embeddings, mask):
        return {m: x + 1.0 for m, x in embeddings.items()}

    def output_mask(self, mask):
        return None if mask is None else {m: torch.ones_like(v) for m, v in mask.items()}


class _CoupledModel(nn.Module):  # ignores the mask and normalises across the batch
    def __init__(self, cfg, shapes, k, task):
        super().__init__()
        self.lin = nn.Linear(sum(s[0] for s in shapes.values()), k)

    def forward(self, batch):
        h = torch.cat([batch.inputs[m] for m in sorted(batch.inputs)], 1)
        logits = self.lin(h)
        return ModelOutput(logits - logits.mean(0), losses={"extra": logits.pow(2).mean(0)})


@pytest.mark.parametrize("kind, cls, info, expected", [
    ("late", _LeakyLate, {}, ["late[x]-multiclass check_output_shape: a row with no modality present",
                              "late[x]-multiclass check_no_leak: absent modality"]),
    ("encoder", _ListParamEncoder, {}, ["encoder[x]-multiclass check_state_dict:"]),
    ("encoder", _PaddingBlindEncoder, {"test_options": {"input_shape": (None, 3)}},
     ["encoder[x]-multiclass check_padding: values in padding positions"]),
    ("head", _DropoutInEvalHead, {}, ["head[x]-multiclass check_determinism:"]),
    ("imputer", _ShiftingImputer, {}, ["imputer[x]-multiclass check_present_rows_untouched: present row"]),
    ("model", _CoupledModel, {}, ["model[x]-multiclass check_train_loss: out.losses['extra'] must be a scalar",
                                  "model[x]-multiclass check_batch_independence:",
                                  "model[x]-multiclass check_no_leak: the placeholder of absent modality"]),
])
def test_checks_catch_broken_entries(kind, cls, info, expected):
    message = _broken(kind, "x", cls, **info)
    for line in expected:
        assert line in message, message
