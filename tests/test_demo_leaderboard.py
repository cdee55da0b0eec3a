"""The leaderboard's wording under the table (issue 14 item 5): the budget line, the tuning and seeds caveats,
the dataset named in the header, and the demo's config (parsed, no training)."""

import json

import pandas as pd

from mmfuse.cli import DEMO_CONFIG, DEMO_QUICK
from mmfuse.compare import _dataset_name, budget_line, leaderboard_markdown
from mmfuse.config import parse_config


def _board(marks):
    rows = []
    for i, (m, kind, acc, mark) in enumerate(marks):
        rows.append({"method": m, "kind": kind, "accuracy_mean": acc, "accuracy_std": 0.01, "vs_best": mark,
                     "p": 0.5, "p_holm": 0.5 if mark != "worse" else 0.01, "converged": "converged",
                     "params": 100, "train_seconds": 1.0})
    return pd.DataFrame(rows)


def _budget(**kw):
    b = {"trials_per_method": 4, "trial_max_epochs": 3, "max_epochs": 14, "patience": 2, "seeds": [0, 1, 2],
         "test": "ttest", "alpha": 0.05, "workers": 2, "wall_seconds": 100.0, "tuning_wall_seconds": 40.0,
         "final_runs_compute_seconds": 150.0, "trial_runs_compute_seconds": 50.0, "config_best": 3, "tuned": 4}
    b.update(kw)
    return b


def test_caveats_state_tuning_and_separability():
    cfg = parse_config({"compare": {"seeds": [0, 1, 2]}})
    board = _board([("fusion:late", "late", 0.69, "best"), ("fusion:concat", "feature", 0.65, "≈ best"),
                    ("unimodal:image", "unimodal", 0.48, "≈ best"), ("fusion:gated", "feature", 0.30, "worse")])
    md = leaderboard_markdown(board, "accuracy", cfg, budget=_budget())
    # 3 of 4 studies kept the config's setting: more than half -> the line is there with k of n
    assert "config's own setting (each study's first trial) was best for 3 of 4 methods" in md
    # the largest gap among the ≈ best methods: 0.69 - 0.48 = 0.21 (image-only); the smallest significant: 0.39
    assert "with 3 seeds, 2 of 3 methods cannot be separated from the best" in md
    assert "differences up to 0.210 in accuracy (unimodal:image)" in md
    assert "smallest difference found significant was 0.390 (fusion:gated)" in md
    # tuning improved on most methods / every method separated: no caveat lines
    sep = _board([("a", "feature", 0.9, "best"), ("b", "feature", 0.5, "worse")])
    md2 = leaderboard_markdown(sep, "accuracy", cfg, budget=_budget(config_best=1, tuned=4))
    assert "Tuning:" not in md2 and "Seeds:" not in md2


def test_budget_line_plural_and_wall_scope():
    line = budget_line(_budget(trials_per_method=1, trial_max_epochs=1, workers=1))
    assert "1 Optuna trial per method (≤ 1 epoch each)" in line and "1 worker:" in line
    line = budget_line(_budget())
    assert "4 Optuna trials per method (≤ 3 epochs each)" in line
    assert "data loading, tuning, training and evaluation; not the t-SNE" in line
    assert "run compute 200 s" in line  # 50 + 150


def test_header_names_datasets_given_in_memory():
    from types import SimpleNamespace

    cfg = parse_config({})
    board = _board([("a", "feature", 0.9, "best")])
    assert "Dataset `avmnist`" in leaderboard_markdown(board, "accuracy", cfg)
    md = leaderboard_markdown(board, "accuracy", cfg, dataset=_dataset_name(SimpleNamespace(name="arrays")))
    assert md.startswith("Dataset `user data` (given in memory)") and "avmnist" not in md
    assert _dataset_name(SimpleNamespace(name="clinic")) == "clinic"


def test_demo_configs_follow_the_protocol():
    cfg = parse_config(json.loads(json.dumps(DEMO_CONFIG)), [])
    assert cfg.compare.tuning.trials >= 4 and len(cfg.compare.seeds) >= 3 and cfg.training.patience
    assert cfg.compare.tuning.epochs < cfg.training.max_epochs
    quick = parse_config(json.loads(json.dumps(DEMO_CONFIG)), DEMO_QUICK)
    assert len(quick.compare.seeds) >= 3  # the paired test needs 3 seeds
