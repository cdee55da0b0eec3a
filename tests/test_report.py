"""`mmfuse report`: one self-contained HTML page built from whatever files a run folder holds (no training here:
the folders are written by hand, with the files' real layouts)."""

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from mmfuse.cli import _auto_report, main
from mmfuse.errors import DataError
from mmfuse.report import render_report, write_report

METHODS = ["late:mean_prob", "concat", "gated", "unimodal:image"]


def _png(path):
    Image.fromarray((np.arange(48 * 32).reshape(32, 48) % 255).astype(np.uint8)).save(path)


def _compare(root, extra_cols=True):
    """A compare folder: leaderboard.csv (with the newer paired-test / convergence columns), runs.csv,
    runs/<key>.json curves, summary.json, figures, best/checkpoint/config.json and an explain output in best/."""
    root.mkdir(parents=True, exist_ok=True)
    acc = [0.52, 0.515, 0.35, 0.21]
    cols = ["method", "kind", "seeds", "params", "accuracy_mean", "accuracy_std", "pattern[a+b]_accuracy_mean",
            "pattern[a+b]_accuracy_std", "observed[a+b]_accuracy_mean", "observed[a+b]_accuracy_std",
            "observed[a+b]_n_mean", "observed[a+b]_n_std"] + (["vs_best", "p_holm", "converged"] if extra_cols else [])
    with open(root / "leaderboard.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i, (m, a) in enumerate(zip(METHODS, acc)):
            w.writerow([m, "late" if i == 0 else "feature", 2, 1000 * (i + 1), a, 0.01, a, 0.01,
                        "" if m.startswith("unimodal") else a, "" if m.startswith("unimodal") else 0.0, 600, 0.0]
                       + (["best" if i == 0 else "worse", "" if i == 0 else 0.01, "no"] if extra_cols else []))
    (root / "runs").mkdir()
    with open(root / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", "run", "test_accuracy", "test_rows_no_modality"])
        for i, m in enumerate(METHODS):
            w.writerow([m, 0, f"k{i}", acc[i], 0])
            (root / "runs" / f"k{i}.json").write_text(json.dumps({"curve": [0.1, 0.2 + 0.1 * i, 0.3 + 0.1 * i]}))
    (root / "summary.json").write_text(json.dumps({"metric": "accuracy", "best_method": METHODS[0],
                                                   "budget": {"max_epochs": 3, "seeds": [0, 1]}}))
    for name in ("leaderboard.png", "learning_curves.png"):
        _png(root / name)
    ck = root / "best" / "checkpoint"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text(json.dumps({"mmfuse_version": "0.1.0", "config": {
        "seed": 0, "training": {"max_epochs": 3, "lr": 0.005}, "model": {"fusion": {"name": "concat"}}}}))
    ex = root / "best" / "explain_shapley"
    ex.mkdir()
    (ex / "breakdown.csv").write_text("group,level,n,share_a_mean,share_a_std,share_b_mean,share_b_std\n"
                                      "all,all,4,0.75,0.1,0.25,0.1\nclass,cat,2,0.9,0.0,0.1,0.0\n"
                                      "class,dog,2,0.6,0.0,0.4,0.0\n")
    (ex / "interactions_by_class.csv").write_text("class,pair,interaction\ncat,a×b,0.125\ndog,a×b,-0.0625\n")
    _png(ex / "shares_by_class.png")
    return root


def _html(tmp_path, **kw):
    return write_report(_compare(tmp_path / "cmp", **kw)).read_text()


def test_self_contained_and_every_image_inline(tmp_path):
    html = _html(tmp_path)
    assert "http://" not in html and "https://" not in html  # no URL at all, not only in src / href
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"<(script|link|iframe)[^>]*\s(src|href)=", html)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', html))  # only in-page anchors
    # the base64 is the file itself
    import base64
    assert base64.b64decode(srcs[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_one_row_per_method_every_column_and_sortable(tmp_path):
    html = _html(tmp_path)
    table = re.search(r'<table id="leaderboard" class="sortable">(.*?)</table>', html).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    assert [re.findall(r"<td[^>]*>(.*?)</td>", r)[0] for r in rows] == METHODS  # one row each, in the file's order
    heads = re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", table)
    # the main metric (X_mean + X_std -> one column) and its paired-test / convergence marks lead, then the rest
    assert heads[:8] == ["method", "kind", "accuracy", "vs_best", "p_holm", "converged", "seeds", "params"]
    assert "0.5200 ± 0.0100" in table and 'data-v="0.52"' in table  # shown mean ± std, sorted on the mean
    assert "table.sortable" in html and "addEventListener('click'" in html and "localeCompare" in html
    # patterns go to the robustness sections; a count the same in every row goes into the header
    assert "observed[a+b]_accuracy (n=600)" in html and "pattern[a+b]_accuracy" in html


def test_missing_or_fewer_columns_do_not_break_it(tmp_path):
    html = _html(tmp_path, extra_cols=False)
    assert "vs_best" not in html and html.count("<tr>") > 4


def test_missing_sections_say_so(tmp_path):
    html = _html(tmp_path)
    tsne = re.search(r'<section id="sec-tsne">(.*?)</section>', html).group(1)
    assert "Not computed in this run" in tsne
    contrib = re.search(r'<section id="sec-contributions">(.*?)</section>', html).group(1)
    assert "Not computed" not in contrib and "best/explain_shapley" in contrib
    assert "0.7500 ± 0.1000" in contrib and "-0.0625" in contrib and "cat" in contrib  # breakdown + interactions
    assert "max_epochs: 3" in html  # the config as YAML


def test_train_folder_curve_and_diagnostics_warning(tmp_path):
    run = tmp_path / "train"
    run.mkdir()
    hist = [{"epoch": 0, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.2},
            {"epoch": 1, "train_loss": 0.5, "val_loss": 0.9, "val_accuracy": 0.6}]
    (run / "metrics.json").write_text(json.dumps({
        "val": {"metrics": {"accuracy": 0.6}}, "history": hist, "params": 10, "train_seconds": 1.0,
        "test": {"metrics": {"accuracy": 0.55}, "patterns": {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.11}},
                 "observed": {"a+b": {"n": 9, "metrics": {"accuracy": 0.55}}},
                 "diagnostics": {"metric": "accuracy", "only_present": {"a": 0.5, "b": 0.11},
                                 "ignored": [{"modality": "b", "only_present": 0.11, "chance": 0.1, "message":
                                              "modality b is ignored: try model.missing.modality_dropout"}]}}}))
    html = render_report(run)
    # the validation accuracy line: it rises, so its second point is drawn higher (smaller y) than its first
    svgs = re.findall(r"<svg.*?</svg>", html)
    acc = [s for s in svgs if "val_accuracy" in s][0]
    (x0, y0), (x1, y1) = [tuple(map(float, p.split(","))) for p in
                          re.search(r'<polyline[^>]*points="([^"]*)"', acc).group(1).split()]
    assert x1 > x0 and y1 < y0
    diag = re.search(r'<section id="sec-diagnostics">(.*?)</section>', html).group(1)
    assert re.search(r'<div class="warn">.*modality b is ignored', diag) and "only_present" in diag
    sim = re.search(r'<section id="sec-simulated">(.*?)</section>', html).group(1)
    assert "0.1100" in sim and "0.5000" in sim
    assert "Not computed in this run" in re.search(r'<section id="sec-tsne">(.*?)</section>', html).group(1)


def test_odd_files_do_not_crash_the_report(tmp_path):
    root = _compare(tmp_path / "cmp")
    (root / "summary.json").write_text("{not json")
    (root / "leaderboard.csv").write_text("method,accuracy_mean\nconcat,0.5,EXTRA\nsum\n")
    html = write_report(root).read_text()
    assert "<table" in html and "Environment" in html


def test_bad_run_dir(tmp_path, capsys):
    with pytest.raises(DataError, match=r"does not exist.*mmfuse train"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*holds no mmfuse outputs; expected a compare folder"):
        write_report(tmp_path / "empty")
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "mmfuse report: error:" in err and str(tmp_path / "empty") in err and "Traceback" not in err
    # the automatic report at the end of train / compare / explain only warns
    _auto_report(tmp_path / "empty")
    assert "warning: the HTML report" in capsys.readouterr().err


def test_cli_report_out(tmp_path, capsys):
    root = _compare(tmp_path / "cmp")
    assert main(["report", str(root), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert not (root / "report.html").exists()


def _cells(table_html):
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)]
            for r in re.findall(r"<tr>(.*?)</tr>", table_html.split("<tbody>")[1])]


def test_leaderboard_marks_follow_the_main_metric_and_budget_is_visible(tmp_path):
    root = _compare(tmp_path / "cmp")
    # summary.json names macro_f1 as the study's metric: that column leads, whatever the CSV order
    with open(root / "leaderboard.csv", newline="") as f:
        rows = list(csv.reader(f))
    rows[0] += ["macro_f1_mean", "macro_f1_std"]
    for r in rows[1:]:
        r += ["0.4", "0.02"]
    rows[2][-1] = "1.3877787807814457e-17"  # a std of equal values, up to rounding: shown as 0
    with open(root / "leaderboard.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    (root / "summary.json").write_text(json.dumps({"metric": "macro_f1", "budget": {
        "trials_per_method": 2, "trial_max_epochs": 6, "max_epochs": 6, "patience": 2, "seeds": [0, 1]}}))
    html = render_report(root)
    table = re.search(r'<table id="leaderboard" class="sortable">(.*?)</table>', html).group(1)
    heads = re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", table)
    assert heads[:6] == ["method", "kind", "macro_f1", "vs_best", "p_holm", "converged"]
    assert _cells(table)[1][:6] == ["concat", "feature", "0.4000 ± 0.0000", "worse", "0.0100", "no"]
    assert _cells(table)[2][2] == "0.4000 ± 0.0200"
    # the budget: visible text before the table (not inside a collapsed <details>)
    lb = re.search(r'<section id="sec-leaderboard">(.*?)</section>', html).group(1)
    m = re.search(r'<p class="budget"><b>(Budget:[^<]*)</b></p>', lb)
    assert m and lb.index(m.group(0)) < lb.index('<table id="leaderboard"')
    assert "2 Optuna trials per method (≤ 6 epochs each)" in m.group(1) and "patience 2" in m.group(1)
    assert not re.search(r"<details>[^/]*Budget:", lb)
    # compare's own sentence (leaderboard.md) wins when present, as the demo printed it
    (root / "leaderboard.md").write_text("Dataset x.\n\nBudget: 9 trials, exactly as printed.\n\n| # | method |\n"
                                         "\n`vs best`: paired t-test against the best.\n")
    lb = re.search(r'<section id="sec-leaderboard">(.*?)</section>', render_report(root)).group(1)
    assert "<b>Budget: 9 trials, exactly as printed.</b>" in lb and "vs best: paired t-test against the best." in lb


