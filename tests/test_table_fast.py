"""The fast table loader: one open per file, preallocated columns with index-view splits, the memory-mapped
decoded cache (hits, invalidation, corruption) and the streaming mode."""

import os
import time
import warnings
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mmfuse.datasets.streaming import StreamColumn
from mmfuse.datasets.table import load_table
from mmfuse.errors import DataError

N = 12


def _write(root, n=N, size=8):
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    lines = ["img,x1,x2,label,split"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        split = "train" if i < 8 else ("val" if i < 10 else "test")
        cell = "" if i == 3 else f"img/{i}.png"  # row 3: image absent
        lines.append(f"{cell},{rng.normal():.5f},{rng.normal() * 3 + 1:.5f},{'ab'[i % 2]},{split}")
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    (root / "s.yaml").write_text("table: t.csv\ntarget: label\nsplit: split\nmodalities:\n"
                                 "  img: {column: img, loader: image}\n  num: {columns: [x1, x2], loader: numeric}\n")
    return root / "s.yaml"


@pytest.fixture
def opens(monkeypatch):
    count: Counter = Counter()
    real = Image.open

    def counting(fp, *a, **k):
        count[os.path.basename(str(fp))] += 1
        return real(fp, *a, **k)

    monkeypatch.setattr(Image, "open", counting)
    return count


def _dense(ds, m):
    return np.asarray(ds.arrays[m])


def test_one_open_per_file_and_identical_to_plain_decoding(tmp_path, opens):
    splits = load_table(_write(tmp_path), cache=False, stream=False)
    assert set(opens.values()) == {1} and len(opens) == N - 1  # every image opened exactly once
    # oracle: the previous loader's per-file decoding (convert, float32 / 255, CHW) and train-only statistics
    rows = {"train": range(8), "val": range(8, 10), "test": range(10, 12)}
    import csv

    table = list(csv.DictReader(open(tmp_path / "t.csv")))
    x = np.array([[float(r["x1"]), float(r["x2"])] for r in table], dtype=np.float32)
    mean, std = x[:8].mean(0), x[:8].std(0)
    for k, ds in splits.items():
        img = _dense(ds, "img")
        for j, i in enumerate(rows[k]):
            if i == 3:
                assert not ds.present["img"][j] and not img[j].any()
                continue
            with Image.open(tmp_path / "img" / f"{i}.png") as im:
                ref = (np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).transpose(2, 0, 1)
            assert np.array_equal(img[j], ref)
        ref_num = ((x[list(rows[k])] - mean) / std).astype(np.float32)
        assert np.array_equal(_dense(ds, "num"), ref_num)


def test_splits_are_views_of_one_array(tmp_path):
    splits = load_table(_write(tmp_path), cache=False, stream=False)
    tr, va, te = (splits[k].arrays["img"] for k in ("train", "val", "test"))
    assert np.shares_memory(tr.bank, va.bank) and np.shares_memory(tr.bank, te.bank)
    assert tr.bank.shape[0] == N  # one array of all rows; each split holds an index array
    assert list(te.rows) == [10, 11]


def test_cache_hit_invalidation_and_corruption(tmp_path, opens):
    schema = _write(tmp_path)
    cdir = tmp_path / "cache"
    first = load_table(schema, cache_dir=cdir, stream=False)
    assert sum(opens.values()) == N - 1
    opens.clear()
    second = load_table(schema, cache_dir=cdir, stream=False)
    assert sum(opens.values()) == 0  # memory-mapped: no file decoded
    for k in first:
        assert np.array_equal(_dense(first[k], "img"), _dense(second[k], "img"))
    assert isinstance(second["train"].arrays["img"].bank, np.ndarray)
    # touching one file (mtime) invalidates the column
    st = os.stat(tmp_path / "img" / "5.png")
    os.utime(tmp_path / "img" / "5.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    opens.clear()
    load_table(schema, cache_dir=cdir, stream=False)
    assert sum(opens.values()) == N - 1
    # new content (and size) of one file: the new pixels are loaded
    Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(tmp_path / "img" / "0.png")
    third = _dense(load_table(schema, cache_dir=cdir, stream=False)["train"], "img")
    assert np.allclose(third[0], 7 / 255.0)
    # a truncated cache file (a new file: truncating a mapped file in place would fault its readers)
    vals = [p for p in cdir.rglob("values.npy")]
    assert vals
    for p in vals:
        head = p.read_bytes()[:200]
        p.unlink()
        p.write_bytes(head)
    opens.clear()
    with pytest.warns(UserWarning, match="corrupt or incomplete"):
        fourth = load_table(schema, cache_dir=cdir, stream=False)
    assert sum(opens.values()) == N - 1
    assert np.array_equal(_dense(fourth["train"], "img"), third)
    opens.clear()
    load_table(schema, cache_dir=cdir, stream=False)
    assert sum(opens.values()) == 0


def test_streaming_equals_in_memory_and_auto_choice(tmp_path):
    schema = _write(tmp_path)
    mem = load_table(schema, cache=False, stream=False)
    st = load_table(schema, cache=False, stream=True)
    assert isinstance(st["train"].arrays["img"], StreamColumn)
    for k in mem:
        assert np.array_equal(_dense(mem[k], "img"), _dense(st[k], "img"))
        assert np.array_equal(mem[k].present["img"], st[k].present["img"])
        b1, b2 = mem[k].batch(), st[k].batch()
        assert all(np.array_equal(b1.inputs[m].numpy(), b2.inputs[m].numpy()) for m in b1.inputs)
    auto_small = load_table(schema, cache=False, stream="auto", stream_threshold_gb=1e-9)
    assert isinstance(auto_small["test"].arrays["img"], StreamColumn)
    auto_big = load_table(schema, cache=False, stream="auto", stream_threshold_gb=10)
    assert not isinstance(auto_big["test"].arrays["img"], StreamColumn)


def test_decode_error_named_in_the_same_pass(tmp_path, opens):
    schema = _write(tmp_path)
    p = tmp_path / "img" / "6.png"
    p.write_bytes(p.read_bytes()[:60])  # header intact, data truncated
    with pytest.raises(DataError) as ei:
        load_table(schema, cache=False, stream=False)
    msg = str(ei.value)
    assert "row 6 (line 8)" in msg and "'img'" in msg and "6.png" in msg
    assert opens["6.png"] == 1


def test_streaming_training_gives_the_same_model(tmp_path):
    import torch

    from mmfuse.config import parse_config
    from mmfuse.training.fit import fit

    schema = _write(tmp_path)
    results = []
    for stream in (False, True):
        raw = {"data": {"name": "table", "options": {"schema": str(schema), "stream": stream, "cache": False},
                        "batch_size": 4},
               "model": {"strategy": "feature", "encoders": {"img": {"name": "mlp", "options": {"hidden": [4]}},
                                                              "num": {"name": "mlp", "options": {"hidden": [4]}}},
                         "fusion": {"name": "concat"}},
               "training": {"max_epochs": 1}, "output_dir": str(tmp_path / f"run{stream}"), "seed": 3}
        results.append(fit(parse_config(raw), save=False, progress=False))
    a, b = (r.model.state_dict() for r in results)
    assert all(torch.equal(a[k], b[k]) for k in a)  # identical weights after the same seeded training
    assert results[0].test == results[1].test


def test_loading_options_are_validated_with_dotted_paths():
    from mmfuse.config import parse_config
    from mmfuse.errors import ConfigError

    raw = {"data": {"name": "table", "options": {"schema": "x.yaml", "stream": "yes", "stream_threshold_gb": -1}}}
    with pytest.raises(ConfigError) as ei:
        parse_config(raw)
    assert "data.options.stream: got 'yes'" in str(ei.value)
    assert "data.options.stream_threshold_gb: got -1" in str(ei.value)


def _write_npy(root, n=40, shape=(48, 48), dtype=np.float32):
    rng = np.random.default_rng(1)
    (root / "x").mkdir()
    lines = ["x,label,split"]
    for i in range(n):
        np.save(root / "x" / f"{i}.npy", rng.standard_normal(shape).astype(dtype) if dtype != np.int32
                else rng.integers(0, 9, shape).astype(dtype))
        lines.append(f"{'' if i == 2 else f'x/{i}.npy'},{'ab'[i % 2]},{'train' if i < 30 else 'test'}")
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    (root / "s.yaml").write_text("table: t.csv\ntarget: label\nsplit: split\nmodalities:\n"
                                 "  x: {column: x, loader: npy}\n")
    return root / "s.yaml"


@pytest.mark.parametrize("dtype,want", [(np.float32, np.float32), (np.float64, np.float32), (np.int32, np.int64)])
def test_npy_column_is_one_bank_shared_by_the_splits(tmp_path, dtype, want):
    import tracemalloc

    schema = _write_npy(tmp_path, dtype=dtype)
    load_table(schema, cache=False, stream=False)  # imports and first-call set-up outside the measurement
    tracemalloc.start()
    splits = load_table(schema, cache=False, stream=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tr, te = splits["train"].arrays["x"], splits["test"].arrays["x"]
    bank = tr.bank
    assert bank.dtype == want and bank.shape == (40, 48, 48)
    assert np.shares_memory(bank, te.bank)  # index views of one array, no per-split copy
    # oracle: np.load of each file, cast to the column's dtype; the absent row is zeros
    for i in range(40):
        ref = np.zeros((48, 48), want) if i == 2 else np.load(tmp_path / "x" / f"{i}.npy").astype(want)
        assert np.array_equal(bank[i], ref)
    if dtype == np.float32:  # read straight into the bank: no list of per-file arrays, no stacking copy
        assert peak < bank.nbytes * 1.6, (peak, bank.nbytes)
    # cached: the bank is the memory map itself, shared by the splits
    c1 = load_table(schema, cache_dir=tmp_path / "c", stream=False)
    c2 = load_table(schema, cache_dir=tmp_path / "c", stream=False)
    for c in (c1, c2):
        b = c["train"].arrays["x"].bank
        assert np.shares_memory(b, c["test"].arrays["x"].bank) and np.array_equal(b, bank)
    b, chain = c2["train"].arrays["x"].bank, []
    while b is not None:
        chain.append(type(b).__name__)
        b = getattr(b, "base", None)
    assert "memmap" in chain or "mmap" in chain, chain  # a view of the cache's memory map, not a copy in RAM


def test_npy_nan_named_by_row(tmp_path):
    schema = _write_npy(tmp_path, n=6)
    a = np.ones((48, 48), np.float32)
    a[3, 3] = np.nan
    np.save(tmp_path / "x" / "4.npy", a)
    with pytest.raises(DataError, match=r"row 4 \(line 6\).*'x'.*4\.npy.*NaN"):
        load_table(schema, cache=False, stream=False)


def test_unusable_cache_dir_warns_and_loads_without_cache(tmp_path):
    schema = _write(tmp_path)
    ref = load_table(schema, cache=False, stream=False)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match=r"data\.options\.cache_dir"):
        got = load_table(schema, cache_dir=blocker, stream=False)
    for k in ref:
        assert np.array_equal(_dense(ref[k], "img"), _dense(got[k], "img"))
    assert blocker.read_text() == "x"


def test_stale_tmp_folders_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    from mmfuse.datasets.table_cache import ColumnCache

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid whose process is gone
    root = tmp_path / "c"
    dead = root / f".abc.{p.pid}.1234abcd.tmp"
    live = root / f".abc.{os.getpid()}.1234abcd.tmp"
    other = root / "keepme"
    for d in (dead, live, other):
        d.mkdir(parents=True)
        (d / "values.npy").write_bytes(b"x")
    ColumnCache(root)
    assert not dead.exists() and live.exists() and other.exists()


class _Failing:
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise DataError(f"row {i}, column 'img': cannot read image file img/{i}.png (truncated)")


def test_worker_error_shows_only_the_original_message():
    from torch.utils.data import DataLoader

    from mmfuse.cli import _original_message

    with pytest.raises(DataError) as ei:
        next(iter(DataLoader(_Failing(), batch_size=1, num_workers=1)))
    assert "Original Traceback" in str(ei.value)  # what torch re-raises in the parent
    msg = _original_message(ei.value)
    assert msg.startswith("row 0, column 'img': cannot read image file img/0.png") and "Traceback" not in msg


def test_streamed_paths_are_one_numpy_array(tmp_path):
    schema = _write(tmp_path)
    col = load_table(schema, cache=False, stream=True)["train"].arrays["img"]
    assert isinstance(col.cells, np.ndarray) and col.cells.dtype.kind == "S"
    assert col.path(3) is None and col.path(5) == str(tmp_path / "img" / "5.png")


def test_audio_rows_normalised_into_one_array_equal_per_row_transform(tmp_path):
    import soundfile as sf

    (tmp_path / "a").mkdir()
    rng = np.random.default_rng(2)
    lines = ["a,label,split"]
    for i in range(8):  # different lengths: cropped (long) and zero-padded (short) rows
        sf.write(str(tmp_path / "a" / f"{i}.wav"), rng.standard_normal(800 + 400 * i).astype(np.float32), 8000)
        lines.append(f"{'' if i == 1 else f'a/{i}.wav'},{'ab'[i % 2]},{'train' if i < 6 else 'test'}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "s.yaml").write_text("table: t.csv\ntarget: label\nsplit: split\nmodalities:\n"
                                     "  a: {column: a, loader: audio, sample_rate: 8000, max_frames: 20}\n")
    splits = load_table(tmp_path / "s.yaml", cache=False, stream=False)
    ld = splits["train"].pipeline.loaders["a"]
    col = splits["train"].arrays["a"]
    assert col.bank.dtype == np.float32 and col.bank.shape == (8, 20, 13)
    for i in range(8):  # oracle: the per-row transform (features recomputed from the file, float64, cast once)
        ref = np.zeros((20, 13), np.float32) if i == 1 else ld.transform_cell(str(tmp_path / "a" / f"{i}.wav"))
        assert np.array_equal(col.bank[i], ref)
    assert np.shares_memory(col.bank, splits["test"].arrays["a"].bank)


def test_cache_write_failure_mid_load_warns_and_keeps_the_values(tmp_path, monkeypatch):
    schema = _write(tmp_path)
    ref = load_table(schema, cache=False, stream=False)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "open_memmap", full_disk)
    with pytest.warns(UserWarning, match=r"data\.options\.cache_dir.*No space left"):
        got = load_table(schema, cache_dir=tmp_path / "c", stream=False)
    for k in ref:
        assert np.array_equal(_dense(ref[k], "img"), _dense(got[k], "img"))
    assert not [p for p in (tmp_path / "c").iterdir()]  # no partial folder left behind


def test_streaming_opens_each_file_once_and_fits_from_the_headers(tmp_path, opens):
    # the header check is the only open: fitting the image size reuses the header sizes (before: a second open of
    # every training file); the fitted size is the files' (8x8), so rows decode to the in-memory arrays
    splits = load_table(_write(tmp_path), cache=False, stream=True)
    assert set(opens.values()) == {1} and len(opens) == N - 1
    assert splits["train"].arrays["img"].shape[1:] == (3, 8, 8)
    mem = load_table(tmp_path / "s.yaml", cache=False, stream=False)
    for k in ("train", "test"):
        np.testing.assert_array_equal(_dense(splits[k], "img"), _dense(mem[k], "img"))
        np.testing.assert_array_equal(_dense(splits[k], "num"), _dense(mem[k], "num"))


def test_csv_cells_round_trip_exactly(tmp_path, monkeypatch):
    # the CSV columns are held as UTF-8 bytes: non-ASCII text, inner / outer spaces and quoted commas come back as
    # pandas read them (labels are class names; a path with a space and an accent is found); read and packed in
    # chunks of 4 rows here, so rows after a chunk boundary keep their numbers
    from mmfuse.datasets import columns, table

    monkeypatch.setattr(table, "CSV_CHUNK", 4)
    monkeypatch.setattr(columns, "PATH_CHUNK", 4)
    (tmp_path / "d é").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "d é" / "a b.png")
    labels = ["café", '"x, y"', " naïve ", "café", '"x, y"', " naïve "]
    lines = ["img,label,split"] + [f"d é/a b.png,{lab},{'train' if i < 3 else 'test'}" for i, lab in enumerate(labels)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "s.yaml").write_text("table: t.csv\ntarget: label\nsplit: split\nmodalities:\n"
                                     "  img: {column: img, loader: image}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for stream in (True, False):
            s = load_table(tmp_path / "s.yaml", cache=False, stream=stream)
            assert sorted(s["train"].class_names) == sorted(["café", "x, y", "naïve"])
            assert list(s["test"].ids) == [3, 4, 5] and list(s["test"].row_ids) == list(range(6))
            np.testing.assert_array_equal(s["test"].targets, [s["test"].class_names.index(v) for v in
                                                              ["café", "x, y", "naïve"]])
    (tmp_path / "t.csv").write_text("\n".join(lines[:6] + ["d é/gone.png,café,test"]) + "\n", encoding="utf-8")
    for stream in (True, False):
        with pytest.raises(DataError, match=r"row 5 \(line 7\), column 'img'.*'d é/gone.png' not found"):
            load_table(tmp_path / "s.yaml", cache=False, stream=stream)



# ---------------------------------------------------------------------- streaming: per-row arrays spooled (issue 12)
def _rss_file_kb() -> int:
    """Resident file-backed pages (RssFile, plus RssShmem: a spool under a tmpfs /tmp)."""
    with open("/proc/self/status") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("RssFile:", "RssShmem:")))


