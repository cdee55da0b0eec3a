"""The report's sections, each built from whatever files the run folder holds.

A run folder is a compare folder (``leaderboard.csv``, ``runs.csv``, ``summary.json``, ``runs/<key>.json``,
PNG figures, ``best/checkpoint``), a train folder (``metrics.json``, ``checkpoint/config.json``,
``learning_curve.png``) or an explain folder (``breakdown.csv``, ``per_sample.csv``, ``shares_by_*.png``,
interaction files); explain outputs inside a compare / train folder (``explain_*/``, ``best/explain_*/``) are
found too. Every table shows the columns present in its file (``X_mean`` / ``X_std`` pairs shown as one
``mean ± std`` column); a section whose files are absent says "not computed in this run".
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import html as H

COMPARE_FILES = ("leaderboard.csv", "runs.csv", "summary.json")
TRAIN_FILES = ("metrics.json", "checkpoint/config.json")
EXPLAIN_FILES = ("breakdown.csv", "per_sample.csv")
MAX_EXAMPLES = 8


def _is_explain(d: Path) -> bool:
    return any((d / f).is_file() for f in EXPLAIN_FILES)


@dataclass
class RunFolder:
    root: Path
    kinds: list[str] = field(default_factory=list)
    explain_dirs: list[Path] = field(default_factory=list)

    @classmethod
    def detect(cls, root: Path) -> "RunFolder":
        kinds = []
        if any((root / f).is_file() for f in COMPARE_FILES):
            kinds.append("compare")
        if any((root / f).is_file() for f in TRAIN_FILES):
            kinds.append("train")
        if _is_explain(root):
            kinds.append("explain")
        cands = [root] + sorted(root.glob("explain*")) + sorted(root.glob("best/explain*"))
        dirs = list(dict.fromkeys(d for d in cands if d.is_dir() and _is_explain(d)))
        return cls(root, kinds, dirs)

    @property
    def kind(self) -> str:
        return self.kinds[0] if self.kinds else "unknown"

    def json(self, rel: str | Path) -> Any:
        p = self.root / rel
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None


# ------------------------------------------------------------------------------------------------ helpers

def missing(what: str) -> str:
    return f'<p class="missing">Not computed in this run ({H.esc(what)}).</p>'


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        rows = [row for row in r]
        return list(r.fieldnames or []), rows


def cell(v: Any) -> Any:
    """A CSV cell as a number when it is one (ints stay ints), else its text."""
    if v is None or v == "":
        return None
    if isinstance(v, (int, float)):
        return v
    try:
        return int(v)
    except (TypeError, ValueError):
        pass
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def merged_columns(columns: list[str]) -> list[tuple[str, str, str | None]]:
    """(shown name, value column, std column or None): ``X_mean`` + ``X_std`` -> one ``X`` column."""
    cols = set(columns)
    out = []
    for c in columns:
        if c.endswith("_std") and c[:-4] + "_mean" in cols:
            continue
        if c.endswith("_mean") and c[:-5] + "_std" in cols:
            out.append((c[:-5], c, c[:-5] + "_std"))
        else:
            out.append((c, c, None))
    return out


def _constant_counts(columns: list[str], rows: list[dict]) -> dict[str, int]:
    """``observed[P]_n_mean`` / ``observed[P]_n`` columns whose value is one integer in every row -> P: n."""
    out = {}
    for c in columns:
        if c.startswith("observed[") and c.endswith(("]_n", "]_n_mean")):
            vals = {H.number(cell(r.get(c))) for r in rows} - {None}
            if len(vals) == 1 and next(iter(vals)).is_integer():
                out[c[:c.index("]") + 1]] = int(next(iter(vals)))
    return out


def frame_table(columns: list[str], rows: list[dict], *, sortable: bool = True, table_id: str | None = None,
                first: list[str] | None = None) -> str:
    """A table of ``rows`` (dicts) with every column present; ``first`` columns (when present) lead. A per-pattern
    row count that is the same in every row goes into the pattern's column names (``(n=600)``)."""
    first = [c for c in (first or []) if c in columns]
    counts = _constant_counts(columns, rows)
    columns = [c for c in columns if not (c.startswith("observed[") and c.endswith(("]_n", "]_n_mean", "]_n_std"))
                                          and c[:c.index("]") + 1] in counts)]
    spec = merged_columns(first + [c for c in columns if c not in first])
    spec = [(f"{n} (n={counts[n[:n.index(']') + 1]]})" if n.startswith("observed[") and n[:n.index("]") + 1] in counts
             else n, vc, sc) for n, vc, sc in spec]
    body, keys = [], []
    for r in rows:
        line, ks = [], []
        one_seed = H.number(cell(r.get("seeds"))) == 1
        for _, vc, sc in spec:
            v = cell(r.get(vc))
            if sc is not None and H.number(v) is not None:
                s = H.number(cell(r.get(sc)))
                if s is not None and abs(s) < 1e-12 * max(1.0, abs(float(v))):  # rounding noise, e.g. 1.39e-17
                    s = 0.0
                if s == 0 and (float(v).is_integer() or one_seed):  # a count, or one seed: no spread to show
                    line.append(str(int(float(v))) if float(v).is_integer() else H.fmt(float(v)))
                else:
                    line.append(f"{H.fmt(float(v))} ± {H.fmt(s)}" if s is not None else H.fmt(float(v)))
                ks.append(H.number(v))
            else:
                line.append(v)
                ks.append(H.number(v) if H.number(v) is not None else None)
        body.append(line)
        keys.append(ks)
    return H.table([n for n, _, _ in spec], body, sortable=sortable, sort_values=keys, table_id=table_id)


