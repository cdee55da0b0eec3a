"""Start-up (issue 13): heavy libraries are imported only where used; per-pattern evaluation is switchable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmfuse.config import parse_config
from mmfuse.errors import ConfigError
from mmfuse.training.fit import pattern_evaluation_due


def test_cli_and_training_imports_stay_light():
    code = ("import sys, mmfuse.cli, mmfuse.training, mmfuse.explain, mmfuse.plots; "
            "import json; print(json.dumps(sorted(m for m in ('lightning', 'matplotlib', 'sklearn', 'transformers', "
            "'pandas') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_pattern_evaluation_auto_is_proportionate():
    # 2 modalities -> 3 simulated patterns: 600 test rows cost 1800 samples
    assert pattern_evaluation_due("auto", 600, 2, 1800) is True
    assert pattern_evaluation_due("auto", 600, 2, 1799) is False
    assert pattern_evaluation_due("auto", 10, 1, 10**6) is False  # one modality: no pattern to simulate
    assert pattern_evaluation_due(True, 600, 4, 1) is True and pattern_evaluation_due(False, 1, 2, 10**6) is False


def test_switches_validate():
    base = {"data": {"name": "avmnist"}, "model": {"fusion": {"name": "concat"}}}
    cfg = parse_config(base, ["training.evaluate_patterns=auto", "training.plots=false"])
    assert cfg.training.evaluate_patterns == "auto" and cfg.training.plots is False
    assert parse_config(base).training.evaluate_patterns is True  # default output unchanged
    with pytest.raises(ConfigError, match="training.evaluate_patterns"):
        parse_config(base, ["training.evaluate_patterns=sometimes"])
