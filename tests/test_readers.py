"""Readers of the papers' standard formats, each on tiny files written here in exactly that format."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import yaml

from mmfuse.datasets import load_dataset
from mmfuse.datasets.readers import mmsa as mmsa_mod
from mmfuse.datasets.readers.safe_pickle import loads
from mmfuse.errors import ConfigError, DataError


# ---------------------------------------------------------------------------- MultiBench AV-MNIST
def _write_avmnist(root, n_train=12, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    data = {}
    for part, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 10
        img = rng.integers(0, 256, size=(n, 784)).astype(np.float32)  # MultiBench: [N, 784], 0..255
        aud = rng.integers(0, 256, size=(n, 112, 112)).astype(np.float32)
        img[:, 0] = y * 20  # a pixel carrying the digit, so one epoch can learn something
        np.save(root / "image" / f"{part}_data.npy", img)
        np.save(root / "audio" / f"{part}_data.npy", aud)
        np.save(root / f"{part}_labels.npy", y)
        data[part] = (img, aud, y)
    return data


def test_multibench_avmnist_splits_shapes_values(tmp_path):
    data = _write_avmnist(tmp_path)
    ds = load_dataset("multibench_avmnist", root=str(tmp_path), val_size=3)
    assert [len(ds[k]) for k in ("train", "val", "test")] == [9, 3, 4]
    assert ds["train"].shapes == {"audio": (1, 112, 112), "image": (1, 28, 28)}
    assert ds["train"].task == "multiclass" and ds["train"].num_classes == 10
    assert ds["train"].class_names == [str(d) for d in range(10)]
    # val = the LAST 3 training rows, in order; values divided by 255
    np.testing.assert_array_equal(ds["val"].ids, [9, 10, 11])
    b = ds["val"].batch()
    img, aud, y = data["train"]
    assert b.inputs["image"][1, 0, 2, 5].item() == pytest.approx(img[10, 2 * 28 + 5] / 255.0, rel=1e-6)
    assert b.inputs["audio"][2, 0, 100, 7].item() == pytest.approx(aud[11, 100, 7] / 255.0, rel=1e-6)
    np.testing.assert_array_equal(b.target.numpy(), y[9:])
    t = ds["test"].batch([3])
    assert t.inputs["image"][0, 0, 0, 0].item() == pytest.approx(data["test"][0][3, 0] / 255.0, rel=1e-6)
    # a small file with the default val_size falls back to the last N // 10 rows, with a warning
    with pytest.warns(UserWarning, match="last 1 rows"):
        small = load_dataset("multibench_avmnist", root=str(tmp_path))
    assert len(small["val"]) == 1 and small["val"].ids[0] == 11


def test_multibench_avmnist_malformed(tmp_path):
    _write_avmnist(tmp_path)
    np.save(tmp_path / "test_labels.npy", np.arange(3))
    with pytest.raises(DataError, match=r"test_labels\.npy has 3 labels but the image/audio files have 4"):
        load_dataset("multibench_avmnist", root=str(tmp_path), val_size=3)
    np.save(tmp_path / "test_labels.npy", np.array([object()] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"test_labels\.npy is not a plain numeric \.npy array"):
        load_dataset("multibench_avmnist", root=str(tmp_path), val_size=3)
    np.save(tmp_path / "image" / "train_data.npy", np.zeros((12, 100), np.float32))
    with pytest.raises(DataError, match=r"train_data\.npy has shape \(12, 100\); expected \[N, 784\]"):
        load_dataset("multibench_avmnist", root=str(tmp_path), val_size=3)
    with pytest.raises(ConfigError, match="option 'root' is required"):
        load_dataset("multibench_avmnist")


# ---------------------------------------------------------------------------- safe unpickler
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_safe_unpickler_admits_arrays_refuses_code():
    obj = {"a": np.arange(4.0).reshape(2, 2), "ids": np.array(["x", "y"], dtype=object), "s": {1, 2},
           "f": np.float32(1.5), "l": [1, (2, "z")]}
    for proto in (2, 4, 5):
        back = loads(pickle.dumps(obj, protocol=proto))
        np.testing.assert_array_equal(back["a"], obj["a"])
        assert back["s"] == {1, 2} and back["f"] == np.float32(1.5) and list(back["ids"]) == ["x", "y"]
    with pytest.raises(DataError, match=r"posix\.system|os\.system|nt\.system"):
        loads(pickle.dumps(_Evil()))
    import collections
    with pytest.raises(DataError, match=r"collections\.Counter"):
        loads(pickle.dumps(collections.Counter("aab")))


# ---------------------------------------------------------------------------- MMSA / MultiBench affect
def _mmsa_split(n, rng, t_len=5, a_len=7, v_len=6, aligned=False):
    a_len, v_len = (t_len, t_len) if aligned else (a_len, v_len)
    audio = rng.normal(size=(n, a_len, 3))
    audio[0, 1, 2] = -np.inf  # COVAREP's log of zero energy
    out = {
        "raw_text": np.array([f"clip {i}" for i in range(n)], dtype=object),
        "text": rng.normal(size=(n, t_len, 4)).astype(np.float32),
        "text_bert": np.stack([np.tile(np.arange(t_len), (n, 1)) + 100, np.ones((n, t_len)), np.zeros((n, t_len))],
                              axis=1).astype(np.float32),
        "audio": audio.astype(np.float32),
        "vision": rng.normal(size=(n, v_len, 2)).astype(np.float32),
        "regression_labels": np.linspace(-3, 3, n).astype(np.float32),
        "id": np.array([f"vid{i}$_$0" for i in range(n)], dtype=object),
    }
    if not aligned:
        out["audio_lengths"] = [a_len, 3] + [0] + [a_len] * (n - 3)
        out["vision_lengths"] = np.array([2] * n)
    return out


def _write_mmsa(path, aligned=False, n=(8, 4, 4)):
    rng = np.random.default_rng(1)
    data = {s: _mmsa_split(k, rng, aligned=aligned) for s, k in zip(("train", "valid", "test"), n)}
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
    return data


def test_mmsa_unaligned_values_lengths_inf_and_conversion(tmp_path, monkeypatch):
    path = tmp_path / "unaligned_50.pkl"
    data = _write_mmsa(path)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="replaced non-finite"):
        ds = load_dataset("mmsa", path=str(path), convert_dir=str(cache))
    tr = ds["train"]
    assert [len(ds[k]) for k in ("train", "val", "test")] == [8, 4, 4]
    assert tr.task == "regression" and tr.num_classes == 1 and tr.class_names == ["sentiment"]
    assert tr.shapes == {"audio": (None, 3), "text": (5, 4), "vision": (None, 2)}
    assert tr.nonfinite_replaced == {"audio": 1, "vision": 0}
    assert tr[0]["audio"][1, 2].item() == 0.0  # -inf -> 0
    assert tr[0]["audio"][0, 1].item() == pytest.approx(float(data["train"]["audio"][0, 0, 1]))
    assert tuple(tr[1]["audio"].shape) == (3, 3) and tuple(tr[1]["vision"].shape) == (2, 2)
    assert tr[2]["audio"] is None and not tr.present["audio"][2]  # length 0 -> absent
    assert tr.source_ids[int(tr.ids[5])] == "vid5$_$0"
    assert tr[7]["target"].item() == pytest.approx(3.0)
    conv = list((cache / "readers").glob("mmsa-*.npz"))
    assert len(conv) == 1 and tr.converted_file == str(conv[0])
    # second load: from the .npz, never unpickling again
    monkeypatch.setattr(mmsa_mod, "load_pickle", lambda *a, **k: (_ for _ in ()).throw(AssertionError("unpickled")))
    with pytest.warns(UserWarning):
        again = load_dataset("mmsa", path=str(path), convert_dir=str(cache), text="text_bert")
    assert again["train"].shapes["text"] == (5,) and int(again["train"][0]["text"][2]) == 102
    # the aligned reading of an unaligned file is refused
    with pytest.raises(DataError, match="audio has 7 steps but text has 5; the file is not word-aligned"):
        load_dataset("mmsa", path=str(path), convert_dir=str(cache), aligned=True)


def test_mmsa_aligned_multibench_labels_sha_and_refusal(tmp_path):
    path = tmp_path / "mosi_data.pkl"
    rng = np.random.default_rng(2)
    data = {s: _mmsa_split(k, rng, aligned=True) for s, k in (("train", 6), ("valid", 3), ("test", 3))}
    for part in data.values():  # MultiBench affect: 'labels' [N, 1, 1] instead of 'regression_labels'
        part["labels"] = part.pop("regression_labels").reshape(-1, 1, 1)
        del part["text_bert"]
    path.write_bytes(pickle.dumps(data, protocol=2))
    import hashlib
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.warns(UserWarning):
        ds = load_dataset("mmsa", path=str(path), aligned=True, sha256=digest, convert_dir=str(tmp_path / "c1"))
    assert ds["test"].shapes == {"audio": (5, 3), "text": (5, 4), "vision": (5, 2)}
    np.testing.assert_allclose(ds["val"].targets[:, 0], data["valid"]["labels"].reshape(-1))
    with pytest.raises(DataError, match="has SHA-256 .* not the expected 0000"):
        load_dataset("mmsa", path=str(path), sha256="0" * 64, convert_dir=str(tmp_path / "c2"))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"train": {"text": _Evil()}}))
    with pytest.raises(DataError, match=r"evil\.pkl: the pickle wants to load (posix|os|nt)\.system"):
        load_dataset("mmsa", path=str(evil), convert_dir=str(tmp_path / "c3"))
    bad = tmp_path / "nosplit.pkl"
    bad.write_bytes(pickle.dumps({"train": {}, "test": {}}))
    with pytest.raises(DataError, match=r"no 'val' split; the pickle's keys are \['test', 'train'\]"):
        load_dataset("mmsa", path=str(bad), convert_dir=str(tmp_path / "c4"))


# ---------------------------------------------------------------------------- MM-IMDb
def _write_mmimdb(path, n=12, fuel=True):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(3)
    genres = (rng.random((n, 23)) < 0.3).astype(np.int8)
    feats = rng.normal(size=(n, 6)).astype(np.float32)
    images = rng.integers(0, 256, size=(n, 3, 4, 2)).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f["features"] = feats
        f["images"] = images
        f["vgg_features"] = rng.normal(size=(n, 5)).astype(np.float32)
        f["genres"] = genres
        f["imdb_ids"] = np.array([f"tt{i:07d}" for i in range(n)], dtype="S9")
        if fuel:  # Fuel's H5PYDataset split table
            dt = np.dtype([("split", "S5"), ("source", "S12"), ("start", np.int64), ("stop", np.int64),
                           ("available", np.bool_), ("comment", "S1")])
            rows = []
            for split, (a, b) in (("train", (0, 7)), ("dev", (7, 9)), ("test", (9, n))):
                for src in ("features", "genres", "images"):
                    rows.append((split, src, a, b, True, "."))
            f.attrs["split"] = np.array(rows, dtype=dt)
    return feats, images, genres


def test_mmimdb_fuel_split_and_ranges(tmp_path):
    path = tmp_path / "multimodal_imdb.hdf5"
    feats, images, genres = _write_mmimdb(path)
    ds = load_dataset("mmimdb", path=str(path))
    assert [len(ds[k]) for k in ("train", "val", "test")] == [7, 2, 3]
    te = ds["test"]
    assert te.task == "multilabel" and te.num_classes == 23 and te.class_names[0] == "Drama"
    assert te.shapes == {"image": (3, 4, 2), "text": (6,)}
    b = te.batch([1])
    assert b.inputs["image"][0, 2, 3, 1].item() == pytest.approx(images[10, 2, 3, 1] / 255.0, rel=1e-6)
    np.testing.assert_array_equal(b.inputs["text"][0].numpy(), feats[10])
    np.testing.assert_array_equal(b.target[0].numpy(), genres[10])
    assert te.imdb_ids[int(te.ids[1])] == "tt0000010"
    vgg = load_dataset("mmimdb", path=str(path), image="vgg_features",
                       ranges={"train": [0, 6], "val": [6, 8], "test": [8, 12]})
    assert len(vgg["train"]) == 6 and vgg["train"].shapes["image"] == (5,)
    with pytest.raises(DataError, match=r"split 'train' = rows \[0, 15552\) but the file has 12 rows"):
        _write_mmimdb(path, fuel=False)
        load_dataset("mmimdb", path=str(path))
    with pytest.raises(DataError, match="has no dataset 'sequences'"):
        load_dataset("mmimdb", path=str(path), text="sequences")


# ---------------------------------------------------------------------------- NTU RGB+D skeletons
def _skeleton_text(frames):
    """frames: list of lists of (body_id, joints [25, 12])."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for bid, joints in bodies:
            lines.append(f"{bid} 0 1 2 1 2 0 0.1 -0.2 2")
            lines.append("25")
            lines.extend(" ".join(f"{v:.6g}" for v in j) for j in joints)
    return "\n".join(lines) + "\n"


