"""Dataset-level reports: explain_dataset files and summary, breakdown tables."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmfuse.batch import collate
from mmfuse.errors import ConfigError, DataError
from mmfuse.explain import breakdown, explain_dataset


class TinyData(Dataset):
    """Text ids [6] (padded, variable length) + image [1, 8, 8]; 3 classes."""

    class_names = ["zero", "one", "two"]

    def __init__(self, n=10):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            L = 3 + i % 4
            self.items.append({"text": torch.randint(1, 30, (L,), generator=g),
                               "image": torch.rand(1, 8, 8, generator=g),
                               "target": i % 3})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    @property
    def collate_fn(self):
        return lambda s: collate(s, ["image", "text"], {"image": (1, 8, 8), "text": (None,)})


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(30, 8, padding_idx=0)
        self.img = nn.Linear(64, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, batch):
        t = self.emb(batch.inputs["text"]).mean(1) * batch.mask["text"].unsqueeze(1)
        i = torch.tanh(self.img(batch.inputs["image"].flatten(1))) * batch.mask["image"].unsqueeze(1)
        return SimpleNamespace(logits=self.out(torch.tanh(t + i + t * i)))


def test_shapley_report(tmp_path):
    summary = explain_dataset(TinyModel(), TinyData(), "shapley", tmp_path, batch_size=4)
    assert summary["n_samples"] == 10 and summary["modalities"] == ["image", "text"]
    assert sum(summary["mean_share"].values()) == pytest.approx(1.0)
    assert set(summary["by_class"]) == {"zero", "one", "two"}
    assert set(summary["by_correctness"]) <= {"correct", "incorrect"} and summary["by_correctness"]
    df = pd.read_csv(tmp_path / "per_sample.csv")
    assert len(df) == 10 and df["sample"].tolist() == list(range(10))
    assert ((df["value_image"] + df["value_text"]) - (df["f_full"] - df["f_base"])).abs().max() < 1e-6
    assert (df["share_image"] + df["share_text"]).sub(1).abs().max() < 1e-9
    table = pd.read_csv(tmp_path / "breakdown.csv")
    assert table["group"].tolist()[:4] == ["all", "class", "class", "class"]
    for name in ("shares_by_class.png", "shares_by_correctness.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_mmshap_report_with_examples(tmp_path):
    data = TinyData(6)
    loader = DataLoader(data, batch_size=4, collate_fn=data.collate_fn)
    summary = explain_dataset(TinyModel(), loader, "mmshap", tmp_path, maskers={"image": {"kind": "patches", "grid": "auto"}},
                              n_permutations=2, max_samples=5, n_examples=2, vocab=lambda i: f"w{i}",
                              class_names=TinyData.class_names)
    assert summary["n_samples"] == 5
    df = pd.read_csv(tmp_path / "per_sample.csv")
    assert len(df) == 5 and df[["share_image", "share_text"]].sum(1).sub(1).abs().max() < 1e-9
    pngs = sorted(p.name for p in (tmp_path / "examples").iterdir())
    assert pngs == ["sample0_image.png", "sample0_text.png", "sample1_image.png", "sample1_text.png"]


def test_single_batch_true_class_and_no_plots(tmp_path):
    data = TinyData(4)
    batch = data.collate_fn([data[i] for i in range(4)])
    s = explain_dataset(TinyModel(), batch, "shapley", tmp_path, class_index="target", plots=False)
    df = pd.read_csv(tmp_path / "per_sample.csv")
    assert df["explained_class"].tolist() == df["target"].tolist()
    assert not (tmp_path / "shares_by_class.png").exists() and s["accuracy"] is not None


def test_breakdown_by_hand():
    df = pd.DataFrame({"target": [0, 0, 1, 1], "predicted": [0, 1, 1, 1], "share_a": [0.2, 0.4, 0.6, float("nan")]})
    df["correct"] = df["target"] == df["predicted"]
    df["share_b"] = 1 - df["share_a"]
    t = breakdown(df, ["a", "b"]).set_index(["group", "level"])
    assert t.loc[("all", "all"), "share_a_mean"] == pytest.approx(0.4)
    assert t.loc[("class", 0), "share_a_mean"] == pytest.approx(0.3)
    assert t.loc[("class", 0), "share_a_std"] == pytest.approx(0.1)
    assert t.loc[("correctness", "incorrect"), "share_b_mean"] == pytest.approx(0.6)
    assert t.loc[("correctness", "correct"), "n"] == 3


def test_bad_inputs(tmp_path):
    data = TinyData(3)
    with pytest.raises(ConfigError, match="method must be one of"):
        explain_dataset(TinyModel(), data, "lime", tmp_path)
    with pytest.raises(ConfigError, match="pass one split"):
        explain_dataset(TinyModel(), {"train": data, "test": data}, "shapley", tmp_path)
    with pytest.raises(DataError, match="not a MultimodalBatch"):
        explain_dataset(TinyModel(), [{"text": 1}], "shapley", tmp_path)
    with pytest.raises(ConfigError, match="n_permutations"):
        explain_dataset(TinyModel(), data, "mmshap", tmp_path, n_permutations=0)
