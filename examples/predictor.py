"""mmfuse.Predictor on a table of your own: fit, predict a new unlabelled table, evaluate, explain, save, load.

    .venv/bin/python examples/predictor.py

``make_tables`` writes a small table (PNG images, wav clips, a caption, a number; some cells empty) to a
temporary folder; the flow itself is the 12 lines under ``# the whole flow``.
"""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

SCHEMA = {"id": "uid", "target": {"column": "label"},
          "modalities": {"photo": {"column": "image", "loader": "image", "channels": 1},
                         "voice": {"column": "audio", "loader": "audio", "sample_rate": 8000, "max_frames": 8},
                         "caption": {"column": "text", "loader": "text", "max_tokens": 6},
                         "vitals": {"columns": ["hr"], "loader": "numeric"}}}


def make_tables(root: Path, n_train: int = 120, n_new: int = 10) -> None:
    """train.csv (labelled) and new.csv (new rows, no label column): a bright image, a high tone, 'warm'
    words and a high number mean "hot"; about a fifth of the images and of the clips are missing."""
    rng = np.random.default_rng(0)
    words = [["cold", "icy", "blue", "calm"], ["hot", "warm", "red", "bright"]]
    rows = []
    for i in range(n_train + n_new):
        y = int(rng.random() < 0.5)
        Image.fromarray((rng.random((8, 8)) * 80 + (150 if y else 20)).astype(np.uint8)).save(root / f"img{i}.png")
        t = np.arange(800) / 8000
        sf.write(root / f"a{i}.wav", 0.3 * np.sin(2 * np.pi * (300 + 500 * y) * t) + 0.05 * rng.normal(size=t.size), 8000)
        text = " ".join(rng.choice(words[y if rng.random() < 0.8 else 1 - y], 3))
        rows.append({"uid": f"id{i:04d}", "image": "" if rng.random() < 0.2 else f"img{i}.png",
                     "audio": "" if rng.random() < 0.2 else f"a{i}.wav", "text": text,
                     "hr": 70 + 15 * y + 10 * rng.normal(), "label": ["cold", "hot"][y]})
    df = pd.DataFrame(rows)
    df.iloc[:n_train].to_csv(root / "train.csv", index=False)
    df.iloc[n_train:].drop(columns=["label"]).sample(frac=1, random_state=0).to_csv(root / "new.csv", index=False)


if __name__ == "__main__":
    root = Path(tempfile.mkdtemp(prefix="mmfuse_predictor_"))
    make_tables(root)
    # the whole flow
    import mmfuse

    p = mmfuse.Predictor(fusion="gated", max_epochs=10, seed=0, out_dir=root / "run",
                         encoders={"caption": {"name": "gru", "options": {"vocab_size": 32, "hidden": 16}}})
    p.fit(root / "train.csv", schema=SCHEMA)                      # table + schema -> checkpoint with its pipeline
    print(p.predict(root / "new.csv"))                            # every new row, keyed by its uid; no label needed
    print(p.predict_proba(root / "new.csv").round(3))             # rows sum to 1
    report = p.evaluate("test")                                   # held-out rows of train.csv
    print("test:", report["metrics"])
    print("observed:", {k: (o["n"], round(o["metrics"]["accuracy"], 3)) for k, o in report["observed"].items()})
    print("modality shares:", p.explain("test", max_samples=20, permutations=4)["mean_share"])
    q = mmfuse.Predictor.load(p.save(root / "model"))              # a self-contained folder: weights, config, pipeline
    assert q.predict(root / "new.csv").equals(p.predict(root / "new.csv"))
    print(f"saved to {root / 'model'}; reloaded predictions identical")