def _joints(value):
    j = np.zeros((25, 12))
    j[:, 0] = value + np.arange(25) * 0.01
    j[:, 1] = -value
    j[:, 2] = 3.0
    j[:, 11] = 2
    return j


def _write_ntu(root):
    clips = {  # name -> (subject, camera, action)
        "S001C001P001R001A001": None, "S001C002P001R001A002": None, "S001C003P003R001A001": None,
        "S001C002P003R002A002": None, "S001C001P002R001A002": None, "S001C003P002R001A001": None,
    }
    for k, name in enumerate(clips):
        frames = [[("72057594037931101", _joints(k + t / 10))] for t in range(3)]
        if k == 0:  # a second person in frames 1-2, and a third seen once
            frames[1].append(("72057594037931102", _joints(50)))
            frames[2].append(("72057594037931102", _joints(51)))
            frames[2].append(("72057594037931999", _joints(99)))
        (root / f"{name}.skeleton").write_text(_skeleton_text(frames))
    (root / "S001C001P001R001A003.skeleton").write_text("2\n0\n0\n")  # no body: a "missing skeleton"
    (root / "missing.txt").write_text("S001C001P001R001A003\n")


def test_ntu_skeleton_parse_splits_missing(tmp_path):
    _write_ntu(tmp_path)
    with pytest.raises(DataError, match=r"S001C001P001R001A003\.skeleton has no body in any of its 2 frames"):
        load_dataset("ntu_skeleton", root=str(tmp_path))
    with pytest.warns(UserWarning, match="skipped 1 clip"):
        ds = load_dataset("ntu_skeleton", root=str(tmp_path), missing_skeletons=str(tmp_path / "missing.txt"),
                          max_frames=4, val_fraction=0.0)
    tr, te = ds["train"], ds["test"]
    files = tr.files
    assert len(files) == 6 and tr.skipped_missing == ["S001C001P001R001A003"]
    # cross-subject: P001, P002 train (paper's list), P003 test
    assert sorted(files[i] for i in tr.ids) == sorted(f for f in files if "P003" not in f)
    assert sorted(files[i] for i in te.ids) == sorted(f for f in files if "P003" in f)
    assert tr.shapes == {"skeleton": (4, 150)} and tr.num_classes == 60 and tr.class_names[1] == "A002"
    i = int(np.flatnonzero(np.array([files[j] for j in tr.ids]) == "S001C001P001R001A001")[0])
    x = tr[i]["skeleton"].numpy().reshape(4, 2, 25, 3)
    k = sorted(["S001C001P001R001A001", "S001C002P001R001A002", "S001C003P003R001A001", "S001C002P003R002A002",
                "S001C001P002R001A002", "S001C003P002R001A001"]).index("S001C001P001R001A001")
    assert tr[i]["target"] == 0
    assert x[1, 0, 3, 0] == pytest.approx(k + 0.1 + 0.03, abs=1e-5)  # body 1, joint 3, x
    assert x[2, 1, 0, 1] == pytest.approx(-51.0)  # the second-most-seen body in slot 1
    assert x[0, 1].sum() == 0 and (x[3] == 0).all()  # absent body / padded frame
    assert not np.isclose(x, 99).any()  # the third body, seen once, dropped
    xv = load_dataset("ntu_skeleton", root=str(tmp_path), benchmark="xview", val_fraction=0.0,
                      missing_skeletons=["S001C001P001R001A003.skeleton"], max_frames=None)
    assert sorted(xv["test"].files[i][4:8] for i in xv["test"].ids) == ["C001", "C001"]
    assert xv["train"].shapes == {"skeleton": (None, 150)} and xv["train"][0]["skeleton"].shape[0] == 3


