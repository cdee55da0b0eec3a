"""``family: mea`` through the front door: build_model, ModelOutput.losses, FusionSystem.compute_loss,
``mmfuse.fit`` for every task type, checkpoints, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmfuse
from mmfuse.config import parse_config
from mmfuse.datasets.base import ArrayDataset
from mmfuse.errors import ConfigError
from mmfuse.models import build_model
from mmfuse.sequence import grad_reverse, hsic
from mmfuse.sequence.mea import MEAModel
from mmfuse.training.system import FusionSystem

# a variable-length sequence, an image (viewed as 4 rows of 4 features) and a vector (one step)
SHAPES = {"seq": (None, 3), "img": (1, 4, 4), "vec": (5,)}
K = {"multiclass": 3, "multilabel": 3, "regression": 2}
TINY = {"family": "mea", "dim": 8, "heads": 2, "psa_layers": 1, "hca_layers": 1, "graph_rounds": 1}


def dataset(task: str, n: int = 24, seed: int = 0, absent: bool = False) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    seq = [rng.normal(size=(int(rng.integers(2, 7)), 3)).astype(np.float32) + y[i] for i in range(n)]
    img = (rng.normal(size=(n, 1, 4, 4)) + y[:, None, None, None] * 0.5).astype(np.float32)
    vec = (rng.normal(size=(n, 5)) - y[:, None] * 0.5).astype(np.float32)
    if task == "multiclass":
        target = y
    elif task == "multilabel":
        target = np.stack([y == 0, y == 1, y >= 1], 1).astype(np.float32)
    else:
        target = np.stack([y * 1.0, -y * 0.5], 1).astype(np.float32)
    present = {"img": np.arange(n) % 4 != 1, "vec": np.arange(n) % 5 != 2} if absent else None
    return ArrayDataset({"seq": seq, "img": img, "vec": vec}, target, present, task=task, name=f"mea-{task}")


def splits(task: str, absent: bool = False) -> dict:
    return {s: dataset(task, n, k, absent) for k, (s, n) in enumerate((("train", 24), ("val", 8), ("test", 8)))}


def independent_constraints(model: MEAModel, out) -> tuple[torch.Tensor, torch.Tensor]:
    """Disparity and adversarial terms recomputed from ``out.extras`` (codes, presence) by their formulas."""
    mods = model.modalities
    present = torch.stack([out.extras["present." + m] for m in mods], 1)
    # a modality whose sample has no valid step counts as absent too; here every present row has steps
    E = torch.stack([out.extras["exclusive." + m] for m in mods], 1)
    A = torch.stack([out.extras["agnostic." + m] for m in mods], 1)
    disparity = torch.stack([hsic(E[present[:, i], i], A[present[:, i], i]) for i in range(len(mods))]).mean()
    labels = torch.arange(len(mods)).expand(present.shape)[present]
    ce = F.cross_entropy(out.extras["modality_logits"][present], labels) + \
        F.cross_entropy(model.modality_disc(grad_reverse(A))[present], labels)
    se, sa = model.source_disc(E)[present].squeeze(-1), model.source_disc(A)[present].squeeze(-1)
    bce = F.binary_cross_entropy_with_logits(se, torch.ones_like(se)) + \
        F.binary_cross_entropy_with_logits(sa, torch.zeros_like(sa))
    return disparity, (ce + bce) / 4.0


def task_loss_oracle(task, logits, target):
    if task == "multiclass":
        return F.cross_entropy(logits, target.long())
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, target.float())
    return ((logits - target.float()) ** 2).mean()


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_losses_and_compute_loss_oracle(task):
    torch.manual_seed(0)
    model = build_model({**TINY, "alpha": 0.3, "beta": 0.7}, SHAPES, K[task], task)
    assert isinstance(model, MEAModel) and set(model.views) == set(SHAPES)
    batch = dataset(task, n=10, absent=True).batch()
    out = model.train()(batch)
    assert out.logits.shape == (10, K[task])
    disparity, adversarial = independent_constraints(model, out)
    assert float(disparity.detach()) > 0 and float(adversarial.detach()) > 0
    assert set(out.losses) == {"mea.disparity", "mea.adversarial"}
    torch.testing.assert_close(out.losses["mea.disparity"], 0.3 * disparity)
    torch.testing.assert_close(out.losses["mea.adversarial"], 0.7 * adversarial)
    system = FusionSystem(model, task, parse_config({"model": TINY}).training, "mea")
    want = task_loss_oracle(task, out.logits, batch.target) + 0.3 * disparity + 0.7 * adversarial
    torch.testing.assert_close(system.compute_loss(batch, out), want)
    # alpha = beta = 0: no extra term; the loss is the task loss alone
    torch.manual_seed(0)
    plain = build_model({**TINY, "alpha": 0.0, "beta": 0.0}, SHAPES, K[task], task).train()
    o0 = plain(batch)
    assert o0.losses == {}
    sys0 = FusionSystem(plain, task, parse_config({"model": TINY}).training, "mea")
    torch.testing.assert_close(sys0.compute_loss(batch, o0), task_loss_oracle(task, o0.logits, batch.target))
    # same weights, so the same logits: the constraints change the loss only
    torch.testing.assert_close(o0.logits, out.logits)


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_fit_one_epoch_and_checkpoint_round_trip(task, tmp_path):
    model_cfg = {**TINY, "missing": {"modality_dropout": 0.3}} if task == "multiclass" else TINY
    cfg = parse_config({"model": model_cfg, "seed": 1, "data": {"batch_size": 8},
                        "training": {"max_epochs": 1, "lr": 0.01, "progress": False, "limit_train_batches": 2}})
    data = splits(task, absent=True)
    torch.manual_seed(1)
    before = {k: v.clone() for k, v in build_model(cfg.model, data["train"].shapes, K[task], task).state_dict().items()}
    res = mmfuse.fit(cfg, data, out_dir=tmp_path)
    assert res.task == task and len(res.history) == 1 and np.isfinite(res.history[0]["train_loss"])
    after = res.model.state_dict()
    # trained: the discriminators (reached only through out.losses) and the head both moved
    assert not torch.equal(before["source_disc.0.weight"], after["source_disc.0.weight"])
    assert not torch.equal(before["head.net.0.weight"], after["head.net.0.weight"])
    loaded, lcfg, meta = mmfuse.load_checkpoint(res.checkpoint)
    assert meta["family"] == "mea" and lcfg.model.family == "mea" and isinstance(loaded, MEAModel)
    batch = data["test"].batch()
    res.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, res.model(batch).logits, rtol=0, atol=0)


def test_config_errors():
    with pytest.raises(ConfigError, match="at least 2 modalities"):
        build_model({**TINY, "modalities": ["seq"]}, SHAPES, 3)
    with pytest.raises(ConfigError, match="model.modalities"):
        build_model({**TINY, "modalities": ["seq", "nope"]}, SHAPES, 3)
    with pytest.raises(ConfigError, match="imputer"):
        parse_config({"model": {**TINY, "missing": {"imputer": "zero"}}})
    with pytest.raises(ConfigError, match="encoders"):
        parse_config({"model": {**TINY, "encoders": {"seq": {"name": "gru"}}}})
    with pytest.raises(ConfigError, match="divisible"):
        parse_config({"model": {**TINY, "dim": 10, "heads": 4}})
    with pytest.raises(ConfigError, match="training.scheme"):
        parse_config({"model": TINY, "training": {"scheme": "per_stream"}})
    with pytest.raises(ConfigError, match="token|shape"):
        build_model(TINY, {"ids": (None,), "vec": (5,)}, 3)
    # a subset of modalities is respected: the model reads only those
    m = build_model({**TINY, "modalities": ["img", "vec"]}, SHAPES, 3)
    assert m.modalities == ["img", "vec"] and set(m.front) == {"img", "vec"}