def test_streamed_splits_are_spooled_and_batch_like_the_in_memory_ones(tmp_path):
    import pickle

    import torch

    from mmfuse.datasets.streaming import SpooledDataset

    schema = _write(tmp_path, n=40)
    mem = load_table(schema, cache=False, stream=False)
    st = load_table(schema, cache_dir=tmp_path / "c", stream=True)
    assert not list((tmp_path / "c").glob(".rows.*"))  # the spool's files are unlinked at once, its folder gone
    for k in mem:
        a, b = mem[k], st[k]
        assert isinstance(b, SpooledDataset) and b.spool is not None
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.targets, b.targets)
        assert a.targets.dtype == b.targets.dtype and a.ids.dtype == b.ids.dtype
        for arr in (b.targets, b.ids, b.present["img"], b.arrays["img"].rows, b.arrays["img"].cells,
                    b.arrays["num"].bank):
            assert not arr.flags.writeable and b.spool.mapping(arr) is not None  # memory-mapped, read-only
        idx = np.random.default_rng(1).permutation(len(a))
        ba, bb = a.batch(idx), b.batch(idx)  # SpooledDataset.batch against ArrayDataset.batch
        for m in a.modalities:
            assert torch.equal(ba.inputs[m], bb.inputs[m]) and torch.equal(ba.mask[m], bb.mask[m])
            assert ba.inputs[m].dtype == bb.inputs[m].dtype
        assert torch.equal(ba.target, bb.target) and torch.equal(ba.index, bb.index)
        for i in range(len(a)):  # single samples (the collate path) equal too, and are writable copies
            sa, sb = a[i], b[i]
            assert sa["target"] == sb["target"] and torch.equal(sa["num"], sb["num"])
            assert (sa["img"] is None) == (sb["img"] is None) and (sa["img"] is None or torch.equal(sa["img"], sb["img"]))
            sb["num"] += 1  # never a view of the read-only mapping
        c = pickle.loads(pickle.dumps(b))  # spawned workers / deepcopy: the arrays travel by value
        assert np.array_equal(c.targets, b.targets) and torch.equal(c.batch(idx).inputs["img"], bb.inputs["img"])
    with pytest.raises(ValueError):  # read-only: a write fails loudly, never changes the data silently
        st["train"].targets[0] = 1


