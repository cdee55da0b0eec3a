"""IntermediateFusionModel with the built-in staged encoders, build_model and the training system."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfuse.batch import collate
from mmfuse.errors import ConfigError
from mmfuse.interaction import MMTM
from mmfuse.models.intermediate import IntermediateFusionModel
from mmfuse.registry import ENCODERS

SHAPES = {"audio": (12, 5), "image": (1, 12, 12), "video": (1, 4, 8, 8)}


def samples(n=6, seed=0, absent=()):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = {m: rng.standard_normal(shape).astype(np.float32) for m, shape in SHAPES.items()}
        for m in absent:
            if i % 2 == 0:
                s[m] = None
        s["target"] = int(rng.integers(0, 3))
        out.append(s)
    return out


def builtin_encoders():
    import mmfuse.encoders  # noqa: F401

    torch.manual_seed(0)
    return {
        "audio": ENCODERS.create("cnn1d", input_shape=SHAPES["audio"], channels=(4, 6), output_dim=8),
        "image": ENCODERS.create("cnn2d", input_shape=SHAPES["image"], channels=(4, 6), output_dim=8),
        "video": ENCODERS.create("cnn3d", input_shape=SHAPES["video"], channels=(3, 5), output_dim=8),
    }


def test_builtin_cnn_encoders_1d_2d_3d_meet_in_mmtm():
    model = IntermediateFusionModel(
        builtin_encoders(), [{"audio": 0, "image": 0, "video": 0}, {"image": 1, "video": 1}], num_outputs=3
    )
    assert isinstance(model.blocks[0], MMTM) and model.blocks[0].channels == {"audio": 4, "image": 4, "video": 3}
    batch = collate(samples(), shapes=SHAPES)
    out = model(batch)
    assert out.logits.shape == (6, 3) and out.fused.shape == (6, 24)
    out.logits.sum().backward()
    for m in SHAPES:
        first = next(model.encoders[m].stages[0].parameters())
        assert first.grad is not None and first.grad.abs().sum() > 0, m


def test_builtin_with_absent_modality_batch():
    model = IntermediateFusionModel(builtin_encoders(), [{"audio": 1, "video": 1}], num_outputs=3).eval()
    batch = collate(samples(absent=("video",)), shapes=SHAPES)
    out = model(batch)
    present = batch.mask["video"]
    assert not present.all() and present.any()
    expect = out.unimodal_logits["audio"] + out.unimodal_logits["image"] + out.unimodal_logits["video"] * present[:, None]
    assert torch.allclose(out.logits, expect, atol=1e-6)


def test_build_model_intermediate_from_config():
    from mmfuse.models import build_model

    cfg = {
        "strategy": "intermediate",
        "encoders": {"audio": {"name": "cnn1d", "options": {"channels": [4, 6]}},
                     "image": {"name": "cnn2d", "options": {"channels": [4, 6]}}},
        "intermediate": {"fusion_points": [{"image": 0, "audio": 1}], "block_options": {"preset": "code"}},
        "modalities": ["audio", "image"],
    }
    model = build_model(cfg, SHAPES, num_outputs=3)
    assert isinstance(model, IntermediateFusionModel)
    assert model.blocks[0].channels == {"audio": 6, "image": 4} and model.blocks[0].gate_scale == 1.0
    batch = collate([{k: v for k, v in s.items() if k != "video"} for s in samples()], shapes=SHAPES)
    assert model(batch).logits.shape == (6, 3)
    bad = dict(cfg, intermediate={"fusion_points": [{"image": 5, "audio": 1}]})
    with pytest.raises(ConfigError, match=r"fusion_points\[0\]\['image'\] = 5"):
        build_model(bad, SHAPES, num_outputs=3)