def _warnings_table(by_method: dict) -> str:
    """A sortable table of per-method warning records (``{method: [ {field: value, "message": ...}, ...]}``, one
    record allowed in place of the list): one row per record, its fields as columns, the message left out."""
    rows = [{"method": m, **{k: v for k, v in w.items() if k != "message"}}
            for m, ws in by_method.items() for w in (ws if isinstance(ws, list) else [ws]) if isinstance(w, dict)]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    return H.table(cols, [[r.get(c) for c in cols] for r in rows], sortable=True)


def json_block(v: Any) -> str:
    return f"<pre>{H.esc(json.dumps(v, indent=2, default=str))}</pre>"


def value_html(v: Any, depth: int = 0) -> str:
    """A JSON value as a table when it is a flat mapping / mapping of flat mappings / list of flat mappings."""
    scalar = (str, int, float, bool, type(None))
    if isinstance(v, dict) and v and all(isinstance(x, scalar) for x in v.values()):
        return H.table(["key", "value"], [[k, x] for k, x in v.items()])
    if isinstance(v, dict) and v and all(isinstance(x, dict) and all(isinstance(y, scalar) for y in x.values())
                                         for x in v.values()):
        cols = list(dict.fromkeys(k for x in v.values() for k in x))
        return H.table([""] + cols, [[k] + [x.get(c) for c in cols] for k, x in v.items()], sortable=True)
    if isinstance(v, list) and v and all(isinstance(x, dict) and all(isinstance(y, scalar) for y in x.values())
                                         for x in v):
        cols = list(dict.fromkeys(k for x in v for k in x))
        return H.table(cols, [[x.get(c) for c in cols] for x in v], sortable=True)
    if isinstance(v, scalar):
        return f"<p>{H.esc(v)}</p>"
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v) and all(
            isinstance(y, scalar) or (isinstance(y, dict) and all(isinstance(z, scalar) for z in y.values()))
            for x in v for y in x.values()):  # e.g. per epoch {"epoch", "norm": {m: ...}}: one column per m
        flat_rows = [{(f"{k}[{kk}]" if isinstance(y, dict) else k): z for k, y in x.items()
                      for kk, z in (y.items() if isinstance(y, dict) else [(None, y)])} for x in v]
        return value_html(flat_rows, depth + 1)
    if isinstance(v, dict) and depth < 3:  # mixed: its scalars as one table, each nested value below its key
        flat = {k: x for k, x in v.items() if isinstance(x, scalar)}
        out = [value_html(flat, depth + 1)] if flat else []
        # flat mappings over the same keys (e.g. per modality: only_present, chance, reference): one table
        subs = {k: x for k, x in v.items() if isinstance(x, dict) and x and all(isinstance(y, scalar) for y in x.values())}
        groups: dict[tuple, list[str]] = {}
        for k, x in subs.items():
            groups.setdefault(tuple(x), []).append(k)
        joined = set()
        for keys, names in groups.items():
            if len(names) > 1:
                out.append(H.table([""] + names, [[r] + [v[n].get(r) for n in names] for r in keys], sortable=True))
                joined.update(names)
        for k, x in v.items():
            if not isinstance(x, scalar) and x not in ({}, []) and k not in joined:
                out.append(f'<p class="note"><b>{H.esc(k)}</b></p>' + value_html(x, depth + 1))
        return "".join(out)
    if isinstance(v, list) and all(isinstance(x, scalar) for x in v):
        return f"<p>{H.esc(', '.join(str(x) for x in v))}</p>"
    return json_block(v)


