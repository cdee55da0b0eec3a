"""The explainers on a real MultimodalModel (built by build_model), through its missing-modality path."""

import pandas as pd
import pytest
import torch

from mmfuse.batch import collate
from mmfuse.explain import PatchMasker, WindowMasker, explain_dataset, make_score_fn, mmshap, modality_shapley
from mmfuse.models import build_model

SHAPES = {"audio": (10, 4), "image": (1, 8, 8)}


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = build_model({"strategy": "feature", "fusion": {"name": "concat"}}, SHAPES, 3)
    g = torch.Generator().manual_seed(1)
    samples = [{"audio": torch.randn(10, 4, generator=g), "image": torch.rand(1, 8, 8, generator=g), "target": i % 3}
               for i in range(5)]
    samples[2]["image"] = None  # one sample already misses its image
    return model, collate(samples, ["audio", "image"], SHAPES)


def test_modality_shapley_on_multimodal_model(model_and_batch):
    model, batch = model_and_batch
    sf = make_score_fn(model, "predicted")
    r = modality_shapley(sf, batch)
    assert r.method == "exact" and r.values.shape == (5, 2)
    assert r.efficiency_gap().abs().max() < 1e-6
    probs = model(batch).logits.softmax(1)
    torch.testing.assert_close(r.full.float(), probs.max(1).values)
    assert r.values[2, 1] == 0 and r.shares()[2, 1].isnan()  # image absent in sample 2
    perm = modality_shapley(sf, batch, method="permutation", n_permutations=1)
    torch.testing.assert_close(perm.values, r.values, rtol=0, atol=1e-6)  # 2 players: pairwise → exact


def test_mmshap_on_multimodal_model(model_and_batch):
    model, batch = model_and_batch
    maskers = {"image": PatchMasker(grid=2), "audio": WindowMasker(n_windows=3)}
    res = mmshap(make_score_fn(model, "logit"), batch, maskers, n_permutations=2)
    for i, s in enumerate(res.samples):
        assert abs(s.efficiency_gap()) < 1e-5
        assert s.values.numel() == (3 if i == 2 else 7)
    shares = res.shares()
    assert shares[2, 1].isnan() and shares[2, 0] == 1.0
    ok = [0, 1, 3, 4]
    torch.testing.assert_close(shares[ok].sum(1), torch.ones(4, dtype=torch.float64))


def test_explain_dataset_on_multimodal_model(model_and_batch, tmp_path):
    model, batch = model_and_batch
    summary = explain_dataset(model, [batch.select([0, 1, 2]), batch.select([3, 4])], "shapley", tmp_path, plots=False)
    assert summary["n_samples"] == 5
    df = pd.read_csv(tmp_path / "per_sample.csv")
    assert df["sample"].tolist() == [0, 1, 2, 3, 4] and df["share_image"].isna().tolist() == [False] * 2 + [True] + [False] * 2


def test_explain_dataset_ignores_modalities_the_model_does_not_read(tmp_path):
    """A model trained on a subset of the data's modalities: the extra modality is not a player (its value would be
    exactly 0) and is never encoded (the model has no encoder for it); the audio-only model's single player gets
    the whole f(all) - f(none)."""
    torch.manual_seed(0)
    model = build_model({"strategy": "feature", "fusion": {"name": "concat"}}, {"audio": SHAPES["audio"]}, 3)
    g = torch.Generator().manual_seed(2)
    samples = [{"audio": torch.randn(10, 4, generator=g), "image": torch.rand(1, 8, 8, generator=g), "target": i % 3}
               for i in range(4)]
    batch = collate(samples, ["audio", "image"], SHAPES)
    summary = explain_dataset(model, batch, "shapley", tmp_path, plots=False)
    df = pd.read_csv(tmp_path / "per_sample.csv")
    assert summary["n_samples"] == 4 and "share_image" not in df.columns
    sf = make_score_fn(model, "predicted")
    only_audio = collate([{k: v for k, v in s.items() if k != "image"} for s in samples], ["audio"],
                         {"audio": SHAPES["audio"]})
    r = modality_shapley(sf, only_audio)
    torch.testing.assert_close(torch.as_tensor(df["value_audio"].to_numpy()), r.values[:, 0].double(),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.as_tensor((df["f_full"] - df["f_base"]).to_numpy()), r.values[:, 0].double(),
                               rtol=0, atol=1e-6)
