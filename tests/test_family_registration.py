"""A third-party model family: one sub-config class and one registered builder, no edit of mmfuse."""

from typing import Literal

import pytest
import torch
from torch import nn

from mmfuse.config import _ModelBase, parse_config, register_family_config
from mmfuse.errors import ConfigError
from mmfuse.models import ModelOutput, build_model
from mmfuse.registry import MODELS


class _Mean(nn.Module):
    """Logits = a linear map of the mean of the flattened present modalities; a penalty in ``losses``."""

    def __init__(self, shapes, k, scale):
        super().__init__()
        self.mods = sorted(shapes)
        self.lin = nn.Linear(int(torch.tensor(shapes[self.mods[0]]).prod()), k)
        self.scale = scale

    def forward(self, batch):
        xs = [batch.inputs[m].flatten(1).float() * batch.mask[m][:, None] for m in self.mods]
        logits = self.lin(torch.stack(xs).mean(0))
        losses = {"l2": self.scale * self.lin.weight.pow(2).sum()} if self.training else {}
        return ModelOutput(logits, losses=losses)


@pytest.fixture
def restore_families():
    import mmfuse.config as config

    before = dict(config.FAMILY_CONFIGS)
    yield
    MODELS._entries.pop("toy_mean", None)
    MODELS._info.pop("toy_mean", None)
    config.FAMILY_CONFIGS.clear()
    config.FAMILY_CONFIGS.update(before)
    register_family_config(before["fusion"])  # rebuild the union without the toy family


def test_a_new_family_is_one_config_class_and_one_builder(restore_families):
    @register_family_config
    class ToyConfig(_ModelBase):
        family: Literal["toy_mean"] = "toy_mean"
        scale: float = 0.5

    MODELS.register("toy_mean", lambda cfg, shapes, k, task: _Mean(shapes, k, cfg.scale), overwrite=True)
    cfg = parse_config({"model": {"family": "toy_mean", "scale": 0.25}})
    assert isinstance(cfg.model, ToyConfig) and cfg.model.scale == 0.25
    with pytest.raises(ConfigError, match=r"model.scal: unknown key; did you mean 'scale'\?"):
        parse_config({"model": {"family": "toy_mean", "scal": 1}})
    with pytest.raises(ConfigError, match="did you mean 'toy_mean'"):
        parse_config({"model": {"family": "toy_maen"}})
    model = build_model(cfg.model, {"a": (3,), "b": (3,)}, 2, "multiclass")
    assert model.train()(_batch()).losses["l2"].item() == pytest.approx(0.25 * model.lin.weight.pow(2).sum().item())
    # the built-in families still validate
    assert parse_config({"model": {"family": "mea"}}).model.family == "mea"


def _batch():
    from mmfuse.batch import MultimodalBatch

    x = torch.ones(4, 3)
    return MultimodalBatch({"a": x, "b": x}, {"a": torch.ones(4, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)},
                           torch.zeros(4, dtype=torch.long))


def test_register_family_config_rejects_a_class_without_its_literal_tag():
    class Bad(_ModelBase):
        family: str = "bad"

    with pytest.raises(ConfigError, match="Literal"):
        register_family_config(Bad)


def test_overwriting_a_builtin_in_a_fresh_process_keeps_the_other_builtins():
    import subprocess
    import sys

    code = ("from mmfuse.registry import MODELS\n"
            "MODELS.register('fusion', lambda *a: None, overwrite=True)\n"
            "print(','.join(MODELS.list()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "fusion,intermediate,mea,ngiam,smil"


def test_switching_family_with_set_drops_base_keys_but_reports_the_users_own():
    base = {"model": {"encoders": {"image": {"name": "cnn2d"}}, "fusion": {"name": "gated"}}}
    assert parse_config(base, ["model.family=mea"]).model.family == "mea"  # fusion and encoders dropped
    with pytest.raises(ConfigError, match=r"model.setting: unknown key"):
        parse_config(base, ["model.family=intermediate", "model.setting=fusion"])
