"""Write the toy table that ``examples/table_schema.yaml`` reads, so the README's table commands run as written.

    .venv/bin/python examples/make_table_data.py            # -> examples/data.csv, examples/img/, examples/wav/
    .venv/bin/mmfuse train examples/table_train.yaml        # then evaluate / predict as in the README
    .venv/bin/mmfuse predict runs/table/checkpoint --table examples/new.csv --out p.csv

The layout is the README's worked example: ``patient_id, img_path, wav_path, text, hr, bp, label, split``;
a bright image, a high tone, "short of breath" words and a high heart rate mean ``sick``. Some cells are
empty on purpose (an absent modality for that row, never a dropped row). ``new.csv``: new rows without
the label and split columns. ``--out DIR`` writes elsewhere (then copy the schema beside the table).
Your own data replace these files; the schema says which column is which.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

WORDS = {"healthy": ["no", "complaints", "feels", "fine", "well", "rested"],
         "sick": ["short", "of", "breath", "fever", "cough", "tired"]}


def make(root: str | Path = Path(__file__).parent, n: int = 80, n_new: int = 8, seed: int = 0) -> Path:
    """Write ``data.csv`` (``n`` labelled rows: 70 % train, 10 % val, 20 % test), ``new.csv`` and the image /
    audio files under ``root``; returns the table's path."""
    import pandas as pd
    import soundfile as sf
    from PIL import Image

    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n + n_new):
        sick = bool(i % 2)
        pid = f"p{i + 1:02d}"
        img = (rng.random((32, 32)) * 80 + (140 if sick else 30)).astype(np.uint8)
        Image.fromarray(img).save(root / "img" / f"{pid}.png")
        t = np.arange(1600) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (700 if sick else 250) * t) + 0.05 * rng.normal(size=t.size)
        sf.write(root / "wav" / f"{pid}.wav", wave.astype(np.float32), 16000)
        label = "sick" if sick else "healthy"
        rows.append({"patient_id": pid, "img_path": f"img/{pid}.png", "wav_path": f"wav/{pid}.wav",
                     "text": " ".join(rng.choice(WORDS[label], 3)),
                     "hr": round(float(70 + (25 if sick else 0) + 5 * rng.normal()), 1),
                     "bp": round(float(120 + (20 if sick else 0) + 8 * rng.normal()), 1), "label": label})
    df = pd.DataFrame(rows)
    # empty cells = an absent modality for that row (as in the README: p02 has no image, p03 no audio, p01 no text)
    df.loc[1::9, "img_path"] = ""
    df.loc[2::11, "wav_path"] = ""
    df.loc[0::13, "text"] = ""
    k_train, k_val = int(0.7 * n), int(0.1 * n)
    labelled = df.iloc[:n].copy()
    labelled["split"] = ["train"] * k_train + ["val"] * k_val + ["test"] * (n - k_train - k_val)
    labelled.to_csv(root / "data.csv", index=False)
    df.iloc[n:].drop(columns=["label"]).to_csv(root / "new.csv", index=False)
    return root / "data.csv"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent), help="folder (default: examples/)")
    ap.add_argument("--rows", type=int, default=80)
    args = ap.parse_args()
    path = make(args.out, n=args.rows)
    print(f"wrote {path}, {path.parent / 'new.csv'} and the files under {path.parent / 'img'}, {path.parent / 'wav'}")
