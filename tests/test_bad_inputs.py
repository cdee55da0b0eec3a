"""The bad-input corpus (issue 11, item 7): every case below must end in an mmfuse error (or a documented
warning) whose message names the key, row, column or file and says how to fix it -- never a raw exception
from torch, numpy or pandas, and never a silent change of results.

One table-driven test: ``CASES`` holds ``(id, callable, expected type, regex, fix regex[, text that must NOT
appear])``: the regex checks that the message names the key / row / column / file, the fix regex that it says
how to fix it (``None`` only for a case whose correct outcome is no message at all);
each callable gets a context (a tiny trained checkpoint shared by the module, its data, a fresh tmp folder).
CLI cases go through ``mmfuse.cli.main([...])`` and must exit 2 with no traceback on stderr.

Decisions recorded here:

* a row with **every modality absent** is predicted from the model's prior only (its inputs are all zeros);
  ``predict_dataset`` keeps that row (so the output stays aligned with the table) but raises a
  :class:`~mmfuse.errors.NoModalityWarning` naming the row ids -- a documented warning, not an error;
* a **present sequence of length 0** is a DataError (mark the modality absent with ``None`` instead);
* a **transformer over all-empty sequences** (every row's sequence absent) yields the pooled zero
  embedding for those rows, finite, like any absent modality -- no error, no NaN.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmfuse.batch import MultimodalBatch, collate
from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.datasets.base import ArrayDataset
from mmfuse.errors import (CheckpointError, ConfigError, DataError, MissingModalityError, MMFuseError,
                           NoModalityWarning, ShapeError)

A, B = 5, 3  # widths of the two tiny modalities


# ---------------------------------------------------------------------------------------------- fixtures
def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = rng.normal(size=(n, A)).astype(np.float32) + y[:, None]
    b = rng.normal(size=(n, B)).astype(np.float32) - y[:, None]
    return from_arrays({"a": a, "b": b}, y, seed=seed)


def _raw(**training):
    return {"model": {"encoders": {"a": {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}},
                                   "b": {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}}},
                      "head": {"name": "mlp", "options": {"hidden": [4]}}, "fusion": {"name": "concat"}},
            "training": {"max_epochs": 1, "progress": False, **training}, "seed": 0,
            "data": {"batch_size": 16}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from mmfuse.training import fit, load_checkpoint

    root = tmp_path_factory.mktemp("bad_inputs")
    data = _data()
    res = fit(parse_config(_raw()), data, root / "run")
    model, cfg, meta = load_checkpoint(res.checkpoint)
    return SimpleNamespace(root=root, data=data, ckpt=Path(res.checkpoint), model=model.eval(), cfg=cfg)


@pytest.fixture()
def ctx(trained, tmp_path):
    return SimpleNamespace(**vars(trained), tmp=tmp_path)


# ---------------------------------------------------------------------------------------------- helpers
def _cli(*argv):
    """Run the CLI; return (exit code, stderr). A SystemExit (argparse) counts as its code."""
    from mmfuse.cli import main

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


class CLIError(MMFuseError):
    """Stands for 'the CLI exited 2 with a one-line message and no traceback'."""


def cli_case(*argv):
    def run(c):
        argv2 = [a(c) if callable(a) else a for a in argv]
        code, err = _cli(*argv2)
        assert "Traceback" not in err, err
        if code == 2:
            raise CLIError(err)
        raise AssertionError(f"exit code {code}, stderr: {err!r}")
    return run


def cfg_case(**dotted):
    def run(c):
        parse_config(_raw(), [f"{k}={v}" for k, v in dotted.items()])
    return run


def _model_raw(**kw):
    raw = _raw()["model"]
    raw.update(kw)
    return raw


def _build(c=None, num_outputs=2, task="multiclass", **model):
    from mmfuse.models.build import build_model

    return build_model(_model_raw(**model), {"a": (A,), "b": (B,)}, num_outputs, task)


def _batch(n=4, **over):
    inputs = {"a": torch.randn(n, A), "b": torch.randn(n, B)}
    mask = {"a": torch.ones(n, dtype=torch.bool), "b": torch.ones(n, dtype=torch.bool)}
    inputs.update({k: v for k, v in over.items() if not k.startswith("mask_")})
    mask.update({k[5:]: v for k, v in over.items() if k.startswith("mask_")})
    return MultimodalBatch(inputs, mask, torch.zeros(n, dtype=torch.long))


def _arrays(n=6, **kw):
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(n, A)).astype(np.float32), "b": rng.normal(size=(n, B)).astype(np.float32)}
    targets = kw.pop("targets", np.arange(n) % 2)
    arrays.update(kw.pop("arrays", {}))
    return ArrayDataset(arrays, targets, **kw)


def _table(c, rows, schema_extra="", header="emb,num,label", extra_file=None):
    """c.tmp/data/{t.csv, schema.yaml, x*.npy}; ``extra_file``: (name, array or raw bytes); returns the schema."""
    data = c.tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i in range(12):
        np.save(data / f"x{i}.npy", (np.arange(3) + i).astype(np.float32))
    if extra_file is not None:
        name, content = extra_file
        (data / name).write_bytes(content) if isinstance(content, bytes) else np.save(data / name, content)
    (data / "t.csv").write_text("\n".join([header] + rows) + "\n")
    (data / "schema.yaml").write_text(
        "table: t.csv\ntarget: label\nsplit: {fractions: [0.5, 0.25, 0.25]}\n"
        "modalities:\n  e: {column: emb, loader: npy}\n  n: {column: num, loader: numeric}\n" + schema_extra)
    return data / "schema.yaml"


def _good_rows(n=8):
    return [f"x{i}.npy,{i * 0.5},{'ab'[i % 2]}" for i in range(n)]


def _load(schema):
    from mmfuse.datasets.table import load_table

    return load_table(schema)


def _copy_ckpt(c):
    dst = c.tmp / "ck"
    shutil.copytree(c.ckpt, dst)
    return dst


def _load_ckpt(path):
    from mmfuse.training import load_checkpoint

    return load_checkpoint(path)


def _damaged(c, name, content):
    """A copy of the checkpoint with ``name`` deleted (None) or overwritten by ``content``, loaded."""
    ck = _copy_ckpt(c)
    if content is None:
        (ck / name).unlink()
    else:
        (ck / name).write_bytes(content)
    _load_ckpt(ck)


def _flip_bit(c):
    ck = _copy_ckpt(c)
    f = ck / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0x10
    f.write_bytes(bytes(raw))
    _load_ckpt(ck)


def _mixed(c):
    """Another run's weights (same names and shapes, other values) under this run's config.json."""
    from safetensors.torch import save_file

    ck = _copy_ckpt(c)
    other = {k: v.detach().clone() + 0.01 for k, v in c.model.state_dict().items()}
    save_file(other, str(ck / "model.safetensors"))
    _load_ckpt(ck)


def _two_writers(c):
    """A second writer into a folder another live process holds: fails at once naming the holder."""
    import subprocess
    import sys

    from mmfuse.training.checkpoint import FolderLock

    out = c.tmp / "shared"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / ".mmfuse.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        FolderLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()


def _nan_lr(c):
    from mmfuse.training import fit

    fit(parse_config(_raw(lr=1e6, optimizer="sgd")), c.data, c.tmp / "nan", save=True)


def _evaluate(c, ds, task="multiclass"):
    from mmfuse.evaluation import evaluate

    return evaluate(c.model, ds, task)


def _all_absent_predict(c):
    from mmfuse.predictor import predict_dataset

    ds = c.data["test"].with_present({"a": np.r_[False, np.ones(len(c.data["test"]) - 1, bool)],
                                      "b": np.r_[False, np.ones(len(c.data["test"]) - 1, bool)]})
    df = predict_dataset(c.model, ds, "multiclass")
    assert len(df) == len(ds)  # the row is kept (aligned output), flagged by the warning


def _transformer_all_empty(c):
    """Every row's sequence is absent: the transformer encoder must give finite (zero) embeddings."""
    from mmfuse.models.build import build_model

    model = build_model({"encoders": {"s": {"name": "transformer", "options": {"dim": 8, "heads": 2, "layers": 1}},
                                      "v": {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}}},
                         "fusion": {"name": "concat"}}, {"s": (None, 3), "v": (2,)}, 2, "multiclass").eval()
    batch = collate([{"s": None, "v": np.ones(2, np.float32)}] * 3, ["s", "v"], {"s": (None, 3), "v": (2,)})
    out = model(batch)
    logits = out.logits if hasattr(out, "logits") else out
    if not torch.isfinite(logits).all():
        raise AssertionError("non-finite logits for rows whose sequence is absent")
    raise _Ok()


