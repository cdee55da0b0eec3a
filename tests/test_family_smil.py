"""The ``smil`` model family: builder (roles, encoders, presets, priors buffer), config errors, the
scheme's options, and a checkpoint that evaluate / explain-style masking can use."""

from __future__ import annotations

import pytest
import torch

from mmfuse.batch import MultimodalBatch
from mmfuse.config import parse_config
from mmfuse.errors import ConfigError
from mmfuse.missing.smil import LeNetEncoder, SMILModel, SNetEncoder
from mmfuse.models import build_model
from mmfuse.registry import MODELS

SHAPES = {"image": (1, 16, 16), "audio": (8, 6)}


def _build(shapes=SHAPES, task="multiclass", **model):
    return build_model({"family": "smil", **model}, shapes, 3, task)


def test_defaults_roles_encoders_and_zero_prior_buffer():
    m = _build(k=4)
    assert isinstance(m, SMILModel)
    assert (m.full, m.missing) == ("audio", "image")  # the first modality in sorted order is the full one
    m = _build(full="image", k=4)
    assert (m.full, m.missing) == ("image", "audio")
    assert isinstance(m.full_encoder, LeNetEncoder) and isinstance(m.missing_encoder, SNetEncoder)
    state = m.state_dict()
    assert torch.equal(state["reconstruction.priors"], torch.zeros(4, m.missing_encoder.output_dim))
    # a shape SMIL's encoders do not fit: the library default for it (mlp for vectors)
    v = _build({"image": (1, 16, 16), "audio": (5,)}, full="image")
    assert type(v.missing_encoder).__name__ != "SNetEncoder" and v.missing_dim == v.missing_encoder.output_dim
    # a named encoder wins over SMIL's default
    c = _build(full="image", encoders={"image": {"name": "cnn2d", "options": {"channels": [2, 4]}}})
    assert not isinstance(c.full_encoder, LeNetEncoder)


def test_presets_fill_only_unset_fields():
    code = _build(full="image")
    assert (code.reconstruction.mode, code.regularizers["fc1"].op, code.regularizers["fc1"].learn_sigma) == ("code", "add", False)
    paper = _build(full="image", preset="paper")
    assert (paper.reconstruction.mode, paper.regularizers["fc1"].op, paper.regularizers["fc1"].learn_sigma) == ("paper", "mul", True)
    mixed = _build(full="image", preset="paper", reg_op="add", regularize=["fc2"])
    assert mixed.regularizers["fc2"].op == "add" and "fc1" not in mixed.regularizers


@pytest.mark.parametrize("model, shapes, match", [
    ({"full": "video"}, SHAPES, "model.full"),
    ({"full": "image", "reconstructed": "image"}, SHAPES, "model.reconstructed"),
    ({}, {**SHAPES, "text": (4,)}, "model.full and model.reconstructed"),
    ({"full": "image", "missing": {"imputer": "zero"}}, SHAPES, "model.missing.imputer"),
    ({"full": "image", "encoders": {"audio": {"name": "gru", "options": {"return_sequence": True}}}},
     {"image": (1, 16, 16), "audio": (None, 6)}, "model.encoders.audio"),
])
def test_config_errors_name_the_key(model, shapes, match):
    with pytest.raises(ConfigError, match=match):
        _build(shapes, **model)


def test_registration_tasks_and_scheme_options():
    info = MODELS.info("smil")
    assert info["default_scheme"] == "smil_meta" and set(info["schemes"]) == {"smil_meta", "joint"}
    assert set(info["tasks"]) == {"multiclass", "multilabel", "regression"}
    for task, k in (("multilabel", 3), ("regression", 1)):  # the head has one raw score per output
        assert build_model({"family": "smil", "full": "image"}, SHAPES, k, task).head.fc2.out_features == k
    base = {"model": {"family": "smil"}}
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "training": {"scheme_options": {"inner_lrr": 0.1, "warmup_epochs": -1}}})
    assert "training.scheme_options.inner_lrr" in str(err.value) and "warmup_epochs" in str(err.value)
    with pytest.raises(ConfigError, match="per_stream"):
        parse_config({**base, "training": {"scheme": "per_stream"}})
    # the test options build a small model
    m = build_model({"family": "smil", **info["test_options"]}, info["test_shapes"], 3)
    assert m.reconstruction.priors.shape[0] == info["test_options"]["k"]


