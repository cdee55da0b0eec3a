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
    assert parse_config(base).training.evaluate_patterns == "auto"  # proportionate to the run by default (issue 13)
    with pytest.raises(ConfigError, match="training.evaluate_patterns"):
        parse_config(base, ["training.evaluate_patterns=sometimes"])


HEAVY = ("lightning", "matplotlib", "sklearn", "transformers", "pandas")


def _heavy_after(code: str) -> list[str]:
    probe = (f"{code}\nimport sys, json\n"
             f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_help_and_config_validation_import_no_heavy_library():
    """``mmfuse --help`` and config validation (the start-up guard of benchmarks/startup.py) load none of
    lightning, matplotlib, scikit-learn, transformers, pandas."""
    from pathlib import Path

    example = str(Path(__file__).resolve().parents[1] / "examples" / "avmnist_families.yaml")
    assert _heavy_after("import contextlib, io\nfrom mmfuse.cli import main\n"
                        "with contextlib.redirect_stdout(io.StringIO()):\n"
                        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass") == []
    assert _heavy_after(f"from mmfuse.config import load_config\nload_config({example!r})") == []


def test_training_imports_lightning_without_torchmetrics_extras_nor_sklearn():
    """The training system imports Lightning (hence torchmetrics) without transformers / matplotlib, and the
    metrics need no scikit-learn (tests/test_metrics_numpy.py checks they equal its numbers)."""
    assert _heavy_after("import mmfuse.training.system, mmfuse.evaluation.metrics") == ["lightning"]