class _Ok(MMFuseError):
    """Raised by cases whose correct outcome is a valid, finite result (checked inside the case)."""


def _ragged_empty(c):
    ArrayDataset({"s": [np.ones((2, 3), np.float32), np.zeros((0, 3), np.float32)], "v": np.ones((2, 2), np.float32)},
                 np.array([0, 1]))


def _regression_width(c):
    from mmfuse.evaluation import evaluate
    from mmfuse.models.build import build_model

    model = build_model(_model_raw(), {"a": (A,), "b": (B,)}, 1, "regression").eval()
    ds = _arrays(targets=np.zeros((6, 2), np.float32), task="regression")
    evaluate(model, ds, "regression")


def _loss(task, scores, target):
    from mmfuse.training.losses import task_loss

    return task_loss(task, scores, target, torch.arange(10, 10 + len(target)))


def _empty_eval(c):
    _evaluate(c, c.data["test"].subset([]))


def _fusion(name, dims, **opt):
    from mmfuse.fusion import create_fusion

    return create_fusion(name, dims, **opt)


def _late(name="mean_prob", mods=("a", "b"), k=2, task="multiclass"):
    from mmfuse.late import create_late_combiner

    return create_late_combiner(name, list(mods), num_classes=k, task=task)


def _shapley(c, **kw):
    from mmfuse.explain import make_score_fn, modality_shapley

    batch = c.data["test"].batch(np.arange(4))
    modality_shapley(make_score_fn(c.model), batch, **kw)