def test_row_spool_pages_leave_the_resident_set():
    from mmfuse.datasets.streaming import MADV_DONTNEED, RowSpool

    if MADV_DONTNEED is None or not os.path.exists("/proc/self/status"):
        pytest.skip("needs madvise(MADV_DONTNEED) and /proc")
    sp = RowSpool()
    ref = np.arange(1 << 20, dtype=np.int64)  # 8 MiB
    a = sp.put(ref)
    sp.finish()
    assert sp.dir is not None and not sp.dir.exists()
    before = _rss_file_kb()
    assert int(a.sum()) == int(ref.sum())  # every page read: mapped into the resident set
    read = _rss_file_kb() - before
    assert read > 6 * 1024
    sp.drop()
    assert _rss_file_kb() - before < 2 * 1024  # and out again, the values unchanged:
    idx = np.random.default_rng(0).integers(0, len(ref), 4096)
    before = _rss_file_kb()
    assert np.array_equal(sp.take(a, idx), ref[idx])
    assert _rss_file_kb() - before < 1024  # take: the pages it read are released at once


def test_chunked_sampler_keeps_torch_order_and_generator_state():
    import torch
    from torch.utils.data import RandomSampler

    from mmfuse.evaluation.evaluate import ChunkedRandomSampler

    for n in (1, 7, ChunkedRandomSampler.CHUNK + 3):
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        a, b = RandomSampler(range(n), generator=g1), ChunkedRandomSampler(range(n), generator=g2)
        for _ in range(2):  # two epochs: the second draw of each epoch is kept too
            assert list(a) == list(b)
        assert torch.equal(g1.get_state(), g2.get_state())


