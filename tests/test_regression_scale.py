"""Regression targets standardised with the training rows' mean / std (data.standardize_target); everything the
user sees (predictions, metrics, MOSI's Acc-2 / Acc-7, explanation scores, predictions after a reload) on the
original scale."""

import json

import numpy as np
import pytest
import torch

from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.datasets.target_scale import TargetScale, fit_target_scale
from mmfuse.errors import ConfigError
from mmfuse.evaluation import collect, evaluate, make_loader
from mmfuse.evaluation.metrics import mosi_metrics
from mmfuse.training import fit, load_checkpoint
from mmfuse.training.losses import task_loss


def _linear(n=240, seed=0, outputs=1):
    """y = 100 + 50 x (and a second output 5 - 2 x when ``outputs`` is 2), x ~ N(0, 1); a second, useless modality."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = 100 + 50 * x[:, 0]
    if outputs == 2:
        y = np.stack([y, 5 - 2 * x[:, 0]], 1)
    return from_arrays({"x": x[:, :1], "w": x[:, 1:]}, y, task="regression", seed=seed)


def _cfg(epochs=4, lr=0.02, **data):
    return parse_config({
        "model": {"encoders": {"x": {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}},
                               "w": {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}}},
                  "fusion": {"name": "concat"}},
        "training": {"max_epochs": epochs, "lr": lr, "progress": False, "evaluate_patterns": False, "plots": False},
        "data": {"batch_size": 16, **data}})


def test_standardised_fit_learns_a_large_scale_target_where_raw_does_not():
    data = _linear()
    std = fit(_cfg(), data, save=False)
    raw = fit(_cfg(standardize_target=False), data, save=False)
    assert raw.model.target_scale is None
    assert std.test["metrics"]["r2"] > 0.95 > 0.9 > raw.test["metrics"]["r2"]
    # the metrics are on the original scale: the errors are in the target's units (std of y is ~50)
    y = data["test"].targets[:, 0]
    pred = collect(std.model, make_loader(data["test"]))["scores"][:, 0]
    assert abs(pred.mean() - y.mean()) < 10 and std.test["metrics"]["mae"] == pytest.approx(np.abs(pred - y).mean())


def test_loss_is_computed_on_z_scores_and_stats_come_from_the_train_rows_only():
    data = _linear(outputs=2)
    train = data["train"]
    scale = fit_target_scale(True, train, "regression")
    y = train.targets.astype(np.float64)
    np.testing.assert_allclose(scale.mean, y.mean(0), rtol=1e-12)
    np.testing.assert_allclose(scale.std, y.std(0), rtol=1e-12)  # per output column, ddof 0
    every = np.concatenate([data[s].targets for s in ("train", "val", "test")]).astype(np.float64)
    assert not np.allclose(scale.mean, every.mean(0))  # not the statistics of every row
    # predicting the train mean (z = 0) costs exactly 1 = var(z) on the train split, per column and overall
    t = torch.from_numpy(train.targets)
    assert float(task_loss("regression", torch.zeros_like(t), t, scale=scale)) == pytest.approx(1.0, abs=1e-6)
    assert float(task_loss("regression", torch.zeros_like(t), t)) > 100  # raw scale: the squared mean
    # the fit uses exactly these statistics
    res = fit(_cfg(epochs=1, standardize_target=True), data, save=False)
    assert res.model.target_scale == scale
    assert fit_target_scale(False, train, "regression") is None and fit_target_scale(True, train, "multiclass") is None


def test_checkpoint_round_trip_and_metrics_equal_sklearn(tmp_path):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    data = _linear()
    res = fit(_cfg(epochs=2), data, tmp_path)
    meta = json.loads((res.checkpoint / "config.json").read_text())
    assert meta["target_scale"]["mean"] == pytest.approx(data["train"].targets.mean(0).tolist())
    model, _, _ = load_checkpoint(res.checkpoint)
    loader = make_loader(data["test"], 64)
    here, there = collect(res.model, loader)["scores"], collect(model, loader)["scores"]
    np.testing.assert_array_equal(here, there)
    # the inverse by hand: the model's standardised output * std + mean
    with torch.no_grad():
        model.eval()
        z = model(data["test"].batch()).logits.double().numpy()
    s = res.model.target_scale
    np.testing.assert_allclose(there, z * s.std + s.mean, rtol=1e-6)
    y = data["test"].targets[:, 0].astype(np.float64)
    p = there[:, 0].astype(np.float64)
    m = evaluate(model, data["test"], "regression", per_pattern=False)["metrics"]
    assert m["r2"] == pytest.approx(r2_score(y, p), rel=1e-9)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-9)
    assert m["mse"] == pytest.approx(mean_squared_error(y, p), rel=1e-9)
    assert m["pearson_r"] == pytest.approx(np.corrcoef(p, y)[0, 1], rel=1e-9)
    assert m == res.test["metrics"]
    # the validation metrics logged during training (the monitor, the history) are on the original scale too
    logged = next(h for h in res.history if h["epoch"] == res.best_epoch)
    assert logged["val_mae"] == pytest.approx(res.val["metrics"]["mae"], rel=1e-5)
    # val_loss is the MSE on z-scores: times std² it is the original-scale MSE
    np.testing.assert_allclose(logged["val_loss"] * float(s.std[0]) ** 2, res.val["metrics"]["mse"], rtol=1e-4)


def test_mosi_metrics_threshold_on_the_original_scale():
    """Sentiment in [-3, 3] with a positive mean: Acc-2 thresholds at 0 of the original scale, not at the mean."""
    rng = np.random.default_rng(1)
    n = 200
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = np.clip(1.0 + 1.2 * x[:, 0], -3, 3)
    data = from_arrays({"x": x[:, :1], "w": x[:, 1:]}, y, task="regression", seed=0)
    for ds in data.values():
        ds.metric_set = "mosi"
    res = fit(_cfg(epochs=2), data, save=False)
    rep = evaluate(res.model, data["test"], "regression", per_pattern=False)["metrics"]
    with torch.no_grad():
        res.model.eval()
        z = res.model(data["test"].batch()).logits.double().numpy()[:, 0]
    s = res.model.target_scale
    t = data["test"].targets[:, 0]
    want = mosi_metrics(z * s.std[0] + s.mean[0], t)
    for k in ("acc2_has0", "acc2_non0", "acc7", "acc5", "f1_has0"):
        assert rep[k] == pytest.approx(want[k])
    # on the standardised scale the thresholds would be elsewhere: the test discriminates
    zt = mosi_metrics(z, t)
    assert (zt["acc2_has0"], zt["acc7"]) != (want["acc2_has0"], want["acc7"])


def test_constant_target_warns_and_keeps_std_one():
    data = _linear(n=60)
    for ds in data.values():
        ds.targets[:] = 7.0
    with pytest.warns(UserWarning, match="constant"):
        scale = fit_target_scale(True, data["train"], "regression")
    assert scale.std.tolist() == [1.0] and scale.mean.tolist() == [7.0] and scale.constant == [0]
    assert TargetScale.from_state(json.loads(json.dumps(scale.state_dict()))) == scale


def test_explanation_scores_are_in_target_units():
    from mmfuse.explain.scoring import make_score_fn

    data = _linear(n=80)
    res = fit(_cfg(epochs=1), data, save=False)
    b = data["test"].batch()
    fn = make_score_fn(res.model, task="regression")
    want = collect(res.model, make_loader(data["test"]))["scores"][:, 0]
    np.testing.assert_allclose(fn(b).numpy(), want, rtol=1e-5)
    from mmfuse.explain.rows import split_coalitions

    assert fn.split_model() is not None  # feature fusion offers the explanation split: the same inverse there
    rows = split_coalitions(b, sorted(b.inputs), torch.ones(1, len(b.inputs), dtype=torch.bool))
    np.testing.assert_allclose(fn.split_score(rows).numpy(), want, rtol=1e-5)


def test_table_pipeline_saves_train_row_statistics(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    lines = ["a1,a2,y1,y2,split"]
    for i in range(n):
        a = rng.normal(size=2)
        split = "train" if i < 28 else ("val" if i < 34 else "test")
        lines.append(f"{a[0]:.4f},{a[1]:.4f},{300 + 40 * a[0]:.4f},{-2 + a[1]:.4f},{split}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "schema.yaml").write_text(
        "table: t.csv\ntarget: {columns: [y1, y2], task: regression}\nsplit: split\n"
        "modalities:\n  a: {columns: [a1, a2], loader: numeric}\n")
    from mmfuse.datasets.pipeline import TablePipeline
    from mmfuse.datasets.table import load_table

    splits = load_table(tmp_path / "schema.yaml", base_dir=tmp_path, cache=False)
    pipe = splits["train"].pipeline
    import csv

    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    ytr = np.array([[float(r["y1"]), float(r["y2"])] for r in rows if r["split"] == "train"], dtype=np.float32)
    np.testing.assert_allclose(pipe.target.scale.mean, ytr.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(pipe.target.scale.std, ytr.astype(np.float64).std(0), rtol=1e-12)
    pipe.save(tmp_path / "p")
    again = TablePipeline.load(tmp_path / "p")
    assert again.target.scale == pipe.target.scale and again.target.scale.columns == ["y1", "y2"]
    assert json.loads((tmp_path / "p" / "pipeline.json").read_text())["target"]["scale"]["columns"] == ["y1", "y2"]
    assert fit_target_scale(True, splits["train"], "regression") is pipe.target.scale


def test_config_key_is_validated():
    assert parse_config({}).data.standardize_target is True
    with pytest.raises(ConfigError, match="data.standardize_target"):
        parse_config({"data": {"standardize_target": "maybe"}})
