"""Evaluation by real missingness: metrics per *observed* presence pattern of the test rows (grouped by
what each row really has, n rows each), next to the *simulated* patterns (modalities hidden at test time)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from mmfuse.cli import main
from mmfuse.datasets.base import ArrayDataset
from mmfuse.evaluation import compute_metrics, evaluate
from mmfuse.models.output import ModelOutput


BIAS_A = np.array([-0.9, 0.0, 0.9], np.float32)  # shown only when a is present: a placeholder treated as data shows


class HandModel(nn.Module):
    """logits = (a + BIAS_A)·[a present] + b·[b present]: a row's prediction depends only on what it shows."""

    modalities = ["a", "b"]

    def forward(self, batch):
        a = (batch.inputs["a"] + torch.from_numpy(BIAS_A)[: batch.inputs["a"].shape[1]]) * batch.mask["a"].float()[:, None]
        b = batch.inputs["b"] * batch.mask["b"].float()[:, None]
        return ModelOutput(logits=a + b)


def _tiny():
    rng = np.random.default_rng(3)
    # 6 rows with a+b, 5 with a only, 4 with b only, 3 with nothing; interleaved
    kinds = np.array(["ab"] * 6 + ["a"] * 5 + ["b"] * 4 + ["-"] * 3)[rng.permutation(18)]
    pa, pb = np.isin(kinds, ["ab", "a"]), np.isin(kinds, ["ab", "b"])
    a = rng.normal(size=(18, 3)).astype(np.float32)
    b = rng.normal(size=(18, 3)).astype(np.float32)
    y = rng.integers(0, 3, 18)
    ds = ArrayDataset({"a": a, "b": b}, y, {"a": pa, "b": pb}, num_classes=3, ids=np.arange(100, 118))
    return ds, kinds, (a + BIAS_A) * pa[:, None], b * pb[:, None], y


def test_observed_patterns_equal_metrics_by_hand_on_the_matching_rows():
    ds, kinds, a, b, y = _tiny()
    pa = ds.present["a"]
    rep = evaluate(HandModel(), ds, "multiclass", batch_size=5)  # several batches
    logits = a + b
    pred = logits.argmax(1)
    assert rep["metrics"]["accuracy"] == pytest.approx((pred == y).mean())
    obs = rep["observed"]
    assert list(obs) == ["a+b", "a", "b", "none"]  # largest first, then the rows with nothing
    for name, kind, n in (("a+b", "ab", 6), ("a", "a", 5), ("b", "b", 4), ("none", "-", 3)):
        rows = np.flatnonzero(kinds == kind)
        assert obs[name]["n"] == n == len(rows)
        assert obs[name]["metrics"]["accuracy"] == pytest.approx((pred[rows] == y[rows]).mean())
        assert obs[name]["metrics"] == compute_metrics("multiclass", logits[rows], y[rows])
    # rows with no modality are flagged: counted, by dataset position and by id
    none = np.flatnonzero(kinds == "-")
    assert rep["rows_without_modality"] == {"n": 3, "index": none.tolist(), "ids": (100 + none).tolist()}
    # simulated patterns hide modalities in every row; a row's really-absent modality stays absent
    assert rep["patterns"]["a+b"] == rep["metrics"]
    assert rep["patterns"]["a"]["accuracy"] == pytest.approx((a.argmax(1) == y).mean())
    assert rep["patterns"]["a"] == compute_metrics("multiclass", a, y)
    assert rep["patterns"]["a"] != compute_metrics("multiclass", a + BIAS_A * ~pa[:, None], y)  # absent a never shown
    assert rep["patterns"]["b"]["accuracy"] == pytest.approx((b.argmax(1) == y).mean())


def test_observed_patterns_regression_and_absent_pattern_left_out():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2)).astype(np.float32)
    t = rng.normal(size=(10, 2)).astype(np.float32)
    pa = np.array([1, 1, 1, 0, 0, 1, 1, 0, 1, 1], bool)
    ds = ArrayDataset({"a": x, "b": x.copy()}, t, {"a": pa}, task="regression")  # b always present
    rep = evaluate(HandModel(), ds, "regression", per_pattern=False)
    assert list(rep["observed"]) == ["a+b", "b"] and rep["patterns"] == {}
    assert rep["rows_without_modality"] == {"n": 0, "index": []}
    pred = (x + BIAS_A[:2]) * pa[:, None] + x
    for name, rows in (("a+b", np.flatnonzero(pa)), ("b", np.flatnonzero(~pa))):
        assert rep["observed"][name]["n"] == len(rows)
        assert rep["observed"][name]["metrics"]["mae"] == pytest.approx(np.abs(pred[rows] - t[rows]).mean(), rel=1e-6)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("obs")
    rng = np.random.default_rng(0)
    n = 80
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"x1": y + rng.normal(0, 0.3, n), "x2": rng.normal(size=n), "z": y + rng.normal(0, 0.3, n),
                       "label": y})
    df.loc[np.arange(n) % 3 == 1, ["x1", "x2"]] = np.nan
    df.loc[np.arange(n) % 5 == 2, "z"] = np.nan
    df.to_csv(root / "t.csv", index=False)
    (root / "schema.yaml").write_text(yaml.safe_dump({
        "table": "t.csv", "target": {"column": "label"},
        "modalities": {"a": {"columns": ["x1", "x2"], "loader": "numeric"}, "b": {"columns": ["z"], "loader": "numeric"}}}))
    enc = {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}}
    (root / "cfg.yaml").write_text(yaml.safe_dump({
        "data": {"name": "schema.yaml", "batch_size": 16}, "model": {"encoders": {"a": enc, "b": enc}},
        "training": {"max_epochs": 1, "progress": False}, "output_dir": str(root / "run")}))
    return root, df


