"""Frozen-embedding cache (issue 12, item 4): identical results with and without it, keys, misses, files."""

import numpy as np
import pytest
import torch

from mmfuse.batch import MultimodalBatch
from mmfuse.config import parse_config
from mmfuse.datasets import from_arrays
from mmfuse.embedding_cache import attach_embedding_cache, detach_embedding_cache, encoder_key, embeddings_dir
from mmfuse.encoders import create_encoder
from mmfuse.encoders.base import FROZEN_CHUNK, frozen_forward, is_frozen
from mmfuse.fusion import create_fusion
from mmfuse.models.heads import create_head
from mmfuse.models.model import MultimodalModel
from mmfuse.training import fit


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))


def _frozen_mlp(d_in=6, seed=0):
    torch.manual_seed(seed)
    enc = create_encoder("mlp", input_shape=(d_in,), hidden=(16,), output_dim=8)
    return enc.requires_grad_(False)


def test_is_frozen_needs_no_trainable_parameter_and_a_mode_independent_forward():
    assert is_frozen(_frozen_mlp())
    assert not is_frozen(create_encoder("mlp", input_shape=(6,), hidden=(16,), output_dim=8))  # trains
    assert not is_frozen(create_encoder("mlp", input_shape=(6,), dropout=0.5).requires_grad_(False))  # dropout
    assert not is_frozen(create_encoder("identity", input_shape=(6,)))  # nothing to cache
    assert is_frozen(create_encoder("efficientnet_lite0", input_shape=(3, 32, 32), pretrained=False, freeze=True))
    assert not is_frozen(create_encoder("efficientnet_lite0", input_shape=(3, 32, 32), pretrained=False, freeze=False))
    assert not is_frozen(create_encoder("efficientnet_lite0", input_shape=(3, 32, 32), pretrained=False,
                                        trainable_blocks=1))


def test_frozen_forward_gives_a_row_the_same_floats_in_any_batch():
    """Plain matmuls give a row different last bits in a batch of 200 and one of 5; frozen_forward does not."""
    enc = _frozen_mlp(d_in=384)
    x = torch.randn(200, 384)
    full = frozen_forward(enc, x)
    perm = torch.randperm(200)
    assert torch.equal(frozen_forward(enc, x[perm]), full[perm])
    for rows in (slice(0, 5), slice(37, 38), slice(60, 140)):
        assert torch.equal(frozen_forward(enc, x[rows]), full[rows])
    assert torch.allclose(full, enc(x), atol=1e-5)  # the same function, only the chunking differs
    assert FROZEN_CHUNK == 64


def _model(enc_a):
    torch.manual_seed(1)
    encs = {"a": enc_a, "b": create_encoder("mlp", input_shape=(4,), hidden=(8,), output_dim=8)}
    fusion = create_fusion("concat", {"a": 8, "b": 8})
    head = create_head("mlp", fusion.output_dim, 3, hidden=(8,))
    return MultimodalModel(encs, head, "feature", fusion)


