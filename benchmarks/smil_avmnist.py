"""SMIL's av-MNIST study (accuracy against eta, image-only and image+audio tests).

    python benchmarks/smil_avmnist.py [--set key=value ...]

is ``mmfuse missing-study benchmarks/smil_avmnist.yaml``: it writes
``benchmarks/results/smil/{results.csv,summary.csv,summary.md,accuracy_vs_eta.png}``.
See the section "Missing modalities and SMIL" of benchmarks/README.md for the recorded numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmfuse.missing.study import missing_study_main

if __name__ == "__main__":
    config = Path(__file__).with_name("smil_avmnist.yaml")
    sys.exit(missing_study_main([str(config), *sys.argv[1:]]))
