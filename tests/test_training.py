"""Lightning training: determinism, checkpoints (safetensors + JSON, atomic, no pickle), errors."""

import json

import numpy as np
import pytest
import torch

from mmfuse.batch import Collator
from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.errors import CheckpointError, DataError
from mmfuse.training import fit, load_checkpoint
from mmfuse.evaluation import collect, make_loader


def _data(n=150, seed=0, absent_every=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = rng.normal(size=(n, 6)).astype(np.float32) + y[:, None] * 0.8
    b = rng.normal(size=(n, 8, 4)).astype(np.float32) + y[:, None, None] * 0.5
    present = None
    if absent_every:
        present = {"b": np.arange(n) % absent_every != 0}
    return from_arrays({"a": a, "b": b}, y, present=present, seed=seed, class_names=["x", "y", "z"])


def _cfg(**over):
    raw = {"model": {"encoders": {"a": {"name": "mlp", "options": {"hidden": [16], "output_dim": 16}},
                                  "b": {"name": "cnn1d", "options": {"channels": [8], "output_dim": 16}}},
                     "fusion": {"name": "concat"}},
           "training": {"max_epochs": 3, "lr": 0.01, "progress": False},
           "data": {"batch_size": 32}}
    for k, v in over.items():
        raw.setdefault(k, {}).update(v)
    return parse_config(raw)


def test_same_seed_same_metrics(tmp_path):
    data = _data(absent_every=3)
    r1 = fit(_cfg(), data, tmp_path / "1")
    r2 = fit(_cfg(), data, tmp_path / "2")
    assert r1.history == r2.history
    assert r1.test["metrics"] == r2.test["metrics"]
    assert r1.test["metrics"]["accuracy"] > 0.5  # learns something real on separable data
    assert set(r1.test["patterns"]) == {"a+b", "a", "b"}


def test_checkpoint_round_trip_and_atomic(tmp_path):
    data = _data()
    res = fit(_cfg(), data, tmp_path)
    ck = res.checkpoint
    assert sorted(p.name for p in ck.iterdir()) == ["config.json", "model.safetensors"]  # no temp leftovers
    model, cfg, meta = load_checkpoint(ck)
    loader = make_loader(data["test"], 64)
    torch.testing.assert_close(torch.as_tensor(collect(model, loader)["scores"]),
                               torch.as_tensor(collect(res.model, loader)["scores"]), rtol=0, atol=0)
    assert meta["class_names"] == ["x", "y", "z"] and meta["task"] == "multiclass"
    assert cfg.model.fusion.name == "concat"
    assert meta["metrics"]["test"]["metrics"] == res.test["metrics"]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not an mmfuse checkpoint"):
        load_checkpoint(tmp_path)
    res = fit(_cfg(), _data(), tmp_path / "run")
    meta = res.checkpoint / "config.json"
    meta.write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(res.checkpoint)
    meta.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_checkpoint(res.checkpoint)


def test_late_fusion_and_unimodal_loss_train(tmp_path):
    res = fit(_cfg(model={"strategy": "late"}), _data(), tmp_path, save=False)
    assert res.test["metrics"]["accuracy"] > 0.5
    res = fit(_cfg(training={"unimodal_loss_weight": 0.5}, model={"strategy": "late"}), _data(), tmp_path, save=False)
    assert np.isfinite(res.history[-1]["train_loss"])


class _BadLabel(torch.utils.data.Dataset):
    """A dataset whose sample 37 carries a label outside the classes (found mid-epoch)."""

    modalities, shapes, num_classes, task, class_names = ["a"], {"a": (3,)}, 2, "multiclass", None

    def __init__(self, n=64):
        self.n = n
        self.collate_fn = Collator(self.modalities, self.shapes)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"a": np.ones(3, np.float32) * i / self.n, "target": 7 if i == 37 else i % 2}


def test_bad_label_mid_epoch_names_the_sample(tmp_path):
    data = {"train": _BadLabel(), "val": _BadLabel(8)}
    with pytest.raises(DataError, match="sample 37: label 7 is outside the classes 0..1"):
        fit(parse_config({"training": {"max_epochs": 1, "progress": False}}), data, tmp_path, save=False)


@pytest.mark.parametrize("scheme", ["joint", "per_stream"])
def test_intermediate_mmtm_trains_with_both_schemes(tmp_path, scheme):
    rng = np.random.default_rng(0)
    n = 96
    y = rng.integers(0, 2, n)
    data = from_arrays({"img": rng.normal(size=(n, 1, 8, 8)).astype(np.float32) + y[:, None, None, None],
                        "seq": rng.normal(size=(n, 10, 3)).astype(np.float32) + y[:, None, None]}, y, seed=0)
    cfg = parse_config({"model": {"strategy": "intermediate",
                                  "encoders": {"img": {"name": "cnn2d", "options": {"channels": [4, 8]}},
                                               "seq": {"name": "cnn1d", "options": {"channels": [4, 8]}}}},
                        "training": {"max_epochs": 3, "lr": 0.01, "scheme": scheme, "progress": False}})
    res = fit(cfg, data, tmp_path, save=False)
    assert res.test["metrics"]["accuracy"] > 0.7
    assert len(res.history) == 3 and np.isfinite(res.history[-1]["train_loss"])


def test_best_weights_follow_the_monitored_epoch(tmp_path):
    res = fit(_cfg(training={"monitor": "val_accuracy", "max_epochs": 4}), _data(n=90, absent_every=3), tmp_path, save=False)
    accs = [h["val_accuracy"] for h in res.history]
    assert res.best_epoch == int(np.argmax(accs))
    assert res.val["metrics"]["accuracy"] == pytest.approx(max(accs))


def test_monitor_is_validated(tmp_path):
    from mmfuse.errors import ConfigError

    with pytest.raises(ConfigError, match="training.monitor: 'val_acc'.*val_accuracy"):
        fit(_cfg(training={"monitor": "val_acc", "patience": 2}), _data(), tmp_path, save=False)


def test_modality_dropout_presence_reaches_unimodal_losses():
    from mmfuse.models import build_model
    from mmfuse.training.system import unimodal_losses

    data = _data(n=64)
    cfg = _cfg(model={"strategy": "late", "missing": {"modality_dropout": 0.5}}).model
    torch.manual_seed(0)
    m = build_model(cfg, data["train"].shapes, 3).train()
    batch = data["train"].batch(np.arange(40))
    out = m(batch)
    kept = out.extras["present.a"]
    assert 0 < int(kept.sum()) < 40  # some rows dropped in training
    ref = torch.nn.functional.cross_entropy(out.unimodal_logits["a"][kept], batch.target[kept])
    torch.testing.assert_close(unimodal_losses("multiclass", out, batch)["a"], ref)
