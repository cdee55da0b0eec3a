"""Faults found by a new user's probe with their own table (session 4, task E), one test per fix:

* the predictions CSV's ``target`` was the class *index* beside a ``prediction`` that is the class *name*, so
  ``prediction == target`` was always False for a user's labels;
* an unseen category / a text of only unseen words was read as the unknown token without a word
  (``has[...]`` still 1): now an ``UnknownWordsWarning`` names the rows and the column;
* a fresh ``mmfuse train`` into a folder holding an interrupted run silently replaced it: now a warning says
  how many epochs were done and how to resume instead;
* ``mmfuse missing-study`` stopped by SIGINT / SIGTERM printed "error: interrupted ..." with exit code 2 (and
  wrote no report when it finished): now exit code 128 + signal like ``compare``, and the HTML report at the end;
* SMIL's "training rows lack the full modality" error named no row;
* Parquet tables (README: CSV / TSV / Parquet) needed pyarrow, which no extra installed;
* the README's ``mmfuse train examples/table_train.yaml`` failed (no ``examples/data.csv``):
  ``examples/make_table_data.py`` writes the table the example schema reads.
"""

from __future__ import annotations

import os
import shutil
import signal
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

import mmfuse
from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.errors import DataError, UnknownWordsWarning
from mmfuse.predictor import prediction_frame
from mmfuse.training import fit
from mmfuse.training.fit import unfinished_epochs
from mmfuse.training.signals import TrainingInterrupted

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------- target column
def test_prediction_frame_target_is_the_class_name_like_prediction():
    scores = np.array([[2.0, -1.0, 0.0], [-0.5, 0.3, 0.1], [0.0, 0.0, 3.0]])
    df = prediction_frame({"scores": scores, "target": np.array([0, 0, 2])}, "multiclass", ["cold", "hot", "mild"])
    assert df["target"].tolist() == ["cold", "cold", "mild"]
    assert (df["prediction"] == df["target"]).tolist() == [True, False, True]  # accuracy 2/3 from the frame
    # without class names the index stays (nothing to name it with)
    assert prediction_frame({"scores": scores, "target": np.array([0, 0, 2])}, "multiclass")["target"].tolist() == [0, 0, 2]


# ------------------------------------------------------------------------------------------- a user's table
def _table(root: Path, n: int = 36) -> None:
    rng = np.random.default_rng(0)
    words = {"cold": ["icy", "blue", "frost"], "hot": ["warm", "red", "sun"]}
    rows = []
    for i in range(n):
        y = ["cold", "hot"][i % 2]
        rows.append({"uid": f"u{i:02d}", "text": " ".join(rng.choice(words[y], 2)),
                     "site": ["north", "south"][i % 2], "hr": 70 + 20 * (i % 2) + rng.normal(), "label": y,
                     "split": "train" if i < 24 else ("val" if i < 28 else "test")})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    new = pd.DataFrame([{"uid": "a", "text": "icy blue", "site": "north", "hr": 70.0},
                        {"uid": "b", "text": "zebra quantum", "site": "south", "hr": 90.0},   # unseen words
                        {"uid": "c", "text": "warm sun", "site": "west", "hr": 88.0},        # unseen category
                        {"uid": "d", "text": "warm zebra", "site": "", "hr": 91.0}])         # one known word; no site
    new.to_csv(root / "new.csv", index=False)


SCHEMA = {"id": "uid", "target": {"column": "label"}, "split": {"column": "split"},
          "modalities": {"caption": {"column": "text", "loader": "text", "max_tokens": 4},
                         "site": {"column": "site", "loader": "text", "max_tokens": 1},
                         "vitals": {"columns": ["hr"], "loader": "numeric"}}}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    _table(root)
    torch.set_num_threads(1)
    p = mmfuse.Predictor(fusion="concat", max_epochs=1, seed=0, out_dir=root / "run",
                         encoders={"caption": {"name": "gru", "options": {"vocab_size": 16, "hidden": 4}},
                                   "site": {"name": "gru", "options": {"vocab_size": 8, "hidden": 2}}},
                         overrides={"training.progress": False, "training.diagnostics": False})
    p.fit(root / "train.csv", schema=SCHEMA)
    return root, p


