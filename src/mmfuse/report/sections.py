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
        parts.append(frame_table(main_cols, rows, table_id="leaderboard", first=["method"]))
        if isinstance(summ, dict):
            shown = {k: v for k, v in summ.items() if k not in ("diagnostics", "warnings", "skipped")}
            flat = {k: v for k, v in shown.items() if not isinstance(v, (dict, list))}
            nested = {k: v for k, v in shown.items() if isinstance(v, (dict, list)) and v not in ({}, [])}
            if flat:
                parts.append("<h3>Summary (summary.json)</h3>" + value_html(flat))
            for k, v in nested.items():  # budget, tuning, paired test, ...: folded, one click away
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
    body = _pattern_section(f, "pattern[", "patterns", "per-simulated-pattern metrics")
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


def _warnings(v: Any, key: str = "") -> list[str]:
    """Every string under a key that names a warning or an error, and the message of every ignored modality
    (``report["diagnostics"]["ignored"]``, see :mod:`mmfuse.diagnostics`)."""
    out = []
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "ignored" and isinstance(x, list):
                out += [str(w.get("message") or w) for w in x if w]
                continue
            if k == "error" and isinstance(x, str):
                out.append(x)
                continue
            out += _warnings(x, str(k))
    elif isinstance(v, list):
        for x in v:
            out += _warnings(x, key)
    elif isinstance(v, str) and "warn" in key.lower():
        out.append(v)
    return out


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
        out.append(f"<h3>{H.esc(src)}</h3>" + value_html(v))
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
    if run_doc and run_doc.get("mmfuse_version"):
        rows.append(["mmfuse version that wrote the checkpoint", run_doc["mmfuse_version"]])
    return '<p class="note">The environment that wrote this report.</p>' + H.table(["", "value"], rows)


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
