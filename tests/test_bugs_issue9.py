"""Regression tests for bugs found while resolving issue 9 (each fails on the code before its fix)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfuse.batch import MultimodalBatch
from mmfuse.config import parse_config
from mmfuse.encoders import create_encoder
from mmfuse.errors import ConfigError
from mmfuse.fusion import create_fusion
from mmfuse.interaction.mmtm import MMTM, stream_key
from mmfuse.missing.imputation import LearnedTokenImputer
from mmfuse.models.heads import create_head
from mmfuse.models.intermediate import IntermediateFusionModel
from mmfuse.models.model import MultimodalModel


# ---------------------------------------------------------------- (a) imputer under cross_attention
def _seq_model(seed: int = 0) -> MultimodalModel:
    torch.manual_seed(seed)
    encoders = {
        "frames": create_encoder("gru", input_shape=(None, 3), hidden=8, output_dim=8, return_sequence=True),
        "vec": create_encoder("mlp", input_shape=(5,), hidden=(8,), output_dim=8),
    }
    fusion = create_fusion("cross_attention", {"frames": 8, "vec": 8}, dim=8, heads=2)
    return MultimodalModel(encoders, create_head("linear", fusion.output_dim, 3), "feature", fusion,
                           imputer=LearnedTokenImputer({"frames": 8, "vec": 8}))


def _seq_batch() -> MultimodalBatch:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([4, 0, 2, 0])  # rows 1 and 3: "frames" absent (length 0, zero padding)
    x = torch.randn(4, 4, 3, generator=g) * (torch.arange(4)[None, :] < lengths[:, None]).unsqueeze(-1)
    mask = {"frames": lengths > 0, "vec": torch.ones(4, dtype=torch.bool)}
    return MultimodalBatch({"frames": x, "vec": torch.randn(4, 5, generator=g)}, mask, torch.tensor([0, 1, 2, 0]),
                           {"frames": lengths})


def test_learned_token_reaches_cross_attention_for_variable_length_modality():
    model, batch = _seq_model(), _seq_batch()
    model.train()
    model(batch).logits.sum().backward()
    grad = model.imputer.tokens["frames"].grad
    assert grad is not None and float(grad.abs().sum()) > 0  # the imputed rows count as real tokens
    model.eval()
    with torch.no_grad():
        before = model(batch).logits.clone()
        model.imputer.tokens["frames"].copy_(torch.linspace(-2, 2, 8))
        after = model(batch).logits
    absent = ~batch.mask["frames"]
    assert (after[absent] - before[absent]).abs().max() > 1e-3  # the token changes the imputed rows ...
    torch.testing.assert_close(after[~absent], before[~absent])  # ... and only them


def test_imputed_rows_equal_a_one_token_sequence_of_the_learned_vector():
    # oracle: an imputed row must behave as if "frames" were the single token `t` (repeated tokens attend alike)
    model, batch = _seq_model(), _seq_batch()
    model.eval()
    t = torch.linspace(-1, 1, 8)
    with torch.no_grad():
        model.imputer.tokens["frames"].copy_(t)
        got = model(batch).fused
        emb = {"frames": t.expand(4, 1, 8).clone(), "vec": model.encoders["vec"](batch.inputs["vec"])}
        want = model.fusion(emb, {m: torch.ones(4, dtype=torch.bool) for m in emb},
                            token_mask={"frames": torch.ones(4, 1, dtype=torch.bool)})
    absent = ~batch.mask["frames"]
    torch.testing.assert_close(got[absent], want[absent])


# ---------------------------------------------------------------- (b) frozen HF encoders and dropout
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny-bert")
    cfg = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.5,
                                  attention_probs_dropout_prob=0.5)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(27)]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    return path


def _tokens() -> torch.Tensor:
    return torch.randint(5, 32, (3, 7), generator=torch.Generator().manual_seed(0))


def test_frozen_hf_auto_has_no_dropout_in_train_mode(tiny_bert):
    from mmfuse.encoders.hf import HFAutoEncoder

    x = _tokens()
    frozen = HFAutoEncoder(tiny_bert, pooling="mean")
    wrapper = nn.ModuleDict({"enc": frozen}).train()  # train() from a parent reaches the encoder
    assert wrapper.training and not frozen.model.training
    with torch.no_grad():
        a, b = frozen(x), frozen(x)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, frozen.eval()(x), rtol=0, atol=0)  # train-mode output == eval output
    tuned = HFAutoEncoder(tiny_bert, pooling="mean", freeze=False).train()  # fine-tuning keeps dropout
    with torch.no_grad():
        assert (tuned(x) - tuned(x)).abs().max() > 1e-3


def test_frozen_sentence_transformer_has_no_dropout_in_train_mode(tiny_bert, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers import models

    from mmfuse.encoders.hf import SentenceTransformerEncoder

    model = st.SentenceTransformer(modules=[models.Transformer(str(tiny_bert)), models.Pooling(16)], device="cpu")
    model.save(str(tmp_path / "st"))
    x = _tokens()
    enc = SentenceTransformerEncoder(tmp_path / "st").train()
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc(x), rtol=0, atol=0)
        torch.testing.assert_close(enc(x), enc.eval()(x), rtol=0, atol=0)
    tuned = SentenceTransformerEncoder(tmp_path / "st", freeze=False).train()
    with torch.no_grad():
        assert (tuned(x) - tuned(x)).abs().max() > 1e-3


# ---------------------------------------------------------------- (e) imputer name
def test_imputer_named_learned_suggests_learned_token():
    with pytest.raises(ConfigError, match="model.missing.imputer.*learned_token"):
        parse_config({"model": {"missing": {"imputer": "learned"}}})


def test_readme_names_registered_imputers():
    from pathlib import Path

    from mmfuse.registry import IMPUTERS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "imputers (`" in ln)
    names = line.split("imputers (", 1)[1].split(")", 1)[0]
    listed = [w.strip(" `") for w in names.split(",")]
    assert listed and all(n in IMPUTERS for n in listed), listed


# ---------------------------------------------------------------- (f) linear head dropout
def test_linear_head_applies_dropout_in_training_only():
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    head = create_head("linear", 16, 4, dropout=0.5)
    head.train()
    a, b = head(x), head(x)
    assert (a - b).abs().max() > 1e-3
    lin = head.net[-1]
    # each train-mode output is W (x * keep / 0.5) + b for some 0/1 keep mask: with one unit kept alone
    one = torch.zeros(1, 16)
    one[0, 3] = 1.0
    outs = {tuple(torch.round(head(one)[0], decimals=5).tolist()) for _ in range(50)}
    expected = {tuple(torch.round(lin.bias, decimals=5).tolist()),
                tuple(torch.round(lin.bias + 2.0 * lin.weight[:, 3], decimals=5).tolist())}
    assert outs == expected
    head.eval()
    torch.testing.assert_close(head(x), head(x), rtol=0, atol=0)
    torch.testing.assert_close(head(x), x @ lin.weight.T + lin.bias)
    plain = create_head("linear", 16, 4, dropout=0.0).train()
    torch.testing.assert_close(plain(x), x @ plain.net[-1].weight.T + plain.net[-1].bias, rtol=0, atol=0)
    assert set(plain.state_dict()) == set(head.state_dict()) == {"net.0.weight", "net.0.bias"}


# ---------------------------------------------------------------- (g) stream names with '.'
def test_mmtm_accepts_stream_names_with_dots():
    feats = {"cam.left": torch.randn(2, 4, 3, 3), "audio": torch.randn(2, 6, 5)}
    renamed = {"cam_left": feats["cam.left"], "audio": feats["audio"]}
    torch.manual_seed(0)
    dotted = MMTM({"cam.left": 4, "audio": 6}, absent="learned")
    torch.manual_seed(0)
    plain = MMTM({"cam_left": 4, "audio": 6}, absent="learned")
    out, ref = dotted(feats), plain(renamed)
    assert set(out) == {"cam.left", "audio"}
    torch.testing.assert_close(out["cam.left"], ref["cam_left"])
    torch.testing.assert_close(out["audio"], ref["audio"])
    mask = {"cam.left": torch.tensor([True, False]), "audio": torch.tensor([True, True])}
    assert torch.equal(dotted.gates(feats, mask)["cam.left"][1], torch.ones(4))
    assert stream_key("a.b") != stream_key("a_b") and stream_key("a%2Eb") != stream_key("a.b")
    assert stream_key("audio") == "audio"  # dot-free names keep their state-dict keys


def test_intermediate_model_accepts_stream_names_with_dots():
    def build(names):
        torch.manual_seed(0)
        encs = {n: create_encoder("cnn2d", input_shape=(1, 8, 8), channels=[4, 8], output_dim=6) for n in names}
        return IntermediateFusionModel(encs, "auto", num_outputs=3)

    g = torch.Generator().manual_seed(2)
    x = {"a": torch.randn(2, 1, 8, 8, generator=g), "b": torch.randn(2, 1, 8, 8, generator=g)}
    ones = torch.ones(2, dtype=torch.bool)
    dotted, plain = build(["cam.a", "mic"]), build(["cam_a", "mic"])
    out = dotted(MultimodalBatch({"cam.a": x["a"], "mic": x["b"]}, {"cam.a": ones, "mic": ones}, None))
    ref = plain(MultimodalBatch({"cam_a": x["a"], "mic": x["b"]}, {"cam_a": ones, "mic": ones}, None))
    torch.testing.assert_close(out.logits, ref.logits)
    assert set(out.unimodal_logits) == {"cam.a", "mic"}
    from mmfuse.models.intermediate import per_stream_param_groups

    groups = per_stream_param_groups(dotted)
    assert set(groups) == {"cam.a", "mic"}
    assert {id(p) for p in dotted.encoder("cam.a").parameters()} <= {id(p) for p in groups["cam.a"]}