def test_ntu_skeleton_malformed(tmp_path):
    text = _skeleton_text([[("1", _joints(0))]]).replace("\n25\n", "\n24\n", 1)
    (tmp_path / "S001C001P001R001A001.skeleton").write_text(text)
    with pytest.raises(DataError, match=r"A001\.skeleton: frame 0, body 0 has 24 joints"):
        load_dataset("ntu_skeleton", root=str(tmp_path))
    (tmp_path / "S001C001P001R001A001.skeleton").write_text("3\n1\n")
    with pytest.raises(DataError, match="the file ends inside frame 0, body 0: the 10 body values"):
        load_dataset("ntu_skeleton", root=str(tmp_path))


# ---------------------------------------------------------------------------- CLI: mmfuse train on the small files
@pytest.mark.parametrize("kind", ["multibench_avmnist", "mmsa", "mmimdb", "ntu_skeleton", "csd"])
def test_cli_train_on_reader_files(tmp_path, kind, capsys):
    from mmfuse.cli import main

    if kind == "multibench_avmnist":
        _write_avmnist(tmp_path / "avmnist", n_train=24, n_test=8)
        data = {"name": kind, "options": {"root": str(tmp_path / "avmnist"), "val_size": 8}, "batch_size": 16}
        encoders = {"image": {"name": "cnn2d", "options": {"channels": [2]}},
                    "audio": {"name": "cnn2d", "options": {"channels": [2]}}}
    elif kind == "mmimdb":
        _write_mmimdb(tmp_path / "multimodal_imdb.hdf5", n=20)
        data = {"name": kind, "options": {"path": str(tmp_path / "multimodal_imdb.hdf5")}, "batch_size": 8}
        encoders = {"image": {"name": "cnn2d", "options": {"channels": [2]}}}
    elif kind == "ntu_skeleton":
        _write_ntu(tmp_path)
        data = {"name": kind, "options": {"root": str(tmp_path), "max_frames": 4, "val_fraction": 0.5,
                                          "missing_skeletons": ["S001C001P001R001A003"]}, "batch_size": 4}
        encoders = {}
    elif kind == "csd":
        _write_csd_set(tmp_path)
        data = {"name": kind, "options": {"sequences": {"audio": str(tmp_path / "covarep.csd"),
                                                        "text": str(tmp_path / "words.csd")},
                                          "labels": str(tmp_path / "labels.csd"), "max_words": 3,
                                          "splits": {"train": ["vidA", "vidB"], "val": ["vidC"], "test": ["vidD"]}},
                "batch_size": 4}
        encoders = {"text": {"name": "gru", "options": {"vocab_size": 4, "hidden": 4}}}
    else:
        _write_mmsa(tmp_path / "unaligned_50.pkl", n=(16, 4, 4))
        data = {"name": kind, "options": {"path": str(tmp_path / "unaligned_50.pkl"),
                                          "convert_dir": str(tmp_path / "conv")}, "batch_size": 8}
        encoders = {}
    cfg = {"data": data, "model": {"encoders": encoders, "fusion": {"name": "concat"}},
           "training": {"max_epochs": 1, "progress": False}, "output_dir": str(tmp_path / "run")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "config.yaml")]) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    if kind == "mmsa":  # MMSA's sentiment metrics are added for this dataset
        assert {"acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5", "mae"} <= set(metrics["test"]["metrics"])
    elif kind == "mmimdb":
        assert {"f1_micro", "f1_macro", "f1_samples"} <= set(metrics["test"]["metrics"])
    elif kind == "csd":
        assert "acc2_has0" in metrics["test"]["metrics"]
    else:
        assert 0.0 <= metrics["test"]["metrics"]["accuracy"] <= 1.0
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()