def figures(paths: list[Path], root: Path) -> str:
    if not paths:
        return ""
    return '<div class="figs">' + "".join(H.image(p, str(p.relative_to(root)) if p.is_relative_to(root) else p.name)
                                          for p in paths) + "</div>"


def _compare_runs(f: RunFolder) -> dict[str, list[list[float]]]:
    """Validation curves per method (every seed) from ``runs/<key>.json`` and ``runs.csv``."""
    if not (f.root / "runs.csv").is_file():
        return {}
    _, rows = read_csv(f.root / "runs.csv")
    curves: dict[str, list[list[float]]] = {}
    for r in rows:
        d = f.json(Path("runs") / f"{r.get('run')}.json")
        if isinstance(d, dict) and isinstance(d.get("curve"), list):
            curves.setdefault(str(r.get("method")), []).append(d["curve"])
    return curves


def _mean_curve(cs: list[list[float]]) -> list[float]:
    n = max(len(c) for c in cs)
    out = []
    for i in range(n):
        vals = [H.number(c[i]) for c in cs if i < len(c)]
        vals = [v for v in vals if v is not None]
        out.append(sum(vals) / len(vals) if vals else float("nan"))
    return out


# ------------------------------------------------------------------------------------------------ sections

MARK_COLUMNS = ("vs_best", "p_holm", "converged")  # the paired test's mark and convergence: next to the metric


def leaderboard_first_columns(columns: list[str], summ: Any = None) -> list[str]:
    """The leaderboard's leading columns: ``method``, ``kind``, the main metric (summary.json's ``metric``, else
    the first ``X_mean`` column), then ``vs_best``, ``p_holm`` and ``converged``; the others follow in the file's
    order."""
    metric = summ.get("metric") if isinstance(summ, dict) else None
    main = None
    if metric and (f"{metric}_mean" in columns or metric in columns):
        main = f"{metric}_mean" if f"{metric}_mean" in columns else metric
    else:
        main = next((c for c in columns if c.endswith("_mean") and c[:-5] not in ("seeds", "params")), None)
    head = ["method", "kind"] + ([main, main[:-5] + "_std"] if main and main.endswith("_mean") else [main])
    return [c for c in head + list(MARK_COLUMNS) if c and c in columns]


def _budget_text(f: RunFolder, summ: Any) -> str | None:
    """The study's budget sentence: the ``Budget:`` line of leaderboard.md (as compare printed it), else one
    written from summary.json's ``budget`` (the fields present)."""
    md = f.root / "leaderboard.md"
    if md.is_file():
        try:
            for line in md.read_text(encoding="utf-8").splitlines():
                if line.startswith("Budget:"):
                    return line.strip()
        except (OSError, UnicodeDecodeError):
            pass
    b = summ.get("budget") if isinstance(summ, dict) else None
    if not isinstance(b, dict) or not b:
        return None
    bits = []
    if b.get("trials_per_method"):
        bits.append(f"{b['trials_per_method']} Optuna trials per method"
                    + (f" (≤ {b['trial_max_epochs']} epochs each)" if b.get("trial_max_epochs") else ""))
    elif "trials_per_method" in b:
        bits.append("no tuning (every method with the config's settings)")
    if b.get("max_epochs") is not None:
        bits.append(f"≤ {b['max_epochs']} epochs per run")
    if "patience" in b:
        bits.append(f"early stopping patience {b['patience']}" if b["patience"] else "no early stopping")
    if b.get("seeds") is not None:
        bits.append(f"seeds {b['seeds']}")
    if H.number(b.get("wall_seconds")) is not None:
        bits.append(f"wall time {H.number(b['wall_seconds']):.0f} s")
    rest = {k: v for k, v in b.items() if k not in ("trials_per_method", "trial_max_epochs", "max_epochs", "patience",
                                                      "seeds", "wall_seconds") and not isinstance(v, (dict, list))}
    bits += [f"{k} {H.fmt(v)}" for k, v in rest.items()]
    return "Budget: " + "; ".join(bits) + "." if bits else None


def _legend_lines(f: RunFolder, columns: set[str]) -> list[str]:
    """leaderboard.md's explanations of the shown ``columns`` (its lines that start with a backquoted column
    name, e.g. `vs best`: ...)."""
    md = f.root / "leaderboard.md"
    try:
        lines = md.read_text(encoding="utf-8").splitlines() if md.is_file() else []
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for line in lines:
        if line.startswith("Diagnostics"):
            break
        name = line[1:].split("`", 1)[0] if line.startswith("`") and line.count("`") >= 2 else None
        if name and (name in columns or name.replace(" ", "_") in columns):
            out.append(line.replace("`", ""))
    return out


