"""Run diagnostics: the ignored-modality warning, the encoder gradient-norm callback, the unimodal gap."""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.diagnostics import diagnose, ignored_modalities, unimodal_gap, warning_lines
from mmfuse.errors import ConfigError, DataError
from mmfuse.training import fit
from mmfuse.training.callbacks import GradNormMonitor


def _data(n=240, seed=0):
    """Three classes; each modality alone separates them well."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.eye(3, 4) * 3.0
    a = (rng.normal(size=(n, 4)) + centres[y]).astype(np.float32)
    b = (rng.normal(size=(n, 4)) + centres[(y + 1) % 3]).astype(np.float32)
    return from_arrays({"a": a, "b": b}, y, seed=seed)


def _cfg():
    enc = {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}}
    return parse_config({"model": {"encoders": {"a": enc, "b": enc}, "fusion": {"name": "concat"},
                                   "head": {"name": "linear"}, "missing": {"modality_dropout": 0.5}},
                         "training": {"max_epochs": 4, "lr": 0.03, "progress": False, "monitor": "val_accuracy"},
                         "data": {"batch_size": 32}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    data = _data()
    return fit(_cfg(), data, tmp_path_factory.mktemp("run"), save=False), data


def test_no_warning_when_both_modalities_are_used(trained):
    res, _ = trained
    d = res.test["diagnostics"]
    # every modality alone is far above chance, so none can be flagged: the probe is not even fitted
    assert d["metric"] == "accuracy" and d["probe_skipped"].startswith("not needed") and d["unimodal_reference"] == {}
    assert d["ignored"] == [], d
    for m in ("a", "b"):  # each alone predicts (modality dropout trained it to), far above the majority rate
        assert d["only_present"][m] > d["chance"][m] + 0.3
        # the reused simulated pattern {m}
        assert d["only_present"][m] == res.test["patterns"][m]["accuracy"]
    # healthy encoders: a few dead ReLU units at most, no collapse warning (≤ 512 test rows: all 48 here)
    assert d["collapsed"] == [] and d["collapse_skipped"] is None
    assert all(st["rows"] == 48 and st["dims"] == 8 and st["fraction"] < 0.5 for st in d["collapse"].values()), d
    g = d["grad_norm"]
    assert len(g["per_epoch"]) == len(res.history) == 4
    assert all(h["grad_norm[a]"] > 0 and h["grad_norm[b]"] > 0 for h in res.history)
    assert max(g["per_epoch"][0]["ratio"].values()) == 1.0


def test_warning_fires_when_the_model_ignores_a_modality(trained):
    res, data = trained
    model = copy.deepcopy(res.model)
    # the linear head reads cat([emb_a, emb_b]): cut every weight on b's embedding, so b is ignored
    head = [m for m in model.head.modules() if isinstance(m, nn.Linear)][0]
    assert head.weight.shape[1] == 16
    with torch.no_grad():
        head.weight[:, 8:] = 0.0
    d = diagnose(model, data, "multiclass", history=[], family="fusion", monitor="val_accuracy")
    assert [w["modality"] for w in d["ignored"]] == ["b"], d
    w = d["ignored"][0]
    # only b present: the prediction is constant, so at most the majority rate; the probe on b's encoder is high
    assert w["only_present"] <= w["chance"] + 1e-9 and w["reference"] > 0.8
    assert "'b'" in w["message"] and f"{w['only_present']:.3f}" in w["message"] and f"{w['reference']:.3f}" in w["message"]
    assert "model.missing.modality_dropout" in w["message"]
    assert any("looks ignored" in line for line in warning_lines(d))
    quiet = diagnose(model, data, "multiclass", history=[], family="fusion", probe=False)  # no reference: no warning
    assert quiet["ignored"] == [] and quiet["unimodal_reference"] == {} and "no probe" in quiet["probe_skipped"]
    other = diagnose(model, data, "multiclass", history=[], family="intermediate")
    assert "intermediate" in other["probe_skipped"] and other["only_present"] == d["only_present"]


def test_ignored_rule_on_numbers():
    # accuracy, chance 0.1: the case (0.11 only-present vs 0.70 unimodal) is flagged, a used modality is not
    flagged = ignored_modalities({"image": 0.11, "audio": 0.6}, {"image": 0.70, "audio": 0.65},
                                 {"image": 0.10, "audio": 0.10}, "accuracy", "max")
    assert [f["modality"] for f in flagged] == ["image"]
    # error metric (mae, lower is better): chance 1.0, reference 0.5, only-present 0.95 → flagged
    assert ignored_modalities({"x": 0.95}, {"x": 0.5}, {"x": 1.0}, "mae", "min")[0]["modality"] == "x"
    # a reference near chance is no evidence
    assert ignored_modalities({"x": 0.10}, {"x": 0.12}, {"x": 0.10}, "accuracy", "max") == []


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoders = nn.ModuleDict({"a": nn.Linear(3, 2, bias=False), "b": nn.Linear(2, 2, bias=False)})


def test_grad_norm_callback_equals_hand_computed_norm():
    model = _Toy()
    xa, xb = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]), torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    # loss = Σ W_a x_a + 3 Σ W_b x_b  →  ∂/∂W_a[k, :] = Σ_rows x_a, ∂/∂W_b[k, :] = 3 Σ_rows x_b (each of 2 rows k)
    loss = model.encoders["a"](xa).sum() + 3 * model.encoders["b"](xb).sum()
    loss.backward()
    want_a = math.sqrt(2 * sum(v * v for v in xa.sum(0).tolist()))
    want_b = 3 * math.sqrt(2 * sum(v * v for v in xb.sum(0).tolist()))
    mon = GradNormMonitor()
    module = SimpleNamespace(model=model, history=[{"epoch": 0}])
    trainer = SimpleNamespace(current_epoch=0)
    mon.on_train_start(trainer, module)
    mon.on_train_epoch_start(trainer, module)
    mon.on_before_optimizer_step(trainer, module, None)
    mon.on_train_epoch_end(trainer, module)
    assert module.history[0]["grad_norm[a]"] == pytest.approx(want_a, rel=1e-6)
    assert module.history[0]["grad_norm[b]"] == pytest.approx(want_b, rel=1e-6)
    from mmfuse.diagnostics import grad_norm_summary

    g = grad_norm_summary(module.history, ["a", "b"])
    assert g["mean_ratio"]["b"] == 1.0 and g["mean_ratio"]["a"] == pytest.approx(want_a / want_b, rel=1e-6)


def test_unimodal_gap_on_a_hand_made_leaderboard():
    rows = [{"method": "concat", "kind": "fusion", "accuracy_mean": 0.80},
            {"method": "gated", "kind": "fusion", "accuracy_mean": 0.75},
            {"method": "unimodal:audio", "kind": "unimodal", "accuracy_mean": 0.60},
            {"method": "unimodal:image", "kind": "unimodal", "accuracy_mean": 0.70}]
    g = unimodal_gap(rows, "accuracy", "max")
    assert g["unimodal"] == {"audio": 0.60, "image": 0.70}
    assert g["best_fused"] == "concat"
    assert g["best_gap"] == pytest.approx({"audio": 0.20, "image": 0.10})
    assert g["gap"]["gated"]["image"] == pytest.approx(0.05)
    mae = unimodal_gap([{"method": "sum", "mae_mean": 0.4}, {"method": "unimodal:x", "mae_mean": 0.5}], "mae", "min")
    assert mae["gap"]["sum"]["x"] == pytest.approx(-0.1) and mae["advantage"]["sum"]["x"] == pytest.approx(0.1)
    with pytest.raises(DataError, match="accuracy_mean"):
        unimodal_gap([{"method": "concat"}], "accuracy", "max")
    with pytest.raises(ConfigError, match="direction"):
        unimodal_gap(rows, "accuracy", "up")


def test_leaderboard_ignored_uses_the_unimodal_runs():
    from mmfuse.diagnostics import leaderboard_ignored

    rows = [{"method": "gated", "accuracy_mean": 0.72, "pattern[image]_accuracy_mean": 0.11,
             "pattern[audio]_accuracy_mean": 0.60},
            {"method": "unimodal:audio", "kind": "unimodal", "accuracy_mean": 0.62},
            {"method": "unimodal:image", "kind": "unimodal", "accuracy_mean": 0.70}]
    out = leaderboard_ignored(rows, "accuracy", "max", 0.1)
    assert list(out) == ["gated"] and [w["modality"] for w in out["gated"]] == ["image"]
    assert "0.110" in out["gated"][0]["message"] and "0.700" in out["gated"][0]["message"]


def test_compare_diagnostics_flags_an_ignored_modality_from_the_leaderboard():
    """compare's section: gated fusion with image-only accuracy at chance while unimodal:image is far above it."""
    import pandas as pd

    from mmfuse.compare import compare_diagnostics, diagnostics_markdown

    board = pd.DataFrame([
        {"method": "fusion:gated", "kind": "feature", "accuracy_mean": 0.74, "pattern[image]_accuracy_mean": 0.11,
         "pattern[audio]_accuracy_mean": 0.65},
        {"method": "unimodal:image", "kind": "unimodal", "accuracy_mean": 0.70},
        {"method": "unimodal:audio", "kind": "unimodal", "accuracy_mean": 0.66},
    ])
    runs = pd.DataFrame([
        {"method": "fusion:gated", "seed": 0, "chance[image]": 0.1, "chance[audio]": 0.1,
         "grad_ratio[image]": 0.05, "grad_ratio[audio]": 1.0},
        {"method": "fusion:gated", "seed": 1, "chance[image]": 0.1, "chance[audio]": 0.1,
         "grad_ratio[image]": 0.15, "grad_ratio[audio]": 1.0},
    ])
    (d,) = compare_diagnostics(board, runs, "accuracy", "max")
    assert d["unimodal_gap"]["gap"]["fusion:gated"] == pytest.approx({"image": 0.04, "audio": 0.08})
    assert [w["modality"] for w in d["ignored"]["fusion:gated"]] == ["image"]
    assert d["grad_norm_ratio"]["fusion:gated"] == pytest.approx({"image": 0.10, "audio": 1.0})
    md = diagnostics_markdown([d])
    assert "fusion:gated" in md and "image" in md and "dropout" in md