def _splits(n=90, seed=0, absent=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = rng.normal(size=(n, 6)).astype(np.float32)
    a[10:20] = a[:10]  # repeated rows are computed once
    arrays = {"a": a, "b": rng.normal(size=(n, 4)).astype(np.float32)}
    present = {"a": np.arange(n) % 7 != 3} if absent else None
    return from_arrays(arrays, y, present=present, seed=seed)


def test_cached_embeddings_equal_fresh_ones_and_changed_rows_miss():
    data = _splits()
    model = _model(_frozen_mlp()).eval()
    batch = data["test"].batch(np.arange(len(data["test"])))
    with torch.no_grad():
        fresh = model.encode(batch)
        fresh_out = model(batch).logits
    cache = attach_embedding_cache(model, data)
    assert cache is not None and cache.modalities == ["a"]  # "b" trains: never cached
    n_distinct = len({r.tobytes() for ds in data.values() for r in ds.batch(np.arange(len(ds))).inputs["a"].numpy()})
    assert cache.stats()["rows"]["a"] == n_distinct < sum(len(d) for d in data.values())
    with torch.no_grad():
        cached = model.encode(batch)
        out = model(batch)
    assert cache.hits >= 2 and cache.misses == 0
    assert torch.equal(cached["a"], fresh["a"]) and torch.equal(out.logits, fresh_out)
    # absent rows stay absent: the mask is the batch's own
    assert torch.equal(out.extras["present.a"], batch.mask["a"]) and not bool(batch.mask["a"].all())
    # a perturbed row (e.g. an explanation's masked input) is not in the table: the encoder runs, exactly as before
    x = batch.inputs["a"].clone()
    x[0] += 1.0
    changed = MultimodalBatch({**batch.inputs, "a": x}, batch.mask, batch.target, batch.lengths, batch.index)
    with torch.no_grad():
        got = model.encode(changed)["a"]
    assert cache.misses == 1
    detach_embedding_cache(model)
    with torch.no_grad():
        assert torch.equal(got, model.encode(changed)["a"])
        assert not torch.equal(got[0], fresh["a"][0])


def test_key_depends_on_weights_and_files_are_reused(tmp_path):
    data = _splits(absent=False)
    enc = _frozen_mlp()
    k0 = encoder_key(enc, {"name": "mlp"})
    assert encoder_key(enc, {"name": "mlp"}) == k0 and encoder_key(enc, {"name": "mlp", "x": 1}) != k0
    first = attach_embedding_cache(_model(enc), data, specs={"a": {"name": "mlp"}})
    assert first.written_files == 3 and first.computed_rows > 0
    files = sorted(embeddings_dir().rglob("*.safetensors"))
    assert len(files) == 3 and files[0].read_bytes()[:8] != b"\x80\x04\x95"  # safetensors, not a pickle
    again = attach_embedding_cache(_model(enc), data, specs={"a": {"name": "mlp"}})
    assert again.loaded_files == 3 and again.computed_rows == 0
    assert torch.equal(again.tables["a"].embeddings, first.tables["a"].embeddings)
    with torch.no_grad():
        enc.net[0].weight[0, 0] += 1e-3
    assert encoder_key(enc, {"name": "mlp"}) != k0
    changed = attach_embedding_cache(_model(enc), data, specs={"a": {"name": "mlp"}})
    assert changed.loaded_files == 0 and changed.computed_rows == first.computed_rows


def _image_data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    img = rng.random((n, 3, 32, 32)).astype(np.float32) * 0.5 + y[:, None, None, None] * 0.2
    vec = (rng.normal(size=(n, 5)) + y[:, None]).astype(np.float32)
    present = {"image": np.arange(n) % 5 != 2}
    return from_arrays({"image": img, "vec": vec}, y, present=present, seed=seed)


def _image_cfg(mode):
    return parse_config({
        "seed": 3,
        "model": {"encoders": {"image": {"name": "efficientnet_lite0", "options": {"pretrained": False, "freeze": True}},
                               "vec": {"name": "mlp", "options": {"hidden": [8], "output_dim": 8}}},
                  "fusion": {"name": "concat", "options": {}}, "head": {"name": "mlp", "options": {"hidden": [8]}},
                  "missing": {"modality_dropout": 0.2}},
        "training": {"max_epochs": 1, "progress": False, "embedding_cache": mode},
        "data": {"batch_size": 64, "eval_batch_size": 64}})


def test_training_is_identical_with_and_without_the_cache():
    """fit with a frozen EfficientNet-Lite0 (random weights, 32x32): the same weights and metrics, float for float,
    with the cache off, on (computing it) and on again (reading its files)."""
    data = _image_data()
    off = fit(_image_cfg("off"), data, save=False, evaluate_patterns=False)
    assert "embedding_cache" not in off.model.__dict__
    on = fit(_image_cfg("auto"), data, save=False, evaluate_patterns=False)
    again = fit(_image_cfg("auto"), data, save=False, evaluate_patterns=False)
    c1, c2 = on.model.embedding_cache, again.model.embedding_cache
    assert c1.computed_rows > 0 and c1.hits > 0 and c1.misses == 0
    assert c2.computed_rows == 0 and c2.loaded_files == 3 and c2.misses == 0
    for res in (on, again):
        assert res.history == off.history and res.test == off.test and res.val == off.val
        sd, ref = res.model.state_dict(), off.model.state_dict()
        assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)