def leaderboard(f: RunFolder) -> str:
    parts = []
    summ = f.json("summary.json")
    if (f.root / "leaderboard.csv").is_file():
        cols, rows = read_csv(f.root / "leaderboard.csv")
        main_cols = [c for c in cols if not c.startswith(("pattern[", "observed["))]
        one = all(H.number(cell(r.get("seeds"))) == 1 for r in rows) and rows and "seeds" in cols
        parts.append(f'<p class="note">{len(rows)} method(s), one row each (from leaderboard.csv; '
                     f'{"one seed: no spread over seeds" if one else "mean ± std over seeds"}). '
                     "Click a column header to sort.</p>")
        budget = _budget_text(f, summ)
        if budget:
            parts.append(f'<p class="budget"><b>{H.esc(budget)}</b></p>')
        parts.append(frame_table(main_cols, rows, table_id="leaderboard",
                                 first=leaderboard_first_columns(main_cols, summ)))
        shown = {n for n, _, _ in merged_columns(main_cols)}
        parts += [f'<p class="note">{H.esc(line)}</p>' for line in _legend_lines(f, shown)]
        if isinstance(summ, dict):
            shown = {k: v for k, v in summ.items() if k not in ("diagnostics", "warnings", "skipped")}
            flat = {k: v for k, v in shown.items() if not isinstance(v, (dict, list))}
            nested = {k: v for k, v in shown.items() if isinstance(v, (dict, list)) and v not in ({}, [])}
            if flat:
                parts.append("<h3>Summary (summary.json)</h3>" + value_html(flat))
            for k, v in nested.items():  # budget's fields, tuning, paired test, ...: folded, one click away
                parts.append(f"<details><summary>{H.esc(k)}</summary>{value_html(v, 1)}</details>")
        if (f.root / "leaderboard.png").is_file():
            parts.append(figures([f.root / "leaderboard.png"], f.root))
        return "".join(parts)
    m = f.json("metrics.json")
    if isinstance(m, dict):
        rows = []
        for split in ("val", "test"):
            mets = (m.get(split) or {}).get("metrics") if isinstance(m.get(split), dict) else None
            if isinstance(mets, dict):
                rows.append({"split": split, **{k: v for k, v in mets.items()}})
        cols = list(dict.fromkeys(k for r in rows for k in r))
        info = {k: m[k] for k in ("params", "train_seconds") if k in m}
        parts.append('<p class="note">One trained model (a train folder: metrics.json); no method comparison.</p>')
        if rows:
            parts.append(frame_table(cols, rows, table_id="leaderboard"))
        if info:
            parts.append(value_html(info))
        return "".join(parts) or missing("metrics.json holds no metrics")
    return missing("no leaderboard.csv (compare) or metrics.json (train) in this folder")


def learning_curves(f: RunFolder) -> str:
    for name in ("learning_curves.png", "learning_curve.png"):
        if (f.root / name).is_file():
            return figures([f.root / name], f.root)
    curves = _compare_runs(f)
    summ = f.json("summary.json") or {}
    if curves:
        metric = f"val_{summ.get('metric', 'metric')}"
        n = max(len(v) for v in curves.values())
        svg = H.line_chart({k: _mean_curve(v) for k, v in curves.items()}, metric)
        if svg:
            return (f'<p class="note">{H.esc(metric)} per epoch, mean over each method\'s seeds '
                    f"(from runs/&lt;key&gt;.json; up to {n} epochs).</p>" + svg)
    m = f.json("metrics.json")
    hist = m.get("history") if isinstance(m, dict) else None
    if isinstance(hist, list) and hist and all(isinstance(h, dict) for h in hist):
        keys = list(dict.fromkeys(k for h in hist for k in h if k != "epoch"))
        out = ['<p class="note">One run (metrics.json history), per epoch.</p>']
        losses = [k for k in keys if k.endswith("loss")]
        others = [k for k in keys if k not in losses]
        for group in (losses, others):
            if group:
                out.append(H.line_chart({k: [h.get(k) for h in hist] for k in group},
                                        "loss" if group is losses else "validation metric"))
        return "".join(out)
    return missing("no learning_curves.png, runs/*.json curves or metrics.json history")


