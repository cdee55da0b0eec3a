"""The `categorical` column loader and encoder, and the table loader's column / separator messages."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import mmfuse
from mmfuse.datasets.table import load_table
from mmfuse.errors import ConfigError, DataError, UnknownWordsWarning

COLORS = ["red", "green", "blue"]


def _table(n=24, seed=0):
    """color (3 words), size (numbers as text), a numeric column; label = color is red; a split column.
    'violet' and '99' appear only in the test rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        split = "train" if i < 16 else ("val" if i < 20 else "test")
        color = COLORS[i % 3]
        size = ["10", "9", "2"][(i // 3) % 3]
        if i == 21:
            color = "violet"
        if i == 22:
            size = "99"
        rows.append({"uid": f"u{i}", "color": "" if i == 5 else color, "size": size, "x": f"{rng.normal():.3f}",
                     "label": "yes" if color == "red" else "no", "split": split})
    return pd.DataFrame(rows)


SCHEMA = {"table": "t.csv", "id": "uid", "target": "label", "split": "split",
          "modalities": {"cat": {"columns": ["color", "size"], "loader": "categorical"},
                         "num": {"columns": ["x"], "loader": "numeric"}}}


def test_categories_learned_on_train_only(tmp_path):
    df = _table()
    df.to_csv(tmp_path / "t.csv", index=False)
    ds = load_table(SCHEMA, base_dir=tmp_path)
    ld = ds["train"].pipeline.loaders["cat"]
    # sorted, numbers numerically; 'violet' / '99' (val/test rows only) are not categories
    assert ld.categories == [["blue", "green", "red"], ["2", "9", "10"]]
    # blocks: color = [blue, green, red], size = [2, 9, 10]; an unseen category leaves its block all zero
    want = {"u0": (2, 5), "u4": (1, 4), "u8": (0, 3), "u21": (4,), "u22": (1,)}
    assert ds["train"].shapes["cat"] == (6,)
    for split in ("train", "test"):
        d = ds[split]
        ids = [d.row_ids[int(i)] for i in d.ids]
        for k, rid in enumerate(ids):
            if rid in want:
                v = np.asarray(d[k]["cat"])
                assert np.flatnonzero(v).tolist() == list(want[rid]), rid
    # an empty cell: the modality is absent for that row
    tr = ds["train"]
    k5 = [tr.row_ids[int(i)] for i in tr.ids].index("u5")
    assert tr[k5]["cat"] is None or not np.asarray(tr[k5]["cat"]).any()
    assert not tr.present["cat"][k5] and tr.present["cat"].sum() == len(tr) - 1


def test_encoder_is_the_sum_of_the_active_embeddings():
    from mmfuse.encoders import create_encoder

    enc = create_encoder("categorical", input_shape=(8,), output_dim=4)
    x = torch.zeros(2, 8)
    x[0, [3, 7]] = 1
    x[1, [0, 5]] = 1
    y = enc(x)
    w = enc.weight.detach()
    assert torch.allclose(y[0], w[3] + w[7]) and torch.allclose(y[1], w[0] + w[5])
    with pytest.raises(ConfigError, match="input_shape must be"):
        create_encoder("categorical", input_shape=(2, 3))


def test_checkpoint_round_trip_and_unseen_warning(tmp_path):
    df = _table()
    df.to_csv(tmp_path / "t.csv", index=False)
    schema = {k: v for k, v in SCHEMA.items() if k != "table"}
    cfg = {"data": {"batch_size": 8}, "model": {"encoders": {"cat": {"name": "categorical", "options": {"output_dim": 4}},
                                                            "num": {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}}}},
           "training": {"progress": False, "plots": False}}
    p = mmfuse.Predictor(cfg, max_epochs=1, out_dir=tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p.fit(tmp_path / "t.csv", schema=schema)
    doc = json.loads((p.checkpoint_ / "pipeline.json").read_text())
    assert doc["modalities"]["cat"]["state"]["categories"] == [["blue", "green", "red"], ["2", "9", "10"]]
    assert not any(f.suffix in (".pkl", ".pickle") for f in p.checkpoint_.iterdir())
    new = df.iloc[[0, 21, 22, 4]].drop(columns=["label", "split"])
    new.to_csv(tmp_path / "new.csv", index=False)
    with pytest.warns(UnknownWordsWarning) as rec:
        pred = p.predict(tmp_path / "new.csv")
    msgs = [str(w.message) for w in rec if issubclass(w.category, UnknownWordsWarning)]
    assert len(msgs) == 1 and "2 row(s) (u21, u22)" in msgs[0] and "'color', 'size'" in msgs[0]
    q = mmfuse.Predictor.load(p.save(tmp_path / "saved"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pd.testing.assert_frame_equal(q.predict(tmp_path / "new.csv"), pred)


def test_loader_name_and_column_suggestions(tmp_path):
    df = _table().rename(columns={"x": "sound"})
    df.to_csv(tmp_path / "t.csv", index=False)
    bad = {**SCHEMA, "modalities": {"cat": {"column": "color", "loader": "categoricl"},
                                    "num": {"columns": ["x"], "loader": "numeric"}}}
    with pytest.raises(ConfigError) as exc:
        load_table(bad, base_dir=tmp_path)
    msg = str(exc.value)
    assert "did you mean 'categorical'?" in msg and "known names" not in msg
    # a missing column: never a column the schema already uses (uid, color, label, split); the unused one listed
    assert "column 'x' is not in the table (columns the schema does not use: 'size', 'sound')" in msg
    # a close match among the unused columns
    df.rename(columns={"uid": "uids"}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ConfigError) as exc:
        load_table({**SCHEMA, "modalities": {"cat": {"column": "color", "loader": "bogus"}}}, base_dir=tmp_path)
    msg = str(exc.value)
    assert "schema.id: column 'uid' is not in the table (did you mean 'uids'?)" in msg
    assert "'bogus' is unknown; choose one of" in msg and "did you mean" not in msg.split("'bogus'")[1].split("\n")[0]


def test_separator_hint_and_sep_key(tmp_path):
    df = _table()
    df.to_csv(tmp_path / "t.csv", index=False, sep=";")
    with pytest.raises(DataError) as exc:
        load_table(SCHEMA, base_dir=tmp_path)
    assert "seems to use ';' as separator" in str(exc.value) and "sep: ';'" in str(exc.value)
    a = load_table({**SCHEMA, "sep": ";"}, base_dir=tmp_path)
    df.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    b = load_table({**SCHEMA, "table": "t.tsv"}, base_dir=tmp_path)  # .tsv: a tab by default
    assert np.array_equal(np.asarray(a["train"].targets), np.asarray(b["train"].targets))
    df.to_csv(tmp_path / "t.csv", index=False, sep="\t")
    with pytest.raises(DataError, match="seems to use tab as separator.*sep: tab"):
        load_table(SCHEMA, base_dir=tmp_path)
    assert len(load_table({**SCHEMA, "sep": "tab"}, base_dir=tmp_path)["train"]) == 16
    with pytest.raises(ConfigError, match="sep.*one separator character"):
        load_table({**SCHEMA, "sep": ";;"}, base_dir=tmp_path)
