"""`mmfuse compare` across model families, the grid axis, resume, and `data.missing`."""

import importlib
import json

import numpy as np
import pandas as pd
import pytest

from mmfuse.compare import resolve_method, run_compare, run_config, run_key
from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.datasets.pairing import apply_missing
from mmfuse.errors import ConfigError
from mmfuse.registry import MODELS

fit_mod = importlib.import_module("mmfuse.training.fit")


def tiny_data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    image = rng.normal(size=(n, 1, 12, 12)).astype(np.float32) + y[:, None, None, None] * 0.7
    audio = rng.normal(size=(n, 8, 3)).astype(np.float32) + y[:, None, None] * 0.5
    return from_arrays({"image": image, "audio": audio}, y, seed=0)


BASE = {
    "model": {"encoders": {"image": {"name": "cnn2d", "options": {"channels": [4, 8], "output_dim": 8}},
                           "audio": {"name": "cnn1d", "options": {"channels": [4, 8], "output_dim": 8}}},
              "head": {"name": "mlp", "options": {"hidden": [8]}}},
    "training": {"max_epochs": 1, "progress": False},
    "compare": {"seeds": [0], "tsne": False},
}


def families_config(extra=()):
    methods = ["fusion:concat", "fusion:late", "intermediate:mmtm", "unimodal:image", *extra]
    overlays = {}
    # families that may be registered: run them with their registered tiny test options
    for fam in ("mea", "ngiam"):
        if fam in MODELS:
            overlays[f"{fam}_tiny"] = {"model": {"family": fam, **MODELS.info(fam)["test_options"]}}
            if fam == "mea":
                overlays[f"{fam}_tiny"]["model"]["encoders"] = {}
            methods.append(f"{fam}_tiny")
    return parse_config({**BASE, "compare": {**BASE["compare"], "methods": methods, "overlays": overlays}})


@pytest.fixture(scope="module")
def families_run(tmp_path_factory):
    cfg = families_config()
    out = tmp_path_factory.mktemp("fam")
    board = run_compare(cfg, out, progress=False, datasets=tiny_data())
    return cfg, out, board


def test_methods_from_several_families_on_the_same_seeds(families_run):
    cfg, out, board = families_run
    runs = pd.read_csv(out / "runs.csv")
    assert set(board["method"]) == set(cfg.compare.methods)
    kinds = dict(zip(board["method"], board["kind"]))
    assert kinds["fusion:concat"] == "feature" and kinds["fusion:late"] == "late"
    assert kinds["intermediate:mmtm"] == "intermediate" and kinds["unimodal:image"] == "unimodal"
    assert len({k for k in kinds.values()}) >= 4
    assert set(runs["seed"]) == {0} and len(runs) == len(cfg.compare.methods)
    # every run's stored config is its family's, and its metrics are the leaderboard's
    for _, r in runs.iterrows():
        stored = json.loads((out / "runs" / f"{r['run']}.json").read_text())
        fam = stored["config"]["model"]["family"]
        assert fam == {"intermediate:mmtm": "intermediate", "mea_tiny": "mea", "ngiam_tiny": "ngiam"}.get(r["method"], "fusion")
        assert stored["metrics"]["test_accuracy"] == pytest.approx(r["test_accuracy"])
        assert 0.0 <= r["test_accuracy"] <= 1.0
    md = (out / "leaderboard.md").read_text()
    assert "intermediate:mmtm" in md and "| intermediate |" in md