def test_probe_matches_scikit_learn_objectives():
    """The torch probe minimises scikit-learn's LogisticRegression(C=1) / Ridge(alpha=1) objectives (same fits)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from mmfuse.diagnostics import _logistic_probe, _ridge_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    w = rng.normal(size=(6, 3))
    y = np.argmax(x @ w + rng.normal(scale=1.0, size=(300, 3)), 1)
    xt = rng.normal(size=(50, 6))
    ours = np.exp(_logistic_probe(x, y, 3, xt, max_iter=500))
    ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(x, y).predict_proba(xt)
    assert np.abs(ours - ref).max() < 1e-4
    yr = x @ rng.normal(size=(6, 2)) + 0.3
    assert np.allclose(_ridge_probe(x, yr, xt, 1.0), Ridge(alpha=1.0).fit(x, yr).predict(xt), atol=1e-10)


def test_collapsed_encoder_is_named_and_the_test_embeddings_are_computed_once(trained, monkeypatch):
    """Encoder a's last Linear zeroed with a positive bias: its ReLU output is the bias on every row (8 of 8
    dimensions constant); b is untouched. Also b's head weights cut, so that the probe runs and must reuse the
    collapse check's test-split embeddings (the test split is encoded once)."""
    import mmfuse.diagnostics as D

    res, data = trained
    model = copy.deepcopy(res.model)
    last = [m for m in model.encoders["a"].modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.linspace(0.1, 0.8, 8))
        head = [m for m in model.head.modules() if isinstance(m, nn.Linear)][0]
        head.weight[:, 8:] = 0.0
    calls = []
    real = D._embeddings
    monkeypatch.setattr(D, "_embeddings", lambda m, ds, *a, **k: calls.append(ds) or real(m, ds, *a, **k))
    d = diagnose(model, data, "multiclass", history=[], family="fusion")
    assert d["collapse"]["a"] == {"dims": 8, "constant": 8, "rows": 48, "fraction": 1.0}
    assert d["collapse"]["b"]["fraction"] < 0.5
    (w,) = d["collapsed"]
    assert w["modality"] == "a" and "8 of 8 dimensions constant over 48 test rows" in w["message"]
    assert "dead ReLUs?" in w["message"] and "lower learning rate" in w["message"]
    assert any("encoder output collapsed" in line for line in warning_lines(d))
    assert d["unimodal_reference"] and sum(ds is data["test"] for ds in calls) == 1  # probe ran, one test pass
    other = diagnose(model, data, "multiclass", history=[], family="intermediate")  # no per-modality encoders
    assert other["collapse"] == {} and other["collapsed"] == [] and "no collapse check" in other["collapse_skipped"]