def _compare_diagnostics(point=None):
    """compare's summary["diagnostics"]: a list of per-grid-point dicts whose `ignored` is {method: [warnings]}."""
    msg = ("modality 'image' looks ignored: test accuracy with only image present is 0.100 (chance level 0.100), "
           "while the unimodal model reaches 0.481")
    return [{"point": point or {}, "metric": "accuracy",
             "unimodal_gap": {"metric": "accuracy", "direction": "max", "unimodal": {"audio": 0.65, "image": 0.48},
                              "fused": {"fusion:late": 0.69, "fusion:gated": 0.58},
                              "gap": {"fusion:late": {"audio": 0.04, "image": 0.21},
                                      "fusion:gated": {"audio": -0.07, "image": 0.1}}},
             "chance": {"audio": 0.1, "image": 0.1},
             "ignored": {"fusion:gated": [{"modality": "image", "metric": "accuracy", "only_present": 0.1,
                                           "chance": 0.1, "reference": 0.481, "message": msg}],
                         "fusion:tensor": [{"modality": "audio", "only_present": 0.125, "chance": 0.1}]},
             "grad_norm_ratio": {"fusion:gated": {"audio": 1.0, "image": 0.03125},
                                 "fusion:late": {"audio": 1.0, "image": 0.5}}}]


