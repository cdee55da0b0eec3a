"""SMIL's av-MNIST study (accuracy against η, image-only and image+audio tests) as a compare grid.

    python benchmarks/smil_avmnist.py [--set key=value ...]

runs ``mmfuse missing-study benchmarks/smil_avmnist.yaml`` (every method × η ∈ {0.1, 0.2, 0.5, 1.0} ×
3 seeds through ``mmfuse.fit``; writes ``benchmarks/results/smil_grid/``: leaderboard, runs.csv,
summary.csv, summary.md, accuracy_vs_eta.png). A quick look: ``--set 'compare.grid={data.missing.present_fraction: [0.2]}'
--set compare.seeds=[0]``. See "Missing modalities and SMIL" in benchmarks/README.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mmfuse.cli import main

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    os.chdir(here.parent)  # the config's paths are relative to the repository root
    sys.exit(main(["missing-study", str(here / "smil_avmnist.yaml"), *sys.argv[1:]]))
