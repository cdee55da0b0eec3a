"""MultimodalModel across strategies: shapes, gradients, masks, state dict, errors."""

import copy

import pytest
import torch

from mmfuse.batch import collate
from mmfuse.errors import ConfigError, MissingModalityError
from mmfuse.models import build_model

SHAPES = {"audio": (12, 5), "image": (1, 12, 12), "tab": (4,)}
ENC = {"image": {"name": "cnn2d", "options": {"channels": [4, 8], "output_dim": 16}},
       "audio": {"name": "cnn1d", "options": {"channels": [4, 8], "output_dim": 16}},
       "tab": {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}}}
CONFIGS = {
    "feature-concat": {"strategy": "feature", "fusion": {"name": "concat"}},
    "feature-tensor": {"strategy": "feature", "fusion": {"name": "tensor"}},
    "feature-gated": {"strategy": "feature", "fusion": {"name": "gated"}},
    "feature-xattn": {"strategy": "feature", "fusion": {"name": "cross_attention", "options": {"dim": 8, "heads": 2}}},
    "late-mean": {"strategy": "late", "late": {"name": "mean_prob"}},
    "late-learned": {"strategy": "late", "late": {"name": "learned_weights"}},
}


def _batch(B=6, seed=0, absent=None):
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(B):
        s = {m: torch.rand(shape, generator=g) + 0.1 for m, shape in SHAPES.items()}
        if absent and i % 2 == 1:
            s[absent] = None
        s["target"] = i % 3
        samples.append(s)
    return collate(samples, shapes=SHAPES)


def _model(name, seed=0):
    torch.manual_seed(seed)
    return build_model({**CONFIGS[name], "encoders": ENC}, SHAPES, 3)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_outputs(name):
    m = _model(name)
    out = m(_batch())
    assert out.logits.shape == (6, 3)
    assert set(out.embeddings) == set(SHAPES)
    if name.startswith("late"):
        assert set(out.unimodal_logits) == set(SHAPES)
    else:
        assert out.fused.shape[0] == 6


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradient_reaches_every_parameter(name):
    m = _model(name)
    b = _batch()
    out = m(b)
    loss = torch.nn.functional.cross_entropy(out.logits, b.target)
    if out.unimodal_logits:
        loss = loss + sum(torch.nn.functional.cross_entropy(v, b.target) for v in out.unimodal_logits.values())
    loss.backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_absent_placeholder_does_not_leak(name):
    m = _model(name).eval()
    b = _batch(absent="audio")
    ref = m(b).logits
    noisy = copy.copy(b)
    noisy.inputs = dict(b.inputs)
    rows = ~b.mask["audio"]
    x = b.inputs["audio"].clone()
    x[rows] = torch.randn_like(x[rows]) * 5
    noisy.inputs["audio"] = x
    torch.testing.assert_close(m(noisy).logits, ref)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_round_trip(name):
    a, b = _model(name, 0).eval(), _model(name, 1).eval()
    b.load_state_dict(a.state_dict())
    batch = _batch()
    torch.testing.assert_close(a(batch).logits, b(batch).logits, rtol=0, atol=0)


def test_unimodal_subset_and_errors():
    m = build_model({"modalities": ["image"], "encoders": {"image": ENC["image"]}}, SHAPES, 3)
    assert list(m.encoders) == ["image"]
    with pytest.raises(ConfigError, match="model.modalities: 'video'"):
        build_model({"modalities": ["video"]}, SHAPES, 3)
    with pytest.raises(ConfigError, match="model.encoders.depth"):
        build_model({"encoders": {"depth": ENC["image"]}}, SHAPES, 3)
    with pytest.raises(ConfigError, match="model.fusion"):
        build_model({"fusion": {"name": "low_rank", "options": {"rank": 0}}}, SHAPES, 3)
    with pytest.raises(MissingModalityError, match="lacks modality 'tab'"):
        full = build_model({"encoders": ENC}, SHAPES, 3)
        b = _batch()
        b.inputs.pop("tab"), b.mask.pop("tab")
        full(b)


