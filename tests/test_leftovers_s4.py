"""Session-4 leftovers: low_rank honours torch parametrizations, the compare few-seeds warning (once, naming the
config), summary.json paths relative to the study folder (a moved folder still works), the collapsed-encoder
diagnostic."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from mmfuse.fusion import create_fusion


class _Double(nn.Module):
    def forward(self, x):
        return 2.0 * x


def _lmf_inputs(dims, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, d, generator=g) for m, d in dims.items()}


def test_low_rank_honours_a_parametrized_factor_and_weight_norm():
    dims = {"a": 3, "b": 2}
    torch.manual_seed(0)
    op = create_fusion("low_rank", dims, rank=3, output_dim=4)
    ref = create_fusion("low_rank", dims, rank=3, output_dim=4)
    ref.load_state_dict(op.state_dict())
    with torch.no_grad():
        ref.factors["a"].mul_(2.0)  # what the parametrization computes
        op.bias.copy_(torch.randn(4))
        ref.bias.copy_(op.bias)
    x = _lmf_inputs(dims)
    part = {"a": torch.tensor([True, False, True, True, True]), "b": torch.ones(5, dtype=torch.bool)}
    parametrize.register_parametrization(op.factors, "a", _Double())
    assert "a" not in op.factors._parameters  # moved: a direct read of _parameters would miss it
    for mask in (None, part):  # the fast path and the masked path
        assert torch.allclose(op(x, mask), ref(x, mask), atol=1e-6, rtol=1e-5)
    # the gradient reaches the parametrization's original tensor: ∂out/∂original = 2 ∂out/∂factor
    op(x).sum().backward()
    ref(x).sum().backward()
    assert torch.allclose(op.factors.parametrizations["a"].original.grad, 2.0 * ref.factors["a"].grad, atol=1e-5)
    # weight norm on the rank weights: w = g · v / ||v||; doubling g doubles the rank sum (the output minus the bias)
    wn = torch.nn.utils.parametrizations.weight_norm(op, "rank_weights", dim=None)
    assert wn is op and "rank_weights" not in op._parameters
    with torch.no_grad():
        before = op(x) - op.bias
        op.parametrizations["rank_weights"].original0.mul_(2.0)
        after = op(x) - op.bias
    assert torch.allclose(after, 2.0 * before, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a parametrized bias too (through the attribute, not _parameters)
        parametrize.register_parametrization(op, "bias", _Double())
        assert torch.allclose(op(x) - before * 2.0, 2.0 * ref.bias, atol=1e-5)


# ---------------------------------------------------------------------------------------------- few seeds warning
_FEW = {"model": {"encoders": {"a": {"name": "mlp"}, "b": {"name": "mlp"}}},
        "compare": {"methods": ["fusion:concat"], "seeds": [0, 1], "tuning": {"trials": 2}}}


def _seed_warnings(record):
    return [w for w in record if "compare.seeds" in str(w.message)]


def test_few_seeds_warning_is_not_repeated_by_reparsing_and_names_the_config(tmp_path, recwarn):
    import yaml

    from mmfuse import compare
    from mmfuse.config import config_source, load_config, parse_config

    for _ in range(3):  # validation (and every re-parse by compare's workers) no longer warns
        cfg = parse_config(_FEW)
    assert _seed_warnings(recwarn) == []
    path = tmp_path / "study.yaml"
    path.write_text("# a study\n" + yaml.safe_dump(_FEW, sort_keys=False))
    seeds_line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "seeds:" in t)
    loaded = load_config(path)
    assert config_source(loaded) == str(path) and config_source(cfg) is None
    assert loaded == parse_config(yaml.safe_load(path.read_text()))  # the source does not change equality
    compare._SEEDS_WARNED.clear()
    for _ in range(3):
        compare.warn_few_seeds(load_config(path))
    (w,) = _seed_warnings(recwarn)  # once per process and config
    assert w.filename == str(path) and w.lineno == seeds_line  # points at the config's seeds line, not pydantic
    assert f"config {str(path)!r}" in str(w.message) and "[0, 1]" in str(w.message)
    recwarn.clear()
    compare.warn_few_seeds(cfg)  # a config built in code: a different config, warned once, at the caller's frame
    compare.warn_few_seeds(cfg)
    (w,) = _seed_warnings(recwarn)
    assert w.filename != str(path) and "pydantic" not in w.filename
    recwarn.clear()
    ok = parse_config({**_FEW, "compare": {**_FEW["compare"], "seeds": [0, 1, 2]}})
    assert compare.warn_few_seeds(ok, once=False) is None and _seed_warnings(recwarn) == []


# ---------------------------------------------------------------------------------------------- moved study folder
def test_summary_paths_are_relative_and_a_moved_study_folder_still_works(tmp_path):
    import json
    import shutil
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from tables import write_numeric_table

    from mmfuse import cli
    from mmfuse.compare import run_compare
    from mmfuse.config import load_config

    data = tmp_path / "data"
    data.mkdir()
    write_numeric_table(data, 48, 28, 8)
    (tmp_path / "cfg.yaml").write_text(f"""seed: 0
data: {{name: table, options: {{schema: {data / 'schema.yaml'}}}, batch_size: 8}}
model:
  encoders: {{a: {{name: mlp, options: {{hidden: [4], output_dim: 4}}}}, b: {{name: mlp, options: {{hidden: [4], output_dim: 4}}}}}}
training: {{max_epochs: 1, lr: 0.01, progress: false, evaluate_patterns: false, diagnostics: false}}
compare: {{methods: [fusion:concat], seeds: [0], tsne: false, missing_patterns: false, ensemble: {{size: 0}}}}
""")
    study = tmp_path / "study"
    run_compare(load_config(tmp_path / "cfg.yaml"), study, progress=False)
    text = (study / "summary.json").read_text()
    summ = json.loads(text)
    assert summ["best_checkpoint"] == "best/checkpoint" and str(tmp_path) not in text
    stored = json.loads((study / "runs" / f"{summ['best_run']}.json").read_text())
    assert stored["checkpoint"] == f"runs/{summ['best_run']}/checkpoint"
    moved = tmp_path / "elsewhere" / "moved_study"
    moved.parent.mkdir()
    shutil.move(str(study), str(moved))
    assert not study.exists()
    # evaluate the moved folder's best checkpoint: the stored test accuracy again
    assert cli.main(["evaluate", str(moved / summ["best_checkpoint"]), "--out", str(tmp_path / "ev.json")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())["metrics"]
    assert abs(ev["accuracy"] - stored["metrics"]["test_accuracy"]) < 1e-9
    assert (moved / stored["checkpoint"] / "config.json").is_file()
    # the HTML report of the moved folder: written there, and it names no file of the old location
    assert cli.main(["report", str(moved)]) == 0
    html = (moved / "report.html").read_text()
    assert "Leaderboard" in html and str(study) not in html
