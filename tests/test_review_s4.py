"""Review fixes (session 4): resuming a run saved before a config key existed; the target scale's cached tensors."""

import types

import numpy as np
import pytest
import torch

from mmfuse.datasets.target_scale import TargetScale
from mmfuse.errors import ConfigError, DataError
from mmfuse.training.resume import check_compatible


class _Cfg:
    def __init__(self, d):
        self.d = d

    def model_dump(self, mode="json"):
        return self.d


def _meta(config):
    return {"config": config, "input_shapes": {"a": [3]}, "num_outputs": 1}


TRAIN = types.SimpleNamespace(shapes={"a": (3,)}, num_classes=1)


def test_a_run_saved_before_standardize_target_resumes_with_the_old_behaviour(tmp_path):
    saved = {"data": {"name": "t"}, "training": {"lr": 0.1}}  # no data.standardize_target: trained on raw targets
    check_compatible(_Cfg({"data": {"name": "t", "standardize_target": False}, "training": {"lr": 0.1}}),
                     _meta(saved), tmp_path, TRAIN)
    with pytest.raises(ConfigError, match=r"data.standardize_target: False then, True now"):
        check_compatible(_Cfg({"data": {"name": "t", "standardize_target": True}, "training": {"lr": 0.1}}),
                         _meta(saved), tmp_path, TRAIN)


def test_scale_tensors_are_built_once_and_exact():
    s = TargetScale([314.9, -2.0], [47.2, 0.5])
    y = torch.tensor([[300.0, -1.0], [400.0, -3.0]], dtype=torch.float64)
    z = s.standardize(y)
    torch.testing.assert_close(z, (y - torch.tensor([314.9, -2.0], dtype=torch.float64))
                               / torch.tensor([47.2, 0.5], dtype=torch.float64), rtol=0, atol=0)
    a = s._like(s.mean, y)
    assert s._like(s.mean, y) is a  # cached per (array, dtype, device)
    assert s._like(s.mean, y.float()).dtype == torch.float32
    torch.testing.assert_close(s.invert(z), y, rtol=0, atol=1e-12)


def test_overflowing_targets_are_a_data_error():
    with pytest.raises(DataError, match="overflow"):
        TargetScale.fit(np.array([[1e200], [-1e200], [3e200]]), columns=["y"])
    with pytest.raises(DataError, match="non-finite"):
        TargetScale.fit(np.array([[1.0], [np.inf]]), columns=["y"])