def _data(n, seed, eta):
    import numpy as np

    from mmfuse.datasets.base import ArrayDataset

    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    img = (r.normal(size=(n, 1, 16, 16)) + y[:, None, None, None]).astype("float32")
    aud = (r.normal(size=(n, 8, 6)) - y[:, None, None]).astype("float32")
    present = r.random(n) < eta
    present[:3] = True
    return ArrayDataset({"image": img, "audio": aud}, y, {"audio": present}, num_classes=3)


def _cfg(**training):
    info = MODELS.info("smil")
    return parse_config({"seed": 0, "data": {"batch_size": 16},
                         "model": {"family": "smil", "full": "image", **info["test_options"]},
                         "training": {"max_epochs": 2, "progress": False, "limit_train_batches": 2, **training}})


def test_fit_evaluates_every_pattern_and_masked_rows_do_not_raise():
    from mmfuse.training.fit import fit

    splits = {"train": _data(30, 0, 0.3), "val": _data(8, 1, 1.0), "test": _data(8, 2, 1.0)}
    run = fit(_cfg(scheme_options={"warmup_epochs": 1}), splits, save=False)
    pats = run.test["patterns"]
    assert set(pats) == {"audio+image", "audio", "image"}  # the image-absent pattern runs (encoder of zeros)
    assert run.model.reconstruction.priors.abs().sum() > 0
    # each pattern's metrics are those of the model's own paths on the test rows (every row has both):
    # image absent = the full encoder of zero inputs with the real audio; audio absent = its reconstruction
    # in every row; both present = the real audio feature
    from mmfuse.evaluation.metrics import compute_metrics

    b = splits["test"].batch(list(range(8)))
    model = run.model.eval()
    zero_image = MultimodalBatch({"image": torch.zeros_like(b.inputs["image"]), "audio": b.inputs["audio"]},
                                 dict(b.mask), b.target)
    with torch.no_grad():
        paths = {"audio": model(zero_image).logits, "image": model(b, reconstruct="always").logits,
                 "audio+image": model(b, reconstruct="never").logits}
    assert not torch.allclose(paths["audio"], paths["audio+image"]) and not torch.allclose(paths["image"], paths["audio+image"])
    for name, logits in paths.items():
        assert pats[name] == compute_metrics("multiclass", logits.numpy(), b.target.numpy()), name
    # a Shapley coalition without either modality: finite logits, same as the zero inputs
    none = b.with_mask({"image": torch.zeros(8, dtype=torch.bool), "audio": torch.zeros(8, dtype=torch.bool)})
    out = run.model.eval()(none).logits
    assert torch.isfinite(out).all() and torch.allclose(out, out[:1].expand_as(out))
    # warm-up longer than the run: a clear error
    with pytest.raises(ConfigError, match="warmup_epochs"):
        fit(_cfg(max_epochs=1, scheme_options={"warmup_epochs": 2}), splits, save=False)


def test_joint_scheme_trains_the_family():
    from mmfuse.training.fit import fit

    splits = {"train": _data(20, 3, 0.5), "val": _data(6, 4, 1.0), "test": _data(6, 5, 1.0)}
    import lightning as L

    cfg = _cfg(max_epochs=1, scheme="joint")
    L.seed_everything(0, verbose=False)  # the initial weights fit builds
    start = build_model(cfg.model, splits["train"].shapes, 3)
    run = fit(cfg, splits, save=False)
    moved = [n for n, p in run.model.named_parameters() if not torch.allclose(p, dict(start.named_parameters())[n])]
    assert any(n.startswith("head.") for n in moved)
    assert torch.equal(run.model.reconstruction.priors, torch.zeros_like(run.model.reconstruction.priors))


def test_training_rows_lacking_the_full_modality_are_an_error_not_dropped():
    """With model.full naming the modality that is sometimes absent, those rows cannot be trained by SMIL:
    a DataError naming model.full and the count, instead of silently leaving them out."""
    from mmfuse.errors import DataError
    from mmfuse.training.fit import fit

    splits = {"train": _data(30, 0, 0.3), "val": _data(8, 1, 1.0), "test": _data(8, 2, 1.0)}
    lacking = int((~splits["train"].batch(list(range(30))).mask["audio"]).sum())
    cfg = parse_config({**_cfg().model_dump(), "model": {**_cfg().model.model_dump(), "full": "audio", "reconstructed": "image"}})
    with pytest.raises(DataError, match=rf"model.full: {lacking} training sample\(s\) lack the full modality 'audio'"):
        fit(cfg, splits, save=False)
