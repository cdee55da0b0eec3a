"""Encoder behaviour beyond the registry-wide check suite (tests/test_registry_checks.py runs
``mmfuse.testing`` on every registered encoder: output contract, gradients, state_dict, batch
independence, determinism, padding, stages; the pretrained wrappers are tested in test_hf.py)."""

import pytest
import torch

from mmfuse.encoders import create_encoder
from mmfuse.errors import ConfigError, ShapeError


def test_cnn2d_accepts_images_without_channel():
    enc = create_encoder("cnn2d", input_shape=(12, 12), channels=[4])
    assert enc(torch.randn(2, 12, 12)).shape == (2, 64)


@pytest.mark.parametrize("name, shape, opts, pattern", [
    ("cnn2d", (5,), {}, "input_shape must be"),
    ("cnn1d", (10, None), {}, "input_shape must be"),
    ("mlp", (None, 3), {}, "fixed input_shape"),
    ("transformer", (None,), {"vocab_size": 10, "dim": 10, "heads": 4}, "divisible"),
    ("gru", (None,), {}, "vocab_size"),
    ("cnn2d", (1, 8, 8), {"channels": [0]}, "channels"),
    ("cnn2d", (1, 8, 8), {"colour": 3}, "colour"),
])
def test_bad_options_raise_config_error(name, shape, opts, pattern):
    with pytest.raises(ConfigError, match=pattern):
        create_encoder(name, input_shape=shape, **opts)


def test_bad_inputs_raise_shape_error():
    enc = create_encoder("cnn2d", input_shape=(1, 8, 8))
    with pytest.raises(ShapeError, match="cnn2d"):
        enc(torch.randn(2, 8, 8))
    tok = create_encoder("transformer", input_shape=(None,), vocab_size=10, dim=8, heads=2)
    with pytest.raises(ShapeError, match="outside the vocabulary"):
        tok(torch.tensor([[1, 12]]))


@pytest.mark.parametrize("name", ["cnn1d", "cnn2d", "cnn3d"])
def test_cnn_encoders_are_staged(name):
    """Intermediate fusion needs stages; the check suite verifies the stages of any StagedEncoder."""
    from mmfuse.encoders import StagedEncoder
    from mmfuse.registry import ENCODERS

    assert isinstance(create_encoder(name, **ENCODERS.info(name)["test_options"]), StagedEncoder)
