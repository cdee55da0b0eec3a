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
    assert set(methods["vs_best"].iloc[1:]) == {"untested (2 seeds)"}  # 2 seeds: no paired test
    assert methods["p_holm"].isna().all()
    assert all(c == "converged" or c.startswith("not converged (still improving at epoch") for c in methods["converged"])
    assert board["method"].iloc[-1].startswith("ensemble(")
    md = (out / "leaderboard.md").read_text()
    assert "Budget: 2 Optuna trials per method" in md and "vs best (Holm p)" in md
    assert "**Warning**: only 2 seeds" in md and "`untested (n seeds)`: fewer than 3 seeds" in md
    summ = json.loads((out / "summary.json").read_text())  # strict JSON (no NaN)
    assert summ["budget"]["trials_per_method"] == 2 and summ["budget"]["seeds"] == [0, 1]
    assert set(summ["paired_test"]["methods"]) == {"fusion:concat", "unimodal:a"}
    assert summ["paired_test"]["warning"].startswith("only 2 seeds")
    assert summ["margin_p"] is None and summ["margin_test"] == "untested (2 seeds)"
    assert summ["ensemble"]["ranked_by"] == "val_accuracy"
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
    assert "compare.tuning.space.training.lrr:" in text
    bad = _cfg(1, tuning={"trials": 1, "space": {"training.lr": {"low": 0.1, "high": 0.01}}})
    with pytest.raises(ConfigError, match=r"compare.tuning: invalid search space:[\s\S]*space.training.lr: low \(0.1\) must be below"):
        run_compare(bad, tmp_path, progress=False, datasets=_data())
    assert not (tmp_path / "tuning.db").exists()  # refused before any trial


def test_a_bound_outside_the_valid_range_is_refused_before_any_trial(tmp_path):
    bad = _cfg(1, tuning={"trials": 1, "space": {"model.head.options.dropout": {"low": 0, "high": 1.5}}})
    with pytest.raises(ConfigError, match=r"compare.tuning.space.model.head.options.dropout: the high value 1.5 is "
                                          r"invalid for this method[\s\S]*dropout"):
        run_compare(bad, tmp_path, progress=False, datasets=_data())
    assert not (tmp_path / "tuning.db").exists()  # refused before opening any study


def test_a_failing_trial_is_marked_fail_and_named(tmp_path, monkeypatch):
    import mmfuse.compare as C

    def boom(*a, **k):
        raise ConfigError("model.fusion: boom")

    monkeypatch.setattr(C, "_run_one", boom)
    cfg = _cfg(1, methods=["unimodal:a"], seeds=[0], ensemble={"size": 0})
    with pytest.raises(ConfigError, match=r"trial 0 of study 'unimodal:a' failed with parameters \{\"training.lr\""
                                          r"[\s\S]*boom[\s\S]*marked FAIL"):
        run_compare(cfg, tmp_path, progress=False, datasets=_data())
    (s,) = _studies(tmp_path).values()
    assert [t.state for t in s.trials] == [optuna.trial.TrialState.FAIL]  # not left RUNNING


def test_resumed_study_samples_the_same_trials(tmp_path):
    data = _data()

    def cfg(trials):
        return _cfg(trials, methods=["unimodal:a"], seeds=[0], ensemble={"size": 0})

    run_compare(cfg(3), tmp_path / "straight", progress=False, datasets=data)
    run_compare(cfg(1), tmp_path / "resumed", progress=False, datasets=data)  # "killed" after one trial
    run_compare(cfg(3), tmp_path / "resumed", progress=False, datasets=data)
    a, b = (_studies(tmp_path / d)["unimodal:a"].trials for d in ("straight", "resumed"))
    assert [t.params for t in a] == [t.params for t in b] and len(a) == 3
    assert [t.value for t in a] == [t.value for t in b]  # same runs too (CPU determinism)


def test_declared_spaces_per_modality_widths_and_cross_attention():
    from mmfuse import tuning as T

    data = _data()
    cfg = _cfg(1, methods=["fusion:concat", "unimodal:a", "fusion:cross_attention"])
    raw = cfg.compare.model_dump()
    spaces = {}
    for name in cfg.compare.methods:
        space, problems = T.method_space(cfg, resolve_method(name, raw), {}, data=data["train"])
        assert problems == []  # every bound / choice builds
        spaces[name] = space
    width = "model.encoders.{}.options.output_dim"
    assert {width.format("a"), width.format("b")} <= set(spaces["fusion:concat"])
    assert width.format("a") in spaces["unimodal:a"] and width.format("b") not in spaces["unimodal:a"]
    assert {"model.fusion.options." + k for k in ("dim", "heads", "ffn_dim", "dropout")} <= set(
        spaces["fusion:cross_attention"])
    # a per-modality key in compare.tuning.space is resolved the same way; an invalid bound is named per modality
    bad = _cfg(1, methods=["fusion:concat"],
               tuning={"trials": 1, "space": {"model.encoders.*.options.output_dim": {"low": 0, "high": 8}}})
    space, problems = T.method_space(bad, resolve_method("fusion:concat", raw), {}, data=data["train"])
    assert space[width.format("a")] == {"low": 0, "high": 8}
    for m in "ab":
        assert any(f"compare.tuning.space.model.encoders.*.options.output_dim (key 'model.encoders.{m}.options."
                   f"output_dim'): the low value 0 is invalid" in p and "output_dim must be a positive int" in p
                   for p in problems), problems
    from mmfuse.compare import warn_few_seeds

    with pytest.warns(UserWarning, match=r"compare.seeds: 2 seed\(s\) \[0, 1\] with compare.tuning.trials > 0"):
        warn_few_seeds(_cfg(1), once=False)  # allowed (smoke runs), but warned when the study starts


def test_late_intermediate_model_without_blocks_gets_no_block_space():
    """fusion_points: [] has no MMTM block, so the block's knob (reduction) must not waste the tuning budget."""
    from mmfuse import tuning
    from mmfuse.config import parse_config

    late = parse_config({"data": {"name": "avmnist"}, "model": {"family": "intermediate", "fusion_points": []}})
    mmtm = parse_config({"data": {"name": "avmnist"}, "model": {"family": "intermediate"}})
    assert [k for k, _, _ in tuning._entries(late)] == ["MODELS"]
    assert [k for k, _, _ in tuning._entries(mmtm)] == ["MODELS", "INTERACTIONS"]