def _pattern_section(f: RunFolder, prefix: str, report_key: str, what: str) -> str:
    if (f.root / "leaderboard.csv").is_file():
        cols, rows = read_csv(f.root / "leaderboard.csv")
        pcols = [c for c in cols if c.startswith(prefix)]
        if pcols:
            return frame_table(["method"] + pcols, rows, table_id=f"{prefix.strip('[')}_table")
        return missing(f"leaderboard.csv has no {prefix}…] columns")
    m = f.json("metrics.json")
    test = m.get("test") if isinstance(m, dict) else None
    pats = test.get(report_key) if isinstance(test, dict) else None
    if isinstance(pats, dict) and pats:
        rows = []
        for pat, v in pats.items():
            if not isinstance(v, dict):
                continue
            mets = v.get("metrics") if isinstance(v.get("metrics"), dict) else v
            rows.append({"pattern": pat, **({"n": v["n"]} if "n" in v else {}),
                         **{k: x for k, x in mets.items() if not isinstance(x, (dict, list))}})
        cols = list(dict.fromkeys(k for r in rows for k in r))
        return frame_table(cols, rows)
    return missing(f"no {what} in this run's files")


def robustness_observed(f: RunFolder) -> str:
    note = ('<p class="note">Test rows grouped by the modalities they really have (nothing hidden); '
            "n = rows in the group.</p>")
    body = _pattern_section(f, "observed[", "observed", "per-observed-pattern metrics")
    return (note + body) if 'class="missing"' not in body else body


def robustness_simulated(f: RunFolder) -> str:
    note = ('<p class="note">Simulated missingness: every test row with only the named modalities present '
            "(the others hidden at test time).</p>")
    what = "per-simulated-pattern metrics"
    if not (f.root / "leaderboard.csv").is_file() and (f.root / "metrics.json").is_file():
        # a train folder: say why, and how to get them (the default `auto` skips them on short runs)
        what += (" (training.evaluate_patterns: auto skips them when the 2^M − 1 passes over the test rows cost more "
                 "than the samples trained; `mmfuse evaluate CHECKPOINT` prints them, or train with "
                 "--set training.evaluate_patterns=true)")
    body = _pattern_section(f, "pattern[", "patterns", what)
    return (note + body) if 'class="missing"' not in body else body


def contributions(f: RunFolder) -> str:
    if not f.explain_dirs:
        return missing("no explain output (breakdown.csv); run `mmfuse explain CHECKPOINT` into this folder")
    out = []
    for d in f.explain_dirs:
        rel = "." if d == f.root else str(d.relative_to(f.root))
        out.append(f"<h3>{H.esc(rel)}</h3>")
        if (d / "breakdown.csv").is_file():
            cols, rows = read_csv(d / "breakdown.csv")
            out.append('<p class="note">Mean ± std share of the explained score per modality: all samples, per '
                       "class, by correctness (breakdown.csv).</p>" + frame_table(cols, rows))
        inter = sorted(p for p in d.glob("*interaction*") if p.is_file())
        has_csv = any(p.suffix == ".csv" for p in inter)
        for p in inter:
            if p.suffix == ".csv":
                cols, rows = read_csv(p)
                out.append(f'<p class="note">Modality interactions ({H.esc(p.name)}).</p>' + frame_table(cols, rows))
            elif p.suffix == ".json":
                try:
                    body = value_html(json.loads(p.read_text()))
                except ValueError:
                    continue
                out.append(f"<details><summary>{H.esc(p.name)}</summary>{body}</details>" if has_csv else
                           f'<p class="note">{H.esc(p.name)}</p>' + body)  # folded when a CSV shows the same
        if not any(p.suffix in (".csv", ".json", ".png") for p in inter):
            out.append(missing("no modality-interaction file in this explain output"))
        out.append(figures(sorted(p for p in d.glob("*.png")), f.root))
        ex = sorted((d / "examples").glob("*.png"))[:MAX_EXAMPLES] if (d / "examples").is_dir() else []
        if ex:
            out.append("<h3>Examples</h3>" + figures(ex, f.root))
        if (d / "per_sample.csv").is_file():
            out.append(f'<p class="note">Per-sample values: {H.esc(str(d / "per_sample.csv"))}</p>')
    return "".join(out)


def tsne(f: RunFolder) -> str:
    if (f.root / "tsne.png").is_file():
        return figures([f.root / "tsne.png"], f.root)
    return missing("no tsne.png")


