"""Late-fusion combiners: per-modality logits + mask -> combined logits."""

from __future__ import annotations

import pytest
import torch

from mmfuse.errors import ConfigError, MissingModalityError, ShapeError, UnknownNameError
from mmfuse.late import create_late_combiner, list_late_combiners

MODS = ["audio", "text", "video"]


def bools(*values):
    return torch.tensor(values, dtype=torch.bool)


def logits(batch=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, classes, generator=g) * 2 for m in MODS}


MASK = {"audio": bools(1, 1, 0, 0), "text": bools(1, 0, 1, 0), "video": bools(1, 1, 0, 0)}


def test_registered():
    assert {"mean_prob", "learned_weights", "majority_vote"} <= set(list_late_combiners())


def test_mean_prob_is_log_of_masked_mean_probability():
    comb = create_late_combiner("mean_prob", MODS, 3)
    lg = logits()
    out = comb(lg, MASK)
    for row in range(3):
        probs = [torch.softmax(lg[m][row], -1) for m in MODS if MASK[m][row]]
        assert torch.allclose(out[row], torch.log(sum(probs) / len(probs)), atol=1e-6)
    assert torch.allclose(out[:3].exp().sum(-1), torch.ones(3), atol=1e-6)
    assert torch.equal(out[3], torch.zeros(3))  # none present: uniform logits


def test_mean_prob_is_stable_for_confident_logits():
    comb = create_late_combiner("mean_prob", ["a", "b"], 2)
    out = comb({"a": torch.tensor([[200.0, -200.0]]), "b": torch.tensor([[200.0, -200.0]])}, None)
    assert torch.isfinite(out).all() and out[0, 1] < -300  # log-probability, not clamped at log(tiny)


@pytest.mark.parametrize("name", ["mean_prob", "learned_weights", "majority_vote"])
def test_absent_modality_is_ignored(name):
    comb = create_late_combiner(name, MODS, 3)
    lg = logits()
    out = comb(lg, MASK)
    changed = {m: torch.where(MASK[m].unsqueeze(1), v, 50 * torch.randn(4, 3)) for m, v in lg.items()}
    assert torch.equal(comb(changed, MASK), out)
    only_text = {m: torch.full((4,), m == "text") for m in MODS}
    assert torch.equal(comb(lg, only_text)[:, :].argmax(-1), lg["text"].argmax(-1))
    none = {m: torch.zeros(4, dtype=torch.bool) for m in MODS}
    assert torch.equal(comb(lg, none), torch.zeros(4, 3))


def test_majority_vote_and_tie_break():
    comb = create_late_combiner("majority_vote", MODS, 3)
    lg = {
        "audio": torch.tensor([[5.0, 0, 0], [0.0, 0.2, 0]]),
        "text": torch.tensor([[0.0, 1, 0], [0.0, 0, 9.0]]),
        "video": torch.tensor([[0.0, 1, 0], [0.0, 0.2, 0]]),
    }
    out = comb(lg, None)
    # row 0: two votes for class 1 beat a very confident single vote for class 0
    assert out[0].argmax() == 1
    assert torch.allclose(out[0].exp()[1], torch.tensor(2 / 3), atol=1e-3)
    # row 1: votes 1 (audio), 2 (text), 1 (video) -> class 1
    assert out[1].argmax() == 1
    # a 1-1 tie (video absent): the higher mean probability wins -> text's confident class 2
    mask = {"audio": bools(1, 1), "text": bools(1, 1), "video": bools(0, 0)}
    out = comb(lg, mask)
    assert out[1].argmax() == 2 and out[0].argmax() == 0  # row 0: audio's 5.0 beats text's 1.0
    assert torch.isfinite(out).all()


def test_learned_weights_semantics_and_gradient():
    comb = create_late_combiner("learned_weights", MODS, 3)
    assert "weight_logits" in comb.state_dict()
    lg = logits()
    logp = {m: torch.log_softmax(v, -1) for m, v in lg.items()}
    out = comb(lg, None)
    assert torch.allclose(out, sum(logp.values()) / 3, atol=1e-6)  # zero init: equal weights
    with torch.no_grad():
        comb.weight_logits.copy_(torch.log(torch.tensor([1.0, 2.0, 5.0])))
    out = comb(lg, MASK)
    assert torch.allclose(out[0], (1 * logp["audio"][0] + 2 * logp["text"][0] + 5 * logp["video"][0]) / 8, atol=1e-6)
    assert torch.allclose(out[1], (1 * logp["audio"][1] + 5 * logp["video"][1]) / 6, atol=1e-6)  # renormalised
    assert torch.allclose(out[2], logp["text"][2], atol=1e-6)
    target = torch.tensor([0, 1, 2, 0])
    torch.nn.functional.cross_entropy(comb(lg, MASK), target).backward()
    assert comb.weight_logits.grad is not None and comb.weight_logits.grad.abs().sum() > 0
    assert torch.isfinite(comb.weight_logits.grad).all()


