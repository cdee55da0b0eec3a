"""User mistakes with fusion operators raise MMFuseError subclasses whose messages name the culprit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfuse.errors import ConfigError, MissingModalityError, MMFuseError, ShapeError, UnknownNameError
from mmfuse.fusion import FusionOp, create_fusion, list_fusions, register_fusion
from mmfuse.registry import FUSIONS

DIMS = {"audio": 3, "video": 4}
TINY = {"cross_attention": {"dim": 4, "heads": 2}}


def _x(batch=2):
    return {m: torch.randn(batch, d) for m, d in DIMS.items()}


@pytest.mark.parametrize("name", list_fusions())
def test_wrong_width_names_modality(name):
    op = create_fusion(name, DIMS, **TINY.get(name, {}))
    with pytest.raises(ShapeError, match="'video'.*expected \\(B, 4\\)"):
        op({**_x(), "video": torch.randn(2, 5)})


@pytest.mark.parametrize("name", list_fusions())
def test_missing_modality_names_it(name):
    op = create_fusion(name, DIMS, **TINY.get(name, {}))
    with pytest.raises(MissingModalityError, match="'audio'"):
        op({"video": torch.randn(2, 4)})


@pytest.mark.parametrize("name", list_fusions())
def test_wrong_mask_shape_names_modality(name):
    op = create_fusion(name, DIMS, **TINY.get(name, {}))
    with pytest.raises(ShapeError, match="mask\\['audio'\\]"):
        op(_x(), {"audio": torch.ones(2, 1, dtype=torch.bool), "video": torch.ones(2, dtype=torch.bool)})


def test_sequence_given_to_a_vector_operator():
    op = create_fusion("gated", DIMS)
    with pytest.raises(ShapeError, match="'audio'"):
        op({**_x(), "audio": torch.randn(2, 5, 3)})


@pytest.mark.parametrize(
    "name, options, option",
    [
        ("sum", {"dim": 0}, "dim"),
        ("max", {"dim": "4"}, "dim"),
        ("gated", {"dim": -1}, "dim"),
        ("multconcat", {"dim": 2.5}, "dim"),
        ("low_rank", {"rank": 0}, "rank"),
        ("low_rank", {"output_dim": True}, "output_dim"),
        ("cross_attention", {"dim": 6, "heads": 4}, "heads"),
        ("cross_attention", {"dropout": 1.5}, "dropout"),
        ("cross_attention", {"ffn_dim": 0}, "ffn_dim"),
        ("concat", {"dim": 3}, "dim"),  # concat has no options at all
        ("tensor", {"rank": 3}, "rank"),
    ],
)
def test_bad_option_names_it(name, options, option):
    with pytest.raises(ConfigError, match=f"'?{option}'?"):
        create_fusion(name, DIMS, **options)


def test_unknown_operator_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean 'concat'"):
        create_fusion("concatt", DIMS)


@pytest.mark.parametrize("dims, culprit", [({}, "input_dims"), ({"audio": 0}, "audio"), ({"audio": 2.0}, "audio")])
def test_bad_input_dims(dims, culprit):
    with pytest.raises(ConfigError, match=culprit):
        create_fusion("concat", dims)


def test_modality_name_that_cannot_name_a_parameter():
    with pytest.raises(ConfigError, match="'rgb.depth'"):
        create_fusion("low_rank", {"rgb.depth": 3, "audio": 2})


def test_cross_attention_token_mask_errors():
    op = create_fusion("cross_attention", DIMS, dim=4, heads=2)
    x = {"audio": torch.randn(2, 5, 3), "video": torch.randn(2, 4)}
    with pytest.raises(ShapeError, match="token_mask\\['audio'\\]"):
        op(x, None, token_mask={"audio": torch.ones(2, 4, dtype=torch.bool)})
    with pytest.raises(MissingModalityError, match="'text'"):
        op(x, None, token_mask={"text": torch.ones(2, 5, dtype=torch.bool)})
    with pytest.raises(ShapeError, match="lengths\\['audio'\\]"):
        op(x, None, lengths={"audio": torch.ones(3, dtype=torch.long)})


def test_errors_share_one_base_class():
    op = create_fusion("concat", DIMS)
    with pytest.raises(MMFuseError):
        op({"audio": torch.randn(2, 3)})


def test_create_returns_a_module_unchanged_and_register_adds_a_name():
    mine = nn.Identity()
    assert create_fusion(mine, DIMS) is mine

    name = "_test_first_only"

    @register_fusion(name)
    class FirstOnly(FusionOp):
        def __init__(self, input_dims):
            super().__init__(input_dims)
            self.output_dim = self.input_dims[self.modalities[0]]

        def fuse(self, xs, present):
            return xs[0] * present[:, :1]

    try:
        assert name in list_fusions()
        op = create_fusion(name, DIMS)
        assert isinstance(op, FirstOnly) and op(_x()).shape == (2, 3)
    finally:
        FUSIONS._entries.pop(name, None)
