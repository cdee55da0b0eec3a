"""User tables (CSV + YAML schema), from_arrays, and the audio feature front end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mmfuse.batch import MultimodalBatch
from mmfuse.datasets import TableSchemaError, from_arrays, load_dataset, load_table
from mmfuse.datasets.audio import dct_matrix, log_mel, mel_filterbank, mfcc
from mmfuse.errors import ConfigError, DataError

N = 12
LABELS = ["cat", "dog", "bird"]
SPLIT = ["train"] * 8 + ["val"] * 2 + ["test"] * 2


def _write_png(path: Path, seed: int, mode: str = "RGB", size=(10, 8)) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode).save(path)


def _write_wav(path: Path, seed: int, sr: int = 8000, seconds: float = 0.25) -> None:
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    x = 0.5 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.normal(size=len(t))
    sf.write(str(path), x.astype(np.float32), sr)


def make_table(root: Path, rows: int = N) -> tuple[Path, list[dict]]:
    """A tiny multimodal table: PNG images, wav files, text, two numbers, one .npy; some cells empty."""
    (root / "media").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(rows):
        img, wav, npy = f"media/img{i}.png", f"media/a{i}.wav", f"media/e{i}.npy"
        _write_png(root / img, i)
        _write_wav(root / wav, i)
        np.save(root / npy, np.arange(4, dtype=np.float32) + i)
        records.append({
            "img_path": img, "wav_path": wav,
            "text": f"a {LABELS[i % 3]} photo number {i}",
            "hr": str(60 + i), "bp": str(120 - i), "npy_path": npy,
            "label": LABELS[i % 3], "split": SPLIT[i % len(SPLIT)] if rows != N else SPLIT[i],
        })
    records[2]["img_path"] = ""
    records[3]["wav_path"] = ""
    records[4]["text"] = ""
    records[5]["bp"] = ""
    records[6]["npy_path"] = ""
    return root / "data.csv", records


def write_csv(path: Path, records: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)


SCHEMA = {
    "table": "data.csv",
    "target": {"column": "label", "task": "multiclass"},
    "split": {"column": "split"},
    "modalities": {
        "photo": {"column": "img_path", "loader": "image", "size": [8, 8], "channels": 1},
        "voice": {"column": "wav_path", "loader": "audio", "features": "mfcc", "n_mfcc": 13, "max_frames": 16},
        "caption": {"column": "text", "loader": "text", "max_tokens": 32},
        "vitals": {"columns": ["hr", "bp"], "loader": "numeric"},
        "emb": {"column": "npy_path", "loader": "npy"},
    },
}


def write_schema(root: Path, schema: dict) -> Path:
    path = root / "schema.yaml"
    path.write_text(yaml.safe_dump(schema))
    return path


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("table")
    path, records = make_table(root)
    write_csv(path, records)
    write_schema(root, SCHEMA)
    return root


def test_table_loads_with_masks(table_dir):
    splits = load_dataset(str(table_dir / "schema.yaml"))
    assert list(splits) == ["train", "val", "test"]
    tr = splits["train"]
    assert [len(s) for s in splits.values()] == [8, 2, 2]
    assert tr.modalities == ["caption", "emb", "photo", "vitals", "voice"]
    assert tr.shapes == {"caption": (None,), "emb": (4,), "photo": (1, 8, 8), "vitals": (2,), "voice": (16, 13)}
    assert tr.task == "multiclass" and tr.num_classes == 3 and tr.class_names == ["bird", "cat", "dog"]
    assert tr.ids.tolist() == list(range(8))
    assert not tr.present["photo"][2] and tr.present["photo"].sum() == 7
    assert not tr.present["voice"][3] and not tr.present["caption"][4]
    assert not tr.present["vitals"][5] and not tr.present["emb"][6]
    s = tr[2]
    assert s["photo"] is None and s["voice"].shape == (16, 13) and s["target"] == tr.class_names.index("bird")
    assert s["voice"].dtype == torch.float32 and s["caption"].dtype == torch.int64
    assert tr[6]["emb"] is None and torch.equal(tr[0]["emb"], torch.arange(4, dtype=torch.float32))
    photo = tr[0]["photo"]
    assert photo.min() >= 0 and photo.max() <= 1
    # numeric columns standardised with the train rows that have them
    v = tr.arrays["vitals"][tr.present["vitals"]]
    assert np.allclose(v.mean(0), 0, atol=1e-5) and np.allclose(v.std(0), 1, atol=1e-4)
    assert tr.vocabs["caption"][:2] == ["<pad>", "<unk>"] and "photo" in tr.vocabs["caption"]
    batch = tr.collate_fn([tr[i] for i in range(len(tr))])
    assert isinstance(batch, MultimodalBatch)
    assert batch.mask["photo"].tolist() == [i != 2 for i in range(8)]
    assert batch.mask["vitals"].tolist() == [i != 5 for i in range(8)]
    assert batch.inputs["photo"][2].abs().sum() == 0
    assert batch.lengths["caption"][4] == 0 and batch.lengths["caption"][0] == 5
    fast = tr.batch()
    for m in tr.modalities:
        assert torch.equal(fast.mask[m], batch.mask[m])
        assert torch.allclose(fast.inputs[m].float(), batch.inputs[m].float())


def test_table_random_split_seeded_and_dict_schema(table_dir):
    schema = {k: v for k, v in SCHEMA.items() if k != "split"}
    a = load_table(schema, seed=3, base_dir=table_dir)
    b = load_table(schema, seed=3, base_dir=table_dir)
    c = load_table(schema, seed=4, base_dir=table_dir)
    ids = {k: a[k].ids.tolist() for k in a}
    assert ids == {k: b[k].ids.tolist() for k in b}
    assert ids != {k: c[k].ids.tolist() for k in c}
    allids = sum(ids.values(), [])
    assert sorted(allids) == list(range(N))  # disjoint, nothing dropped


def _bad_table(tmp_path: Path, edit_records=None, edit_schema=None):
    path, records = make_table(tmp_path, rows=8)
    if edit_records:
        edit_records(tmp_path, records)
    write_csv(path, records)
    schema = yaml.safe_load(yaml.safe_dump(SCHEMA))
    schema.pop("split")
    if edit_schema:
        edit_schema(schema)
    return write_schema(tmp_path, schema)


def test_table_reports_all_problems_at_once(tmp_path):
    def edit(root, r):
        r[0]["img_path"] = "media/nothere.png"
        (root / "media" / "bad.wav").write_bytes(b"RIFF1234garbage")
        r[1]["wav_path"] = "media/bad.wav"
        (root / "media" / "bad.png").write_bytes(b"\x89PNG not really")
        r[2]["img_path"] = "media/bad.png"
        r[3]["label"] = ""
        r[4]["hr"] = "nan"
        r[5]["bp"] = "abc"

    schema = _bad_table(tmp_path, edit)
    with pytest.raises(DataError) as exc:
        load_dataset(str(schema))
    msg = str(exc.value)
    assert len(exc.value.problems) == 6, msg
    assert "row 0" in msg and "nothere.png" in msg and "'img_path'" in msg
    assert "row 1" in msg and "bad.wav" in msg
    assert "row 2" in msg and "bad.png" in msg
    assert "row 3" in msg and "'label'" in msg
    assert "row 4" in msg and "'hr'" in msg and "NaN" in msg
    assert "row 5" in msg and "'bp'" in msg and "'abc'" in msg
    assert not isinstance(exc.value, ConfigError)


def test_table_unknown_label_with_classes(tmp_path):
    def edit(root, r):
        r[1]["label"] = "cow"

    schema = _bad_table(tmp_path, edit, lambda s: s["target"].update(classes=["cat", "dog", "bird"]))
    with pytest.raises(DataError, match=r"row 1 .*'cow'"):
        load_dataset(str(schema))


def test_table_schema_errors(tmp_path):
    def edit_schema(s):
        s["modalities"]["photo"]["colum"] = "img_path"
        s["modalities"]["voice"]["column"] = "wav_file"
        s["modalities"]["caption"]["loader"] = "txt"
        s["targett"] = 1

    schema = _bad_table(tmp_path, None, edit_schema)
    with pytest.raises(TableSchemaError) as exc:
        load_dataset(str(schema))
    assert isinstance(exc.value, ConfigError) and isinstance(exc.value, DataError)
    msg = str(exc.value)
    assert "'colum'" in msg and "did you mean 'column'" in msg
    assert "'wav_file'" in msg and "wav_path" in msg and "available columns" in msg
    assert "'txt'" in msg and "'text'" in msg
    assert "'targett'" in msg and "'target'" in msg


def test_table_missing_target_column_and_bad_split(tmp_path):
    def edit(root, r):
        for row in r:
            row["split"] = "train"
        r[0]["split"] = "holdout"

    def edit_schema(s):
        s["target"]["column"] = "lable"
        s["split"] = {"column": "split"}

    schema = _bad_table(tmp_path, edit, edit_schema)
    with pytest.raises(ConfigError) as exc:
        load_dataset(str(schema))
    assert "'lable'" in str(exc.value) and "'label'" in str(exc.value)
    assert "row 0" in str(exc.value) and "'holdout'" in str(exc.value)


def test_table_regression_multilabel_and_empty_numeric(tmp_path):
    path, records = make_table(tmp_path, rows=10)
    for i, r in enumerate(records):
        r["score"] = str(i * 0.5)
        r["tags"] = "a|b" if i % 2 else ("c" if i % 3 else "")
    write_csv(path, records)
    base = {"table": "data.csv", "modalities": {"vitals": {"columns": ["hr", "bp"], "loader": "numeric"},
                                                "photo": {"column": "img_path", "loader": "image", "channels": 3}}}
    reg = load_table({**base, "target": {"column": "score", "task": "regression"}}, base_dir=tmp_path)
    ds = reg["train"]
    assert ds.task == "regression" and ds.num_classes == 1 and ds[0]["target"].shape == (1,)
    assert ds.shapes["photo"] == (3, 8, 10)
    ml = load_table({**base, "target": {"column": "tags", "task": "multilabel"}}, base_dir=tmp_path)
    allrows = np.concatenate([ml[k].targets for k in ml])
    assert ml["train"].class_names == ["a", "b", "c"] and allrows.shape[1] == 3
    assert (allrows.sum(1) == 0).any()  # an empty multilabel cell = no label


def test_table_variable_length_and_log_mel(tmp_path):
    path, records = make_table(tmp_path, rows=8)
    for i, r in enumerate(records):
        if r["npy_path"]:
            np.save(tmp_path / r["npy_path"], np.ones((i + 1, 2), dtype=np.float64))
    write_csv(path, records)
    schema = {"table": "data.csv", "target": "label", "split": {"fractions": [0.5, 0.0, 0.5]},
              "modalities": {"voice": {"column": "wav_path", "loader": "audio", "features": "log_mel", "n_mels": 20,
                                       "max_frames": None, "sample_rate": None},
                             "emb": {"column": "npy_path", "loader": "npy"}}}
    out = load_table(schema, base_dir=tmp_path)
    ds = out["train"]
    assert ds.shapes == {"emb": (None, 2), "voice": (None, 20)}
    assert len(out["val"]) == 0 and len(out["train"]) + len(out["test"]) == 8
    b = ds.collate_fn([ds[i] for i in range(len(ds))])
    assert b.inputs["voice"].shape[2] == 20 and b.lengths["voice"].max() == 23  # 0.25 s at 8 kHz, 25 ms windows, 10 ms hop


def test_table_unreadable_npy_and_mismatched_shape(tmp_path):
    def edit(root, r):
        np.save(root / "media" / "e1.npy", np.ones((5, 3), dtype=np.float32))
        (root / "media" / "e2.npy").write_bytes(b"not numpy")

    schema = _bad_table(tmp_path, edit)
    with pytest.raises(DataError) as exc:
        load_dataset(str(schema))
    msg = str(exc.value)
    assert "row 1" in msg and "(5, 3)" in msg and "row 2" in msg and "e2.npy" in msg


def test_table_missing_schema_file_and_option(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="schema"):
        load_dataset("table")


# ---------------------------------------------------------------------- from_arrays
def test_from_arrays_split_and_masks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    seqs = [rng.normal(size=(int(rng.integers(2, 6)), 3)) for _ in range(50)]
    seqs[3] = None
    labels = np.array(["a", "b"] * 25)
    present = {"x": np.arange(50) % 7 != 0}
    out = from_arrays({"x": x, "seq": seqs}, labels, present=present, seed=1, standardize=["x"])
    assert [len(out[k]) for k in ("train", "val", "test")] == [36, 4, 10]  # 18/2/5 per class
    tr = out["train"]
    assert tr.class_names == ["a", "b"] and tr.shapes == {"seq": (None, 3), "x": (4,)}
    assert np.intersect1d(tr.ids, out["test"].ids).size == 0
    again = from_arrays({"x": x, "seq": seqs}, labels, present=present, seed=1, standardize=["x"])
    assert np.array_equal(again["train"].ids, tr.ids) and np.allclose(again["train"].arrays["x"], tr.arrays["x"])
    b = tr.collate_fn([tr[i] for i in range(len(tr))])
    assert b.mask["x"].tolist() == [bool(i % 7) for i in tr.ids]
    assert b.mask["seq"].tolist() == [i != 3 for i in tr.ids]
    bad = x.copy()
    bad[5, 0] = np.nan
    with pytest.raises(DataError, match="sample 5"):
        from_arrays({"x": bad}, labels)
    with pytest.raises(DataError, match="sample 5"):
        from_arrays({"x": bad}, labels, split=["train"] * 5 + ["trian"] + ["test"] * 44)
    present_ok = {"x": np.arange(50) != 5}
    assert len(from_arrays({"x": bad}, labels, present=present_ok)["train"]) == 36


# ---------------------------------------------------------------------- audio features
def test_mfcc_front_end():
    sr = 16000
    t = np.arange(sr // 2) / sr
    x = np.sin(2 * np.pi * 1000 * t)
    lm = log_mel(x, sr, n_mels=40)
    assert lm.shape == (1 + (8000 - 400) // 160, 40) and lm.dtype == np.float32
    centres = np.argmax(mel_filterbank(sr, 512, 40, 0.0, 8000.0), axis=1) * sr / 512
    assert abs(centres[int(np.argmax(lm.mean(0)))] - 1000) < 150  # energy in the band around 1 kHz
    d = dct_matrix(40, 40)
    assert np.allclose(d @ d.T, np.eye(40), atol=1e-10)
    from mmfuse.datasets.audio import resample

    y, sr2 = resample(x, sr, 8000)
    assert sr2 == 8000 and len(y) == len(x) // 2
    assert abs(np.abs(np.fft.rfft(y)).argmax() * 8000 / len(y) - 1000) < 5
    m = mfcc(x, sr, n_mfcc=13)
    assert m.shape == (lm.shape[0], 13) and np.allclose(m, lm.astype(np.float64) @ dct_matrix(40, 13).T, atol=1e-3)


def test_table_parquet_and_empty_cells(tmp_path):
    import importlib.util

    from mmfuse.datasets.table import _empty

    assert _empty(None) and _empty("  ") and _empty(float("nan")) and not _empty("nan") and not _empty(0)
    path, records = make_table(tmp_path, rows=8)
    write_csv(path, records)
    schema = {"table": "data.parquet", "target": "label",
              "modalities": {"vitals": {"columns": ["hr", "bp"], "loader": "numeric"}}}
    if importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("fastparquet") is None:
        (tmp_path / "data.parquet").write_bytes(b"PAR1")
        with pytest.raises(ConfigError, match="pyarrow"):
            load_table(schema, base_dir=tmp_path)
    else:
        import pandas as pd

        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df["hr"] = df["hr"].astype(float)
        df["bp"] = pd.to_numeric(df["bp"].replace("", None))
        df.to_parquet(tmp_path / "data.parquet")
        out = load_table(schema, base_dir=tmp_path)
        assert sum(int((~out[k].present["vitals"]).sum()) for k in out) == 1  # the null bp cell


def test_table_missing_table_file(tmp_path):
    with pytest.raises(TableSchemaError, match="nope.csv"):
        load_table({"table": "nope.csv", "target": "y", "modalities": {"x": {"column": "x", "loader": "npy"}}},
                   base_dir=tmp_path)


def test_table_nan_targets(tmp_path):
    path, records = make_table(tmp_path, rows=8)
    for i, r in enumerate(records):
        r["score"] = str(i)
    records[2]["score"] = "NaN"
    records[5]["label"] = "nan"
    write_csv(path, records)
    mods = {"vitals": {"columns": ["hr", "bp"], "loader": "numeric"}}
    with pytest.raises(DataError, match=r"row 2 \(line 4\): target column 'score' is 'NaN'"):
        load_table({"table": "data.csv", "target": {"column": "score", "task": "regression"}, "modalities": mods},
                   base_dir=tmp_path)
    with pytest.raises(DataError, match=r"row 5 \(line 7\): target column 'label' is 'nan'"):
        load_table({"table": "data.csv", "target": "label", "modalities": mods}, base_dir=tmp_path)
