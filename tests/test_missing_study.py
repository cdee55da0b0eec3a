"""`mmfuse missing-study`: a grid of compare over η with the study's report (tiny synthetic data)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from mmfuse.cli import main
from mmfuse.config import load_config, parse_config
from mmfuse.datasets import from_arrays
from mmfuse.errors import ConfigError
from mmfuse.missing.report import run_missing_study, summarize, verdicts


def tiny_pairs(n=60):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, n)
    return from_arrays({"image": rng.normal(size=(n, 6)).astype(np.float32) + y[:, None],
                        "audio": rng.normal(size=(n, 4)).astype(np.float32) + y[:, None]}, y, seed=0)


STUDY = {
    "data": {"missing": {"modality": "audio", "present_fraction": 0.5}},
    "model": {"encoders": {"image": {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}},
                           "audio": {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}}},
              "missing": {"imputer": "zero"}},
    "training": {"max_epochs": 1, "progress": False},
    "compare": {"seeds": [0], "tsne": False, "methods": ["lower", "upper", "zero"],
                "grid": {"data.missing.present_fraction": [0.2, 1.0]},
                "overlays": {"lower": {"model.modalities": ["image"], "model.missing.imputer": None},
                             "upper": {"data.missing.present_fraction": 1.0},
                             "zero": {}}},
}


def test_study_is_a_compare_grid_with_the_report(tmp_path):
    res = run_missing_study(parse_config(STUDY), tmp_path, progress=False, datasets=tiny_pairs())
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 3 * 2
    # upper at η=0.2 and everything at η=1.0 with the same overlay are the same resolved config: one run each
    assert runs.loc[runs["method"] == "upper", "run"].nunique() == 1
    z = runs[runs["method"] == "zero"].set_index("data.missing.present_fraction")
    assert z.loc[1.0, "run"] == runs.loc[runs["method"] == "upper", "run"].iloc[0]
    # the report's numbers are the runs' accuracies in %, full_only from the image-only pattern
    s = {(r["method"], r["eta"], r["test"]): r for r in res.summary}
    assert s[("zero", 0.2, "both")]["mean"] == pytest.approx(100 * z.loc[0.2, "test_accuracy"])
    assert s[("zero", 0.2, "full_only")]["mean"] == pytest.approx(100 * z.loc[0.2, "pattern[image]_accuracy"])
    low = runs[runs["method"] == "lower"].iloc[0]
    assert s[("lower", 0.2, "full_only")]["mean"] == pytest.approx(100 * low["test_accuracy"])
    assert "| zero |" in res.markdown and (tmp_path / "accuracy_vs_eta.png").is_file()


def test_summary_and_verdicts_oracle():
    recs = [{"method": m, "eta": 0.2, "seed": s, "test": "both", "accuracy": a}
            for m, s, a in [("zero", 0, 0.5), ("zero", 1, 0.7), ("smil", 0, 0.8), ("smil", 1, 0.8)]]
    summ = summarize(recs)
    zero = next(r for r in summ if r["method"] == "zero")
    assert zero["mean"] == pytest.approx(60.0) and zero["std"] == pytest.approx(10.0)
    assert verdicts(summ) == ["- η = 0.2, test both: smil beats zero (80.0 vs 60.0, +20.0 points; std 0.0 / 10.0)"]


def test_cli_alias_uses_the_experiment_config(tmp_path, monkeypatch):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "output_dir": str(tmp_path / "out")}))
    assert load_config(path).compare.methods == ["lower", "upper", "zero"]
    import mmfuse.missing.report as report

    seen = {}
    monkeypatch.setattr(report, "run_missing_study", lambda cfg, out: seen.setdefault("cfg", cfg) and None
                        or type("R", (), {"markdown": "table", "paths": {}})())
    assert main(["missing-study", str(path), "--set", "compare.seeds=[3]"]) == 0
    assert seen["cfg"].compare.seeds == [3]
    # a misspelt method is a config error naming the closest one, before any compute
    assert main(["missing-study", str(path), "--set", "compare.methods=[fusion:concta]"]) == 2
    with pytest.raises(ConfigError, match="data.missing"):
        run_missing_study(parse_config({"compare": {"methods": ["fusion:concat"]}}), tmp_path, datasets=tiny_pairs())