def test_resume_trains_nothing_the_second_time(families_run, monkeypatch):
    cfg, out, board = families_run
    calls = []
    real = fit_mod.fit
    monkeypatch.setattr(fit_mod, "fit", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run_compare(cfg, out, progress=False, datasets=tiny_data())
    assert calls == []
    pd.testing.assert_frame_equal(board, again)
    # one more seed: only the new runs train
    more = parse_config(cfg.model_dump(), ["compare.seeds=[0,1]"])
    run_compare(more, out, progress=False, datasets=tiny_data())
    assert len(calls) == len(cfg.compare.methods)


def test_family_change_keeps_shared_keys_and_drops_foreign_ones():
    cfg = parse_config({**BASE, "model": {**BASE["model"], "strategy": "late", "late": {"name": "mean_prob"},
                                          "missing": {"modality_dropout": 0.25}},
                        "training": {"max_epochs": 1, "scheme": "joint"}})
    rc = run_config(cfg, resolve_method("intermediate:mmtm", {}), seed=3)
    assert rc.model.family == "intermediate" and rc.seed == 3 and rc.data.seed == cfg.seed
    assert rc.model.encoders == cfg.model.encoders and rc.model.missing.modality_dropout == 0.25
    assert not hasattr(rc.model, "strategy") and rc.training.scheme == "auto"
    same = run_config(cfg, resolve_method("fusion:concat", {}), seed=3)
    assert same.model.strategy == "feature" and same.training.scheme == "joint"
    assert run_key(same) != run_key(rc) and run_key(same) == run_key(run_config(cfg, resolve_method("fusion:concat", {}), 3))


def test_unknown_method_names_fail_before_any_compute(monkeypatch):
    monkeypatch.setattr(fit_mod, "fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "compare": {"methods": ["fusion:concta", "intermediat:mmtm", "ngiam:shard", "smil"]}})
    msg = str(e.value)
    assert "'fusion:concat'" in msg and "'intermediate:mmtm'" in msg and "'ngiam:shared'" in msg
    assert "methods[3]" not in msg  # smil is a method name even before its family is registered
    cfg = parse_config({**BASE, "compare": {"methods": ["fusion:concat", "unimodal:imag"]}})
    with pytest.raises(ConfigError, match="'image'"):
        run_compare(cfg, None, progress=False, datasets=tiny_data())


def test_grid_axis_and_data_missing(tmp_path):
    data = tiny_data()
    cfg = parse_config({**BASE, "data": {"missing": {"modality": "audio", "present_fraction": 0.5}},
                        "compare": {**BASE["compare"], "methods": ["fusion:concat", "upper"],
                                    "overlays": {"upper": {"data.missing.present_fraction": 1.0}},
                                    "grid": {"data.missing.present_fraction": [0.2, 0.6]}}})
    board = run_compare(cfg, tmp_path, progress=False, datasets=data)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(board) == 4 and list(board["data.missing.present_fraction"]) == [0.2, 0.2, 0.6, 0.6]
    counts = np.bincount(data["train"].targets, minlength=3)
    for _, r in runs.iterrows():
        frac = 1.0 if r["method"] == "upper" else r["data.missing.present_fraction"]
        # stratified per class: round(frac * n_c) keep audio, the rest are masked and counted, none removed
        kept = sum(int(round(frac * c)) for c in counts)
        assert r["train_audio_present"] == kept and r["train_audio_masked"] == len(data["train"]) - kept
        assert r["n_train"] == len(data["train"])
    # the upper bound is one run (same resolved config at both grid points)
    assert runs[runs["method"] == "upper"]["run"].nunique() == 1
    assert len(list((tmp_path / "runs").glob("*.json"))) == 3
    assert "masked absent on" in (tmp_path / "leaderboard.md").read_text()


def test_data_missing_is_deterministic_and_leaves_other_splits():
    data = tiny_data()
    spec = parse_config({"data": {"missing": {"modality": "audio", "present_fraction": 0.3}}}).data.missing
    a, b, c = apply_missing(data, spec, 1), apply_missing(data, spec, 1), apply_missing(data, spec, 2)
    assert (a["train"].present["audio"] == b["train"].present["audio"]).all()
    assert (a["train"].present["audio"] != c["train"].present["audio"]).any()
    assert a["test"] is data["test"] and a["train"].present["image"].all() and len(a["train"]) == len(data["train"])
    assert a["train"].missing_report["masked"] == len(data["train"]) - int(a["train"].present["audio"].sum())
    with pytest.raises(ConfigError, match="data.missing.modality"):
        apply_missing(data, spec.model_copy(update={"modality": "audoi"}), 0)


def test_cross_modal_imputer_loss_reaches_the_training_loss():
    import torch

    from mmfuse.models import build_model

    cfg = parse_config({**BASE, "model": {**BASE["model"], "missing": {"imputer": "cross_modal"}}})
    model = build_model(cfg.model, {"image": (1, 12, 12), "audio": (8, 3)}, 3).train()
    batch = tiny_data()["train"].batch(np.arange(8))
    batch = batch.with_mask({"audio": torch.tensor([True, False] * 4)})
    torch.manual_seed(0)
    out = model(batch)
    emb = model.encode(batch)
    want = model.imputer.reconstruction_loss(emb, batch.mask)  # MSE on the rows that have audio
    assert out.losses["imputer_reconstruction"].item() == pytest.approx(want.item(), rel=1e-5)
    assert model.eval()(batch).losses == {}