def test_mosi_metrics_hand_computed():
    from mmfuse.evaluation.metrics import mosi_metrics

    p = np.array([2.6, -0.4, 0.0, 1.4, -2.5])
    y = np.array([3.0, 0.0, -1.0, 1.6, -2.2])
    m = mosi_metrics(p, y)
    assert m["mae"] == pytest.approx(2.3 / 5)
    assert m["acc7"] == pytest.approx(3 / 5)  # rounded: [3,-0,0,1,-2] vs [3,0,-1,2,-2]
    assert m["acc5"] == pytest.approx(3 / 5)
    assert m["acc2_has0"] == pytest.approx(3 / 5)  # >=0: [T,F,T,T,F] vs [T,T,F,T,F]
    assert m["f1_has0"] == pytest.approx((3 * 2 / 3 + 2 * 0.5) / 5)  # weighted F1: class T 2/3, class F 1/2
    assert m["acc2_non0"] == 1.0 and m["f1_non0"] == 1.0  # label-0 clip dropped; >0: [T,F,T,F] both
    pc, yc = p - p.mean(), y - y.mean()
    assert m["corr"] == pytest.approx((pc * yc).sum() / np.sqrt((pc ** 2).sum() * (yc ** 2).sum()))


# ---------------------------------------------------------------------------- CMU-MultimodalSDK .csd
def _write_csd(path, root_name, data):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:  # mmsdk write_CSD layout
        root = f.create_group(root_name)
        d = root.create_group("data")
        for vid, (feats, iv) in data.items():
            g = d.create_group(vid)
            g.create_dataset("features", data=feats)
            g.create_dataset("intervals", data=np.asarray(iv, dtype=np.float64))
        meta = root.create_group("metadata")
        meta.create_dataset("root name", (1,), dtype=h5py.special_dtype(vlen=str))
        meta["root name"][0] = root_name


