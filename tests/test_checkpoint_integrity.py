"""Whole-checkpoint atomicity and integrity: sha256 of every file in config.json, mixtures and bit flips are
CheckpointErrors naming the file, stale temporaries are cleaned, an output-folder lock refuses a second writer."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmfuse import __version__
from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.errors import CheckpointError
from mmfuse.training import fit, load_checkpoint
from mmfuse.training.checkpoint import FolderLock, save_checkpoint, sha256


def _data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = rng.normal(size=(n, 5)).astype(np.float32) + y[:, None]
    b = rng.normal(size=(n, 3)).astype(np.float32) - y[:, None]
    return from_arrays({"a": a, "b": b}, y, seed=seed)


def _cfg(seed=0, epochs=1):
    return parse_config({"model": {"encoders": {"a": {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}},
                                                "b": {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}}},
                                   "fusion": {"name": "concat"}},
                         "training": {"max_epochs": epochs, "progress": False}, "seed": seed, "data": {"batch_size": 32}})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    data = _data()
    return root, fit(_cfg(0, epochs=2), data, root / "r0"), fit(_cfg(1), data, root / "r1")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_config_records_every_file_digest_and_version(runs):
    root, r0, _ = runs
    for name in ("checkpoint", "last", "best"):
        d = root / "r0" / name
        meta = json.loads((d / "config.json").read_text())
        assert meta["mmfuse_version"] == __version__
        on_disk = sorted(p.name for p in d.iterdir() if p.name != "config.json")
        assert sorted(meta["files"]) == on_disk  # every other file, nothing else
        for f, digest in meta["files"].items():
            assert digest == sha256(d / f)
    assert sorted(json.loads((root / "r0" / "last" / "config.json").read_text())["files"]) == [
        "model.safetensors", "trainer_state.json", "trainer_state.safetensors"]
    assert not (root / "r0" / ".mmfuse.lock").exists()  # released


def test_mixture_of_two_runs_is_refused(runs, tmp_path):
    import shutil

    root, _, _ = runs
    ck = tmp_path / "mix"
    shutil.copytree(root / "r0" / "checkpoint", ck)
    shutil.copy(root / "r1" / "checkpoint" / "model.safetensors", ck / "model.safetensors")  # same shapes, other run
    with pytest.raises(CheckpointError, match=r"model\.safetensors: its sha256 .* another run"):
        load_checkpoint(ck)


@pytest.mark.parametrize("name", ["model.safetensors", "trainer_state.safetensors", "trainer_state.json"])
def test_a_flipped_bit_is_refused_naming_the_file(runs, tmp_path, name):
    import shutil

    from mmfuse.training.resume import read_state

    root, _, _ = runs
    ck = tmp_path / "flip"
    shutil.copytree(root / "r0" / "last", ck)
    raw = bytearray((ck / name).read_bytes())
    raw[len(raw) - 3] ^= 0x01  # one bit, in the data (not the header)
    (ck / name).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.") + ": its sha256"):
        read_state(ck)
    if name == "model.safetensors":
        with pytest.raises(CheckpointError, match="sha256"):
            load_checkpoint(ck)


def test_atomic_replace_and_stale_temporaries_cleaned(runs, tmp_path):
    root, r0, r1 = runs
    model, cfg, meta = load_checkpoint(root / "r0" / "checkpoint")
    base = {k: meta[k] for k in ("input_shapes", "num_outputs", "task", "family")}
    target = tmp_path / "ck"
    save_checkpoint(target, model, cfg, base)
    dead = _dead_pid()
    stale_dir = tmp_path / f".ck.tmp-{dead}-deadbeef"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"half")
    stale_old = tmp_path / f".ck.old-{dead}-cafe0000"
    stale_old.mkdir()
    stale_file = tmp_path / ".model.safetensors.abc123.tmp"  # a file-level temporary of an older writer
    stale_file.write_bytes(b"x")
    live = tmp_path / f".ck.tmp-{os.getppid()}-00000000"  # a writer that is still running: left alone
    live.mkdir()

    # a writer that dies half-way leaves the existing checkpoint untouched and no temporary folder
    def boom(tmp):
        (tmp / "extra.bin").write_bytes(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        save_checkpoint(target, r1.model, cfg, base, extra=boom)
    loaded, _, _ = load_checkpoint(target)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)  # still the old weights
    # the next write replaces the folder whole and removes the dead writers' leftovers
    save_checkpoint(target, r1.model, cfg, base)
    loaded, _, _ = load_checkpoint(target)
    for k, v in r1.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["ck", live.name]), left
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "run"
        out.mkdir()
        (out / ".mmfuse.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(CheckpointError, match=rf"pid {holder.pid} on {socket.gethostname()}"):
            fit(_cfg(), None, out)  # fails before loading any data (the config names no dataset)
    finally:
        holder.kill()
        holder.wait()
    # a stale lock (its holder is dead) is taken over
    (out / ".mmfuse.lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with FolderLock(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(CheckpointError, match="this process is already writing"):
            FolderLock(out).acquire()
    assert not (out / ".mmfuse.lock").exists()
