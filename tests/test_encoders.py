"""Common checks parametrised over every registered encoder (except the pretrained wrappers, tested in test_hf.py)."""

import copy

import pytest
import torch

from mmfuse.encoders import StagedEncoder, create_encoder, list_encoders
from mmfuse.errors import ConfigError, ShapeError

CASES = {
    "mlp": ((6,), lambda B: torch.randn(B, 6), {}),
    "identity": ((2, 3), lambda B: torch.randn(B, 2, 3), {}),
    "cnn1d": ((20, 5), lambda B: torch.randn(B, 20, 5), {"channels": [4, 8]}),
    "cnn2d": ((1, 16, 16), lambda B: torch.randn(B, 1, 16, 16), {"channels": [4, 8]}),
    "cnn3d": ((1, 4, 8, 8), lambda B: torch.randn(B, 1, 4, 8, 8), {"channels": [4, 8]}),
    "gru": ((None, 5), lambda B: torch.randn(B, 7, 5), {"hidden": 8}),
    "lstm": ((None,), lambda B: torch.randint(1, 30, (B, 7)), {"vocab_size": 30, "hidden": 8, "bidirectional": True}),
    "transformer": ((None,), lambda B: torch.randint(1, 30, (B, 7)), {"vocab_size": 30, "dim": 16, "heads": 2, "dropout": 0.0}),
}
PRETRAINED = {"hf_auto", "sentence_transformer"}


def test_every_registered_encoder_has_a_case():
    assert set(list_encoders()) - PRETRAINED == set(CASES)


def _make(name, seed=0):
    torch.manual_seed(seed)
    shape, data, opts = CASES[name]
    return create_encoder(name, input_shape=shape, **opts), data


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_shape_and_contract(name):
    enc, data = _make(name)
    y = enc(data(3))
    assert enc.output_kind in ("vector", "sequence", "feature_map")
    assert y.shape == (3, enc.output_dim)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_reaches_every_parameter(name):
    enc, data = _make(name)
    if not list(enc.parameters()):
        pytest.skip(f"{name} has no parameters")
    x = data(4)
    if x.is_floating_point():
        x = x.abs() + 0.1  # keep ReLUs alive
    (enc(x) ** 2).sum().backward()
    dead = [n for n, p in enc.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # the padding row of an embedding never gets gradient by design
    assert [n for n in dead if "embed" not in n] == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip_and_batch_independence(name):
    enc, data = _make(name, seed=0)
    other, _ = _make(name, seed=1)
    other.load_state_dict(copy.deepcopy(enc.state_dict()))
    enc.eval(), other.eval()
    x = data(5)
    torch.testing.assert_close(enc(x), other(x), rtol=0, atol=0)
    y = enc(x)
    x2 = x.clone()
    x2[1:] = data(4)
    torch.testing.assert_close(enc(x2)[0], y[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gru", "lstm", "transformer"])
def test_padding_does_not_leak(name):
    enc, data = _make(name)
    enc.eval()
    x = data(2)
    lengths = torch.tensor([4, 7])
    y = enc(x, lengths)
    x2 = x.clone()
    x2[0, 4:] = data(1)[0, 4:]  # change only padding positions of sample 0
    torch.testing.assert_close(enc(x2, lengths), y)


@pytest.mark.parametrize("name", ["cnn1d", "cnn2d", "cnn3d"])
def test_staged_encoders_expose_stages(name):
    enc, data = _make(name)
    assert isinstance(enc, StagedEncoder)
    x = data(2)
    h = x
    for stage, c in zip(enc.stages, enc.stage_channels):
        h = stage(h)
        assert h.shape[1] == c
    torch.testing.assert_close(enc.finish(h), enc(x))


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