def test_encoder_collapse_rule_on_numbers():
    from mmfuse.diagnostics import collapsed_modalities, encoder_collapse

    rng = np.random.default_rng(0)
    n = 40
    x = np.zeros((n, 6))
    x[:, 0] = 1e3 + rng.normal(size=n) * 1e-10  # large constant with rounding-size noise: var 1e-20 ≤ 1e-12·1e6
    x[:, 1] = 0.0  # a dead ReLU
    x[:, 2] = 1e-3 * rng.normal(size=n)  # small but varying: var 1e-6 > 1e-12
    x[:, 3:] = rng.normal(size=(n, 3))
    st = encoder_collapse({"m": x, "pair": (x[:, 2:], np.zeros(n))})
    assert st["m"] == {"dims": 6, "constant": 2, "rows": n, "fraction": 2 / 6}
    assert st["pair"]["constant"] == 0
    assert collapsed_modalities(st) == []  # a third constant: not collapsed
    x[:, 3] = 7.0
    x[:, 4] = 0.0  # 4 of 6 constant: a working ReLU encoder can have that many dead units, still no warning
    assert encoder_collapse({"m": x})["m"]["constant"] == 4 and collapsed_modalities(encoder_collapse({"m": x})) == []
    x[:, 5] = -2.0  # 5 of 6 ≥ three quarters: collapsed
    (w,) = collapsed_modalities(encoder_collapse({"m": x}))
    assert w["constant"] == 5 and "5 of 6 dimensions constant over 40 test rows" in w["message"]
    assert collapsed_modalities(encoder_collapse({"m": x[:10]})) == []  # too few rows to tell
    assert encoder_collapse({"m": np.zeros((0, 4))}) == {}


