"""The `mmfuse` CLI end to end on a user table of images, wav files, text and numbers."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from PIL import Image

from mmfuse.cli import main


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    rows = []
    words = {0: "small red circle", 1: "large blue square"}
    for i in range(60):
        y = i % 2
        img = (rng.random((12, 12)) * 60 + (180 if y else 20)).astype(np.uint8)
        Image.fromarray(img).save(root / f"img{i}.png")
        t = np.arange(1600) / 8000
        sf.write(root / f"a{i}.wav", 0.3 * np.sin(2 * np.pi * (300 + 500 * y) * t) + 0.01 * rng.normal(size=t.size), 8000)
        rows.append({
            "image": f"img{i}.png",
            "audio": "" if i % 4 == 1 else f"a{i}.wav",  # audio absent in a quarter of the rows
            "text": words[y] if i % 5 else "",  # text absent in a fifth
            "hr": 60 + 10 * y + rng.normal(), "bp": 120 + rng.normal(),
            "label": ["cat", "dog"][y],
        })
    pd.DataFrame(rows).to_csv(root / "data.csv", index=False)
    schema = {
        "table": "data.csv",
        "target": {"column": "label"},
        "modalities": {
            "photo": {"column": "image", "loader": "image", "channels": 1},
            "voice": {"column": "audio", "loader": "audio", "sample_rate": 8000, "max_frames": 20},
            "caption": {"column": "text", "loader": "text", "max_tokens": 8},
            "vitals": {"columns": ["hr", "bp"], "loader": "numeric"},
        },
    }
    (root / "schema.yaml").write_text(yaml.safe_dump(schema))
    cfg = {
        "data": {"name": "schema.yaml", "batch_size": 16},
        "model": {"encoders": {"caption": {"name": "gru", "options": {"vocab_size": 16, "hidden": 8}},
                               "photo": {"name": "cnn2d", "options": {"channels": [4, 8]}}},
                  "fusion": {"name": "gated"}},
        "training": {"max_epochs": 2, "progress": False, "evaluate_patterns": True},
        "output_dir": str(root / "run"),
    }
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def test_train_evaluate_predict_on_a_table(table, capsys):
    assert main(["train", str(table / "config.yaml")]) == 0
    ck = table / "run" / "checkpoint"
    assert (ck / "model.safetensors").is_file() and (ck / "config.json").is_file()
    metrics = json.loads((table / "run" / "metrics.json").read_text())
    assert "caption+photo+vitals+voice" in metrics["test"]["patterns"]
    out = capsys.readouterr().out
    assert "test metrics" in out and "checkpoint:" in out
    assert main(["evaluate", str(ck)]) == 0
    assert "only photo present" in capsys.readouterr().out
    pred = table / "pred.csv"
    assert main(["predict", str(ck), "--out", str(pred)]) == 0
    df = pd.read_csv(pred)
    assert len(df) > 0 and set(df["prediction"]) <= {"cat", "dog"} and "p[dog]" in df.columns


def test_errors_are_one_clear_message(table, capsys):
    assert main(["train", str(table / "config.yaml"), "--set", "model.fusion.name=lowrank",
                 "--set", "training.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'low_rank'" in err and "training.epochs: unknown key" in err
    assert "Traceback" not in err
    assert main(["evaluate", str(table)]) == 2
    assert "not an mmfuse checkpoint" in capsys.readouterr().err


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fusions:" in out and "low_rank" in out and "avmnist" in out


@pytest.mark.parametrize("method", ["shapley", "mmshap"])
def test_explain_a_trained_checkpoint(table, capsys, method):
    ck = table / "run" / "checkpoint"
    if not ck.is_dir():
        assert main(["train", str(table / "config.yaml")]) == 0
    out = table / f"explain_{method}"
    assert main(["explain", str(ck), "--method", method, "--max-samples", "6", "--permutations", "2",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mean share of each modality" in text
    shares = pd.read_csv(out / "per_sample.csv")
    cols = [c for c in shares.columns if c.startswith("share_")]
    assert len(shares) == 6 and len(cols) == 4
    total = shares[cols].sum(axis=1, skipna=True)
    assert np.allclose(total, 1.0, atol=1e-6)