def test_unseen_words_and_categories_are_warned_by_row_and_column(fitted):
    root, p = fitted
    with pytest.warns(UnknownWordsWarning) as rec:
        pred = p.predict(root / "new.csv")
    msgs = [str(w.message) for w in rec if issubclass(w.category, UnknownWordsWarning)]
    text = [m for m in msgs if "(modality 'caption')" in m]
    site = [m for m in msgs if "(modality 'site')" in m]
    assert len(text) == 1 and "1 row(s) (b)" in text[0] and "column 'text'" in text[0]  # 'warm zebra' has a known word
    assert len(site) == 1 and "1 row(s) (c)" in site[0] and "column 'site'" in site[0]  # an empty cell is absent, not unknown
    # every row is still predicted, aligned with the table
    assert list(pred.index) == ["a", "b", "c", "d"] and pred.loc["d", "has[site]"] == 0
    # known words only: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownWordsWarning)
        p.predict(root / "train.csv")


def test_predicted_table_target_column_holds_the_table_labels(fitted):
    root, p = fitted
    full = p.predict(root / "train.csv")
    labels = pd.read_csv(root / "train.csv").set_index("uid")["label"]
    assert full["target"].tolist() == labels.loc[full.index].tolist()
    test = p.predict("test")
    assert p.evaluate("test")["metrics"]["accuracy"] == pytest.approx(float((test["prediction"] == test["target"]).mean()))


def test_parquet_table_predicts_like_its_csv(fitted):
    """README: a CSV / TSV / Parquet table. Parquet needed pyarrow, which no extra installed (now in `datasets`)."""
    pytest.importorskip("pyarrow")
    root, p = fitted
    pd.read_csv(root / "train.csv").to_parquet(root / "train.parquet")
    pd.testing.assert_frame_equal(p.predict(root / "train.parquet"), p.predict(root / "train.csv"))


# ------------------------------------------------------------------------------------------- interrupted runs
class KillAt(L.Callback):
    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


def _arrays(n=48, seed=0, full_missing=()):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = rng.normal(size=(n, 5)).astype(np.float32) + y[:, None]
    b = rng.normal(size=(n, 3)).astype(np.float32) - y[:, None]
    present = {"b": ~np.isin(np.arange(n), full_missing)}
    split = ["train"] * (n - 16) + ["val"] * 8 + ["test"] * 8
    return from_arrays({"a": a, "b": b}, y, present=present, split=split, class_names=["x", "y"])


def _cfg(**training):
    return parse_config({"model": {"fusion": {"name": "concat"}}, "data": {"batch_size": 8},
                         "training": {"max_epochs": 2, "progress": False, "diagnostics": False, **training}})


def test_fresh_run_into_a_folder_with_an_interrupted_run_warns(tmp_path):
    data = _arrays()
    with pytest.raises(TrainingInterrupted):
        fit(_cfg(), data, tmp_path, callbacks=[KillAt(1, 1)])  # epoch 1 saved in last/, killed in epoch 2
    assert unfinished_epochs(tmp_path / "last") == 1
    with pytest.warns(UserWarning, match=r"holds an interrupted run \(1 epoch\(s\) done\).*--resume"):
        fit(_cfg(), data, tmp_path)
    assert unfinished_epochs(tmp_path / "last") is None  # that run finished: a new run warns no more
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*interrupted run")
        fit(_cfg(), data, tmp_path)


