"""Built-in datasets (avmnist, avmnist-smil, basicmotions, easyvqa), the registry, the cache, ArrayDataset."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmfuse.batch import MultimodalBatch
from mmfuse.datasets import ArrayDataset, Gather, list_datasets, load_dataset
from mmfuse.datasets.base import MultimodalDataset
from mmfuse.datasets.loading import load_splits, save_splits
from mmfuse.errors import ConfigError, DataError, UnknownNameError


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mmfuse-cache")


@pytest.fixture(scope="module")
def av(cache):
    return load_dataset("avmnist", cache_dir=cache)


def _row_hashes(a: np.ndarray) -> set[str]:
    return {hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest() for r in a}


def test_registry_lists_builtins():
    assert {"avmnist", "avmnist-smil", "basicmotions", "easyvqa", "table"} <= set(list_datasets())


def test_avmnist_shapes_and_splits(av):
    assert list(av) == ["train", "val", "test"]
    assert [len(av[k]) for k in av] == [2100, 300, 600]
    tr = av["train"]
    assert isinstance(tr, MultimodalDataset)
    assert tr.modalities == ["audio", "image"] and tr.shapes == {"audio": (40, 13), "image": (1, 28, 28)}
    assert tr.task == "multiclass" and tr.num_classes == 10 and tr.class_names == [str(d) for d in range(10)]
    s = tr[0]
    assert s["image"].dtype == torch.float32 and s["audio"].dtype == torch.float32 and isinstance(s["target"], int)
    assert 0 <= float(tr.arrays["image"].min()) and float(tr.arrays["image"].max()) <= 1
    for k, n in (("train", 210), ("val", 30), ("test", 60)):
        assert set(av[k].describe()["class_counts"].values()) == {n}
    # audio standardised per coefficient on the real (unpadded) train frames: padding is exactly 0
    assert abs(float(tr.arrays["audio"].mean())) < 0.2
    # images and recordings never shared between splits
    for m in ("image", "audio"):
        hashes = [_row_hashes(av[k].arrays[m]) for k in av]
        assert sum(len(h) for h in hashes) == len(set().union(*hashes)) == 3000


def test_avmnist_collate_and_dataloader(av):
    loader = DataLoader(av["val"], batch_size=32, shuffle=False, collate_fn=av["val"].collate_fn)
    batch = next(iter(loader))
    assert isinstance(batch, MultimodalBatch)
    assert batch.inputs["image"].shape == (32, 1, 28, 28) and batch.inputs["audio"].shape == (32, 40, 13)
    assert batch.target.dtype == torch.int64 and batch.mask["audio"].all()
    fast = av["val"].batch(range(32))
    assert torch.equal(fast.inputs["audio"], batch.inputs["audio"]) and torch.equal(fast.target, batch.target)


def test_avmnist_deterministic_and_cached(av, cache):
    files = [f for f in os.listdir(cache) if f.startswith("avmnist-")]
    assert len(files) == 1 and files[0].endswith(".npz")
    assert not [f for f in os.listdir(cache) if "tmp" in f]
    again = load_dataset("avmnist", cache_dir=cache)  # from the cache
    fresh = load_dataset("avmnist", cache=False)  # rebuilt
    for k in av:
        for m in ("image", "audio"):
            assert np.array_equal(av[k].arrays[m], again[k].arrays[m])
            assert np.array_equal(av[k].arrays[m], fresh[k].arrays[m])
        assert np.array_equal(av[k].targets, fresh[k].targets)
    other = load_dataset("avmnist", seed=1, cache=False)
    assert not np.array_equal(other["train"].arrays["image"], av["train"].arrays["image"])


def test_avmnist_hard_and_variable_length(av):
    hard = load_dataset("avmnist", variant="hard", cache=False)
    assert hard["train"].shapes == av["train"].shapes and len(hard["test"]) == 600
    assert np.array_equal(hard["test"].targets, av["test"].targets)
    assert not np.allclose(hard["train"].arrays["image"], av["train"].arrays["image"])
    var = load_dataset("avmnist", audio_frames=None, cache=False)
    assert var["train"].shapes["audio"] == (None, 13)
    lengths = [len(a) for a in var["train"].arrays["audio"]]
    assert min(lengths) >= 6 and max(lengths) <= 92
    b = var["train"].collate_fn([var["train"][i] for i in range(8)])
    assert b.lengths["audio"].tolist() == lengths[:8]


def test_avmnist_smil_counts_and_eta():
    d = load_dataset("avmnist-smil", eta=0.2, cache=False)
    assert [len(d[k]) for k in ("train", "val", "test")] == [1050, 150, 450]
    tr = d["train"]
    assert np.bincount(tr.targets).tolist() == [105] * 10
    assert np.bincount(d["test"].targets).tolist() == [45] * 10
    keep = tr.present["audio"]
    assert np.bincount(tr.targets[keep], minlength=10).tolist() == [21] * 10
    assert tr.present["image"].all() and d["test"].present["audio"].all() and d["val"].present["audio"].all()
    missing = int(np.flatnonzero(~keep)[0])
    assert tr[missing]["audio"] is None and tr[missing]["image"] is not None
    assert np.abs(tr.arrays["audio"][~keep]).sum() == 0
    rows = list(range(missing, missing + 4))
    batch = tr.collate_fn([tr[i] for i in rows])
    assert batch.mask["audio"].tolist() == keep[rows].tolist()
    assert tr.eta == 0.2
    again = load_dataset("avmnist-smil", eta=0.2, cache=False)
    assert np.array_equal(again["train"].present["audio"], keep)
    full = load_dataset("avmnist-smil", cache=False)
    assert full["train"].present["audio"].all()
    # disjoint images across the splits
    hashes = [_row_hashes(d[k].arrays["image"]) for k in d]
    assert sum(len(h) for h in hashes) == len(set().union(*hashes))


def _mnist_digit_of(images: np.ndarray) -> np.ndarray:
    """The MNIST label of each image (clean variant: pixels / 255), found by its exact pixels."""
    from mmfuse.datasets._packaged import mnist_5k

    src, labels = mnist_5k()
    by_pixels: dict[bytes, set[int]] = {}
    for img, y in zip(src, labels):
        by_pixels.setdefault(img.tobytes(), set()).add(int(y))
    out = []
    for img in images:
        found = by_pixels[np.round(img[0] * 255).astype(np.uint8).tobytes()]
        assert len(found) == 1
        out.append(found.pop())
    return np.array(out)


@pytest.mark.parametrize("target", ["set", "sum"])
def test_avmnist_two_digit_targets(target):
    from mmfuse.datasets._packaged import fsdd_mfcc

    seqs, y_fsdd = fsdd_mfcc()
    d = load_dataset("avmnist", target=target, audio_frames=None, cache=False)
    digit = load_dataset("avmnist", audio_frames=None, cache=False)
    tr = d["train"]
    assert tr.task == ("multilabel" if target == "set" else "regression")
    assert tr.num_classes == (10 if target == "set" else 1)
    # the audio of row i is FSDD recording ids[i], standardised with the train frames' statistics
    frames = np.concatenate([seqs[i] for i in tr.ids])
    mean, std = frames.mean(0), frames.std(0)
    for k in d:
        ds = d[k]
        assert np.array_equal(np.sort(ds.ids), np.sort(digit[k].ids))  # same recordings per split as "digit"
        for j in (0, len(ds) // 2, len(ds) - 1):
            np.testing.assert_allclose(ds.arrays["audio"][j], (seqs[ds.ids[j]] - mean) / std, rtol=1e-5, atol=1e-5)
        a, b = y_fsdd[ds.ids], _mnist_digit_of(ds.arrays["image"])
        assert (a != b).all()  # image and audio always show different digits
        if target == "set":
            want = np.zeros((len(a), 10), dtype=np.float32)
            want[np.arange(len(a)), a] = want[np.arange(len(a)), b] = 1
            assert np.array_equal(ds.targets, want) and (ds.targets.sum(1) == 2).all()
        else:
            assert np.array_equal(ds.targets[:, 0], (a + b).astype(np.float32))
        # every audio digit is paired with each of the 9 other digits equally often (to within one)
        for c in range(10):
            counts = np.bincount(b[a == c], minlength=10)
            others = np.delete(counts, c)
            assert counts[c] == 0 and others.max() - others.min() <= 1
    # images are distinct and never shared between splits
    hashes = [_row_hashes(d[k].arrays["image"]) for k in d]
    assert sum(len(h) for h in hashes) == len(set().union(*hashes)) == 3000
    # the default target is the digit both modalities show
    assert np.array_equal(digit["test"].targets, y_fsdd[digit["test"].ids])
    assert np.array_equal(_mnist_digit_of(digit["test"].arrays["image"]), digit["test"].targets)
    again = load_dataset("avmnist", target=target, audio_frames=None, cache=False)
    assert np.array_equal(again["test"].targets, d["test"].targets)
    assert not np.array_equal(load_dataset("avmnist", target=target, seed=1, cache=False)["test"].ids, d["test"].ids)


def test_basicmotions():
    d = load_dataset("basicmotions", cache=False)
    assert [len(d[k]) for k in ("train", "val", "test")] == [32, 8, 40]
    tr = d["train"]
    assert tr.num_classes == 4 and tr.class_names == ["Standing", "Running", "Walking", "Badminton"]
    assert tr.shapes == {"accelerometer": (100, 3), "gyroscope": (100, 3)}
    assert np.allclose(tr.arrays["gyroscope"].mean(axis=(0, 1)), 0, atol=1e-4)
    assert np.allclose(tr.arrays["accelerometer"].std(axis=(0, 1)), 1, atol=1e-4)
    assert np.bincount(d["test"].targets).tolist() == [10] * 4
    other = load_dataset("basicmotions", seed=5, cache=False)
    assert not np.array_equal(other["val"].arrays["gyroscope"], d["val"].arrays["gyroscope"])


def test_easyvqa_tokens(cache):
    d = load_dataset("easyvqa", max_train=300, max_val=40, max_test=60, cache_dir=cache)
    assert [len(d[k]) for k in ("train", "val", "test")] == [300, 40, 60]
    tr = d["train"]
    assert tr.num_classes == 13 and len(tr.class_names) == 13 and "yes" in tr.class_names
    assert tr.shapes == {"image": (3, 32, 32), "question": (None,)}
    assert tr.vocab[:2] == ["<pad>", "<unk>"] and "shape" in tr.vocab
    s = tr[0]
    assert s["question"].dtype == torch.int64 and s["image"].dtype == torch.float32
    assert 0 <= float(s["image"].min()) and float(s["image"].max()) <= 1
    b = tr.collate_fn([tr[i] for i in range(6)])
    assert b.inputs["question"].shape[0] == 6 and (b.lengths["question"] > 0).all()
    # val questions are about images never seen in train
    assert not (_row_hashes(tr.arrays["image"].bank) & _row_hashes(d["val"].arrays["image"].bank))
    cached = load_dataset("easyvqa", max_train=300, max_val=40, max_test=60, cache_dir=cache)
    assert cached["train"].vocab == tr.vocab
    assert torch.equal(cached["test"][5]["image"], d["test"][5]["image"])
    assert torch.equal(cached["test"][5]["question"], d["test"][5]["question"])


@pytest.mark.skipif(not os.environ.get("MMFUSE_SLOW_TESTS"), reason="loads MiniLM (set MMFUSE_SLOW_TESTS=1)")
def test_easyvqa_minilm():
    d = load_dataset("easyvqa", text="minilm", max_train=20, max_val=5, max_test=5, cache=False)
    assert d["train"].shapes["question"] == (384,)
    assert np.isfinite(d["train"].arrays["question"]).all()


def test_load_dataset_errors():
    with pytest.raises(UnknownNameError, match="avmnist"):
        load_dataset("avmnsit")
    with pytest.raises(ConfigError, match="did you mean 'variant'"):
        load_dataset("avmnist", varient="hard")
    with pytest.raises(ConfigError, match="did you mean 'hard'"):
        load_dataset("avmnist", variant="hrad")
    with pytest.raises(ConfigError, match="did you mean 'sum'"):
        load_dataset("avmnist", target="summ")
    with pytest.raises(ConfigError, match="eta"):
        load_dataset("avmnist-smil", eta=1.5)
    with pytest.raises(ConfigError, match="image_pca_drop"):
        load_dataset("avmnist", variant="hard", hard_params={"image_pca_dorp": 3})
    with pytest.raises(ConfigError, match="text"):
        load_dataset("easyvqa", text="bert")
    with pytest.raises(ConfigError, match="seed"):
        load_dataset("basicmotions", seed="0")


# ---------------------------------------------------------------------- ArrayDataset
def _toy() -> ArrayDataset:
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(k + 1, 2)).astype(np.float32) for k in range(6)]
    seqs[2] = None
    bank = rng.integers(0, 255, size=(3, 1, 4, 4), dtype=np.uint8)
    return ArrayDataset(
        {"vec": rng.normal(size=(6, 3)), "seq": seqs, "img": Gather(bank, [0, 1, 2, 0, 1, 2], scale=1 / 255)},
        [0, 1, 2, 0, 1, 2], {"vec": np.array([1, 1, 1, 0, 1, 1], dtype=bool)},
        class_names=["a", "b", "c"], name="toy", attrs={"vocab": ["x", "y"]})


def test_array_dataset_roundtrip_and_views(tmp_path):
    ds = _toy()
    assert ds.shapes == {"img": (1, 4, 4), "seq": (None, 2), "vec": (3,)}
    assert ds.arrays["vec"].dtype == np.float32 and ds.vocab == ["x", "y"]
    assert ds[3]["vec"] is None and ds[2]["seq"] is None and ds[-1]["target"] == 2
    assert torch.allclose(ds[3]["img"], ds[0]["img"])
    path = tmp_path / "toy.npz"
    save_splits(path, {"train": ds, "val": ds.subset([1, 3])})
    back = load_splits(path)
    assert back["val"].ids.tolist() == [1, 3] and back["train"].vocab == ["x", "y"]
    for i in range(6):
        a, b = ds[i], back["train"][i]
        for k in a:
            assert (a[k] is None and b[k] is None) or (
                torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])))
    fast, slow = ds.batch(), ds.collate_fn([ds[i] for i in range(6)])
    for m in ds.modalities:
        assert torch.equal(fast.mask[m], slow.mask[m]) and torch.allclose(fast.inputs[m], slow.inputs[m])
    assert torch.equal(fast.lengths["seq"], slow.lengths["seq"])
    masked = ds.with_present({"img": np.array([0, 1, 1, 1, 1, 1], dtype=bool)})
    assert masked[0]["img"] is None and ds[0]["img"] is not None
    d = ds.describe()
    assert d["size"] == 6 and d["present"]["vec"] == 5 and d["class_counts"] == {"a": 2, "b": 2, "c": 2}


def test_array_dataset_rejects_bad_input():
    with pytest.raises(DataError, match="sample 1"):
        ArrayDataset({"x": np.zeros((2, 3))}, [0, 5], num_classes=3)
    with pytest.raises(DataError):
        ArrayDataset({"x": np.zeros((2, 3))}, [0, 1], {"x": np.array([1, 0])})
    with pytest.raises(ConfigError, match="multiclass"):
        ArrayDataset({"x": np.zeros((2, 3))}, [0, 1], task="multi-class")
    with pytest.raises(DataError, match="sample 1"):
        ArrayDataset({"x": np.zeros((2, 3))}, [0.5, np.nan], task="regression")


@pytest.mark.parametrize("value, message", [("x", "must be a number in \\[0, 1\\), got 'x'"), (1.5, "must be in \\[0, 1\\), got 1.5")])
def test_check_fraction_names_the_option(value, message):
    from mmfuse.datasets.base import check_fraction
    from mmfuse.errors import ConfigError

    assert check_fraction("0.25", "val_fraction", "dataset 'x'") == 0.25
    with pytest.raises(ConfigError, match="dataset 'x': val_fraction " + message):
        check_fraction(value, "val_fraction", "dataset 'x'")