def _write_csd_set(tmp_path):
    words, audio, labels = {}, {}, {}
    for k, vid in enumerate(["vidA", "vidB", "vidC", "vidD"]):
        # words: "hello" [0,1), silence [1,1.5), "world" [1.5,2.5), "again" [3,4)
        words[vid] = (np.array([[b"hello"], [b"sp"], [b"world"], [b"again"]]), [[0, 1], [1, 1.5], [1.5, 2.5], [3, 4]])
        # audio at 0.5 s steps, value = 10 * row + video
        t = np.arange(0, 3, 0.5)
        audio[vid] = (np.stack([10.0 * np.arange(len(t)) + k, np.ones(len(t))], 1), np.stack([t, t + 0.5], 1))
        labels[vid] = (np.array([[1.5], [-2.0 + k]]), [[0, 2.5], [2.8, 4.2]])
    _write_csd(tmp_path / "words.csd", "words", words)
    _write_csd(tmp_path / "covarep.csd", "COVAREP", audio)
    _write_csd(tmp_path / "labels.csd", "Opinion Segment Labels", labels)
    return audio


def test_csd_word_alignment_and_segments(tmp_path):
    audio = _write_csd_set(tmp_path)
    seqs = {"text": str(tmp_path / "words.csd"), "audio": str(tmp_path / "covarep.csd")}
    ds = load_dataset("csd", sequences=seqs, labels=str(tmp_path / "labels.csd"), max_words=3,
                      splits={"train": ["vidA", "vidB"], "val": ["vidC"], "test": ["vidD"]})
    tr = ds["train"]
    assert [len(ds[k]) for k in ("train", "val", "test")] == [4, 2, 2]
    assert tr.vocab == ["again", "hello", "world"] and tr.shapes == {"audio": (3, 2), "text": (3,)}
    s0 = tr[0]  # vidA segment 0 [0, 2.5): hello, world (silence dropped), padded to 3
    assert s0["text"].tolist() == [2, 3, 0] and s0["target"].item() == pytest.approx(1.5)
    # hello [0,1) overlaps audio rows [0,.5),[.5,1) -> mean(0, 10) = 5; world [1.5,2.5) -> rows 3,4 -> 35
    np.testing.assert_allclose(s0["audio"][:, 0].numpy(), [5.0, 35.0, 0.0])
    s1 = tr[1]  # vidA segment 1 [2.8, 4.2): "again" [3,4) overlaps no audio row (audio ends at 3) -> zeros
    assert s1["text"].tolist() == [1, 0, 0] and s1["audio"].abs().sum().item() == 0.0
    assert tr.unaligned_words == {"audio": 4}  # "again" in each of the 4 videos
    te = ds["test"]
    assert te.segment_ids[int(te.ids[1])] == "vidD[1]" and te[1]["target"].item() == pytest.approx(1.0)
    assert te[0]["audio"][0, 0].item() == pytest.approx(5.0 + 3)  # vidD offset k = 3
    del audio["vidC"]
    _write_csd(tmp_path / "covarep.csd", "COVAREP", audio)
    with pytest.raises(DataError, match=r"covarep\.csd has no video 'vidC'"):
        load_dataset("csd", sequences=seqs, labels=str(tmp_path / "labels.csd"))


def test_hdf5_readers_name_a_malformed_file(tmp_path):
    pytest.importorskip("h5py")
    bad = tmp_path / "multimodal_imdb.hdf5"
    bad.write_text("not hdf5")
    with pytest.raises(DataError, match=r"multimodal_imdb\.hdf5 is not a readable HDF5 file"):
        load_dataset("mmimdb", path=str(bad))
    import h5py
    with h5py.File(tmp_path / "flat.csd", "w") as f:
        f["features"] = np.zeros((2, 2))
    _write_csd(tmp_path / "labels.csd", "labels", {"v": (np.zeros((1, 1)), [[0, 1]])})
    with pytest.raises(DataError, match=r"flat\.csd must hold one group '<root name>/data'"):
        load_dataset("csd", sequences={"text": str(tmp_path / "flat.csd")}, labels=str(tmp_path / "labels.csd"))
    _write_csd(tmp_path / "w.csd", "w", {"v": (np.zeros((3, 2)), [[0, 1], [1, 2]])})
    with pytest.raises(DataError, match=r"w\.csd, video 'v': intervals have shape \(2, 2\) for 3 feature rows"):
        load_dataset("csd", sequences={"text": str(tmp_path / "w.csd")}, labels=str(tmp_path / "labels.csd"))