def test_early_fusion_joins_aligned_inputs():
    shapes = {"rgb": (3, 8, 8), "depth": (1, 8, 8)}
    m = build_model({"strategy": "early", "early": {"encoder": {"name": "cnn2d", "options": {"channels": [4]}}}}, shapes, 2)
    b = collate([{"rgb": torch.rand(3, 8, 8), "depth": torch.rand(1, 8, 8), "target": 0}] * 2)
    assert m(b).logits.shape == (2, 2)
    assert m.encoders["early"].stages[0][0].in_channels == 4
    with pytest.raises(ConfigError, match="cannot be joined"):
        build_model({"strategy": "early"}, {"rgb": (3, 8, 8), "depth": (1, 4, 4)}, 2)


def test_default_encoders_by_shape():
    m = build_model({}, SHAPES, 3)
    kinds = {k: type(v).__name__ for k, v in m.encoders.items()}
    assert kinds == {"audio": "ConvEncoder", "image": "ConvEncoder", "tab": "MLPEncoder"}
    with pytest.raises(ConfigError, match="no default encoder"):
        build_model({}, {"text": (None,)}, 3)


def test_intermediate_strategy_builds_mmtm_between_stages():
    cfg = {"strategy": "intermediate", "encoders": {"image": ENC["image"], "audio": ENC["audio"]},
           "modalities": ["audio", "image"]}
    m = build_model(cfg, SHAPES, 3)
    assert len(m.fusion_points) == 2  # default: after each of the 2 shared stage depths
    out = m(_batch())
    assert out.logits.shape == (6, 3) and set(out.unimodal_logits) == {"audio", "image"}
    torch.testing.assert_close(out.logits, out.unimodal_logits["audio"] + out.unimodal_logits["image"])
    with pytest.raises(ConfigError, match="fusion_points"):
        build_model({**cfg, "intermediate": {"fusion_points": [{"image": 5, "audio": 0}]}}, SHAPES, 3)


def test_early_negative_axis_and_bad_modalities():
    shapes = {"a": (1, 8, 8), "b": (1, 8, 8)}
    m = build_model({"strategy": "early", "early": {"axis": -1, "encoder": {"name": "cnn2d"}}}, shapes, 3)
    b = collate([{"a": torch.rand(1, 8, 8), "b": torch.rand(1, 8, 8)}] * 2)
    assert m(b).logits.shape == (2, 3)
    with pytest.raises(ConfigError, match="model.early.modalities: 'x'"):
        build_model({"strategy": "early", "early": {"modalities": ["x", "a"]}}, shapes, 3)


@pytest.mark.parametrize("imputer", ["zero", "learned_token", "mean"])
def test_imputers_from_config(imputer):
    m = build_model({"encoders": ENC, "missing": {"imputer": imputer}}, SHAPES, 3)
    out = m(_batch(absent="audio"))
    assert torch.isfinite(out.logits).all()
    with pytest.raises(ConfigError, match="model.missing.imputer"):
        build_model({"strategy": "early", "missing": {"imputer": imputer}}, {"a": (1, 4, 4), "b": (1, 4, 4)}, 3)


def test_bad_numeric_options_are_config_errors():
    with pytest.raises(ConfigError):
        build_model({"encoders": {"tab": {"name": "mlp", "options": {"output_dim": "sixty"}}}}, {"tab": (4,)}, 3)
    with pytest.raises(ConfigError):
        build_model({"head": {"name": "mlp", "options": {"hidden": [-1]}}}, {"tab": (4,)}, 3)


@pytest.mark.parametrize("strategy", ["feature", "intermediate"])
def test_modality_dropout_keeps_one_used_modality_per_sample(strategy):
    # 'tab' is in the batch but not in the model: it must not count towards "at least one present"
    cfg = {"strategy": strategy, "modalities": ["audio", "image"], "encoders": {"image": ENC["image"], "audio": ENC["audio"]},
           "missing": {"modality_dropout": 0.9}}
    torch.manual_seed(0)
    m = build_model(cfg, SHAPES, 3).train()
    out = m(_batch(B=64))
    kept = out.extras["present.audio"] | out.extras["present.image"]
    assert kept.all()
    assert not out.extras["present.audio"].all()  # dropout did act
