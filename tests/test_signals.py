"""SIGTERM / SIGINT during `mmfuse train`: a resumable checkpoint, exit 143 / 130, a one-line message."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import yaml

from mmfuse.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sig")
    rng = np.random.default_rng(0)
    n = 480
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"x1": rng.normal(size=n) + y, "x2": rng.normal(size=n), "z1": rng.normal(size=n) - y,
                       "label": np.array(["no", "yes"])[y]})
    df.to_csv(root / "t.csv", index=False)
    schema = {"table": "t.csv", "target": {"column": "label"},
              "modalities": {"a": {"columns": ["x1", "x2"], "loader": "numeric"},
                             "b": {"columns": ["z1"], "loader": "numeric"}}}
    (root / "schema.yaml").write_text(yaml.safe_dump(schema))
    cfg = {"data": {"name": str(root / "schema.yaml"), "batch_size": 4},
           "model": {"fusion": {"name": "concat"}},
           "training": {"max_epochs": 3, "progress": False}, "output_dir": str(root / "run")}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def test_sigterm_saves_exits_143_and_resume_completes(tiny):
    out = tiny / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mmfuse.cli", "train", str(tiny / "config.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 240
        while not (out / "last" / "config.json").exists():  # the first epoch's checkpoint
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no epoch checkpoint appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    line = [ln for ln in err.strip().splitlines() if "SIGTERM" in ln]
    assert len(line) == 1 and "--resume" in line[0] and "Traceback" not in err, err
    done = json.loads((out / "last" / "config.json").read_text())["epoch"]
    assert 0 <= done < 2 and not (out / "checkpoint").exists()
    assert not (out / ".mmfuse.lock").exists()  # the lock is released on the way out
    assert main(["train", str(tiny / "config.yaml"), "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]  # the resumed run finished every epoch
    assert (out / "checkpoint" / "model.safetensors").is_file()


def test_sigint_exits_130_with_one_line(tiny, tmp_path, monkeypatch, capsys):
    import mmfuse.training as training

    real = training.fit

    class Interrupt(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 3:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(training, "fit", lambda cfg, **kw: real(cfg, callbacks=[Interrupt()], **kw))
    out = tmp_path / "o"
    # the handler before: default_int_handler, or SIG_IGN when the test process was started as a background job
    # (a non-interactive shell starts `cmd &` with SIGINT ignored)
    before = signal.getsignal(signal.SIGINT)
    assert main(["train", str(tiny / "config.yaml"), "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SIGINT during epoch 1" in err[0] and f"--out {out} --resume" in err[0]
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