def _yaml(c, text, name="cfg.yaml"):
    p = c.tmp / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------------------------- the corpus
# how a message says what to do: an imperative, a suggestion, or the valid choices
FIX = (r"(?i)\b(set|use|pass|remove|add|give|rename|lower|raise|choose|drop|clean|impute|encode|check|create|move|"
       r"delete|retrain|restore|replace|wait|stop|fix|leave|mark|round|remap|binarise|re-save|pad|write|train)\b|"
       r"did you mean|valid (keys|options)")


def _lr_overflow(c):
    parse_config(_raw(optimizer="sgd"), ["training.lr=1e300"])


def _no_digests(c):
    """config.json of this version without its 'files' digests: the weights cannot be verified, so refuse."""
    ck = _copy_ckpt(c)
    meta = json.loads((ck / "config.json").read_text())
    assert meta.get("mmfuse_version") and meta.pop("files")
    (ck / "config.json").write_text(json.dumps(meta))
    _load_ckpt(ck)


def _epoch_nan_not_saved(c):
    """The per-epoch `last` / `best` writer refuses NaN weights before writing anything."""
    from mmfuse.training.callbacks import EpochCheckpoints

    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.bias[1] = float("nan")
    saved = []
    best = SimpleNamespace(best_epoch=0, state={k: v.clone() for k, v in model.state_dict().items()})
    cb = EpochCheckpoints(c.tmp, best, None, lambda *a: saved.append(a))
    trainer = SimpleNamespace(current_epoch=0, is_global_zero=True)
    try:
        cb.on_train_epoch_end(trainer, SimpleNamespace(model=model, history=[]))
    finally:
        assert saved == [], "a checkpoint with NaN weights was written"
        assert not any(c.tmp.iterdir())