@pytest.mark.parametrize("name", ["mean_prob", "learned_weights", "majority_vote"])
def test_bad_inputs(name):
    comb = create_late_combiner(name, MODS, 3)
    lg = logits()
    with pytest.raises(MissingModalityError, match="'video'"):
        comb({m: v for m, v in lg.items() if m != "video"}, None)
    with pytest.raises(ShapeError, match="logits\\['text'\\].*\\(4, 3\\)"):
        comb({**lg, "text": torch.randn(4, 2)}, None)
    with pytest.raises(ShapeError, match="mask\\['audio'\\]"):
        comb(lg, {**MASK, "audio": bools(1, 0)})


def test_bad_construction():
    with pytest.raises(ConfigError, match="num_classes"):
        create_late_combiner("mean_prob", MODS, 0)
    with pytest.raises(ConfigError, match="modalities"):
        create_late_combiner("mean_prob", [], 3)
    with pytest.raises(ConfigError, match="distinct"):
        create_late_combiner("mean_prob", ["a", "a"], 3)
    with pytest.raises(UnknownNameError, match="did you mean 'majority_vote'"):
        create_late_combiner("majority", MODS, 3)
    with pytest.raises(ConfigError, match="temperature"):
        create_late_combiner("mean_prob", MODS, 3, temperature=2.0)


# ---------------------------------------------------------------- tasks: multilabel and regression

def f64(batch=4, classes=3, seed=1, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale for m in MODS}


def present_rows(row):
    return [m for m in MODS if MASK[m][row]]


def test_mean_prob_multilabel_is_logit_of_mean_sigmoid_float64():
    comb = create_late_combiner("mean_prob", MODS, 3, task="multilabel")
    lg = f64()
    out = comb(lg, MASK)
    assert out.dtype == torch.float64
    for row in range(3):
        p = sum(torch.sigmoid(lg[m][row]) for m in present_rows(row)) / len(present_rows(row))
        assert torch.allclose(out[row], torch.log(p / (1 - p)), atol=1e-9, rtol=0)  # oracle loses digits in 1 - p
    # a single present modality gives back its own logits exactly (not a softmax across labels)
    one = {m: torch.full((4,), m == "audio") for m in MODS}
    assert torch.allclose(comb(lg, one), lg["audio"], atol=1e-12, rtol=0)


def test_mean_prob_multilabel_keeps_confident_logits():
    """Issue 9: head logits 6.21 and 2.67 became −0.46 and −1.11 (a softmax across labels)."""
    comb = create_late_combiner("mean_prob", ["a", "b"], 2, task="multilabel")
    z = torch.tensor([[6.21, 2.67]])
    out = comb({"a": z, "b": z}, None)
    assert torch.allclose(out, z, atol=1e-5) and (out > 0).all()  # both labels stay on
    big = torch.tensor([[60.0, -60.0]])
    out = comb({"a": big, "b": big}, None)
    assert torch.isfinite(out).all() and out[0, 0] > 55 and out[0, 1] < -55  # no clamping at 1 - eps


