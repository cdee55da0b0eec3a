"""compare.tuning: the same Optuna budget per method, search-space validation, SQLite resume, retrain with the
best trial's parameters; the leaderboard's paired-test / convergence / budget columns and the ensemble row."""

import json

import numpy as np
import pandas as pd
import pytest

from mmfuse.compare import resolve_method, run_compare
from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.errors import ConfigError

optuna = pytest.importorskip("optuna")


def _data():
    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 3, n)
    return from_arrays({"a": rng.normal(size=(n, 4)).astype(np.float32) + y[:, None],
                        "b": rng.normal(size=(n, 3)).astype(np.float32) + y[:, None] * 0.3}, y, seed=0)


def _cfg(trials, **compare):
    return parse_config({
        "model": {"encoders": {"a": {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}},
                               "b": {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}}},
                  "head": {"name": "mlp", "options": {"hidden": [4]}}},
        "training": {"max_epochs": 2, "progress": False, "evaluate_patterns": False},
        "compare": {"methods": ["fusion:concat", "unimodal:a"], "seeds": [0, 1], "tsne": False,
                    "missing_patterns": False, "tuning": {"trials": trials, "patience": 1},
                    "ensemble": {"size": 2, "top": 2}, **compare},
    })


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune")
    data = _data()
    board = run_compare(_cfg(2), out, progress=False, datasets=data)
    return board, out, data


def _studies(out):
    storage = f"sqlite:///{out / 'tuning.db'}"
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def test_equal_trials_and_retrain_with_best_params(study):
    board, out, _ = study
    studies = _studies(out)
    assert set(studies) == {"fusion:concat", "unimodal:a"}
    assert [len(s.trials) for s in studies.values()] == [2, 2]
    # trial 0 is the config's own setting (lr 1e-3, the default); weight decay 0 lies outside the space: sampled
    assert all(s.trials[0].params["training.lr"] == 1e-3 for s in studies.values())
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 * 2
    for name, s in studies.items():
        best = s.best_trial.params
        assert best["training.lr"] == s.best_trial.params["training.lr"]
        for key in runs.loc[runs["method"] == name, "run"]:  # every seed retrained with the best trial's setting
            cfg = json.loads((out / "runs" / f"{key}.json").read_text())["config"]
            assert cfg["training"]["lr"] == best["training.lr"]
            assert cfg["training"]["weight_decay"] == best["training.weight_decay"]
            assert cfg["model"]["head"]["options"]["dropout"] == best["model.head.options.dropout"]
            assert cfg["training"]["patience"] == 1 and cfg["training"]["monitor"] == "val_accuracy"
            assert (out / "runs" / f"{key}.preds.npz").is_file()
        # the objective of each trial is the best validation accuracy of its run
        assert s.best_value == max(t.value for t in s.trials)


def test_leaderboard_marks_budget_and_ensemble(study):
    board, out, _ = study
    methods = board[board["kind"] != "ensemble"]
    assert methods["vs_best"].iloc[0] == "best"
    assert set(methods["vs_best"].iloc[1:]) <= {"≈ best", "worse", "better"}
    assert all(c == "converged" or c.startswith("not converged (still improving at epoch") for c in methods["converged"])
    assert board["method"].iloc[-1].startswith("ensemble(")
    md = (out / "leaderboard.md").read_text()
    assert "Budget: 2 Optuna trials per method" in md and "vs best (Holm p)" in md
    summ = json.loads((out / "summary.json").read_text())  # strict JSON (no NaN)
    assert summ["budget"]["trials_per_method"] == 2 and summ["budget"]["seeds"] == [0, 1]
    assert set(summ["paired_test"]["methods"]) == {"fusion:concat", "unimodal:a"}
    ens = summ["ensemble"]["per_seed"]
    assert len(ens) == 2 and all(sum(p["weights"].values()) == pytest.approx(1.0) for p in ens)


def test_resume_runs_only_missing_trials(study, capsys):
    _, out, data = study
    before = {n: [t.params for t in s.trials] for n, s in _studies(out).items()}
    run_compare(_cfg(3), out, progress=False, datasets=data)
    text = capsys.readouterr().out
    assert "compare: tuning fusion:concat: 2 of 3 trials done" in text
    assert "compare: tuning unimodal:a: 2 of 3 trials done" in text
    after = _studies(out)
    for n, s in after.items():
        assert len(s.trials) == 3  # one more trial each, the two stored ones unchanged
        assert [t.params for t in s.trials[:2]] == before[n]


def test_search_space_errors_name_the_entry_and_key(tmp_path):
    from mmfuse import tuning as T
    from mmfuse.fusion.concat import ConcatFusion
    from mmfuse.registry import FUSIONS

    FUSIONS.register("concat_bad_space", ConcatFusion, overwrite=True,
                     search_space={"model.fusion.options.width": {"low": 2, "high": 8}})
    try:
        cfg = _cfg(1, methods=["fusion:concat_bad_space"],
                   tuning={"trials": 1, "space": {"training.lrr": {"low": 0.1, "high": 0.2}}})
        m = resolve_method("fusion:concat_bad_space", cfg.compare.model_dump())
        _, problems = T.method_space(cfg, m, {})
    finally:  # leave the registry as the other tests expect it
        FUSIONS._entries.pop("concat_bad_space", None)
        FUSIONS._info.pop("concat_bad_space", None)
    text = "\n".join(problems)
    assert "FUSIONS 'concat_bad_space' search_space key 'model.fusion.options.width'" in text
    assert "does not take option 'width'" in text
    assert "compare.tuning.space key 'training.lrr'" in text
    bad = _cfg(1, tuning={"trials": 1, "space": {"training.lr": {"low": 0.1, "high": 0.01}}})
    with pytest.raises(ConfigError, match=r"compare.tuning: invalid search space:[\s\S]*'training.lr': low \(0.1\) must be below"):
        run_compare(bad, tmp_path, progress=False, datasets=_data())
    assert not (tmp_path / "tuning.db").exists()  # refused before any trial
