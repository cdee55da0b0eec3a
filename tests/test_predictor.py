"""mmfuse.Predictor: the sklearn-style front object over the same config, pipeline and checkpoint as the CLI."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from test_table_pipeline import SCHEMA, _rows  # the tiny PNG / wav / text / numeric table

import mmfuse
from mmfuse.cli import main
from mmfuse.errors import CheckpointError, ConfigError, DataError

CONFIG = {"data": {"batch_size": 8, "eval_batch_size": 7},
          "model": {"encoders": {"caption": {"name": "gru", "options": {"vocab_size": 16, "hidden": 8}},
                                 "photo": {"name": "cnn2d", "options": {"channels": [4, 8]}}}},
          "training": {"progress": False}}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictor")
    rng = np.random.default_rng(0)
    pd.DataFrame(_rows(root, 0, 40, rng)).to_csv(root / "data.csv", index=False)
    pd.DataFrame(_rows(root, 40, 6, rng)).to_csv(root / "new_rows.csv", index=False)
    schema = {k: v for k, v in SCHEMA.items() if k != "table"}  # fit(table, schema=...) names the table
    p = mmfuse.Predictor(CONFIG, fusion="gated", max_epochs=1, out_dir=root / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert p.fit(root / "data.csv", schema=schema) is p
    return root, p


def _mixed(root):
    """An unlabelled table: some training-table rows shuffled, between new rows."""
    data = pd.read_csv(root / "data.csv", dtype=str, keep_default_na=False)
    new = pd.read_csv(root / "new_rows.csv", dtype=str, keep_default_na=False)
    shared = data.iloc[[33, 2, 17, 5, 26, 11, 0, 38]]
    mixed = pd.concat([new.iloc[:3], shared, new.iloc[3:]]).drop(columns=["label"])
    mixed.to_csv(root / "mixed.csv", index=False)
    return root / "mixed.csv", list(shared["uid"])


def test_fit_predict_new_table_save_load(fitted, tmp_path):
    root, p = fitted
    ck = root / "run" / "checkpoint"
    assert p.checkpoint_ == ck and (ck / "pipeline.json").is_file() and p.classes_ == ["cat", "dog"]
    assert p.task_ == "multiclass" and p.config_.model.fusion.name == "gated" and p.config_.training.max_epochs == 1
    full = p.predict(root / "data.csv")
    assert list(full.index) == [f"r{i:03d}" for i in range(40)] and "target" in full  # labels present
    mixed, shared = _mixed(root)
    pred = p.predict(mixed)
    assert list(pred.index) == list(pd.read_csv(mixed, dtype=str)["uid"]) and "target" not in pred
    # a shared row gets exactly its prediction inside the original table (it depends only on itself)
    for col in ("prediction", "p[cat]", "p[dog]", "has[photo]", "has[voice]"):
        assert (pred.loc[shared, col] == full.loc[shared, col]).all(), col
    # the same frame as `mmfuse predict --table` (one path)
    assert main(["predict", str(ck), "--table", str(mixed), "--out", str(tmp_path / "cli.csv")]) == 0
    cli = pd.read_csv(tmp_path / "cli.csv", dtype={"id": str}).set_index("id")
    assert list(cli.index) == list(pred.index) and (cli["prediction"] == pred["prediction"]).all()
    assert np.allclose(cli["p[dog]"], pred["p[dog]"], rtol=0, atol=1e-12)
    # probabilities: softmax rows sum to 1, their argmax is the predicted class
    proba = p.predict_proba(mixed)
    assert list(proba.columns) == ["cat", "dog"] and list(proba.index) == list(pred.index)
    assert np.allclose(proba.sum(1), 1.0, atol=1e-12)
    assert (proba.idxmax(1) == pred["prediction"]).all()
    # save -> load -> identical predictions
    saved = p.save(tmp_path / "model")
    q = mmfuse.Predictor.load(saved)
    assert q.classes_ == p.classes_ and q.checkpoint_.resolve() == saved.resolve()
    pd.testing.assert_frame_equal(q.predict(mixed), pred)
    assert sorted(x.name for x in saved.iterdir()) == sorted(x.name for x in ck.iterdir() if x.is_file())


def test_evaluate_and_explain_keyed_by_id(fitted, tmp_path):
    root, p = fitted
    report = p.evaluate(root / "data.csv")
    full = p.predict(root / "data.csv")
    acc = float((full["prediction"] == full["target"]).mean())  # target: the class name, like prediction
    assert report["metrics"]["accuracy"] == pytest.approx(acc)
    # observed presence patterns: every row in exactly one pattern, n as counted from the table's empty cells
    obs = report["observed"]
    assert sum(o["n"] for o in obs.values()) == 40
    data = pd.read_csv(root / "data.csv", dtype=str, keep_default_na=False)
    both = int(((data["image"] != "") & (data["audio"] != "")).sum())
    assert obs["caption+photo+vitals+voice"]["n"] == int(((data["image"] != "") & (data["audio"] != "")
                                                           & (data["text"] != "")).sum()) and both >= 1
    test = p.predict("test")  # the fitted data's test split, keyed by the table's uid
    assert p.evaluate("test")["metrics"]["accuracy"] == pytest.approx(
        float((test["prediction"] == test["target"]).mean()))
    with pytest.raises(DataError, match="no label column"):
        p.evaluate(_mixed(root)[0])
    # explain: per_sample.csv is keyed by the rows' ids, and its predicted class is predict's for that id
    summary = p.explain("test", out_dir=tmp_path / "ex", max_samples=5, permutations=2)
    per = pd.read_csv(tmp_path / "ex" / "per_sample.csv", dtype={"id": str})
    assert list(per["id"]) == list(test.index[:5]) and summary["n_samples"] == 5
    assert [p.classes_[k] for k in per["predicted"]] == list(test["prediction"][:5])
    # the CLI writes the same ids
    ck = root / "run" / "checkpoint"
    assert main(["explain", str(ck), "--max-samples", "4", "--permutations", "2", "--out", str(tmp_path / "cli")]) == 0
    cli = pd.read_csv(tmp_path / "cli" / "per_sample.csv", dtype={"id": str})
    assert list(cli["id"]) == list(test.index[:4]) and all(i.startswith("r") for i in cli["id"])


def test_predictor_errors(fitted, tmp_path):
    root, p = fitted
    with pytest.raises(ConfigError, match="model.fusion.name: unknown fusion.*'gatd'.*'gated'"):
        mmfuse.Predictor(fusion="gatd")
    with pytest.raises(ConfigError, match="training.max_epochs"):
        mmfuse.Predictor(overrides={"training.max_epochs": 0})
    with pytest.raises(ConfigError, match="not fitted"):
        mmfuse.Predictor().predict(root / "data.csv")
    fresh = mmfuse.Predictor(CONFIG, max_epochs=1)
    with pytest.raises(ConfigError, match="needs a schema"):
        fresh.fit(root / "data.csv")
    with pytest.raises(DataError, match="not found"):
        fresh.fit(root / "nope.csv", schema=SCHEMA)
    with pytest.raises(ConfigError, match="no file and no built-in dataset.*avmnist"):
        fresh.fit("avmnits")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        mmfuse.Predictor.load(tmp_path / "nothing")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an mmfuse checkpoint"):
        p.save(tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="cannot read data of type int"):
        p.predict(3)


def test_explain_dataset_keys_rows_by_dataset_ids(tmp_path):
    """A dataset's own ids (here: a subset's source rows), not the position, key per_sample.csv."""
    from mmfuse.datasets.base import ArrayDataset
    from mmfuse.explain import explain_dataset

    g = np.random.default_rng(0)
    full = ArrayDataset({"a": g.normal(size=(12, 3)).astype(np.float32), "b": g.normal(size=(12, 2)).astype(np.float32)},
                        np.arange(12) % 3, task="multiclass", num_classes=3)
    ds = full.subset([9, 4, 7, 1, 10])
    lin = torch.nn.Linear(5, 3)

    def model(batch):
        return lin(torch.cat([batch.inputs["a"] * batch.mask["a"][:, None], batch.inputs["b"] * batch.mask["b"][:, None]], 1))

    explain_dataset(model, ds, "shapley", tmp_path / "a", batch_size=2, max_samples=4, plots=False)
    df = pd.read_csv(tmp_path / "a" / "per_sample.csv")
    assert df["id"].tolist() == [9, 4, 7, 1] and df["sample"].tolist() == [0, 1, 2, 3]
    # f_full of each row is the model's output for that source row
    with torch.no_grad():
        logits = model(full.batch([9, 4, 7, 1]))
    best = torch.softmax(logits, 1).max(1).values.double().numpy()
    assert np.allclose(df["f_full"], best, atol=1e-6)
    explain_dataset(model, ds, "shapley", tmp_path / "b", ids=["u", "v", "w", "x", "y"], plots=False)
    assert pd.read_csv(tmp_path / "b" / "per_sample.csv")["id"].tolist() == ["u", "v", "w", "x", "y"]
    with pytest.raises(ConfigError, match="2 ids for a dataset of 5"):
        explain_dataset(model, ds, "shapley", tmp_path / "c", ids=["u", "v"], plots=False)


def test_list_shows_loaders_and_family_schemes(capsys):
    assert main(["list", "loaders"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("loaders:") and all(n in out for n in ("image", "audio", "text", "numeric", "npy"))
    cat = mmfuse.catalog()
    from mmfuse.registry import COLUMN_LOADERS, MODELS

    assert cat["loaders"] == COLUMN_LOADERS.list()
    for fam in MODELS.list():
        entry = next(e for e in cat["family_schemes"] if e.split("=")[0] == fam)
        assert entry.split("=")[1].split("|")[0] == MODELS.info(fam)["default_scheme"]
    assert "smil=smil_meta|joint" in cat["family_schemes"]
    assert json.dumps(cat)  # plain names