def _ignored_messages(x: Any, at: str = "") -> list[str]:
    """The messages of ignored-modality warnings in either layout: a list of warning dicts (one run's
    ``test.diagnostics.ignored``) or ``{method: [warning dicts]}`` (each grid point of compare's
    ``summary["diagnostics"]``); a warning without ``message`` is described from its fields."""
    out: list[str] = []
    if isinstance(x, dict) and ("message" in x or "modality" in x):
        x = [x]
    if isinstance(x, list):
        for w in x:
            if not w:
                continue
            if isinstance(w, dict):
                msg = w.get("message") or (f"modality {w.get('modality')!r} looks ignored"
                                           + (f" ({json.dumps({k: v for k, v in w.items() if k != 'modality'}, default=str)})"
                                              if len(w) > 1 else "") if w.get("modality") else
                                           json.dumps(w, default=str))
            else:
                msg = str(w)
            out.append(at + str(msg))
    elif isinstance(x, dict):
        for method, ws in x.items():
            out += _ignored_messages(ws, f"{at}{method}: ")
    elif isinstance(x, str) and x:
        out.append(at + x)
    return out


def _point_text(point: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) if isinstance(point, dict) else str(point)


def _warnings(v: Any, key: str = "", at: str = "") -> list[str]:
    """Every string under a key that names a warning or an error, and the message of every ignored modality
    (a run's ``test.diagnostics.ignored`` list, see :mod:`mmfuse.diagnostics`, or compare's
    ``summary["diagnostics"][i]["ignored"]`` = {method: [warnings]}, prefixed by the grid point when there is
    one)."""
    out = []
    if isinstance(v, dict):
        if isinstance(v.get("point"), dict) and v["point"]:
            at = f"{at}at {_point_text(v['point'])}: "
        for k, x in v.items():
            if k in ("ignored", "collapsed"):  # ignored modalities, collapsed encoders (mmfuse.diagnostics)
                out += _ignored_messages(x, at)
                continue
            if k == "error" and isinstance(x, str):
                out.append(at + x)
                continue
            out += _warnings(x, str(k), at)
    elif isinstance(v, list):
        for x in v:
            out += _warnings(x, key, at)
    elif isinstance(v, str) and "warn" in key.lower():
        out.append(at + v)
    return out


