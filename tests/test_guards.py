"""Guards before compute (issue 11, item 5): memory estimate, non-finite loss / weights, output paths."""

import json
import math
import os
import resource

import numpy as np
import pytest
import torch

from mmfuse import guards
from mmfuse.cli import main
from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.errors import ConfigError, DataError
from mmfuse.guards import MemoryBudgetError, check_output_path, estimate_memory
from mmfuse.training import fit

MODS = ["m0", "m1", "m2", "m3"]


def _data4(n=48, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    arrays = {m: (rng.normal(size=(n, d)) + y[:, None] * 0.5).astype(np.float32) for m in MODS}
    return from_arrays(arrays, y, seed=seed)


def _tfn_cfg(width=32, fusion="tensor", batch=64, limit=None, **training):
    raw = {"model": {"encoders": {m: {"name": "mlp", "options": {"hidden": [16], "output_dim": width}} for m in MODS},
                     "fusion": {"name": fusion, "options": {}}, "head": {"name": "mlp", "options": {"hidden": [64]}}},
           "training": {"max_epochs": 1, "progress": False, "memory_limit_gb": limit, **training},
           "data": {"batch_size": batch, "eval_batch_size": 256}}
    return parse_config(raw)


def test_tfn_estimate_matches_the_analytic_count():
    """Fused width Π(d_m + 1) = 33^4; head = Linear(33^4 -> 64) + Linear(64 -> 3); encoders Linear(6->16->32)."""
    cfg = _tfn_cfg()
    est = estimate_memory(cfg, {m: (6,) for m in MODS}, 3, "multiclass")
    fused = 33 ** 4
    assert est.fused_width == fused == 1_185_921
    enc = (6 * 16 + 16) + (16 * 32 + 32)
    head = fused * 64 + 64 + 64 * 3 + 3
    assert est.params == 4 * enc + head  # exact, counted on the meta device
    assert est.weight_bytes == est.params * 4 * 4  # fp32: weights + grads + AdamW's two moments
    assert est.measured
    # the fused activations alone at batch 64 (fp32, kept for backward + gradient) are in the training estimate
    assert est.train_bytes >= 2 * 64 * fused * 4
    assert est.eval_bytes >= 2 * 256 * fused * 4
    assert est.total_bytes > 1.5 * guards.GB


def test_tfn_width_32_refused_before_allocating(monkeypatch):
    """A 4-modality TFN of width 32 under a 1 GB budget: a MemoryBudgetError naming the operator and low_rank,
    raised before any real tensor of the model exists (every Linear is created on the meta device)."""
    real_devices = []
    orig = torch.nn.Linear.__init__

    def spy(self, *a, **k):
        orig(self, *a, **k)
        real_devices.append((self.weight.device.type, self.weight.numel()))

    monkeypatch.setattr(torch.nn.Linear, "__init__", spy)
    data = _data4()
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(MemoryBudgetError) as e:
        fit(_tfn_cfg(limit=1.0), data, save=False)
    msg = str(e.value)
    assert "model.fusion 'tensor'" in msg and "low_rank" in msg and "memory_limit_gb=1" in msg
    assert "1,185,921" in msg  # the fused width
    big = [(dev, n) for dev, n in real_devices if n >= 1_000_000]
    assert big and all(dev == "meta" for dev, _ in big)  # the 76 M-weight head only ever existed on meta
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak0) / 1024
    assert grown_mb < 200  # the head alone would be 303 MB in fp32


def test_available_memory_is_a_budget_without_a_limit(monkeypatch):
    monkeypatch.setattr(guards, "available_memory_bytes", lambda: 2 * guards.GB)
    err = guards.memory_problem(_tfn_cfg(), {m: (6,) for m in MODS}, 3, "multiclass")
    assert isinstance(err, MemoryBudgetError) and "available on this machine" in str(err)
    # low_rank over the same widths fits easily; two worker processes halve the share
    assert guards.memory_problem(_tfn_cfg(fusion="low_rank"), {m: (6,) for m in MODS}, 3, "multiclass") is None
    small = _tfn_cfg(width=4)
    est = estimate_memory(small, {m: (6,) for m in MODS}, 3, "multiclass")
    monkeypatch.setattr(guards, "available_memory_bytes", lambda: int(est.total_bytes / guards.AVAILABLE_SHARE * 1.5))
    assert guards.memory_problem(small, {m: (6,) for m in MODS}, 3, "multiclass", processes=1) is None
    assert guards.memory_problem(small, {m: (6,) for m in MODS}, 3, "multiclass", processes=2) is not None


