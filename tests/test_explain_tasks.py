"""Task-aware explanations: multilabel (each label's sigmoid), regression (the prediction), and the
score function restoring the model's training flag (bug d)."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from mmfuse.batch import MultimodalBatch
from mmfuse.errors import ConfigError
from mmfuse.explain import explain_dataset, make_score_fn, mmshap, modality_shapley

MODS = ["a", "b", "c"]


def make_batch(B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, 2, generator=g, dtype=torch.float64) for m in MODS}
    return MultimodalBatch(inputs, {m: torch.ones(B, dtype=torch.bool) for m in MODS})


def sums(batch):
    return {m: batch.inputs[m].sum(1) * batch.mask[m] for m in MODS}


class LabelModel(nn.Module):
    """3 labels: label 0 depends on a only, label 1 on a and b, label 2 on b only; c on none."""

    task = "multilabel"

    def forward(self, batch):
        s = sums(batch)
        z = torch.stack([1.5 * torch.tanh(s["a"]) - 0.3, s["b"] + 0.7 * s["a"] * s["b"], s["b"] - 0.5], 1)
        return SimpleNamespace(logits=z)


class RegressionModel(nn.Module):
    """y0 = 3a + ab, y1 = b (a, b: a modality's sum, 0 when absent); c affects no output."""

    def forward(self, batch):
        s = sums(batch)
        return SimpleNamespace(logits=torch.stack([3 * s["a"] + s["a"] * s["b"], s["b"]], 1))


def test_multilabel_null_modality_and_per_label_shares_are_exactly_zero():
    batch = make_batch()
    r = modality_shapley(make_score_fn(LabelModel(), task="multilabel"), batch, method="exact")
    assert r.values.shape == (5, 3, 3) and r.full.shape == (5, 3)
    s = sums(batch)
    # oracle: label 0 depends on a alone, so φ_a = σ(z0(a)) − σ(z0(∅)), the others 0
    phi_a0 = torch.sigmoid(1.5 * torch.tanh(s["a"]) - 0.3) - torch.sigmoid(torch.tensor(-0.3, dtype=torch.float64))
    torch.testing.assert_close(r.values[:, 0, 0], phi_a0, rtol=0, atol=1e-15)
    per = r.output_shares()
    assert torch.equal(r.values[:, 2], torch.zeros(5, 3))  # c: no label depends on it
    assert torch.equal(per[:, 2], torch.zeros(5, 3)) and torch.equal(r.shares()[:, 2], torch.zeros(5))
    assert torch.equal(per[:, 1, 0], torch.zeros(5))  # label 0 ignores b (a softmax across labels did not)
    assert torch.equal(per[:, 0, 2], torch.zeros(5))  # label 2 ignores a
    assert torch.equal(per[:, 0, 0], torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(r.shares(), per.mean(2))
    assert r.efficiency_gap().abs().max() < 1e-14
    torch.testing.assert_close(r.full, torch.sigmoid(LabelModel()(batch).logits))


def test_multilabel_one_label_and_feature_level():
    batch = make_batch()
    one = modality_shapley(make_score_fn(LabelModel(), "class", 2, task="multilabel"), batch, method="exact")
    assert one.values.shape == (5, 3) and torch.equal(one.values[:, [0, 2]], torch.zeros(5, 2))
    res = mmshap(make_score_fn(LabelModel(), task="multilabel"), batch, method="exact")
    assert res.contributions.shape == (5, 3, 3)
    assert torch.equal(res.contributions[:, 2], torch.zeros(5, 3)) and torch.equal(res.shares()[:, 2], torch.zeros(5))
    assert torch.equal(res.output_shares()[:, 1, 0], torch.zeros(5))
    assert max(s.efficiency_gap() for s in res.samples) < 1e-12


def test_regression_explains_the_prediction_exactly():
    batch = make_batch()
    r = modality_shapley(make_score_fn(RegressionModel(), task="regression"), batch, method="exact")
    s = sums(batch)
    ab = s["a"] * s["b"]
    expect = torch.zeros(5, 3, 2, dtype=torch.float64)
    expect[:, 0, 0], expect[:, 1, 0], expect[:, 1, 1] = 3 * s["a"] + ab / 2, ab / 2, s["b"]
    torch.testing.assert_close(r.values, expect, rtol=0, atol=1e-12)  # Shapley of 3a + ab and of b, by hand
    assert torch.equal(r.shares()[:, 2], torch.zeros(5))
    torch.testing.assert_close(r.full, RegressionModel()(batch).logits)  # the prediction, not a probability


class DropoutModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(2, 3).double()
        self.drop = nn.Dropout(0.5)

    def forward(self, batch):
        return SimpleNamespace(logits=self.drop(self.lin(batch.inputs["a"] * batch.mask["a"].unsqueeze(1).double())))


def test_score_function_restores_training_flag():
    """Bug (d): the score function left the caller's model in eval mode."""
    model = DropoutModel().train()
    sf = make_score_fn(model)
    assert model.training
    first = sf(make_batch())
    assert model.training  # restored after the call
    assert torch.equal(sf(make_batch()), first)  # and no dropout during the calls
    model.eval()
    sf(make_batch())
    assert not model.training
    modality_shapley(make_score_fn(model.train()), make_batch())
    assert model.training


def test_explain_dataset_multilabel_and_regression_reports(tmp_path):
    batch = make_batch(6)
    batch.target = (torch.arange(18).view(6, 3) % 2).float()
    s = explain_dataset(LabelModel(), batch, "shapley", tmp_path / "ml", plots=True, class_names=["x", "y", "z"])
    assert s["task"] == "multilabel" and s["accuracy"] is None and s["by_class"] == {} and s["by_correctness"] == {}
    assert s["mean_share"]["c"] == 0.0 and s["by_label"]["x"]["b"] == 0.0 and s["by_label"]["x"]["a"] == 1.0
    df = pd.read_csv(tmp_path / "ml" / "per_sample.csv")
    assert {"target[x]", "predicted[z]", "share_a[y]", "value_b[z]", "f_full[x]"} <= set(df.columns)
    assert "correct" not in df and (tmp_path / "ml" / "shares_by_label.png").exists()
    assert df["predicted[x]"].tolist() == (LabelModel()(batch).logits[:, 0] > 0).long().tolist()

    batch.target = torch.randn(6, 2, dtype=torch.float64)
    s = explain_dataset(RegressionModel(), batch, "shapley", tmp_path / "reg", task="regression", plots=False)
    assert "accuracy" not in s and s["by_class"] == {} and s["explained"] == "the prediction"
    assert s["mean_share"]["c"] == 0.0
    df = pd.read_csv(tmp_path / "reg" / "per_sample.csv")
    assert "correct" not in df and {"prediction[0]", "prediction[1]", "target[1]"} <= set(df.columns)
    assert s["mean_prediction"]["prediction[1]"] == pytest.approx(float(sums(batch)["b"].mean()))
    with pytest.raises(ConfigError, match="true class"):
        explain_dataset(RegressionModel(), batch, "shapley", tmp_path / "x", task="regression", class_index="target")
