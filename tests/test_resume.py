"""Per-epoch checkpoints and resume: a run stopped after epoch k and resumed ends bit-identical to an
uninterrupted run (weights, history, metrics), for automatic (joint) and manual (per_stream) optimisation."""

import json
import os
import signal

import lightning as L
import numpy as np
import pytest
import torch

from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.errors import ConfigError
from mmfuse.training import fit
from mmfuse.training.resume import STATE_JSON, STATE_TENSORS
from mmfuse.training.signals import TrainingInterrupted


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = rng.normal(size=(n, 6, 5)).astype(np.float32) + y[:, None, None] * 0.6
    b = rng.normal(size=(n, 8, 4)).astype(np.float32) + y[:, None, None] * 0.4
    present = {"b": np.arange(n) % 4 != 0}
    return from_arrays({"a": a, "b": b}, y, present=present, seed=seed, class_names=["x", "y", "z"])


JOINT = {"encoders": {"a": {"name": "cnn1d", "options": {"channels": [6], "output_dim": 8}},
                      "b": {"name": "cnn1d", "options": {"channels": [6], "output_dim": 8}}},
         "fusion": {"name": "concat"}, "missing": {"modality_dropout": 0.3}}  # the run draws random numbers
STREAM = {"family": "intermediate",
          "encoders": {"a": {"name": "cnn1d", "options": {"channels": [4, 6]}},
                       "b": {"name": "cnn1d", "options": {"channels": [4, 6]}}},
          "fusion_points": [{"a": 1, "b": 1}]}


def _cfg(model, scheme="joint", **training):
    return parse_config({"model": model, "data": {"batch_size": 16},
                         "training": {"max_epochs": 3, "lr": 0.01, "optimizer": "adam", "progress": False,
                                      "scheme": scheme, **training}})


class KillAt(L.Callback):
    """Sends ``sig`` to this process after batch ``batch`` of epoch ``epoch`` (a scheduler's SIGTERM)."""

    def __init__(self, epoch, batch, sig=signal.SIGTERM):
        self.epoch, self.batch, self.sig = epoch, batch, sig

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.sig)


def _same_run(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k  # bit-identical, not close
    assert a.history == b.history
    assert a.val == b.val and a.test["metrics"] == b.test["metrics"]
    assert a.best_epoch == b.best_epoch


@pytest.mark.parametrize("model,scheme", [(JOINT, "joint"), (STREAM, "per_stream")], ids=["joint", "per_stream"])
def test_killed_and_resumed_run_is_bit_identical(model, scheme, tmp_path):
    data = _data()
    full = fit(_cfg(model, scheme), data, tmp_path / "full")
    # killed during the second epoch (after its 2nd batch): the first epoch's `last` checkpoint survives
    with pytest.raises(TrainingInterrupted) as exc:
        fit(_cfg(model, scheme), data, tmp_path / "cut", callbacks=[KillAt(1, 2)])
    assert exc.value.exit_code == 143 and "epoch 1 is saved" in str(exc.value)
    last = tmp_path / "cut" / "last"
    assert json.loads((last / "config.json").read_text())["epoch"] == 0
    assert not (tmp_path / "cut" / "checkpoint").exists()
    resumed = fit(_cfg(model, scheme, resume=True), data, tmp_path / "cut")
    assert resumed.extras["resumed_from_epoch"] == 1
    _same_run(full, resumed)
    # the state is safetensors + JSON (no pickle); it holds the optimiser's moments for every optimiser
    doc = json.loads((last / STATE_JSON).read_text())
    from safetensors.torch import load_file

    tensors = load_file(str(last / STATE_TENSORS))
    assert len(doc["optimizers"]) == (2 if scheme == "per_stream" else 1)
    assert any(".exp_avg_sq" in k for k in tensors) and "rng.torch" in tensors and "rng.loader0" in tensors
    assert (tmp_path / "full" / "best" / "model.safetensors").is_file()


def test_resume_without_state_restore_would_differ(tmp_path):
    """Oracle check of the test itself: continuing from the epoch-1 weights alone (fresh optimiser, RNG and data
    order) does NOT reproduce the uninterrupted run, so bit-identity above is a real property."""
    from mmfuse.training.checkpoint import read_meta, read_weights

    data = _data()
    full = fit(_cfg(JOINT), data, tmp_path / "full")
    fit(_cfg(JOINT, max_epochs=1), data, tmp_path / "one")
    w = read_weights(read_meta(tmp_path / "one" / "last"))
    cfg = _cfg(JOINT, max_epochs=2)

    class Load(L.Callback):
        def on_train_start(self, trainer, pl_module):
            pl_module.model.load_state_dict(w)

    naive = fit(cfg, data, tmp_path / "naive", callbacks=[Load()])
    sn, sf = naive.model.state_dict(), full.model.state_dict()
    assert any(not torch.equal(sn[k], sf[k]) for k in sf)


def test_resume_stopped_by_max_epochs_then_extended(tmp_path):
    """max_epochs may grow between the runs: 1 epoch, then resume to 3 == 3 epochs at once."""
    data = _data()
    full = fit(_cfg(JOINT), data, tmp_path / "full")
    fit(_cfg(JOINT, max_epochs=1), data, tmp_path / "part")
    _same_run(full, fit(_cfg(JOINT, resume=True), data, tmp_path / "part"))
    # resuming a finished run trains nothing and gives the same result again
    again = fit(_cfg(JOINT, resume=True), data, tmp_path / "part")
    _same_run(full, again)


def test_resume_with_another_config_is_refused(tmp_path):
    data = _data()
    fit(_cfg(JOINT, max_epochs=1), data, tmp_path)
    with pytest.raises(ConfigError, match=r"training.lr: 0.01 then, 0.02 now.*--resume"):
        fit(_cfg(JOINT, resume=True, lr=0.02), data, tmp_path)