def test_compare_skips_a_method_that_would_not_fit(tmp_path):
    from mmfuse.compare import run_compare

    raw = _tfn_cfg(width=32, limit=0.5).model_dump()
    raw["compare"] = {"methods": ["fusion:tensor", "fusion:concat"], "seeds": [0], "workers": 1, "tsne": False,
                      "missing_patterns": False}
    raw["training"]["limit_train_batches"] = 1
    cfg = parse_config(raw)
    with pytest.warns(UserWarning, match="skipped fusion:tensor"):
        board = run_compare(cfg, tmp_path, progress=False, datasets=_data4())
    assert list(board["method"]) == ["fusion:concat"]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "Skipped (would not fit in memory" in md and "`fusion:tensor`" in md and "low_rank" in md
    assert "fusion:tensor" in json.loads((tmp_path / "summary.json").read_text())["skipped"]


def test_nan_loss_stops_training_and_saves_nothing(tmp_path):
    cfg = _tfn_cfg(width=4, fusion="concat", batch=16, lr=1e12, optimizer="sgd", max_epochs=3)
    with pytest.raises(DataError, match=r"the loss is (nan|inf|-inf) at epoch \d+, step \d+") as e:
        fit(cfg, _data4(), out_dir=tmp_path)
    assert "training.lr" in str(e.value)
    assert not (tmp_path / "checkpoint").exists()


def test_finite_loss_guard_and_weight_guard_oracles():
    guards.check_finite_loss(torch.tensor(1.5), 0, 0)
    with pytest.raises(DataError, match="epoch 2, step 7 \\(batch 3"):
        guards.check_finite_loss(torch.tensor(float("inf")), 2, 7, 3)
    with pytest.raises(DataError, match="nan at epoch 0"):
        guards.check_finite_loss(math.nan, 0, 0)
    lin = torch.nn.Linear(2, 2)
    guards.check_finite_weights(lin)
    with torch.no_grad():
        lin.bias[1] = float("nan")
    with pytest.raises(DataError, match="bias"):
        guards.check_finite_weights(lin)


def test_output_paths_checked(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ConfigError, match="existing file, but an output folder"):
        check_output_path(f, "dir")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_path(f / "sub" / "deeper", "dir")
    assert check_output_path(tmp_path / "new" / "deeper", "dir") == tmp_path / "new" / "deeper"  # created later
    with pytest.raises(ConfigError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "p.csv", "file")
    with pytest.raises(ConfigError, match="is a folder, but an output file"):
        check_output_path(tmp_path, "file")
    assert check_output_path(tmp_path / "p.csv", "file") == tmp_path / "p.csv"
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ConfigError, match="permission denied"):
                check_output_path(ro / "out", "dir")
        finally:
            ro.chmod(0o700)


def test_cli_out_checked_before_any_compute(tmp_path, capsys, monkeypatch):
    import mmfuse.training as training

    def boom(*a, **k):  # never reached: the path check comes first
        raise AssertionError("compute started")

    monkeypatch.setattr(training, "fit", boom)
    monkeypatch.setattr(training, "load_checkpoint", boom)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: avmnist}\ntraining: {max_epochs: 1}\n")
    f = tmp_path / "taken"
    f.write_text("")
    assert main(["train", str(cfg), "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "existing file" in err and len(err.strip().splitlines()) == 1
    for cmd in (["predict", "ckpt", "--out", str(tmp_path / "nope" / "p.csv")],
                ["evaluate", "ckpt", "--out", str(tmp_path / "nope" / "r.json")],
                ["explain", "ckpt", "--out", str(f)]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert "--out" in err and len(err.strip().splitlines()) == 1


def test_tfn_width_32_refused_by_default_without_a_memory_limit(monkeypatch):
    """Whatever memory the machine has, a fused vector of 33^4 = 1,185,921 features (a 76 M-parameter head) is
    refused by training.max_fused_width (default 1,000,000) before anything is allocated; low_rank is suggested."""
    monkeypatch.setattr(guards, "available_memory_bytes", lambda: 1000 * guards.GB)
    err = guards.memory_problem(_tfn_cfg(), {m: (6,) for m in MODS}, 3, "multiclass")
    assert isinstance(err, MemoryBudgetError)
    msg = str(err)
    assert "1,185,921 features" in msg and "max_fused_width=1,000,000" in msg and "low_rank" in msg
    assert guards.memory_problem(_tfn_cfg(max_fused_width=None), {m: (6,) for m in MODS}, 3, "multiclass") is None
    assert guards.memory_problem(_tfn_cfg(width=16), {m: (6,) for m in MODS}, 3, "multiclass") is None  # 17^4 = 83,521