def test_compare_ignored_warnings_and_diagnostics_tables(tmp_path):
    root = _compare(tmp_path / "cmp")
    summ = json.loads((root / "summary.json").read_text())
    summ["diagnostics"] = _compare_diagnostics() + _compare_diagnostics({"lr": 0.01})
    (root / "summary.json").write_text(json.dumps(summ))
    diag = re.search(r'<section id="sec-diagnostics">(.*?)</section>', render_report(root)).group(1)
    warns = re.findall(r'<div class="warn"><b>warning</b> \(summary.json: diagnostics\): (.*?)</div>', diag)
    # every warning of every grid point, named by method (and grid point), none lost
    assert len(warns) == 4 and "No warnings." not in diag
    assert warns[0].startswith("fusion:gated: modality &#x27;image&#x27; looks ignored") and "0.481" in warns[0]
    assert warns[1].startswith("fusion:tensor: modality &#x27;audio&#x27; looks ignored")  # no message: its fields
    assert warns[2].startswith("at lr=0.01: fusion:gated: modality")
    # unimodal gap and gradient-norm ratios as tables, not raw JSON
    assert "<pre>" not in diag
    tables = re.findall(r"<table[^>]*>(.*?)</table>", diag)
    gap = next(t for t in tables if "gap vs unimodal:audio (0.6500)" in t)
    assert _cells(gap)[1] == ["fusion:gated", "0.5800", "-0.0700", "0.1000"]
    grad = next(t for t in tables if "<th>image</th>" in t and "0.0312" in t)
    assert _cells(grad)[0] == ["fusion:gated", "1.0000", "0.0312"]
    assert "Grid point lr=0.01" in diag


