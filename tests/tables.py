"""Tiny numeric tables for the tests that run mmfuse in subprocesses (DDP, signals, compare resume)."""

from pathlib import Path

import numpy as np


def write_numeric_table(root: Path, n_rows: int, n_train: int, n_val: int) -> Path:
    """``root/t.csv`` (two numeric modalities a, b of 2 columns each; label x|y; a split column) and
    ``root/schema.yaml``; returns the schema path."""
    rng = np.random.default_rng(0)
    y = np.arange(n_rows) % 2
    lines = ["a1,a2,b1,b2,label,split"]
    for i in range(n_rows):
        vals = rng.normal(size=4) + y[i]
        split = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
        lines.append(",".join(f"{v:.4f}" for v in vals) + f",{'xy'[y[i]]},{split}")
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    (root / "schema.yaml").write_text(
        "table: t.csv\ntarget: label\nsplit: split\nmodalities:\n"
        "  a: {columns: [a1, a2], loader: numeric}\n  b: {columns: [b1, b2], loader: numeric}\n")
    return root / "schema.yaml"
