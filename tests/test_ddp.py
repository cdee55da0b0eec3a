"""The distributed path (issue 11, item 8): `training: {accelerator: cpu, devices: 2, strategy: ddp}` trains in
two processes (gloo), rank 0 alone writes ONE checkpoint, and that checkpoint evaluates to the metrics it saved."""

import csv
import json
import os
import subprocess
import sys

import pytest
from tables import write_numeric_table

N_ROWS = 64
BATCH = 8

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="DDP on CPU needs 2 cores (one process each)")


def _write(tmp_path):
    write_numeric_table(tmp_path, N_ROWS, 48, 8)
    (tmp_path / "cfg.yaml").write_text(f"""seed: 0
data: {{name: table, options: {{schema: {tmp_path / 'schema.yaml'}}}, batch_size: {BATCH}}}
model:
  encoders: {{a: {{name: mlp, options: {{hidden: [8], output_dim: 8}}}}, b: {{name: mlp, options: {{hidden: [8], output_dim: 8}}}}}}
  fusion: {{name: concat}}
training: {{max_epochs: 2, lr: 0.01, progress: false, accelerator: cpu, devices: 2, strategy: ddp}}
""")
    return tmp_path / "cfg.yaml"


def test_ddp_two_processes_one_checkpoint(tmp_path):
    from mmfuse.evaluation import evaluate
    from mmfuse.training import load_checkpoint
    from mmfuse.training.fit import load_data

    cfg = _write(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-m", "mmfuse.cli", "train", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 alone reports and writes: one report on stdout, one checkpoint folder
    assert proc.stdout.count("checkpoint: ") == 1
    ckpts = [p for p in out.rglob("config.json") if p.parent.name == "checkpoint"]
    assert ckpts == [out / "checkpoint" / "config.json"]
    # two processes really shared the data: each rank saw 48 / 2 = 24 training rows = 3 batches per epoch
    # (one process would take 6 steps per epoch): the logged global step after 2 epochs is 2 * 3
    rows = list(csv.DictReader(open(next((out / "logs").rglob("metrics.csv")))))
    steps = max(int(r["step"]) for r in rows)
    assert steps + 1 == 2 * (48 // 2 // BATCH), rows
    # the one checkpoint evaluates to the test metrics rank 0 saved
    model, rcfg, meta = load_checkpoint(out / "checkpoint")
    report = evaluate(model, load_data(rcfg)["test"], meta["task"], rcfg.data.eval_batch_size, per_pattern=False)
    saved = json.loads((out / "metrics.json").read_text())["test"]["metrics"]
    for k, v in saved.items():
        assert report["metrics"][k] == pytest.approx(v, abs=1e-6)