def _is_compare_diagnostics(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(
        isinstance(d, dict) and ({"unimodal_gap", "ignored", "grad_norm_ratio"} & set(d)) for d in v)


def compare_diagnostics_html(diags: list[dict]) -> str:
    """compare's ``summary["diagnostics"]`` (one dict per grid point) as tables: the unimodal gap (each fused
    method's test metric and its difference to every unimodal model), the ignored-modality warnings and the
    per-method encoder gradient-norm ratios; other keys as found."""
    out = []
    for d in diags:
        if isinstance(d.get("point"), dict) and d["point"]:
            out.append(f"<h3>Grid point {H.esc(_point_text(d['point']))}</h3>")
        metric = d.get("metric") or "metric"
        gap = d.get("unimodal_gap")
        if isinstance(gap, dict) and isinstance(gap.get("gap"), dict) and gap.get("unimodal"):
            uni = gap["unimodal"]
            fused = gap.get("fused") or {}
            mods = list(uni)
            rows = [[m, fused.get(m)] + [(g or {}).get(u) for u in mods] for m, g in gap["gap"].items()]
            better = "" if gap.get("direction", "max") == "max" else " (lower is better here: < 0 = fused better)"
            out.append(f'<p class="note"><b>Unimodal gap</b>: each fused method\'s test {H.esc(metric)} (mean over '
                       f"seeds) minus each unimodal model's (its value in the column header){better}.</p>")
            out.append(H.table(["method", metric] + [f"gap vs unimodal:{u} ({H.fmt(H.number(uni[u]))})" for u in mods],
                               rows, sortable=True))
        elif gap:
            out.append("<p class=\"note\"><b>Unimodal gap</b></p>" + value_html(gap, 1))
        ign = d.get("ignored")
        if isinstance(ign, dict) and ign:
            out.append('<p class="note"><b>Ignored modalities</b>: test metric with only that modality present, '
                       "the chance level and the unimodal model's value (the warnings above).</p>"
                       + _warnings_table(ign))
        elif "ignored" in d:
            out.append('<p class="note"><b>Ignored modalities</b>: none flagged'
                       + (" (needs unimodal models and chance levels)" if not d.get("chance") else "") + ".</p>")
        chance = d.get("chance")
        if isinstance(chance, dict) and chance and not (isinstance(ign, dict) and ign):
            out.append('<p class="note">Chance level per modality: '
                       + H.esc(", ".join(f"{k} {H.fmt(v)}" for k, v in chance.items())) + "</p>")
        grad = d.get("grad_norm_ratio")
        if isinstance(grad, dict) and grad:
            mods = list(dict.fromkeys(k for r in grad.values() if isinstance(r, dict) for k in r))
            out.append('<p class="note"><b>Gradient-norm ratio</b> per method: each modality\'s encoder gradient norm '
                       "over the largest one during training (mean over epochs and seeds; 1 = the dominant modality, "
                       "near 0 = a modality that barely learns).</p>"
                       + H.table(["method"] + mods, [[m] + [(r or {}).get(k) for k in mods] for m, r in grad.items()],
                                 sortable=True))
        elif "grad_norm_ratio" in d:
            out.append('<p class="note"><b>Gradient-norm ratio</b>: not recorded in these runs.</p>')
        col = d.get("collapsed")
        if isinstance(col, dict) and col:
            out.append('<p class="note"><b>Collapsed encoders</b>: runs whose encoder output for a modality had at '
                       "least three quarters of its dimensions constant over the test rows (the warnings above).</p>"
                       + _warnings_table(col))
        elif "collapsed" in d:
            out.append('<p class="note"><b>Collapsed encoders</b>: none.</p>')
        rest = {k: v for k, v in d.items() if k not in ("point", "metric", "unimodal_gap", "ignored", "chance",
                                                          "grad_norm_ratio", "collapsed") and v not in ({}, [], None)}
        if rest:
            out.append(value_html(rest, 1))
    return "".join(out)


def diagnostics(f: RunFolder) -> str:
    found: list[tuple[str, Any]] = []
    for rel in ("summary.json", "metrics.json", "best/run.json", "diagnostics.json", "best/diagnostics.json",
                "best/checkpoint/config.json"):
        d = f.json(rel)
        if not isinstance(d, dict):
            continue
        if rel == "best/checkpoint/config.json":  # the best run's own test report (mmfuse.fit's diagnostics)
            d = d.get("metrics") if isinstance(d.get("metrics"), dict) else {}
            rel = "best run (best/checkpoint/config.json)"
        if rel.endswith("diagnostics.json"):
            found.append((rel, d))
            continue
        for k in ("diagnostics", "warnings", "skipped"):
            if d.get(k):
                found.append((f"{rel}: {k}", d[k]))
        test = d.get("test")
        if isinstance(test, dict):
            for k in ("diagnostics", "rows_without_modality"):
                if test.get(k) and (k != "rows_without_modality" or test[k].get("n")):
                    found.append((f"{rel}: test.{k}", test[k]))
    warns = []
    for src, v in found:
        warns += [(src, w) for w in _warnings(v, src)]
        if src.endswith("rows_without_modality") and isinstance(v, dict):
            warns.append((src, f"{v.get('n')} test row(s) have no modality present; their predictions use no input"))
        if src.endswith("skipped") and isinstance(v, dict):
            warns += [(src, f"skipped {k}: {x}") for k, x in v.items()]
    if (f.root / "runs.csv").is_file():
        cols, rows = read_csv(f.root / "runs.csv")
        if "test_rows_no_modality" in cols:
            bad = [r for r in rows if (H.number(cell(r.get("test_rows_no_modality"))) or 0) > 0]
            if bad:
                warns.append(("runs.csv", f"{len(bad)} run(s) were tested on rows with no modality present"))
    if not found and not warns:
        return missing("no diagnostics in summary.json, metrics.json, diagnostics.json or the best run's checkpoint")
    out = [f'<div class="warn"><b>warning</b> ({H.esc(s)}): {H.esc(w)}</div>' for s, w in warns]
    if not warns:
        out.append('<p class="note">No warnings.</p>')
    for src, v in found:
        out.append(f"<h3>{H.esc(src)}</h3>" + (compare_diagnostics_html(v) if _is_compare_diagnostics(v)
                                               else value_html(v)))
    return "".join(out)


def _config_source(f: RunFolder) -> tuple[Path, dict] | None:
    cands = [f.root / "checkpoint/config.json", f.root / "best/checkpoint/config.json", f.root / "config.json"]
    for d in [f.root.parent, f.root.parent.parent]:
        cands += [d / "checkpoint/config.json", d / "best/checkpoint/config.json"]
    for p in cands:
        if p.is_file():
            try:
                doc = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and isinstance(doc.get("config"), dict):
                return p, doc
    return None


def config(f: RunFolder) -> str:
    src = _config_source(f)
    if src is None:
        return missing("no checkpoint/config.json or best/checkpoint/config.json")
    p, doc = src
    try:
        import yaml

        text = yaml.safe_dump(doc["config"], sort_keys=False, default_flow_style=False)
    except Exception:  # noqa: BLE001  (no yaml / unusual value: JSON is as readable)
        text = json.dumps(doc["config"], indent=2, default=str)
    where = str(p.relative_to(f.root)) if p.is_relative_to(f.root) else str(p)
    what = "the best run's resolved config" if "best" in Path(where).parts else "the run's resolved config"
    return f'<p class="note">{H.esc(what)} ({H.esc(where)}).</p><pre>{H.esc(text)}</pre>'


def _git_commit() -> str | None:
    here = Path(__file__).resolve()
    for d in here.parents:
        if (d / ".git").exists():
            try:
                r = subprocess.run(["git", "-C", str(d), "rev-parse", "HEAD"], capture_output=True, text=True,
                                   timeout=5)
            except (OSError, subprocess.SubprocessError):
                return None
            return r.stdout.strip() or None if r.returncode == 0 else None
    return None


def environment(f: RunFolder) -> str:
    import mmfuse

    src = _config_source(f)
    run_doc = src[1] if src else None
    rows: list[list[Any]] = [["python", sys.version.split()[0]], ["mmfuse", getattr(mmfuse, "__version__", "?")]]
    try:
        import torch

        rows += [["torch", torch.__version__], ["torch threads", torch.get_num_threads()]]
    except Exception:  # noqa: BLE001
        pass
    rows += [["platform", platform.platform()], ["machine", platform.machine()], ["CPU cores", os.cpu_count()]]
    commit = _git_commit()
    rows.append(["git commit", commit or "— (not a git checkout)"])
    out = ['<p class="note">The machine and software that wrote <b>this report</b> (now), not necessarily those '
           "that trained the run.</p>" + H.table(["", "value"], rows)]
    run_rows = _run_versions(f, src)
    if run_rows:
        out.append('<h3>Recorded by the run</h3><p class="note">What the run itself wrote when it trained.</p>'
                   + H.table(["", "value", "source"], run_rows))
    else:
        out.append('<p class="note">The run recorded no versions of its own (no checkpoint config.json or '
                   "metrics.json with a version field).</p>")
    return "".join(out)


ENV_KEYS = ("mmfuse_version", "torch_version", "python_version", "lightning_version", "numpy_version", "platform",
            "machine", "cpu_count", "threads", "torch_threads", "num_threads", "git_commit", "hostname")


def _env_fields(d: Any) -> list[tuple[str, Any]]:
    """Version / machine fields of a run's own file: the keys above at the top level, and every scalar of an
    ``environment`` / ``env`` / ``versions`` mapping."""
    if not isinstance(d, dict):
        return []
    out = [(k, d[k]) for k in ENV_KEYS if k in d and not isinstance(d[k], (dict, list))]
    for sub in ("environment", "env", "versions"):
        if isinstance(d.get(sub), dict):
            out += [(k, v) for k, v in d[sub].items() if not isinstance(v, (dict, list))]
    return out


def _run_versions(f: RunFolder, src: tuple[Path, dict] | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    seen = set()
    docs: list[tuple[str, Any]] = []
    if src is not None:
        p, doc = src
        where = str(p.relative_to(f.root)) if p.is_relative_to(f.root) else str(p)
        docs += [(where, doc), (f"{where}: metrics", doc.get("metrics"))]
        cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        tr = cfg.get("training") if isinstance(cfg.get("training"), dict) else {}
        for k in ("threads", "num_threads", "deterministic"):
            if k in tr:
                rows.append([f"training.{k} (config)", tr[k], where])
        if "seed" in cfg:
            rows.append(["seed (config)", cfg["seed"], where])
    for rel in ("metrics.json", "summary.json"):
        docs.append((rel, f.json(rel)))
    for where, d in docs:
        for k, v in _env_fields(d):
            if (k, str(v)) not in seen:
                seen.add((k, str(v)))
                rows.append([k, v, where])
    return rows


SECTIONS: list[tuple[str, str, Callable[[RunFolder], str]]] = [
    ("leaderboard", "Leaderboard", leaderboard),
    ("curves", "Learning curves", learning_curves),
    ("observed", "Robustness by observed missingness", robustness_observed),
    ("simulated", "Robustness by simulated missingness (per pattern)", robustness_simulated),
    ("contributions", "Contributions and interactions per class", contributions),
    ("tsne", "t-SNE of the fused embeddings", tsne),
    ("diagnostics", "Diagnostics", diagnostics),
    ("config", "Config", config),
    ("environment", "Environment", environment),
]