def test_resumed_run_reports_its_total_training_seconds(tmp_path):
    """A resumed run's train_seconds counted only the resumed part; a compare rerun after a kill between a run's
    last epoch and its stored result showed `train s 0.0` for it. Now the earlier part is saved with `last`."""
    import json

    from mmfuse.training.resume import STATE_JSON

    data = _arrays()
    with pytest.raises(TrainingInterrupted):
        fit(_cfg(), data, tmp_path, callbacks=[KillAt(1, 1)])
    saved = json.loads((tmp_path / "last" / STATE_JSON).read_text())["train_seconds"]
    assert saved > 0
    res = fit(_cfg(resume=True), data, tmp_path)
    total = json.loads((tmp_path / "last" / STATE_JSON).read_text())["train_seconds"]
    assert res.extras["resumed_from_epoch"] == 1 and total > saved and res.train_seconds >= total
    # the run had finished: nothing left to train, yet its training time is the run's, not ~0
    again = fit(_cfg(resume=True), data, tmp_path)
    assert again.extras["resumed_from_epoch"] == 2 and again.train_seconds >= total


def test_missing_study_interrupted_exits_like_compare(tmp_path, monkeypatch, capsys):
    from mmfuse import cli
    import mmfuse.missing.report as study

    def stopped(cfg, out=None, **kw):
        raise TrainingInterrupted(signal.SIGINT, "interrupted by SIGINT; 2 of 6 runs are stored")

    monkeypatch.setattr(study, "run_missing_study", stopped)
    rc = cli.main(["missing-study", str(EXAMPLES / "missing_study.yaml"), "--out", str(tmp_path / "ms")])
    err = capsys.readouterr().err
    assert rc == 130 and "mmfuse missing-study: interrupted by SIGINT" in err and "error:" not in err


def test_smil_error_names_the_rows_lacking_the_full_modality():
    data = _arrays(full_missing=(2, 5))
    cfg = parse_config({"model": {"family": "smil", "full": "b", "reconstructed": "a", "k": 2},
                        "data": {"batch_size": 8}, "training": {"max_epochs": 1, "progress": False}})
    with pytest.raises(DataError, match=r"2 training sample\(s\) lack the full modality 'b' \(rows 2, 5\)"):
        fit(cfg, data, save=False)