def test_compare_and_report_show_collapsed_encoders():
    import pandas as pd

    from mmfuse.compare import compare_diagnostics, diagnostics_markdown
    from mmfuse.report.sections import _warnings, compare_diagnostics_html

    board = pd.DataFrame([{"method": "fusion:concat", "kind": "feature", "accuracy_mean": 0.7},
                          {"method": "fusion:sum", "kind": "feature", "accuracy_mean": 0.6}])
    runs = pd.DataFrame([
        {"method": "fusion:concat", "seed": 0, "collapsed[image]": 1.0, "collapsed[audio]": 0.1},
        {"method": "fusion:concat", "seed": 1, "collapsed[image]": 0.2, "collapsed[audio]": 0.0},
        {"method": "fusion:sum", "seed": 0, "collapsed[image]": 0.7, "collapsed[audio]": float("nan")},
    ])
    (d,) = compare_diagnostics(board, runs, "accuracy", "max")
    assert list(d["collapsed"]) == ["fusion:concat"]
    (w,) = d["collapsed"]["fusion:concat"]
    assert (w["modality"], w["runs"], w["of_runs"], w["fraction"]) == ("image", 1, 2, 1.0)
    assert "100% of its dimensions constant over the test rows in 1 of 2 runs" in w["message"]
    assert "fusion:concat" in diagnostics_markdown([d]) and "encoder output collapsed" in diagnostics_markdown([d])
    assert _warnings([d]) == [f"fusion:concat: {w['message']}"]  # the report's warning list (compare)
    assert "Collapsed encoders" in compare_diagnostics_html([d])
    one_run = {"test": {"diagnostics": {"collapsed": [{"modality": "a", "message": "modality 'a': collapsed"}]}}}
    assert _warnings(one_run) == ["modality 'a': collapsed"]  # the report's warning list (mmfuse train)
