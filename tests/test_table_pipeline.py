"""The fitted table pipeline: learned on train only, saved in the checkpoint, reapplied by predict --table."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from PIL import Image

from mmfuse.cli import main
from mmfuse.datasets.columns import ColumnLoader, LoaderOptions
from mmfuse.datasets.table import load_table
from mmfuse.errors import CheckpointError, DataError
from mmfuse.registry import COLUMN_LOADERS

WORDS = ["four", "seven", "red", "blue", "small", "large", "round", "square", "bright", "dark"]


def _rows(root, start, count, rng):
    rows = []
    for i in range(start, start + count):
        y = i % 2
        img = (rng.random((8, 8)) * 60 + (180 if y else 20)).astype(np.uint8)
        Image.fromarray(img).save(root / f"img{i}.png")
        t = np.arange(800) / 8000
        sf.write(root / f"a{i}.wav", 0.3 * np.sin(2 * np.pi * (300 + 500 * y) * t) + 0.01 * rng.normal(size=t.size),
                 8000)
        words = " ".join(WORDS[(i * k + y) % len(WORDS)] for k in (1, 3, 7))
        rows.append({"uid": f"r{i:03d}", "image": "" if i % 6 == 5 else f"img{i}.png",
                     "audio": "" if i % 4 == 1 else f"a{i}.wav", "text": "" if i % 5 == 0 else words,
                     "hr": 60 + 10 * y + rng.normal(), "label": ["cat", "dog"][y]})
    return rows


SCHEMA = {
    "table": "data.csv", "id": "uid", "target": {"column": "label"},
    "modalities": {
        "photo": {"column": "image", "loader": "image", "channels": 1},
        "voice": {"column": "audio", "loader": "audio", "sample_rate": 8000, "max_frames": 8, "n_mels": 20},
        "caption": {"column": "text", "loader": "text", "max_tokens": 6},
        "vitals": {"columns": ["hr"], "loader": "numeric"},
    },
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(0)
    pd.DataFrame(_rows(root, 0, 40, rng)).to_csv(root / "data.csv", index=False)
    new = pd.DataFrame(_rows(root, 40, 6, rng))
    new.to_csv(root / "new_rows.csv", index=False)
    (root / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    cfg = {"data": {"name": "schema.yaml", "batch_size": 8, "eval_batch_size": 7},
           "model": {"encoders": {"caption": {"name": "gru", "options": {"vocab_size": 16, "hidden": 8}},
                                  "photo": {"name": "cnn2d", "options": {"channels": [4, 8]}}},
                     "fusion": {"name": "gated"}},
           "training": {"max_epochs": 1, "progress": False},
           "output_dir": str(root / "run")}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", str(root / "config.yaml")]) == 0
    return root


def test_pipeline_is_saved_and_checked(trained):
    ck = trained / "run" / "checkpoint"
    meta = json.loads((ck / "config.json").read_text())
    doc = json.loads((ck / "pipeline.json").read_text())
    assert doc["target"]["classes"] == ["cat", "dog"] == meta["class_names"]
    assert not any(p.suffix == ".pkl" for p in ck.iterdir())
    # the vocabulary is the one learned on the train rows of the table only
    train = load_table(trained / "schema.yaml")["train"]
    from mmfuse.datasets.text import build_vocab

    texts = pd.read_csv(trained / "data.csv", dtype=str, keep_default_na=False)["text"]
    expect = build_vocab([texts[i] for i in train.ids if texts[i]])
    assert doc["modalities"]["caption"]["state"]["vocab"] == expect
    # numeric statistics: mean of the train rows' hr
    hr = pd.read_csv(trained / "data.csv")["hr"].to_numpy()
    from safetensors.numpy import load_file

    arrays = load_file(str(ck / "pipeline.safetensors"))
    assert np.allclose(arrays["vitals.mean"], hr[train.ids].mean())
    # evaluate / explain read the data through the checkpoint's pipeline, even with another split seed
    from mmfuse.training import load_checkpoint
    from mmfuse.training.fit import load_data

    _, cfg, _ = load_checkpoint(ck)
    assert cfg.data.options["pipeline"] == str(ck)
    cfg.data.seed = 11
    splits = load_data(cfg)
    assert splits["test"].vocabs["caption"] == expect
    assert splits["train"].pipeline.loaders["vitals"].mean == pytest.approx(hr[train.ids].mean())


def test_predict_new_table_rows_depend_only_on_themselves(trained, capsys):
    ck = trained / "run" / "checkpoint"
    full = trained / "full.csv"
    assert main(["predict", str(ck), "--table", str(trained / "data.csv"), "--out", str(full)]) == 0
    assert "metrics on the labels" in capsys.readouterr().out  # labels present: metrics reported
    a = pd.read_csv(full, dtype={"id": str}).set_index("id")
    assert len(a) == 40 and list(a.index) == [f"r{i:03d}" for i in range(40)]
    # a second, unlabelled table: some rows of the first shuffled, plus new rows
    data = pd.read_csv(trained / "data.csv", dtype=str, keep_default_na=False)
    shared = data.iloc[[33, 2, 17, 5, 26, 11, 0, 38]]
    new = pd.read_csv(trained / "new_rows.csv", dtype=str, keep_default_na=False)
    mixed = pd.concat([new.iloc[:3], shared, new.iloc[3:]]).drop(columns=["label"])
    mixed.to_csv(trained / "mixed.csv", index=False)
    out = trained / "mixed_pred.csv"
    assert main(["predict", str(ck), "--table", str(trained / "mixed.csv"), "--out", str(out)]) == 0
    b = pd.read_csv(out, dtype={"id": str}).set_index("id")
    assert list(b.index) == list(mixed["uid"])  # every row, keyed by its id, in table order
    assert "target" not in b.columns and {"has[photo]", "has[voice]", "p[cat]", "p[dog]"} <= set(b.columns)
    assert b.loc["r005", "has[photo]"] == 0 and b.loc["r001", "has[voice]"] == 0 if "r001" in b.index else True
    for uid in shared["uid"]:
        assert b.loc[uid, "prediction"] == a.loc[uid, "prediction"]
        assert b.loc[uid, "p[cat]"] == a.loc[uid, "p[cat]"] and b.loc[uid, "p[dog]"] == a.loc[uid, "p[dog]"]
    assert (b.loc[list(shared["uid"]), "has[photo]"].to_numpy()
            == (shared["image"] != "").astype(int).to_numpy()).all()


def test_a_vocabulary_of_another_split_does_not_change_inputs(trained):
    ck = trained / "run" / "checkpoint"
    other = dict(SCHEMA, split={"fractions": [0.3, 0.3, 0.4]})
    refit = load_table(other, base_dir=trained, seed=7)
    fitted = load_table(SCHEMA, base_dir=trained)
    reused = load_table(other, base_dir=trained, seed=7, pipeline=ck)
    # refitting on another train split gives other token ids (the 'four' = 19 vs 10) ...
    assert refit["train"].vocabs["caption"] != fitted["train"].vocabs["caption"]
    # ... but the checkpoint's pipeline gives every row the ids and statistics it had in training
    def by_row(splits):
        out = {}
        for ds in splits.values():
            for j, i in enumerate(ds.ids):
                out[int(i)] = ds[j]
        return out

    f, r = by_row(fitted), by_row(reused)
    for i in range(40):
        for m in ("caption", "vitals", "voice", "photo"):
            if f[i][m] is None:
                assert r[i][m] is None
            else:
                assert f[i][m].dtype == r[i][m].dtype and (f[i][m] == r[i][m]).all()


def test_predict_a_table_without_whole_modalities(trained):
    """Only the numeric column filled: caption keeps its token-id dtype, the image its fitted size."""
    ck = trained / "run" / "checkpoint"
    data = pd.read_csv(trained / "new_rows.csv", dtype=str, keep_default_na=False).drop(columns=["label"])
    data["image"] = data["audio"] = data["text"] = ""
    data.to_csv(trained / "numeric_only.csv", index=False)
    out = trained / "numeric_only_pred.csv"
    assert main(["predict", str(ck), "--table", str(trained / "numeric_only.csv"), "--out", str(out)]) == 0
    b = pd.read_csv(out)
    assert len(b) == 6 and (b["has[vitals]"] == 1).all() and (b["has[caption]"] == 0).all()
    assert np.allclose(b["p[cat]"] + b["p[dog]"], 1.0)


def test_unknown_label_is_an_error_naming_the_row(trained, capsys):
    ck = trained / "run" / "checkpoint"
    data = pd.read_csv(trained / "new_rows.csv", dtype=str, keep_default_na=False)
    data.loc[3, "label"] = "cow"
    data.to_csv(trained / "cow.csv", index=False)
    assert main(["predict", str(ck), "--table", str(trained / "cow.csv"), "--out", str(trained / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "row 3 (line 5)" in err and "'cow'" in err and "Traceback" not in err


def test_reversed_class_names_are_detected(trained, tmp_path):
    import shutil

    from mmfuse.training import load_checkpoint

    ck = tmp_path / "ck"
    shutil.copytree(trained / "run" / "checkpoint", ck)
    meta = json.loads((ck / "config.json").read_text())
    meta["class_names"] = meta["class_names"][::-1]
    (ck / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="class"):
        load_checkpoint(ck)
    meta["class_names"] = meta["class_names"][::-1]
    (ck / "config.json").write_text(json.dumps(meta))
    doc = json.loads((ck / "pipeline.json").read_text())
    doc["target"]["classes"] = doc["target"]["classes"][::-1]
    (ck / "pipeline.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(ck)


def _numeric_table(tmp_path, labels, split=None):
    rows = {"x": [str(i) for i in range(len(labels))], "label": labels}
    if split:
        rows["split"] = split
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    schema = {"table": "t.csv", "target": "label", "modalities": {"x": {"column": "x", "loader": "numeric"}}}
    if split:
        schema["split"] = {"column": "split"}
    return schema


def test_labels_are_checked(tmp_path):
    labels = ["1", "2", "3", "seven", "1", "2", "3", "1"]
    with pytest.raises(DataError, match=r"row 3 \(line 5\) \('seven'\)"):
        load_table(_numeric_table(tmp_path, labels), base_dir=tmp_path)
    split = ["train"] * 6 + ["val", "test"]
    labels = ["a", "b", "a", "b", "a", "b", "a", "c"]
    with pytest.raises(DataError, match=r"label 'c' .*only outside the train split \(row 7"):
        load_table(_numeric_table(tmp_path, labels, split), base_dir=tmp_path)
    labels = ["a", "b", "a", "b", "a", "c", "a", "b"]
    with pytest.warns(UserWarning, match=r"label 'c' .* 1 training row\(s\) \(row 5"):
        out = load_table(_numeric_table(tmp_path, labels, split), base_dir=tmp_path)
    assert out["train"].class_names == ["a", "b", "c"]


def test_a_user_registered_loader(tmp_path):
    class LengthOptions(LoaderOptions):
        scale: float = 1.0

    @COLUMN_LOADERS.register("test_length", overwrite=True)
    class LengthLoader(ColumnLoader):
        """Text length divided by the longest training text (learned in fit)."""

        Options = LengthOptions
        loader_name = "test_length"

        def fit(self, cells):
            self.longest = max(len(c) for c in cells)
            self.fitted = True
            return self

        def transform_cell(self, cell):
            return np.array([self.options.scale * len(cell) / self.longest], dtype=np.float32)

        def empty_shape(self):
            return (1,)

        def state_dict(self):
            return {"longest": self.longest}

        def load_state(self, state):
            self.longest, self.fitted = state["longest"], True
            return self

    texts = ["ab", "abcd", "a", "abcdefgh", "abc", "ab"]
    split = ["train", "train", "train", "test", "val", "train"]
    pd.DataFrame({"t": texts, "label": ["p", "q"] * 3, "split": split}).to_csv(tmp_path / "t.csv", index=False)
    schema = {"table": "t.csv", "target": "label", "split": "split",
              "modalities": {"len": {"column": "t", "loader": "test_length", "scale": 2.0}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = load_table(schema, base_dir=tmp_path)
    assert out["train"].pipeline.loaders["len"].longest == 4  # train rows only, not the 8 of the test row
    assert np.allclose(out["test"].arrays["len"][0], 2.0 * 8 / 4)
    with pytest.raises(Exception, match=r"modalities.len.scal.*did you mean 'scale'"):
        load_table({**schema, "modalities": {"len": {"column": "t", "loader": "test_length", "scal": 2}}},
                   base_dir=tmp_path)
