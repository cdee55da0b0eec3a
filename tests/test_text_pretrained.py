"""Text for pretrained encoders: a text column with `tokenizer: minilm` gives MiniLM's own input ids, and feeding
vocabulary ids to a pretrained text encoder is a ConfigError naming the fix (issue 10, item 3)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from mmfuse.config import parse_config
from mmfuse.datasets import load_table
from mmfuse.errors import ConfigError

CAPTIONS = ["digit: three?", "A small red circle", "zyxq plover, four", "large BLUE square!", "seven", "eight nine"]


def _table(root, tokenizer):
    rows = [{"caption": CAPTIONS[i % len(CAPTIONS)] if i % 7 else "", "x": float(i % 2) + 0.1 * i, "label": i % 2}
            for i in range(40)]
    pd.DataFrame(rows).to_csv(root / "data.csv", index=False)
    text = {"column": "caption", "loader": "text", "max_tokens": 16}
    if tokenizer:
        text["tokenizer"] = tokenizer
    schema = {"table": "data.csv", "target": {"column": "label"},
              "modalities": {"caption": text, "num": {"columns": ["x"], "loader": "numeric"}}}
    (root / "schema.yaml").write_text(yaml.safe_dump(schema))
    return rows


def test_minilm_tokenizer_ids_decode_back_to_the_caption(tmp_path):
    from mmfuse.datasets.text import pretrained_tokenizer

    rows = _table(tmp_path, "minilm")
    splits = load_table(str(tmp_path / "schema.yaml"), seed=0)
    tok = pretrained_tokenizer("minilm")
    seen = 0
    for ds in splits.values():
        ids_of = dict(zip(ds.ids, range(len(ds))))
        for rid, i in ids_of.items():
            caption = rows[int(rid)]["caption"]
            sample = ds[i]
            if not caption:
                assert sample["caption"] is None  # an empty cell is an absent modality
                continue
            ids = [int(t) for t in np.asarray(sample["caption"])]
            assert ids == tok(caption, truncation=True, max_length=16)["input_ids"]  # MiniLM's own ids, with [CLS]/[SEP]
            assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
            text = tok.decode(ids, skip_special_tokens=True)
            assert text.replace(" ", "") == caption.lower().replace(" ", "")  # uncased WordPiece: the caption back
            seen += 1
    assert seen >= 30


def test_vocabulary_ids_into_a_pretrained_encoder_are_a_config_error(tmp_path):
    from mmfuse.training.fit import fit

    _table(tmp_path, None)
    cfg = parse_config({"data": {"name": str(tmp_path / "schema.yaml"), "batch_size": 8},
                        "model": {"encoders": {"caption": {"name": "sentence_transformer"}}},
                        "training": {"max_epochs": 1, "progress": False}})
    with pytest.raises(ConfigError, match=r"model.encoders.caption: 'sentence_transformer' reads its own tokenizer's ids.*"
                                          r"tokenizer: minilm"):
        fit(cfg, save=False)


def test_tokenizer_with_embeddings_or_a_missing_folder_is_an_error(tmp_path):
    _table(tmp_path, str(tmp_path / "no_such_model"))
    with pytest.raises(ConfigError, match="not a local folder"):
        load_table(str(tmp_path / "schema.yaml"), seed=0)


def test_the_sentence_transformer_route_trains_and_predicts(tmp_path):
    """Caption -> MiniLM's own ids -> the frozen sentence_transformer encoder, end to end (train, reload, predict)."""
    import mmfuse
    from mmfuse.training.fit import fit

    _table(tmp_path, "minilm")
    cfg = parse_config({"data": {"name": str(tmp_path / "schema.yaml"), "batch_size": 8},
                        "model": {"encoders": {"caption": {"name": "sentence_transformer"}}},
                        "training": {"max_epochs": 1, "progress": False, "limit_train_batches": 2}})
    run = fit(cfg, out_dir=tmp_path / "run")
    model, _, _ = mmfuse.load_checkpoint(run.checkpoint)
    assert type(model.encoders["caption"]).__name__ == "SentenceTransformerEncoder"
    from mmfuse.training.fit import load_data

    test = load_data(mmfuse.load_checkpoint(run.checkpoint)[1])["test"]
    batch = test.batch(list(range(len(test))))
    assert batch.inputs["caption"].dtype.is_floating_point is False  # MiniLM ids, not embeddings
    import torch

    with torch.no_grad():  # the checkpoint (weights + fitted pipeline) reproduces the trained model exactly
        assert torch.equal(run.model.eval()(batch).logits, model(batch).logits)
