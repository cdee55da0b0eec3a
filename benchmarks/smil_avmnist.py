"""SMIL's av-MNIST study (accuracy against eta, image-only and image+audio tests).

    python benchmarks/smil_avmnist.py [--full | --realce] [--set key=value ...]

runs ``mmfuse missing-study benchmarks/smil_avmnist.yaml`` (eta 0.1 and 0.2; writes
``benchmarks/results/smil/``) or, with ``--full``, ``benchmarks/smil_avmnist_full.yaml`` (eta 0.1,
0.2, 0.5 and 1.0 plus SMIL's paper preset; reuses the quick run's results; writes
``benchmarks/results/smil_full/``). Each directory gets results.csv, summary.csv, summary.md and
accuracy_vs_eta.png. ``--realce``: SMIL alone with ``real_ce_weight: 1`` (a cross-entropy on the
real-audio path of the meta-test batch, which the code leaves out), all four eta, in
``benchmarks/results/smil_realce/``. See "Missing modalities and SMIL" in benchmarks/README.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mmfuse.missing.study import missing_study_main

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    os.chdir(here.parent)  # the configs' paths are relative to the repository root
    args = sys.argv[1:]
    name = ("smil_avmnist_full.yaml" if "--full" in args else
            "smil_avmnist_realce.yaml" if "--realce" in args else "smil_avmnist.yaml")
    args = [a for a in args if a not in ("--full", "--realce")]
    sys.exit(missing_study_main([str(here / name), *args]))