NAN_A = np.full(A, np.nan, np.float32)
CASES = [
    # ---- configs (parse_config, --set)
    ("cfg-lr-negative", cfg_case(**{"training.lr": -1}), ConfigError, r"training\.lr", FIX),
    ("cfg-epochs-zero", cfg_case(**{"training.max_epochs": 0}), ConfigError, r"training\.max_epochs", FIX),
    ("cfg-batch-zero", cfg_case(**{"data.batch_size": 0}), ConfigError, r"data\.batch_size", FIX),
    ("cfg-dropout-negative", cfg_case(**{"model.missing.modality_dropout": -0.2}), ConfigError,
     r"model\.missing\.modality_dropout.*(0|1)", FIX),
    ("cfg-dropout-above-one", cfg_case(**{"model.missing.modality_dropout": 1.5}), ConfigError,
     r"model\.missing\.modality_dropout", FIX),
    ("cfg-dropout-dict-negative", lambda c: parse_config({**_raw(), "model": {**_raw()["model"], "missing": {
        "modality_dropout": {"a": -0.1}}}}), ConfigError, r"modality_dropout", FIX),
    ("cfg-family-unknown", cfg_case(**{"model.family": "fusionn"}), ConfigError, r"model\.family: unknown model family 'fusionn'", FIX),
    ("cfg-top-key-typo", lambda c: parse_config({**_raw(), "trainig": {}}), ConfigError, r"trainig", FIX),
    ("cfg-fusion-unknown", lambda c: _build(fusion={"name": "concatt"}), ConfigError, r"concatt.*concat", FIX),
    ("cfg-optimizer-unknown", cfg_case(**{"training.optimizer": "rmsprop"}), ConfigError, r"training\.optimizer", FIX),
    ("cfg-scheme-option-unknown", cfg_case(**{"training.scheme_options.bogus": 1}), ConfigError,
     r"training\.scheme_options\.bogus: unknown key", FIX),
    ("cfg-task-unknown", cfg_case(task="classification"), ConfigError, r"^invalid config:\n  task: .*'classification'", FIX),
    ("cfg-seed-string", cfg_case(seed="abc"), ConfigError, r"^invalid config:\n  seed: ", FIX),
    ("cfg-set-without-equals", lambda c: parse_config(_raw(), ["training.lr"]), ConfigError, r"training\.lr", FIX),
    ("cfg-grad-clip-zero", cfg_case(**{"training.gradient_clip": 0}), ConfigError, r"training\.gradient_clip", FIX),
    ("cfg-compare-seeds-empty", lambda c: parse_config({**_raw(), "compare": {"seeds": []}}), ConfigError,
     r"compare\.seeds", FIX),
    ("cfg-present-fraction", lambda c: parse_config({**_raw(), "data": {"missing": {
        "modality": "a", "present_fraction": 1.5}}}), ConfigError, r"present_fraction", FIX),
    ("cfg-monitor-regression", lambda c: __import__("mmfuse.training.fit", fromlist=["x"]).check_monitor(
        "val_accuracy", "regression"), ConfigError, r"training\.monitor: 'val_accuracy'", FIX),
    ("cfg-init-from-missing", lambda c: __import__("mmfuse.training.fit", fromlist=["x"]).warm_start(
        c.model, c.tmp / "nope"), (ConfigError, CheckpointError), r"nope", FIX),
    ("cfg-dropout-dict-above-one", lambda c: _build(missing={"modality_dropout": {"b": 2}}), ConfigError,
     r"modality_dropout.*'b'", FIX),
    # ---- models (build_model, encoders, heads)
    ("model-zero-outputs", lambda c: _build(num_outputs=0), ConfigError, r"num_outputs|output", FIX),
    ("model-head-hidden-zero", lambda c: _build(head={"name": "mlp", "options": {"hidden": [0]}}), ConfigError,
     r"head: hidden must be a positive int, got 0", FIX),
    ("model-encoder-hidden-zero", lambda c: _build(encoders={"a": {"name": "mlp", "options": {"hidden": [0]}}}),
     ConfigError, r"model\.encoders\.a: encoder 'mlp': hidden", FIX),
    ("model-encoder-output-zero", lambda c: _build(encoders={"a": {"name": "mlp", "options": {"output_dim": 0}}}),
     ConfigError, r"encoder 'mlp': output_dim", FIX),
    ("model-task-unknown", lambda c: _build(task="classify"), ConfigError, r"classify", FIX),
    ("model-encoder-unknown-modality", lambda c: _build(encoders={"zz": {"name": "mlp"}}), ConfigError,
     r"model\.encoders\.zz", FIX),
    ("model-modalities-unknown", lambda c: _build(modalities=["a", "c"]), ConfigError, r"model\.modalities.*'c'", FIX),
    ("model-encoder-option-unknown", lambda c: _build(encoders={"a": {"name": "mlp", "options": {"widht": 3}}}),
     ConfigError, r"model\.encoders\.a: encoder 'mlp': unknown option 'widht'; valid options: .*hidden", FIX),
    ("model-encoder-name-unknown", lambda c: _build(encoders={"a": {"name": "mlpp"}}), ConfigError, r"mlpp", FIX),
    ("model-head-zero-outputs", lambda c: __import__("mmfuse.models.heads", fromlist=["x"]).create_head(
        "mlp", 8, 0), ConfigError, r"head: out_dim", FIX),
    ("model-dropout-module-negative", lambda c: __import__("mmfuse.missing", fromlist=["x"]).ModalityDropout(-0.2),
     ConfigError, r"-0\.2", FIX),
    # ---- API tensors: MultimodalBatch / collate
    ("batch-mask-keys", lambda c: MultimodalBatch({"a": torch.zeros(2, A)}, {"b": torch.ones(2, dtype=torch.bool)}),
     MissingModalityError, r"inputs have modalities \['a'\] but mask has \['b'\]", FIX),
    ("batch-mask-dtype", lambda c: _batch(mask_a=torch.ones(4)), ShapeError, r"mask\['a'\]", FIX),
    ("batch-size-mismatch", lambda c: _batch(a=torch.zeros(3, A)), ShapeError, r"batch sizes differ.*'a': 3", FIX),
    ("collate-nan", lambda c: collate([{"a": np.ones(A, np.float32)}, {"a": NAN_A}]), DataError,
     r"sample 1, modality 'a'.*NaN", FIX),
    ("collate-inf", lambda c: collate([{"a": np.array([np.inf] * A, np.float32)}]), DataError,
     r"sample 0.*infinite", FIX),
    ("collate-target-nan", lambda c: collate([{"a": np.ones(A), "target": np.array([np.nan])}]), DataError,
     r"'target'", FIX),
    ("collate-complex", lambda c: collate([{"a": np.ones(A, np.complex64) * (1 + 2j)}]), DataError,
     r"sample 0, modality 'a'.*complex", FIX),
    ("collate-string", lambda c: collate([{"a": np.array(["x", "y"])}]), DataError, r"sample 0, modality 'a'", FIX),
    ("collate-object", lambda c: collate([{"a": object()}]), DataError, r"sample 0, modality 'a'", FIX),
    ("collate-empty", lambda c: collate([]), DataError, r"collate: got an empty list", FIX),
    ("collate-not-dict", lambda c: collate([[1, 2]]), DataError, r"sample 0", FIX),
    ("collate-rank", lambda c: collate([{"a": np.ones(3)}, {"a": np.ones((3, 1))}]), ShapeError, r"sample 1", FIX),
    ("collate-width", lambda c: collate([{"a": np.ones(3)}, {"a": np.ones(4)}], shapes={"a": (3,)}), ShapeError,
     r"sample 1, modality 'a'", FIX),
    ("collate-target-shapes", lambda c: collate([{"a": np.ones(2), "target": np.ones(2)},
                                                 {"a": np.ones(2), "target": np.ones(3)}]), ShapeError, r"target", FIX),
    ("collate-target-missing", lambda c: collate([{"a": np.ones(2), "target": 1}, {"a": np.ones(2)}]), DataError,
     r"sample 1.*target", FIX),
    ("collate-all-absent-unknown", lambda c: collate([{"a": None}], ["a"]), MissingModalityError,
     r"'a'.*shapes=", FIX),
    ("collate-unknown-modality", lambda c: collate([{"a": np.ones(2), "c": np.ones(2)}], ["a"]),
     MissingModalityError, r"'c'", FIX),
    ("collate-empty-sequence", lambda c: collate([{"s": np.ones((2, 3), np.float32)}, {"s": np.zeros((0, 3),
                                                  np.float32)}], ["s"], {"s": (None, 3)}), DataError,
     r"sample 1, modality 's'.*length 0.*None", FIX),
    ("collate-dtype-mix", lambda c: collate([{"a": np.ones(2, np.float32)}, {"a": np.ones(2, np.int64)}]),
     ShapeError, r"sample 1.*dtype", FIX),
    # ---- API tensors: ArrayDataset
    ("ds-string-array", lambda c: _arrays(arrays={"a": np.array([["x"] * A] * 6)}), DataError,
     r"modality 'a'.*str", FIX),
    ("ds-complex-array", lambda c: _arrays(arrays={"a": np.ones((6, A), np.complex64)}), DataError,
     r"modality 'a'.*complex", FIX),
    ("ds-nan-input", lambda c: _arrays(arrays={"a": np.where(np.eye(6, A) > 0, np.nan, 0).astype(np.float32)}),
     DataError, r"sample 0, modality 'a'.*NaN", FIX),
    ("ds-inf-ragged", lambda c: ArrayDataset({"s": [np.ones((2, 3), np.float32), np.full((1, 3), np.inf,
                                                                                         np.float32)]},
                                             np.array([0, 1])), DataError, r"sample 1, modality 's'", FIX),
    ("ds-label-2.7", lambda c: _arrays(targets=np.array([0, 1, 2.7, 0, 1, 0])), DataError, r"sample 2.*2\.7", FIX),
    ("ds-label-neg-half", lambda c: _arrays(targets=np.array([0, 1, -0.5, 0, 1, 0])), DataError,
     r"sample 2.*-0\.5", FIX),
    ("ds-label-negative-int", lambda c: _arrays(targets=np.array([0, 1, -1, 0, 1, 0])), DataError, r"sample 2", FIX),
    ("ds-label-out-of-range", lambda c: _arrays(targets=np.arange(6) % 3, num_classes=2), DataError, r"sample 2", FIX),
    ("ds-multilabel-2", lambda c: _arrays(targets=np.array([[0, 1], [2.0, 0]] * 3), task="multilabel"), DataError,
     r"sample 1: multilabel target \[2\.0, 0\.0\] is not 0/1", FIX),
    ("ds-multilabel-half", lambda c: _arrays(targets=np.array([[0, 1], [0.5, 0]] * 3), task="multilabel"),
     DataError, r"sample 1", FIX),
    ("ds-regression-nan", lambda c: _arrays(targets=np.array([0, 1, np.nan, 0, 1, 0]), task="regression"),
     DataError, r"sample 2", FIX),
    ("ds-target-count", lambda c: _arrays(targets=np.arange(5) % 2), ShapeError, r"modality 'a'.*5 targets", FIX),
    ("ds-mask-dtype", lambda c: _arrays(present={"a": np.ones(6)}), ShapeError, r"present\['a'\]", FIX),
    ("ds-mask-unknown", lambda c: _arrays(present={"c": np.ones(6, bool)}), ConfigError, r"'c'", FIX),
    ("ds-task-unknown", lambda c: _arrays(task="classify"), ConfigError, r"classify", FIX),
    ("ds-ragged-shapes", lambda c: ArrayDataset({"s": [np.ones((2, 3)), np.ones((2, 4))]}, np.array([0, 1])),
     ShapeError, r"sample 1, modality 's'", FIX),
    ("ds-empty-present-sequence", _ragged_empty, DataError, r"sample 1, modality 's'.*length 0.*None", FIX),
    ("ds-target-name", lambda c: _arrays(arrays={"target": np.ones((6, 1))}), ConfigError, r"'target'", FIX),
    ("ds-class-names-count", lambda c: _arrays(class_names=["x"]), ConfigError, r"class_names for 2 classes", FIX),
    # ---- evaluation / prediction
    ("eval-empty-set", _empty_eval, DataError, r"evaluation set .* empty", FIX),
    ("eval-regression-width", _regression_width, ShapeError, r"1 output\(s\) but the targets have 2.*width", FIX),
    ("loss-float-label", lambda c: _loss("multiclass", torch.zeros(3, 3), torch.tensor([0.0, 2.7, 1.0])), DataError,
     r"sample 11: label 2\.7.*whole numbers", FIX),
    ("loss-negative-half-label", lambda c: _loss("multiclass", torch.zeros(2, 3), torch.tensor([-0.5, 1.0])),
     DataError, r"sample 10: label -0\.5", FIX),
    ("loss-multilabel-2", lambda c: _loss("multilabel", torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [2.0, 0.0]])),
     DataError, r"sample 11: multilabel target \[2\.0, 0\.0\]", FIX),
    ("loss-regression-width", lambda c: _loss("regression", torch.zeros(2, 1), torch.zeros(2, 2)), ShapeError,
     r"regression targets have shape \(2, 2\).*\(2, 1\)", FIX),
    ("eval-modalities-differ", lambda c: _evaluate(c, ArrayDataset({"a": np.ones((4, A), np.float32)},
                                                                 np.arange(4) % 2)), MissingModalityError, r"'b'", FIX),
    ("eval-width-differs", lambda c: _evaluate(c, _arrays(arrays={"a": np.ones((6, A + 1), np.float32)})),
     ShapeError, r"modality 'a'.*expected 5 features", FIX),
    ("predict-all-absent-row", _all_absent_predict, NoModalityWarning, r"1 row.*no modality.*id", FIX),
    ("transformer-all-empty", _transformer_all_empty, _Ok, r"^$", None),
    # ---- fusion operators and late combiners
    ("fusion-no-inputs", lambda c: _fusion("concat", {}), ConfigError, r"fusion 'ConcatFusion': input_dims", FIX),
    ("fusion-zero-width", lambda c: _fusion("sum", {"a": 0, "b": 3}), ConfigError, r"'a'", FIX),
    ("fusion-unknown-option", lambda c: _fusion("tensor", {"a": 2, "b": 3}, rnak=2), ConfigError, r"fusion operator 'tensor': unknown option 'rnak'; valid options", FIX),
    ("fusion-missing-input", lambda c: _fusion("concat", {"a": 2, "b": 3})({"a": torch.ones(2, 2)},
                                                                            {"a": torch.ones(2, dtype=torch.bool)}),
     MissingModalityError, r"'b'", FIX),
    ("fusion-wrong-width", lambda c: _fusion("gated", {"a": 2, "b": 3}, dim=4)(
        {"a": torch.ones(2, 2), "b": torch.ones(2, 4)}, None), ShapeError, r"'b'", FIX),
    ("late-zero-classes", lambda c: _late(k=0), ConfigError, r"num_classes", FIX),
    ("late-wrong-shape", lambda c: _late()({"a": torch.zeros(2, 2), "b": torch.zeros(2, 3)}), ShapeError,
     r"logits\['b'\]", FIX),
    ("late-missing-modality", lambda c: _late()({"a": torch.zeros(2, 2)}), MissingModalityError, r"'b'", FIX),
    ("late-unknown-name", lambda c: _late("mean_probb"), ConfigError, r"mean_prob", FIX),
    ("late-bad-mask-shape", lambda c: _late()({"a": torch.zeros(2, 2), "b": torch.zeros(2, 2)},
                                             {"a": torch.ones(3, dtype=torch.bool)}), ShapeError, r"mask\['a'\]", FIX),
    # ---- explain
    ("explain-unknown-player", lambda c: _shapley(c, modalities=["a", "zz"]), MissingModalityError, r"'zz'", FIX),
    ("explain-zero-permutations", lambda c: _shapley(c, method="permutation", n_permutations=0), ConfigError,
     r"n_permutations", FIX),
    ("explain-bad-method", lambda c: _shapley(c, method="kernel"), ConfigError, r"method must be one of .*'kernel'", FIX),
    ("explain-bad-target", lambda c: __import__("mmfuse.explain", fromlist=["x"]).make_score_fn(c.model, "bogus"),
     ConfigError, r"bogus", FIX),
    # ---- tables and schemas
    ("table-etc-os-release", lambda c: _load(_yaml(c, "table: /etc/os-release\ntarget: label\nmodalities:\n"
                                                      "  e: {column: emb, loader: npy}\n", "s.yaml")),
     (ConfigError, DataError), r"os-release", FIX, "NAME="),
    ("table-missing-file", lambda c: _load(_yaml(c, "table: nope.csv\ntarget: label\nmodalities:\n"
                                                    "  e: {column: emb, loader: npy}\n", "s.yaml")),
     (ConfigError, DataError), r"nope\.csv", FIX),
    ("schema-missing-file", lambda c: _load(c.tmp / "nope.yaml"), (ConfigError, DataError), r"nope\.yaml", FIX),
    ("schema-bad-yaml", lambda c: _load(_yaml(c, "table: [unclosed\n", "s.yaml")), (ConfigError, DataError),
     r"s\.yaml", FIX),
    ("schema-unknown-key", lambda c: _load(_table(c, _good_rows(), "colour: red\n")), ConfigError, r"colour", FIX),
    ("schema-unknown-loader", lambda c: _load(_yaml(c, "table: t.csv\ntarget: label\nmodalities:\n"
                                                     "  e: {column: emb, loader: jpeg2}\n", "data/s.yaml")
                                              if _table(c, _good_rows()) else None),
     ConfigError, r"jpeg2", FIX),
    ("schema-target-column-missing", lambda c: _load(_table(c, _good_rows(), header="emb,num,lab")),
     (ConfigError, DataError), r"'label'", FIX),
    ("schema-modality-column-missing", lambda c: _load(_table(c, _good_rows(), header="emx,num,label")),
     (ConfigError, DataError), r"'emb'", FIX),
    ("table-path-escape", lambda c: (np.save(c.tmp / "x99.npy", np.zeros(3, np.float32)),
                                     _load(_table(c, _good_rows() + ["../x99.npy,1,a"])))[1], DataError,
     r"row 8.*column 'emb'.*allow_outside_root", FIX),
    ("table-cell-file-missing", lambda c: _load(_table(c, _good_rows() + ["x77.npy,1,a"])), DataError,
     r"row 8.*'emb'.*x77\.npy", FIX),
    ("table-cell-not-number", lambda c: _load(_table(c, _good_rows() + ["x1.npy,abc,a"])), DataError,
     r"row 8.*'num'", FIX),
    ("table-cell-npy-shape", lambda c: _load(_table(c, _good_rows() + ["y.npy,1,a"], extra_file=(
        "y.npy", np.zeros((2, 2), np.float32)))), DataError, r"row 8.*'emb'", FIX),
    ("table-npy-corrupt", lambda c: _load(_table(c, _good_rows() + ["bad.npy,1,a"], extra_file=("bad.npy", b"junk"))),
     DataError, r"row 8.*'emb'.*bad\.npy", FIX),
    ("table-header-only", lambda c: _load(_table(c, [])), DataError, r"t\.csv: 1 problem[\s\S]*the table has no rows", FIX),
    # ---- checkpoints
    ("ckpt-flipped-bit", _flip_bit, CheckpointError, r"model\.safetensors.*sha256", FIX),
    ("ckpt-mixed", _mixed, CheckpointError, r"model\.safetensors", FIX),
    ("ckpt-missing-folder", lambda c: _load_ckpt(c.tmp / "nope"), CheckpointError, r"nope", FIX),
    ("ckpt-no-config", lambda c: _damaged(c, "config.json", None), CheckpointError, r"config\.json", FIX),
    ("ckpt-config-not-json", lambda c: _damaged(c, "config.json", b"{oops"), CheckpointError, r"config\.json", FIX),
    ("ckpt-weights-deleted", lambda c: _damaged(c, "model.safetensors", None), CheckpointError,
     r"model\.safetensors", FIX),
    ("ckpt-weights-truncated", lambda c: _damaged(c, "model.safetensors", b"\x08\x00"), CheckpointError,
     r"model\.safetensors", FIX),
    ("ckpt-two-writers", _two_writers, CheckpointError, r"another mmfuse process.*pid", FIX),
    ("train-lr-1e6-nan", _nan_lr, DataError, r"(epoch \d+, step \d+|weights( after epoch \d+)? hold NaN).*training\.lr", FIX),
    # ---- CLI arguments
    ("cli-out-is-file", cli_case("train", lambda c: _yaml(c, json.dumps(_raw())),
                                 "--out", lambda c: _yaml(c, "x", "afile")), CLIError, r"--out.*file", FIX),
    ("cli-predict-out-missing-folder", cli_case("predict", lambda c: c.ckpt, "--out",
                                                lambda c: c.tmp / "no" / "where" / "p.csv"), CLIError,
     r"--out.*does not exist", FIX),
    ("cli-train-config-missing", cli_case("train", lambda c: c.tmp / "nope.yaml"), CLIError, r"nope\.yaml", FIX),
    ("cli-train-config-bad-yaml", cli_case("train", lambda c: _yaml(c, "model: [oops\n")), CLIError, r"cfg\.yaml", FIX),
    ("cli-set-without-equals", cli_case("train", lambda c: _yaml(c, json.dumps(_raw())), "--set", "training.lr"),
     CLIError, r"training\.lr", FIX),
    ("cli-set-unknown-key", cli_case("train", lambda c: _yaml(c, json.dumps(_raw())), "--set", "training.lrr=1"),
     CLIError, r"training\.lrr", FIX),
    ("cli-evaluate-missing-ckpt", cli_case("evaluate", lambda c: c.tmp / "nock"), CLIError, r"nock", FIX),
    ("cli-evaluate-bad-split", cli_case("evaluate", lambda c: c.ckpt, "--split", "tset"), CLIError, r"tset", FIX),
    ("cli-predict-missing-table", cli_case("predict", lambda c: c.ckpt, "--table", lambda c: c.tmp / "n.csv",
                                           "--out", lambda c: c.tmp / "p.csv"), CLIError, r"n\.csv|not trained on a user table", FIX),
    ("cli-explain-max-samples-zero", cli_case("explain", lambda c: c.ckpt, "--max-samples", "0",
                                              "--out", lambda c: c.tmp / "ex"), CLIError, r"--max-samples", FIX),
    ("cli-explain-permutations-negative", cli_case("explain", lambda c: c.ckpt, "--permutations", "-1",
                                                   "--out", lambda c: c.tmp / "ex"), CLIError, r"--permutations", FIX),
    ("cli-list-unknown", cli_case("list", "datasetz"), CLIError, r"datasetz", FIX),
    ("cli-unknown-flag", cli_case("evaluate", lambda c: c.ckpt, "--bogus"), CLIError, r"--bogus", FIX),
    # ---- issue 11 follow-ups: overflowing hyper-parameters, stripped digests, NaN per-epoch saves
    ("cfg-lr-overflow-sgd", _lr_overflow, ConfigError, r"training\.lr: 1e\+300 is not a finite float32", FIX),
    ("cfg-weight-decay-inf", cfg_case(**{"training.weight_decay": ".inf"}), ConfigError,
     r"training\.weight_decay: inf is not a finite float32", FIX),
    ("ckpt-digests-removed", _no_digests, CheckpointError, r"config\.json: has no 'files' entry", FIX),
    ("train-epoch-nan-weights", _epoch_nan_not_saved, DataError, r"after epoch 1 hold NaN.*bias", FIX),
]

IDS = [c[0] for c in CASES]
assert len(set(IDS)) == len(IDS) >= 80, "the corpus needs at least 80 distinct cases"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input(case, ctx):
    name, run, expected, pattern, fix, *forbidden = case
    if isinstance(expected, type) and issubclass(expected, Warning):  # a documented warning; the work completes
        with pytest.warns(expected, match=pattern) as record:
            run(ctx)
        msg = " | ".join(str(w.message) for w in record)
    else:
        with pytest.raises(expected, match=pattern) as info:
            run(ctx)
        msg = str(info.value)
    if fix is None:
        assert msg == "", f"{name}: a case without a fix regex must end with no message, got {msg!r}"
    else:
        assert __import__("re").search(fix, msg), f"{name}: the message does not say how to fix it: {msg}"
    for text in forbidden:
        assert text not in msg, f"{name}: the message echoes {text!r}: {msg}"