def test_learned_weights_multilabel_float64_oracle():
    comb = create_late_combiner("learned_weights", MODS, 3, task="multilabel").double()
    lg = f64(seed=2)
    with torch.no_grad():
        comb.weight_logits.copy_(torch.log(torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)))
    out = comb(lg, MASK)
    w = {"audio": 1.0, "text": 2.0, "video": 5.0}
    for row in range(3):
        ms = present_rows(row)
        total = sum(w[m] for m in ms)
        p = sum(w[m] / total * torch.sigmoid(lg[m][row]) for m in ms)
        assert torch.allclose(out[row], torch.log(p) - torch.log1p(-p), atol=1e-9, rtol=0)
    target = (torch.rand(4, 3, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    torch.nn.functional.binary_cross_entropy_with_logits(out[:3], target[:3]).backward()
    assert torch.isfinite(comb.weight_logits.grad).all() and comb.weight_logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["mean_prob", "learned_weights"])
def test_regression_pools_predictions_float64(name):
    """Issue 9: every late combiner returned 0.0 on regression (log_softmax of one output)."""
    comb = create_late_combiner(name, MODS, 2, task="regression").double()
    lg = f64(classes=2, seed=3)
    w = {"audio": 1.0, "text": 2.0, "video": 5.0}
    if name == "learned_weights":
        with torch.no_grad():
            comb.weight_logits.copy_(torch.log(torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)))
    else:
        w = {m: 1.0 for m in MODS}
    out = comb(lg, MASK)
    for row in range(3):
        ms = present_rows(row)
        expect = sum(w[m] * lg[m][row] for m in ms) / sum(w[m] for m in ms)
        assert torch.allclose(out[row], expect, atol=1e-12, rtol=0)
    single = create_late_combiner(name, MODS, 1, task="regression")
    y = {m: torch.tensor([[1.5], [-2.0]]) for m in MODS}
    assert torch.allclose(single(y, None), torch.tensor([[1.5], [-2.0]]))  # not 0.0


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
@pytest.mark.parametrize("name", ["mean_prob", "learned_weights"])
def test_no_modality_present_gives_zeros(name, task):
    """Documented: uniform classes / p = 0.5 per label / prediction 0, with finite gradients."""
    comb = create_late_combiner(name, MODS, 3, task=task)
    lg = {m: v.clone().requires_grad_(True) for m, v in logits().items()}
    none = {m: torch.zeros(4, dtype=torch.bool) for m in MODS}
    out = comb(lg, none)
    assert torch.equal(out, torch.zeros(4, 3))
    out.sum().backward()
    assert all(torch.equal(v.grad, torch.zeros(4, 3)) for v in lg.values())


def test_majority_vote_is_multiclass_only():
    from mmfuse.registry import LATE_COMBINERS

    assert LATE_COMBINERS.info("majority_vote")["tasks"] == ("multiclass",)
    for task in ("multilabel", "regression"):
        with pytest.raises(ConfigError, match="majority_vote.*multiclass"):
            LATE_COMBINERS.check_task("majority_vote", task, "model.late.name")
        with pytest.raises(ConfigError, match="only multiclass"):
            create_late_combiner("majority_vote", MODS, 3, task=task)
    with pytest.raises(ConfigError, match="task"):
        create_late_combiner("mean_prob", MODS, 3, task="ranking")


def test_fusion_builder_refuses_majority_vote_for_regression():
    from mmfuse.config import parse_model_config
    from mmfuse.models.build import build_model

    cfg = parse_model_config({"family": "fusion", "strategy": "late", "late": {"name": "majority_vote"},
                              "encoders": {"a": {"name": "mlp"}, "b": {"name": "mlp"}}})
    with pytest.raises(ConfigError, match="model.late.name.*majority_vote"):
        build_model(cfg, {"a": (4,), "b": (4,)}, 1, "regression")
    cfg = parse_model_config({"family": "fusion", "strategy": "late", "late": {"name": "mean_prob"},
                              "encoders": {"a": {"name": "mlp"}, "b": {"name": "mlp"}}})
    model = build_model(cfg, {"a": (4,), "b": (4,)}, 1, "regression")
    assert model.late_combiner.task == "regression"


@pytest.mark.parametrize("name", ["mean_prob", "learned_weights"])
def test_gradient_finite_when_a_class_is_minus_inf_everywhere(name):
    """Bug (c): mean_prob's gradient was NaN when a class is -inf in every present modality
    (logsumexp backward exp(x − out) with x = out = -inf)."""
    comb = create_late_combiner(name, ["a", "b"], 3)
    za = torch.tensor([[2.0, -float("inf"), 0.5], [0.3, -float("inf"), 1.0]], requires_grad=True)
    zb = torch.tensor([[1.0, -float("inf"), 0.0], [0.1, 2.0, 1.0]], requires_grad=True)
    out = comb({"a": za, "b": zb}, {"a": bools(1, 1), "b": bools(1, 0)})
    assert out[0, 1] < -1e30 and torch.isfinite(out[:, [0, 2]]).all()
    loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(za.grad).all() and torch.isfinite(zb.grad).all()
    assert za.grad[0, 0] != 0  # the gradient still flows to the finite classes
    if name == "learned_weights":
        assert torch.isfinite(comb.weight_logits.grad).all()
    # the finite classes keep their exact probabilities (class 1 has probability 0)
    ref = torch.log(sum(torch.softmax(z[0].detach(), -1) for z in (za, zb)) / 2)
    if name == "mean_prob":
        assert torch.allclose(out[0, [0, 2]], ref[[0, 2]], atol=1e-6)
