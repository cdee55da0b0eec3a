"""Path safety of user tables (issue 11, item 6) and the npy loader's fitted dtype."""

import numpy as np
import pytest

from mmfuse.errors import ConfigError, DataError
from mmfuse.datasets.table import load_table

SECRET = "TOP_SECRET_VALUE=hunter2"


def _write_table(root, rows, extra_schema=""):
    """root/data/{schema.yaml, t.csv}; ``rows``: list of (npy cell, label)."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    lines = ["emb,label"] + [f"{cell},{lab}" for cell, lab in rows]
    (data / "t.csv").write_text("\n".join(lines) + "\n")
    (data / "schema.yaml").write_text("table: t.csv\ntarget: label\nsplit: {fractions: [0.5, 0.25, 0.25]}\n"
                                      "modalities:\n  e: {column: emb, loader: npy}\n" + extra_schema)
    return data / "schema.yaml"


def _arrays(folder, n, dtype=np.float32, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        np.save(folder / f"x{i}.npy", (np.arange(3) + i).astype(dtype))


def _rows(prefix, n, start=0):
    return [(f"{prefix}x{i}.npy", "ab"[i % 2]) for i in range(start, start + n)]


def test_relative_escape_is_refused_with_row_and_column(tmp_path):
    _arrays(tmp_path / "data" / "in", 8)
    _arrays(tmp_path / "outside", 1, start=99)
    schema = _write_table(tmp_path, _rows("in/", 8) + [("../outside/x99.npy", "a")])
    with pytest.raises(DataError) as e:
        load_table(schema)
    msg = str(e.value)
    assert "row 8 (line 10), column 'emb'" in msg and "outside the data root" in msg
    assert "allow_outside_root: true" in msg
    # the same table loads when the schema opts out, and the escaped file's values are read
    schema = _write_table(tmp_path, _rows("in/", 8) + [("../outside/x99.npy", "a")], "allow_outside_root: true\n")
    full = load_table(schema, split="none")
    np.testing.assert_array_equal(full.arrays["e"][8], np.arange(3) + 99)


def test_absolute_path_outside_is_refused(tmp_path):
    _arrays(tmp_path / "data" / "in", 8)
    _arrays(tmp_path / "elsewhere", 1, start=50)
    absolute = (tmp_path / "elsewhere" / "x50.npy").resolve()
    schema = _write_table(tmp_path, _rows("in/", 8) + [(str(absolute), "b")])
    with pytest.raises(DataError, match=r"row 8 \(line 10\), column 'emb'.*outside the data root"):
        load_table(schema)
    # an absolute path inside the root is fine
    inside = (tmp_path / "data" / "in" / "x0.npy").resolve()
    schema = _write_table(tmp_path, _rows("in/", 8) + [(str(inside), "b")])
    assert load_table(schema, split="none").arrays["e"].shape == (9, 3)


def test_a_file_that_is_not_a_table_is_never_echoed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\nline two\n")
    (tmp_path / "s.yaml").write_text(f"table: {secret}\nformat: csv\ntarget: label\n"
                                     "modalities:\n  x: {column: a, loader: numeric}\n")
    with pytest.raises(ConfigError) as e:
        load_table(tmp_path / "s.yaml")
    assert "hunter2" not in str(e.value) and "TOP_SECRET" not in str(e.value)
    assert "none of the columns" in str(e.value) and "'label'" in str(e.value)
    # a non-YAML file given as the schema: the position and the problem, not the line
    bad = tmp_path / "notyaml.txt"
    bad.write_text("key: [unclosed " + SECRET + "\n  - : :\n")
    with pytest.raises(ConfigError) as e:
        load_table(bad)
    assert "hunter2" not in str(e.value) and "invalid YAML at line" in str(e.value)


def test_npy_integer_column_keeps_its_dtype_in_a_new_table(tmp_path):
    """An int npy column fitted on train stays int64 on a new table where no row has a file (all absent)."""
    _arrays(tmp_path / "data" / "in", 8, dtype=np.int32)
    schema = _write_table(tmp_path, _rows("in/", 8))
    splits = load_table(schema)
    assert splits["train"].arrays["e"].dtype == np.int64
    pipe = splits["train"].pipeline
    assert pipe.loaders["e"].state_dict()["dtype"] == "int64"
    new = tmp_path / "data" / "new.csv"
    new.write_text("emb,label\n,a\n,b\n")
    ds = load_table(pipeline=pipe, table=new, split="none")
    assert ds.arrays["e"].dtype == np.int64 and not ds.present["e"].any()
    # a float file in a column fitted on integers is an error naming the row, not a silent cast
    np.save(tmp_path / "data" / "in" / "f.npy", np.array([0.5, 1.5, 2.5], dtype=np.float32))
    new.write_text("emb,label\nin/f.npy,a\n")
    with pytest.raises(DataError, match="row 0.*fitted on integer arrays"):
        load_table(pipeline=pipe, table=new, split="none")
    # a float column stays float32
    _arrays(tmp_path / "f" / "data" / "in", 8, dtype=np.float64)
    fl = load_table(_write_table(tmp_path / "f", _rows("in/", 8)))
    assert fl["train"].arrays["e"].dtype == np.float32
