"""The missing-modality study runner: config validation, a tiny end-to-end run, the CLI entry."""

from __future__ import annotations

import csv

import pytest

from mmfuse.errors import ConfigError
from mmfuse.missing.study import (apply_overrides, missing_study_main, run_missing_study, summarize,
                                  validate_config, verdicts)


TINY = {
    "dataset": {"name": "synthetic-pairs", "options": {"n_train": 8, "n_test": 4}},
    "etas": [0.25, 0.5],
    "methods": ["lower", "upper", "zero", "ae", "smil"],
    "seeds": [0, 1],
    "encoders": {"image": {"name": "lenet", "channels": [2, 3]},
                 "audio": {"name": "snet", "channels": [4, 4, 2], "pool_size": 2}},
    "epochs": {"full": 1, "missing": 1, "fused": 1, "pairs": 1, "meta_steps": 2},
    "batch_size": 8,
    "missing_batch_size": 4,
    "meta_batch_size": 4,
    "smil": {"k": 2},
    "progress": False,
    "threads": 1,
}


def test_validate_config_reports_every_problem_with_close_matches():
    with pytest.raises(ConfigError) as ei:
        validate_config({"etaz": [0.1], "methods": ["smill", "zero"], "epochs": {"fused": -1, "meta_step": 3},
                         "seeds": "x", "smil": {"inner_lrr": 1}})
    msg = str(ei.value)
    for want in ("'etaz'", "did you mean 'etas'", "'smill'", "'smil'", "epochs.fused", "'meta_steps'", "seeds",
                 "'inner_lr'"):
        assert want in msg, want
    with pytest.raises(ConfigError, match="fraction"):
        validate_config({"etas": [0.0]})
    with pytest.raises(ConfigError, match="avmnist-smil"):
        validate_config({"dataset": "avmnist-smll"})
    with pytest.raises(ConfigError, match="set by the study"):
        validate_config({"dataset": {"name": "avmnist-smil", "options": {"eta": 0.3}}})
    cfg = validate_config({"seeds": 3})
    assert cfg["seeds"] == [0, 1, 2] and cfg["epochs"]["meta_steps"] > 0


def test_bad_modality_is_reported_before_training(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'audio'"):
        run_missing_study({**TINY, "missing_modality": "audi", "encoders": "smil"}, out_dir=tmp_path)


def test_tiny_study_end_to_end(tmp_path):
    res = run_missing_study(TINY, out_dir=tmp_path)
    for p in res.paths.values():
        assert (tmp_path / p.split("/")[-1]).exists()
    rows = list(csv.DictReader(open(res.paths["results"])))
    assert len(rows) == 2 * 2 * len(TINY["methods"]) * 2  # seeds × etas × methods × test settings
    assert {r["test"] for r in rows} == {"full_only", "both"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    summ = {(s["method"], s["eta"], s["test"]): s for s in res.summary}
    assert summ[("smil", 0.25, "both")]["n"] == 2
    # the lower bound ignores the second modality; upper and lower do not depend on eta
    assert summ[("lower", 0.5, "full_only")]["mean"] == summ[("lower", 0.5, "both")]["mean"]
    assert summ[("upper", 0.25, "both")]["mean"] == summ[("upper", 0.5, "both")]["mean"]
    assert "| smil |" in res.markdown and "± " in res.markdown
    assert any("smil" in line for line in verdicts(res.summary, max_eta=0.5))


def test_study_is_deterministic_and_independent_of_workers(tmp_path):
    cfg = {**TINY, "methods": ["dropout", "mean", "learned", "smil"], "seeds": [0], "etas": [0.5]}
    a = run_missing_study(cfg, out_dir=tmp_path / "a").records
    b = run_missing_study(cfg, out_dir=tmp_path / "b").records
    assert [r["accuracy"] for r in a] == [r["accuracy"] for r in b]
    # worker processes (spawned: a few seconds of imports) give the same numbers
    cfg = {**cfg, "methods": ["zero"], "seeds": [0, 1]}
    a = run_missing_study(cfg, out_dir=tmp_path / "c").records
    b = run_missing_study({**cfg, "workers": 2}, out_dir=tmp_path / "d").records
    key = lambda r: (r["seed"], r["method"], r["test"])  # noqa: E731
    assert [(key(r), r["accuracy"]) for r in a] == [(key(r), r["accuracy"]) for r in b]


def test_cli_entry(tmp_path, capsys):
    import yaml

    cfg = {**TINY, "methods": ["lower", "zero"], "seeds": [0], "etas": [0.5]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert missing_study_main([str(path), "--out", str(tmp_path / "out"), "--set", "epochs.fused=1", "--no-progress"]) == 0
    assert (tmp_path / "out" / "summary.md").exists()
    assert "| zero |" in capsys.readouterr().out
    assert missing_study_main([str(path), "--set", "methodz=[zero]"]) == 2
    assert "did you mean 'methods'" in capsys.readouterr().err
    assert missing_study_main([str(tmp_path / "nope.yaml")]) == 2


def test_overrides_and_summary_helpers():
    cfg = apply_overrides({"epochs": {"full": 3}}, ["epochs.meta_steps=7", "seeds=[1, 2]", "smil.k=4"])
    assert cfg == {"epochs": {"full": 3, "meta_steps": 7}, "seeds": [1, 2], "smil": {"k": 4}}
    with pytest.raises(ConfigError):
        apply_overrides({}, ["novalue"])
    s = summarize([{"method": "zero", "eta": 0.2, "seed": i, "test": "both", "accuracy": a}
                   for i, a in enumerate([0.5, 0.7])])
    assert s[0]["mean"] == pytest.approx(60.0) and s[0]["std"] == pytest.approx(10.0)


def test_reuse_earlier_results(tmp_path):
    cfg = {**TINY, "methods": ["lower", "zero"], "seeds": [0], "etas": [0.5]}
    first = run_missing_study(cfg, out_dir=tmp_path / "a")
    more = run_missing_study({**cfg, "methods": ["lower", "zero", "ae"], "reuse": [str(tmp_path / "a")]},
                             out_dir=tmp_path / "b")
    old = {(r["method"], r["test"]): r["accuracy"] for r in first.records}
    new = {(r["method"], r["test"]): r["accuracy"] for r in more.records}
    assert all(new[k] == v for k, v in old.items()) and ("ae", "both") in new
    with pytest.raises(ConfigError, match="other settings"):
        run_missing_study({**cfg, "ae_weight": 2.0, "reuse": [str(tmp_path / "a")]}, out_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="no results.csv"):
        run_missing_study({**cfg, "reuse": [str(tmp_path / "nothing")]}, out_dir=tmp_path / "c")