def test_cli_train_and_evaluate_print_the_observed_table(table, capsys):
    from mmfuse.evaluation import collect, make_loader
    from mmfuse.training import load_checkpoint
    from mmfuse.training.fit import load_data

    root, df = table
    assert main(["train", str(root / "cfg.yaml")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((root / "run" / "metrics.json").read_text())["test"]
    # oracle: the test rows' presence from the table itself, and the checkpoint's own predictions on them
    model, cfg, _ = load_checkpoint(root / "run" / "checkpoint")
    test = load_data(cfg)["test"]
    rows = df.iloc[test.ids]
    has_a, has_b = rows["x1"].notna().to_numpy(), rows["z"].notna().to_numpy()
    np.testing.assert_array_equal(test.present["a"], has_a)
    res = collect(model, make_loader(test, 64))
    pred = res["scores"].argmax(1)
    expect = {"a+b": has_a & has_b, "a": has_a & ~has_b, "b": ~has_a & has_b, "none": ~has_a & ~has_b}
    expect = {k: v for k, v in expect.items() if v.any()}
    assert len(expect) >= 3 and set(metrics["observed"]) == set(expect)
    for name, sel in expect.items():
        assert metrics["observed"][name]["n"] == int(sel.sum())
        assert metrics["observed"][name]["metrics"]["accuracy"] == pytest.approx((pred[sel] == res["target"][sel]).mean())
        label = "no modality" if name == "none" else name
        assert f"observed: {label} (n={int(sel.sum())})" in out
    assert metrics["rows_without_modality"]["n"] == int(expect.get("none", np.zeros(1, bool)).sum())
    assert "simulated: only a present" in out and "observed presence patterns" in out
    assert main(["evaluate", str(root / "run" / "checkpoint")]) == 0
    out2 = capsys.readouterr().out
    for name, sel in expect.items():
        label = "no modality" if name == "none" else name
        line = next(ln for ln in out2.splitlines() if f"observed: {label} (n={int(sel.sum())})" in ln)
        assert f"{(pred[sel] == res['target'][sel]).mean():.4f}" in line
    assert "simulated: only b present" in out2


def test_compare_reports_observed_patterns(tmp_path):
    from mmfuse.compare import run_compare
    from mmfuse.config import parse_config
    from mmfuse.datasets import from_arrays

    rng = np.random.default_rng(1)
    n = 60
    y = rng.integers(0, 2, n)
    pb = np.arange(n) % 3 != 0
    split = np.array(["train"] * 36 + ["val"] * 9 + ["test"] * 15)
    data = from_arrays({"a": rng.normal(size=(n, 3)).astype(np.float32) + y[:, None],
                        "b": rng.normal(size=(n, 2)).astype(np.float32)}, y, present={"b": pb}, split=split)
    enc = {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}}
    cfg = parse_config({"model": {"encoders": {"a": enc, "b": enc}}, "training": {"max_epochs": 1, "progress": False},
                        "compare": {"fusions": ["concat"], "late": [], "unimodal": False, "seeds": [0], "tsne": False}})
    run_compare(cfg, tmp_path, progress=False, datasets=data)
    runs = pd.read_csv(tmp_path / "runs.csv")
    test_b = pb[split == "test"]
    assert runs["observed[a+b]_n"].tolist() == [int(test_b.sum())] and runs["observed[a]_n"].tolist() == [int((~test_b).sum())]
    assert runs["test_rows_no_modality"].tolist() == [0]
    md = (tmp_path / "leaderboard.md").read_text()
    assert f"observed[a+b] n={int(test_b.sum())}" in md and f"observed[a] n={int((~test_b).sum())}" in md
    assert "`observed[x]`: real" in md and "`pattern[x]`: simulated" in md
