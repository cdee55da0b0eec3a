import pytest

from mmfuse.config import load_config, parse_config
from mmfuse.errors import ConfigError


def test_every_problem_reported_at_once_with_suggestions():
    raw = {
        "trainig": {"max_epochs": 3},
        "training": {"max_epochs": -1, "optimiser": "adam"},
        "model": {"fusion": {"name": "lowrank"}, "encoders": {"image": {"name": "cnn2"}}},
        "data": {"name": "avmnst"},
    }
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    msg = str(e.value)
    assert "trainig: unknown key; did you mean 'training'" in msg
    assert "training.optimiser: unknown key; did you mean 'optimizer'" in msg
    assert "training.max_epochs" in msg


def test_registry_names_checked_before_compute():
    with pytest.raises(ConfigError) as e:
        parse_config({"model": {"fusion": {"name": "lowrank"}, "encoders": {"image": {"name": "cnn2"}}},
                      "data": {"name": "avmnst"}, "compare": {"fusions": ["concat", "tensr"]}})
    msg = str(e.value)
    assert "model.fusion.name: unknown fusion operator 'lowrank'; did you mean 'low_rank'" in msg
    assert "model.encoders.image.name: unknown encoder 'cnn2'" in msg and "'cnn2d'" in msg
    assert "data.name: unknown dataset 'avmnst'" in msg
    assert "compare.fusions[1]: unknown fusion operator 'tensr'" in msg


def test_dotted_overrides():
    cfg = parse_config({}, ["training.max_epochs=3", "model.fusion.name=gated", "compare.seeds=[4, 5]",
                            "data.options.variant=hard"])
    assert cfg.training.max_epochs == 3 and cfg.model.fusion.name == "gated"
    assert cfg.compare.seeds == [4, 5] and cfg.data.options == {"variant": "hard"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_config({}, ["training.max_epochs"])
    with pytest.raises(ConfigError, match="training.max_epochs"):
        parse_config({}, ["training.max_epochs=many"])


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text("seed: 3\ntraining: {max_epochs: 2}\n")
    assert load_config(ok).seed == 3


def test_malformed_values_are_config_errors():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config({}, ["training.lr=[1"])
    with pytest.raises(ConfigError, match="model.encoders"):
        parse_config({"model": {"encoders": ["cnn2d"]}})
    with pytest.raises(ConfigError, match="optoins: unknown key; did you mean 'options'"):
        parse_config({"model": {"encoders": {"a": {"name": "mlp", "optoins": {}}}}})
