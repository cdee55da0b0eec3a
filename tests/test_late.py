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