# ------------------------------------------------------------------------------------------- README example
def test_readme_table_example_has_its_data(tmp_path):
    import importlib.util

    from mmfuse.config import load_config
    from mmfuse.datasets.table import load_table

    spec = importlib.util.spec_from_file_location("make_table_data", EXAMPLES / "make_table_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make(tmp_path, n=20, n_new=3)
    for name in ("table_schema.yaml", "table_train.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    cfg = load_config(str(tmp_path / "table_train.yaml"), [f"output_dir={tmp_path / 'run'}"])
    assert cfg.data.name.endswith("table_schema.yaml")
    splits = load_table(str(tmp_path / "table_schema.yaml"))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [14, 2, 4]
    tr = splits["train"]
    # the README's rows: p01 has no caption, p02 no image, p03 no audio; kept, keyed by patient_id
    ids = list(tr.row_ids[int(i)] for i in tr.ids)
    assert ids[:3] == ["p01", "p02", "p03"]
    assert not tr.present["caption"][0] and not tr.present["photo"][1] and not tr.present["voice"][2]
    assert tr.present["vitals"].all() and sorted(tr.class_names) == ["healthy", "sick"]
    assert "label" not in pd.read_csv(tmp_path / "new.csv").columns


# ------------------------------------------------------------------------------------------- compare's leaderboard
def test_leaderboard_one_seed_has_no_spread_and_many_patterns_are_trimmed():
    """A user's table with 6 modalities: the console leaderboard had 63 pattern columns, and with one seed it
    showed "± —" for the metric but "± 0.0000" for every other column."""
    from itertools import combinations

    from mmfuse.compare import leaderboard_markdown

    mods = ["a", "b", "c", "d", "e", "f"]
    pats = [f"pattern[{'+'.join(c)}]_accuracy" for k in range(6, 0, -1) for c in combinations(mods, k)]
    assert len(pats) == 63
    row = {"method": "fusion:concat", "kind": "feature", "seeds": 1, "accuracy_mean": 0.9, "accuracy_std": 0.0,
           "macro_f1_mean": 0.8, "macro_f1_std": 0.0, "params": 10, "train_seconds": 1.0, "vs_best": "best",
           "converged": "converged", **{f"{p}_mean": 0.5 for p in pats}, **{f"{p}_std": 0.0 for p in pats}}
    md = leaderboard_markdown(pd.DataFrame([row]), "accuracy", parse_config({"compare": {"seeds": [0]}}))
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    shown = [h.strip() for h in header.split("|") if h.strip().startswith("pattern[")]
    # all six, each one dropped (6), each one alone (6)
    assert len(shown) == 13 and "pattern[a+b+c+d+e+f]" in shown and "pattern[b+c+d+e+f]" in shown
    assert "pattern[a]" in shown and "pattern[a+b]" not in shown
    assert "Shown: 13 of the 63 patterns" in md
    body = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "± 0.0000" not in body and body.count("± —") == 2 + 13  # metric, macro_f1, the 13 patterns


def test_progress_bar_counts_epochs_from_one_like_every_message():
    """Lightning's bar said `Epoch 0/5` for the first of 6 epochs while the interruption notice says
    `during epoch 1`, the leaderboard `epoch 2 of 4`; and it showed the logger's `v_num`."""
    from types import SimpleNamespace

    from mmfuse.training.progress import epoch_description, progress_bar

    assert epoch_description(0, 6) == "Epoch 1/6" and epoch_description(5, 6) == "Epoch 6/6"
    bar = progress_bar()
    bar._trainer = SimpleNamespace(max_epochs=6)
    assert bar._get_train_description(0).strip() == "Epoch 1/6"
    assert bar._get_train_description(5).strip() == "Epoch 6/6"


def test_train_report_says_why_simulated_patterns_are_missing(tmp_path):
    """A short train run skips the simulated-pattern passes (training.evaluate_patterns: auto); the report only
    said "not computed in this run" and left the user guessing how to get them."""
    import json

    from mmfuse.report import write_report

    (tmp_path / "metrics.json").write_text(json.dumps({"val": {"metrics": {"accuracy": 1.0}},
                                                       "test": {"metrics": {"accuracy": 0.9}}, "history": []}))
    html = write_report(tmp_path).read_text()
    assert "training.evaluate_patterns=true" in html and "mmfuse evaluate CHECKPOINT" in html


def test_cli_prints_mmfuse_warnings_as_one_line():
    """`mmfuse predict` printed its warnings as `/…/predictor.py:204: UnknownWordsWarning: …` plus a line of
    mmfuse's source code; now `warning: …` like the CLI's other notes. Other packages' warnings keep Python's form."""
    import mmfuse.predictor as pred
    from mmfuse import cli

    ours = cli._format_warning(UnknownWordsWarning("column 'site': 1 row(s) (c)"), UnknownWordsWarning,
                               pred.__file__, 204, "ds = load_table_rows(meta, table, schema)")
    assert ours == "warning: column 'site': 1 row(s) (c)\n"
    theirs = cli._format_warning(UserWarning("x"), UserWarning, pd.__file__, 1, "y")
    assert theirs == warnings.formatwarning(UserWarning("x"), UserWarning, pd.__file__, 1, "y") and "UserWarning" in theirs


def test_missing_study_one_seed_shows_no_spread():
    """`mmfuse missing-study` with one seed printed `35.0 ± 0.0` and `std 0.0 / 0.0` (a spread it never measured)."""
    from mmfuse.missing.report import summarize, summary_markdown, verdicts

    recs = [{"method": m, "eta": 0.2, "seed": 0, "test": t, "accuracy": a}
            for m, a in [("zero", 0.95), ("smil", 0.35)] for t in ("both", "full_only")]
    summ = summarize(recs)
    md = summary_markdown(summ, {"missing": "voice", "dataset": "table"}, "photo")
    assert "95.0 ± —" in md and "35.0 ± —" in md and "± 0.0" not in md and "over 1 seed;" in md
    assert verdicts(summ)[0].endswith("(35.0 vs 95.0, -60.0 points; one seed: no spread, no evidence either way)")
