"""``mmfuse report RUN_DIR``: one self-contained HTML page (``RUN_DIR/report.html``) of a compare, train or
explain folder: leaderboard (sortable), learning curves, robustness by observed and simulated missingness,
contributions and interactions per class, t-SNE, diagnostics, config and environment. Images are inline
(base64 PNG or inline SVG); the page loads nothing from the network."""

from __future__ import annotations

import datetime
from pathlib import Path

from ..errors import DataError

__all__ = ["write_report", "render_report"]

EXPECTED = ("a compare folder (leaderboard.csv, runs.csv or summary.json), a train folder (metrics.json or "
            "checkpoint/config.json) or an explain folder (breakdown.csv or per_sample.csv)")


def _folder(run_dir: str | Path):
    from .sections import RunFolder

    root = Path(run_dir)
    if not root.exists():
        raise DataError(f"report: the run folder {str(root)!r} does not exist; give the output folder of "
                        "`mmfuse train`, `mmfuse compare` or `mmfuse explain`")
    if not root.is_dir():
        raise DataError(f"report: {str(root)!r} is a file, not a run folder; give the folder that holds {EXPECTED}")
    f = RunFolder.detect(root)
    if not f.kinds:
        raise DataError(f"report: {str(root)!r} holds no mmfuse outputs; expected {EXPECTED}")
    return f


def render_report(run_dir: str | Path) -> str:
    """The report's HTML text. A section whose builder fails on an unexpected file says so; the page is
    still written."""
    from . import html as H
    from .sections import SECTIONS

    f = _folder(run_dir)
    parts = []
    for sid, title, build in SECTIONS:
        try:
            inner = build(f)
        except Exception as exc:  # noqa: BLE001  (one odd file must not lose the whole report)
            inner = f'<div class="warn">This section could not be built: {H.esc(type(exc).__name__)}: {H.esc(exc)}</div>'
        parts.append((sid, title, inner))
    what = " + ".join(f.kinds)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return H.page(f"mmfuse report: {f.root.resolve().name}",
                  f"{what} folder {f.root.resolve()} · written {now}", parts)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``) and return its path.
    Raises :class:`mmfuse.errors.DataError` naming the folder when it does not exist or holds no mmfuse outputs."""
    from .._io import atomic_write

    text = render_report(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    if path.is_dir():
        raise DataError(f"report: --out {str(path)!r} is a folder; give a file name such as {str(path / 'report.html')!r}")
    if not path.parent.exists():
        raise DataError(f"report: the folder of --out {str(path)!r} does not exist; create it or choose another path")
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path
