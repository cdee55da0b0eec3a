"""A device that is not there: a one-line ConfigError naming the key and the fix, before any data loads."""

import importlib

import pytest
import torch
import yaml

from mmfuse.cli import main
from mmfuse.config import ExperimentConfig, check_devices, parse_config
from mmfuse.errors import ConfigError


@pytest.fixture
def two_cpus_no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)


@pytest.mark.parametrize("override, key, fix", [
    ("training.accelerator=gpu", "training.accelerator", "training.accelerator=cpu"),
    ("training.accelerator=cuda", "training.accelerator", "training.accelerator=cpu"),
    ("training.accelerator=mps", "training.accelerator", "training.accelerator=cpu"),
    ("training.accelerator=gpux", "training.accelerator", "did you mean 'gpu'"),
    ("training.devices=4", "training.devices", "training.devices=1"),
    ("training.devices=0", "training.devices", "training.devices=1"),
])
def test_missing_device_is_one_line_config_error(two_cpus_no_gpu, override, key, fix):
    with pytest.raises(ConfigError) as exc:
        parse_config({}, [override])
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{key}:") and fix in msg


def test_devices_that_exist_are_accepted(two_cpus_no_gpu):
    for devices in (1, 2, "auto", "2", -1):
        assert parse_config({"training": {"devices": devices}}).training.devices == devices
    assert check_devices({"accelerator": "auto", "devices": 2}) == []
    assert "4 requested but this machine has 2 CPU core" in check_devices({"accelerator": "auto", "devices": 4})[0]
    # a config read back from a checkpoint trained on a GPU still validates (no training here)
    assert ExperimentConfig.model_validate({"training": {"accelerator": "gpu"}}).training.accelerator == "gpu"
    assert parse_config({"training": {"accelerator": "gpu"}}, devices=False).training.accelerator == "gpu"
    # with other problems, the device line joins the one list of problems
    with pytest.raises(ConfigError, match=r"(?s)training\.epochs: unknown key.*training\.accelerator"):
        parse_config({"training": {"accelerator": "cuda"}}, ["training.epochs=3"])


def test_fit_checks_devices_before_loading_data(two_cpus_no_gpu, monkeypatch):
    fit_module = importlib.import_module("mmfuse.training.fit")

    def no_data(cfg):
        raise AssertionError("data loaded before the device check")

    monkeypatch.setattr(fit_module, "load_data", no_data)
    cfg = ExperimentConfig.model_validate({"training": {"accelerator": "cuda"}})  # not through parse_config
    with pytest.raises(ConfigError, match=r"^training\.accelerator: 'cuda' requested"):
        fit_module.fit(cfg, save=False)
    cfg = ExperimentConfig.model_validate({"training": {"devices": 3}})
    with pytest.raises(ConfigError, match=r"^training\.devices: 3 requested but this machine has 2"):
        fit_module.fit(cfg, save=False)


@pytest.mark.parametrize("override", ["training.accelerator=gpu", "training.devices=4"])
def test_cli_train_exits_2_with_one_line(two_cpus_no_gpu, monkeypatch, tmp_path, capsys, override):
    fit_module = importlib.import_module("mmfuse.training.fit")

    monkeypatch.setattr(fit_module, "load_data", lambda cfg: (_ for _ in ()).throw(AssertionError("data loaded")))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "avmnist"}, "training": {"max_epochs": 1, "progress": False},
                                   "output_dir": str(tmp_path / "run")}))
    assert main(["train", str(cfg), "--set", override]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err + captured.out
    assert err.startswith("mmfuse train: error: training.") and override.split("=")[0] in err
    assert not (tmp_path / "run").exists()
