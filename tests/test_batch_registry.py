import numpy as np
import pytest
import torch
from torch import nn

from mmfuse.batch import Collator, MultimodalBatch, collate
from mmfuse.errors import DataError, MissingModalityError, ShapeError, UnknownNameError, ConfigError
from mmfuse.registry import Registry


def test_collate_masks_zeros_and_padding():
    b = collate([
        {"a": np.ones((3, 2)), "b": None, "target": 1},
        {"a": np.ones((5, 2)) * 2, "b": [1.0, 2.0], "target": 0},
    ])
    assert b.modalities == ["a", "b"]
    assert b.inputs["a"].shape == (2, 5, 2)
    assert b.lengths["a"].tolist() == [3, 5]
    assert b.inputs["a"][0, 3:].abs().sum() == 0 and b.inputs["a"][0, :3].eq(1).all()
    assert b.mask["b"].tolist() == [False, True]
    assert b.inputs["b"][0].abs().sum() == 0 and b.inputs["b"][1].tolist() == [1.0, 2.0]
    assert b.target.tolist() == [1, 0]


def test_collate_absent_everywhere_needs_shape():
    with pytest.raises(MissingModalityError, match="'b'.*shapes="):
        collate([{"a": [1.0], "b": None}], modalities=["a", "b"])
    b = collate([{"a": [1.0], "b": None}], modalities=["a", "b"], shapes={"b": (3, 4)})
    assert b.inputs["b"].shape == (1, 3, 4) and not b.mask["b"].any()


@pytest.mark.parametrize("samples, err, pattern", [
    ([{"a": np.zeros((2, 3))}, {"a": np.zeros((2, 4))}], ShapeError, r"sample 11, modality 'a'.*only the first axis"),
    ([{"a": np.zeros((2, 3))}, {"a": np.zeros((2,))}], ShapeError, r"sample 11, modality 'a'.*same rank"),
    ([{"a": np.zeros(2)}, {"a": np.array([1.0, np.nan])}], DataError, r"sample 11, modality 'a'.*NaN"),
    ([{"a": np.zeros(2), "target": 1}, {"a": np.zeros(2)}], DataError, r"sample 11: has no 'target'"),
    ([{"a": np.zeros(2)}, {"a": "text"}], DataError, r"sample 11, modality 'a'"),
    ([{"a": np.zeros(2)}, {"zz": np.zeros(2)}], MissingModalityError, r"sample 11: unknown modality 'zz'"),
])
def test_collate_errors_name_sample_and_modality(samples, err, pattern):
    mods = ["a"] if any("zz" in s for s in samples) else None
    with pytest.raises(err, match=pattern):
        collate(samples, modalities=mods, indices=[10, 11])


def test_collator_uses_dataset_indices_and_with_mask():
    c = Collator(["a", "b"], {"a": (2,), "b": (2,)})
    b = c([(7, {"a": [1.0, 1.0], "b": [2.0, 2.0]}), (9, {"a": [3.0, 3.0], "b": None})])
    assert b.index.tolist() == [7, 9]
    m = b.with_mask({"a": torch.tensor([False, True])})
    assert m.mask["a"].tolist() == [False, True] and m.inputs["a"][0].abs().sum() == 0
    assert m.mask["b"].tolist() == [True, False]  # untouched key keeps its mask
    assert m.select([1]).inputs["a"].tolist() == [[3.0, 3.0]]


def test_batch_validates_itself():
    with pytest.raises(MissingModalityError):
        MultimodalBatch({"a": torch.zeros(2, 1)}, {})
    with pytest.raises(ShapeError):
        MultimodalBatch({"a": torch.zeros(2, 1)}, {"a": torch.ones(3, dtype=torch.bool)})


def test_registry_suggests_close_names_and_accepts_modules():
    r = Registry("widget")
    r.register("concat", lambda **kw: nn.Identity())
    r.register("low_rank", lambda **kw: nn.Identity())
    with pytest.raises(UnknownNameError, match="did you mean 'low_rank'"):
        r.create("lowrank")
    with pytest.raises(ConfigError, match="already registered"):
        r.register("concat", lambda **kw: None)
    mine = nn.Linear(2, 2)
    assert r.create(mine) is mine
    assert r.list() == ["concat", "low_rank"]
    r.register("x", lambda a: a)
    with pytest.raises(ConfigError, match="widget 'x'.*'b'"):
        r.create("x", b=2)


def test_public_lists():
    import mmfuse

    fus = mmfuse.list_fusions()
    for name in ["concat", "sum", "max", "product", "mean", "gated", "multconcat", "tensor", "low_rank", "cross_attention"]:
        assert name in fus
    cat = mmfuse.catalog()
    assert "mmtm" in cat["interactions"] and "avmnist" in cat["datasets"]