def test_one_run_ignored_list_still_warns_and_no_warning_says_so(tmp_path):
    from mmfuse.report.sections import _warnings

    assert _warnings({"ignored": [{"modality": "b", "message": "b ignored"}, {}]}) == ["b ignored"]
    assert _warnings({"ignored": {}}) == [] and _warnings([{"point": {}, "ignored": {"m": []}}]) == []
    root = _compare(tmp_path / "cmp")
    summ = json.loads((root / "summary.json").read_text())
    d = _compare_diagnostics()
    d[0]["ignored"] = {}
    summ["diagnostics"] = d
    (root / "summary.json").write_text(json.dumps(summ))
    diag = re.search(r'<section id="sec-diagnostics">(.*?)</section>', render_report(root)).group(1)
    assert "No warnings." in diag and 'class="warn"' not in diag and "none flagged" in diag


def test_environment_separates_report_machine_from_the_run(tmp_path):
    root = _compare(tmp_path / "cmp")
    env = re.search(r'<section id="sec-environment">(.*?)</section>', render_report(root)).group(1)
    assert "wrote <b>this report</b>" in env and "Recorded by the run" in env
    run = env.split("Recorded by the run")[1]
    assert re.search(r"<td[^>]*>mmfuse_version</td><td[^>]*>0.1.0</td><td[^>]*>best/checkpoint/config.json</td>", run)


def test_svg_legend_of_many_series_stays_inside_the_chart():
    from mmfuse.report.html import line_chart

    def extent(svg):
        W, Hh = (int(v) for v in re.search(r'<svg width="(\d+)" height="(\d+)"', svg).groups())
        xs = [float(x) for x in re.findall(r'<g class="legend">.*?<text x="([\d.]+)"', svg)]
        ys = [float(y) for y in re.findall(r'<g class="legend">.*?<text x="[\d.]+" y="([\d.]+)"', svg)]
        return W, Hh, xs, ys

    few = line_chart({f"m{i}": [0.1 * i, 0.2] for i in range(3)}, "acc")
    W, Hh, xs, ys = extent(few)
    assert (W, Hh) == (640, 320) and len(set(xs)) == 1  # a short legend: one column beside the plot
    for n in (20, 40):
        names = [f"fusion:method_with_a_rather_long_name_{i:02d}" for i in range(n)]
        svg = line_chart({k: [0.1, 0.2 + 0.01 * i] for i, k in enumerate(names)}, "acc")
        W, Hh, xs, ys = extent(svg)
        assert len(ys) == n and max(ys) + 4 <= Hh and all(x + 26 * 6 <= W + 10 for x in xs)  # every entry drawn inside
        assert len(set(xs)) > 1 and len(set(zip(xs, ys))) == n  # several columns, no two entries on one spot
        assert all(f"<title>{k}</title>" in svg for k in names)  # the full name on hover (the text is shortened)
