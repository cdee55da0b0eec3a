"""Suite-wide settings: one torch thread (tiny tensors run faster and the 2-core CI machine is
shared by the data loader and pytest), headless matplotlib, an isolated dataset cache."""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _offline_env():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    yield
