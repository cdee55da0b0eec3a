"""Incremental `mmfuse compare` (issue 11, items 3-4): every run is stored as it finishes, a SIGTERM ends the
worker processes with the parent (exit 143, no orphan), a rerun trains only the runs not stored yet and says
so, its leaderboard equals an uninterrupted study's, and the best model is usable without retraining."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest
from tables import write_numeric_table

from mmfuse import cli
from mmfuse.compare import run_compare
from mmfuse.config import load_config
import importlib

fit_mod = importlib.import_module("mmfuse.training.fit")

N_ROWS = 64
METHODS = ["fusion:concat", "unimodal:a"]
SEEDS = [0, 1]
N_RUNS = len(METHODS) * len(SEEDS)


def _write(tmp_path):
    write_numeric_table(tmp_path, N_ROWS, 40, 12)
    (tmp_path / "cfg.yaml").write_text(f"""seed: 0
data: {{name: table, options: {{schema: {tmp_path / 'schema.yaml'}}}, batch_size: 8}}
model:
  encoders: {{a: {{name: mlp, options: {{hidden: [8], output_dim: 8}}}}, b: {{name: mlp, options: {{hidden: [8], output_dim: 8}}}}}}
training: {{max_epochs: 1, limit_train_batches: 3, lr: 0.01, progress: false}}
compare: {{methods: {json.dumps(METHODS)}, seeds: {SEEDS}, workers: 2, tsne: false}}
""")
    return tmp_path / "cfg.yaml"


def _metric_columns(board: pd.DataFrame) -> pd.DataFrame:
    cols = ["method", "kind", "seeds", "params"] + [c for c in board.columns if c.endswith(("_mean", "_std"))]
    return board[cols].reset_index(drop=True)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp_resume")
    cfg_path = _write(tmp)
    out = tmp / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "mmfuse.cli", "compare", str(cfg_path), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    parent = psutil.Process(proc.pid)
    workers: set[int] = set()
    deadline = time.monotonic() + 180
    try:
        while not list((out / "runs").glob("*.json")):  # SIGTERM as soon as the first run is stored
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no run finished in time"
            workers |= {c.pid for c in parent.children(recursive=True)}
            time.sleep(0.02)
        workers |= {c.pid for c in parent.children(recursive=True)}
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # every process the study started is gone soon after the parent (workers ended by the parent; the
    # multiprocessing resource tracker exits when its parent's pipe closes)
    alive = [p for p in map(lambda pid: psutil.Process(pid) if psutil.pid_exists(pid) else None, workers) if p]
    _, still = psutil.wait_procs(alive, timeout=10)
    stored = {p.stem for p in (out / "runs").glob("*.json")}
    return {"cfg_path": cfg_path, "out": out, "tmp": tmp, "rc": proc.returncode, "stderr": stderr,
            "workers": workers, "orphans": [p.pid for p in still if p.is_running() and p.status() != "zombie"],
            "stored": stored}


def test_sigterm_ends_workers_and_keeps_finished_runs(study):
    assert study["rc"] == 143, study["stderr"][-3000:]
    assert len(study["workers"]) >= 2  # two training workers really ran
    assert study["orphans"] == []
    lines = [ln for ln in study["stderr"].splitlines() if ln.startswith("mmfuse compare:")]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "rerun" in lines[0], study["stderr"][-2000:]
    k = len(study["stored"])
    assert 1 <= k < N_RUNS
    for key in study["stored"]:  # each stored run is whole, with its checkpoint
        res = json.loads((study["out"] / "runs" / f"{key}.json").read_text())
        assert 0.0 <= res["metrics"]["test_accuracy"] <= 1.0
        assert (study["out"] / "runs" / key / "checkpoint" / "config.json").is_file()
    assert not (study["out"] / "leaderboard.csv").exists()  # the study itself did not finish


@pytest.fixture(scope="module")
def rerun(study):
    mp = pytest.MonkeyPatch()
    calls = []
    real = fit_mod.fit
    mp.setattr(fit_mod, "fit", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    import contextlib
    import io

    buf = io.StringIO()
    try:
        cfg = load_config(str(study["cfg_path"]), ["compare.workers=1"])  # workers do not enter a run's key
        with contextlib.redirect_stdout(buf):
            board = run_compare(cfg, study["out"], progress=False)
        calls_rerun = list(calls)
        base = run_compare(cfg, study["tmp"] / "uninterrupted", progress=False)
    finally:
        mp.undo()
    return board, base, calls_rerun, buf.getvalue()


def test_rerun_skips_stored_runs_and_matches_uninterrupted(study, rerun):
    board, base, calls, text = rerun
    k = len(study["stored"])
    assert f"{k} of {N_RUNS} runs already done in {study['out'] / 'runs'}, training the other {N_RUNS - k}" in text
    assert len(calls) == N_RUNS - k  # only the missing runs trained
    pd.testing.assert_frame_equal(_metric_columns(board), _metric_columns(base))
    runs = pd.read_csv(study["out"] / "runs.csv")
    assert len(runs) == N_RUNS and set(study["stored"]) <= set(runs["run"])


def test_best_checkpoint_evaluates_predicts_and_explains_without_training(study, rerun, tmp_path, monkeypatch):
    out = study["out"]
    summ = json.loads((out / "summary.json").read_text())
    assert summ["best_checkpoint"] == "best/checkpoint"  # relative to the study folder (a moved folder still works)
    ckpt = str(out / summ["best_checkpoint"])
    board = pd.read_csv(out / "leaderboard.csv")
    assert summ["best_method"] == board["method"].iloc[0]
    stored = json.loads((out / "runs" / f"{summ['best_run']}.json").read_text())
    assert stored["config"]["seed"] == SEEDS[0]
    monkeypatch.setattr(fit_mod, "fit", lambda *a, **k: pytest.fail("no training here"))
    # evaluate: the stored test metrics of the best run, recomputed from its checkpoint
    assert cli.main(["evaluate", ckpt, "--out", str(tmp_path / "ev.json")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())["metrics"]
    assert ev["accuracy"] == pytest.approx(stored["metrics"]["test_accuracy"], abs=1e-9)
    # predict: one row per test row, whose accuracy is again the stored one
    assert cli.main(["predict", ckpt, "--out", str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert len(pred) == N_ROWS - 52
    classes = [c[2:-1] for c in pred.columns if c.startswith("p[")]
    truth = [classes[int(t)] if str(t).isdigit() else str(t) for t in pred["target"]]
    assert np.mean(pred["prediction"].astype(str) == truth) == pytest.approx(stored["metrics"]["test_accuracy"], abs=1e-9)
    assert cli.main(["explain", ckpt, "--out", str(tmp_path / "ex"), "--max-samples", "8", "--permutations", "2"]) == 0
    assert any((tmp_path / "ex").iterdir())
    # only each method's first-seed run keeps its checkpoint (save_checkpoints: false)
    runs = pd.read_csv(out / "runs.csv")
    kept = {r["run"] for _, r in runs.iterrows() if (out / "runs" / r["run"] / "checkpoint").is_dir()}
    assert kept == set(runs[runs["seed"] == SEEDS[0]]["run"])
