"""`mmfuse compare` on tiny data: every method × seed runs; the leaderboard aggregates runs.csv."""

import numpy as np
import pandas as pd
import pytest

from mmfuse.compare import methods_of, run_compare
from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 3, n)
    data = from_arrays({"a": rng.normal(size=(n, 5)).astype(np.float32) + y[:, None],
                        "b": rng.normal(size=(n, 6, 3)).astype(np.float32) + y[:, None, None] * 0.3}, y, seed=0)
    cfg = parse_config({
        "model": {"encoders": {"a": {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}},
                               "b": {"name": "cnn1d", "options": {"channels": [4], "output_dim": 8}}}},
        "training": {"max_epochs": 2, "progress": False},
        "compare": {"fusions": ["concat", "tensor"], "late": ["mean_prob"], "seeds": [0, 1], "tsne_samples": 20},
    })
    out = tmp_path_factory.mktemp("cmp")
    return run_compare(cfg, out, progress=False, datasets=data), out, cfg


def test_methods_and_files(board):
    b, out, cfg = board
    assert [m.label for m in methods_of(cfg, ["a", "b"])] == ["concat", "tensor", "late:mean_prob", "unimodal:a", "unimodal:b"]
    assert set(b["method"]) == {"concat", "tensor", "late:mean_prob", "unimodal:a", "unimodal:b"}
    for f in ["runs.csv", "leaderboard.csv", "leaderboard.md", "learning_curves.png", "leaderboard.png", "tsne.png", "summary.json"]:
        assert (out / f).is_file(), f
    md = (out / "leaderboard.md").read_text()
    assert "pattern[a+b]" in md and "± " in md


def test_leaderboard_is_mean_and_std_of_runs(board):
    b, out, _ = board
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 5 * 2
    for method, g in runs.groupby("method"):
        row = b[b["method"] == method].iloc[0]
        assert row["accuracy_mean"] == pytest.approx(g["test_accuracy"].mean())
        assert row["accuracy_std"] == pytest.approx(g["test_accuracy"].std(ddof=0))
    assert list(b["accuracy_mean"]) == sorted(b["accuracy_mean"], reverse=True)
    # fused models are evaluated per missing-modality pattern; unimodal baselines are not
    fused = runs[runs["method"] == "concat"]
    assert fused["pattern[a]_accuracy"].notna().all()


def test_workers_give_the_same_leaderboard(board, tmp_path):
    b, out, cfg = board
    import numpy as np

    from mmfuse.config import parse_config

    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 3, n)
    data = from_arrays({"a": rng.normal(size=(n, 5)).astype(np.float32) + y[:, None],
                        "b": rng.normal(size=(n, 6, 3)).astype(np.float32) + y[:, None, None] * 0.3}, y, seed=0)
    par = parse_config(cfg.model_dump(), ["compare.workers=2"])
    b2 = run_compare(par, tmp_path, progress=False, datasets=data)
    cols = ["method", "accuracy_mean", "accuracy_std"]
    pd.testing.assert_frame_equal(b[cols].reset_index(drop=True), b2[cols].reset_index(drop=True))