def test_labels_share_one_string_per_class():
    from mmfuse.datasets.columns import TargetEncoder

    cells = {"y": [b"cat".decode(), b"dog".decode(), b"cat".decode(), " cat "]}
    labels, problems = TargetEncoder("multiclass", ["y"]).check(cells, 4, str)
    assert labels == ["cat", "dog", "cat", "cat"] and not problems
    assert labels[0] is labels[2] is labels[3]


def test_cache_key_sees_a_same_size_replacement_with_the_old_mtime(tmp_path):
    schema = _write(tmp_path)
    cdir = tmp_path / "cache"

    def png(value):  # uncompressed: the same byte size for any pixel values
        from io import BytesIO

        buf = BytesIO()
        Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buf, format="PNG", compress_level=0)
        return buf.getvalue()

    target = tmp_path / "img" / "0.png"
    target.write_bytes(png(10))
    first = _dense(load_table(schema, cache_dir=cdir, stream=False)["train"], "img")
    assert np.allclose(first[0], 10 / 255.0)
    st = os.stat(target)
    # (1) replaced by a rename (a new inode), mtime restored: same path, size and mtime as the cached key had
    (tmp_path / "new.png").write_bytes(png(20))
    os.replace(tmp_path / "new.png", target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(target)
    assert (st2.st_size, st2.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert st2.st_ino != st.st_ino  # both files existed at once when renamed: a new inode
    second = _dense(load_table(schema, cache_dir=cdir, stream=False)["train"], "img")
    assert np.allclose(second[0], 20 / 255.0)
    # (2) rewritten in place (the same inode), mtime restored: the status-change time differs
    with open(target, "r+b") as f:
        f.write(png(30))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    st3 = os.stat(target)
    for _ in range(200):  # ctime comes from a coarse clock (a jiffy on ext4): touch until it has ticked
        if st3.st_ctime_ns != st2.st_ctime_ns:
            break
        time.sleep(0.01)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # sets ctime to now, mtime kept
        st3 = os.stat(target)
    assert st3.st_ctime_ns != st2.st_ctime_ns, "the file system's ctime did not change: the test cannot run here"
    assert (st3.st_size, st3.st_mtime_ns, st3.st_ino) == (st2.st_size, st2.st_mtime_ns, st2.st_ino)
    third = _dense(load_table(schema, cache_dir=cdir, stream=False)["train"], "img")
    assert np.allclose(third[0], 30 / 255.0)
    others = [i for i in range(1, 8) if i != 3]
    assert np.array_equal(first[others], third[others])


def test_worker_loader_shuts_its_workers_after_the_last_batch(tmp_path):
    import multiprocessing

    import torch

    from mmfuse.evaluation.evaluate import WorkerLoader, make_loader

    ds = load_table(_write(tmp_path, n=40), cache=False, stream=True)["train"]
    ref = [b.index for b in make_loader(ds, 2, shuffle=True, seed=3)]
    loader = make_loader(ds, 2, shuffle=True, seed=3, num_workers=1)
    assert isinstance(loader, WorkerLoader) and len(ref) == len(loader) > 2
    others = set(multiprocessing.active_children())  # processes of earlier tests are not this loader's workers
    it = iter(loader)
    got = [next(it).index]
    assert set(multiprocessing.active_children()) - others  # the worker runs during the pass
    got += [next(it).index for _ in range(len(loader) - 1)]
    # Lightning stops after len(loader) batches without another next(): the workers are already gone
    assert not set(multiprocessing.active_children()) - others
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref))  # same batches, same order
    assert next(it, None) is None


def test_trim_heap_returns_freed_pages_and_platforms(monkeypatch):
    import ctypes
    import os
    import sys

    from mmfuse.datasets import streaming as S

    monkeypatch.setattr(S, "_LIBC", None)
    monkeypatch.setattr(sys, "platform", "win32")  # ctypes.CDLL(None) raises TypeError there: never looked up
    assert S.trim_heap() is False and S._LIBC is False
    monkeypatch.undo()
    if not S._glibc():
        pytest.skip("needs glibc's malloc_trim")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    blocks = [libc.malloc(64 << 10) for _ in range(512)]  # 32 MiB in heap-sized blocks
    for p in blocks:
        ctypes.memset(p, 1, 64 << 10)  # resident
    for p in blocks[::2]:  # every other block freed: 16 MiB of free chunks that cannot merge into the top
        libc.free(p)
    before = rss()
    assert S.trim_heap() is True
    assert before - rss() >= 12 << 20  # the free chunks' pages left the resident set
    S.trim_every(1)  # the counter restarts at a trim
    assert [S.trim_every(3) for _ in range(7)] == [False, False, True, False, False, True, False]
