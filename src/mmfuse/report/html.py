"""The report's page: one self-contained HTML file (inline CSS, a small inline JS for sortable tables,
images inline as base64 PNG or inline SVG; no network, no external URL)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1f3b5c;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:1.35em} header p{margin:4px 0 0;opacity:.85;font-size:.9em}
nav{padding:8px 28px;background:#e8ecf2;font-size:.9em} nav a{margin-right:14px;color:#1f3b5c}
main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:10px 18px 16px;margin:16px 0}
h2{font-size:1.15em;margin:6px 0 10px;color:#1f3b5c} h3{font-size:1em;margin:14px 0 6px}
.missing{color:#6b7280;font-style:italic}
.note{color:#4b5563;font-size:.88em;margin:4px 0}
.tablewrap{overflow-x:auto}
table{border-collapse:collapse;font-size:.86em;margin:6px 0}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#eef1f6;position:sticky;top:0}
td.text,th.text{text-align:left} td.long{white-space:normal;min-width:320px;max-width:560px}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:hover{background:#dfe6f0}
th.asc::after{content:" \\25B2";font-size:.75em} th.desc::after{content:" \\25BC";font-size:.75em}
tr:nth-child(even) td{background:#fafbfc}
img{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0}
.figs{display:flex;flex-wrap:wrap;gap:12px} .figs figure{margin:0;max-width:100%}
figcaption{font-size:.8em;color:#4b5563}
.budget{background:#eef4fb;border-left:4px solid #1f3b5c;padding:6px 10px;margin:6px 0;font-size:.9em}
.warn{background:#fff4e5;border-left:4px solid #f59e0b;padding:6px 10px;margin:6px 0}
details{margin:4px 0} summary{cursor:pointer;color:#1f3b5c;font-weight:600}
pre{background:#f3f4f6;padding:10px;overflow-x:auto;font-size:.82em;max-height:480px}
svg text{font-family:system-ui,sans-serif}
"""

# click a header: sort the rows by that column (numbers numerically, from data-v when given; empty cells last);
# a second click reverses the order
JS = """
(function(){
  function key(td){
    if(!td){return null;}
    var v=td.getAttribute('data-v'); if(v===null){v=td.textContent.trim();}
    if(v===''||v==='—'||v.toLowerCase()==='nan'){return null;}
    var n=Number(v.replace(/[±].*$/,'').trim());
    return isNaN(n)?v.toLowerCase():n;
  }
  function sortBy(table,col,th){
    var body=table.tBodies[0]; if(!body){return;}
    var asc=!(th.classList.contains('asc'));
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=key(a.cells[col]),y=key(b.cells[col]);
      if(x===null&&y===null){return 0;} if(x===null){return 1;} if(y===null){return -1;}
      var c;
      if(typeof x==='number'&&typeof y==='number'){c=x-y;}
      else{c=String(x).localeCompare(String(y),undefined,{numeric:true});}
      return asc?c:-c;
    });
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(th.parentNode.cells,function(h){h.classList.remove('asc','desc');});
    th.classList.add(asc?'asc':'desc');
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    if(!table.tHead){return;}
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      th.title='click to sort';
      th.addEventListener('click',function(){sortBy(table,i,th);});
    });
  });
})();
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(v: Any) -> str:
    """A cell's text: floats with 4 significant decimals, integers as they are, NaN / None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def number(v: Any) -> float | None:
    """``v`` as a finite float, else None (text, empty, NaN)."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = False,
          sort_values: Iterable[Sequence[Any]] | None = None, table_id: str | None = None) -> str:
    """An HTML table. Cells are strings or numbers; ``sort_values`` (same shape) gives each cell's sort key
    (``data-v``), e.g. the mean of a ``mean ± std`` cell."""
    rows = [list(r) for r in rows]
    keys = [list(r) for r in sort_values] if sort_values is not None else [[None] * len(r) for r in rows]
    text_cols = {i for i in range(len(columns)) if any(number(r[i]) is None and r[i] not in (None, "") and
                                                       not (isinstance(r[i], str) and "±" in r[i])
                                                       for r in rows if i < len(r))}
    out = [f'<div class="tablewrap"><table{f" id={chr(34)}{esc(table_id)}{chr(34)}" if table_id else ""}'
           f'{" class=" + chr(34) + "sortable" + chr(34) if sortable else ""}><thead><tr>']
    out += [f'<th{" class=" + chr(34) + "text" + chr(34) if i in text_cols else ""}>{esc(c)}</th>'
            for i, c in enumerate(columns)]
    out.append("</tr></thead><tbody>")
    for r, k in zip(rows, keys):
        out.append("<tr>")
        for i in range(len(columns)):
            v = r[i] if i < len(r) else None
            kv = k[i] if i < len(k) else None
            attr = f' data-v="{esc(kv)}"' if kv is not None else ""
            cls = (' class="text long"' if isinstance(v, str) and len(v) > 60 else ' class="text"') if i in text_cols else ""
            out.append(f"<td{cls}{attr}>{esc(fmt(v))}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def image(path: Path, caption: str | None = None) -> str:
    """A PNG / JPEG / SVG file inline (base64 data URI); never a link to the file."""
    data = Path(path).read_bytes()
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}.get(
        Path(path).suffix.lower(), "image/png")
    b64 = base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(caption or Path(path).name)}" src="data:{mime};base64,{b64}">{cap}</figure>'


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]
DASHES = ["", "6,3", "2,3", "8,3,2,3"]


LEGEND_ROW = 15  # px per legend entry
LEGEND_COL = 170  # px of the legend column beside the plot
LEGEND_COL_BELOW = 190  # px per legend column below the plot
LEGEND_CHARS = 25  # a longer series name is shortened with "…" (the full name in the entry's tooltip)


def line_chart(series: dict[str, list[float]], ylabel: str, xlabel: str = "epoch", width: int = 640,
               height: int = 320) -> str:
    """An inline SVG line chart (one line per series; colours × dash patterns so that any number of series
    stay distinct). Non-finite points are skipped. The legend sits right of the plot while its entries fit
    in the plot's height; more series: the legend goes below the plot in columns and the SVG grows taller, so
    no entry is drawn outside the image."""
    pts = {k: [(i + 1, number(v)) for i, v in enumerate(vals)] for k, vals in series.items()}
    pts = {k: [(x, y) for x, y in p if y is not None] for k, p in pts.items()}
    pts = {k: p for k, p in pts.items() if p}
    if not pts:
        return ""
    xs = [x for p in pts.values() for x, _ in p]
    ys = [y for p in pts.values() for _, y in p]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    n = len(pts)
    L, T, B = 56, 12, 40
    right = n * LEGEND_ROW + 10 <= height - T - B  # the legend fits beside the plot
    R = 12 + (LEGEND_COL if right else 0)
    w, h = width - L - R, height - T - B
    ncols = 1 if right else max(1, (width - L) // LEGEND_COL_BELOW)
    nrows = n if right else -(-n // ncols)
    total_h = height if right else height + 14 + nrows * LEGEND_ROW

    def sx(x):
        return L + (x - x0) / (x1 - x0) * w

    def sy(y):
        return T + (1 - (y - y0) / (y1 - y0)) * h

    out = [f'<svg width="{width}" height="{total_h}" role="img" '
           f'aria-label="{esc(ylabel)} per {esc(xlabel)}">',
           f'<rect x="{L}" y="{T}" width="{w}" height="{h}" fill="#fff" stroke="#999"/>']
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        out.append(f'<line x1="{L}" x2="{L + w}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#eee"/>'
                   f'<text x="{L - 4}" y="{sy(yv) + 4:.1f}" font-size="10" text-anchor="end">{yv:.3g}</text>')
    step = max(1, round((x1 - x0) / 8))
    for xv in range(int(x0), int(x1) + 1, step):
        out.append(f'<text x="{sx(xv):.1f}" y="{T + h + 14}" font-size="10" text-anchor="middle">{xv}</text>')
    out.append(f'<text x="{L + w / 2}" y="{T + h + 34}" font-size="11" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="12" y="{T + h / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {T + h / 2})">{esc(ylabel)}</text>')
    for j, (name, p) in enumerate(pts.items()):
        col, dash = PALETTE[j % len(PALETTE)], DASHES[(j // len(PALETTE)) % len(DASHES)]
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
        da = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.8"{da} points="{d}"><title>{esc(name)}'
                   "</title></polyline>")
        if len(p) == 1:
            out.append(f'<circle cx="{sx(p[0][0]):.1f}" cy="{sy(p[0][1]):.1f}" r="3" fill="{col}"/>')
        if right:
            lx, ly = L + w + 10, T + 10 + LEGEND_ROW * j
        else:  # column-major below the plot
            lx, ly = L + LEGEND_COL_BELOW * (j // nrows), height + 10 + LEGEND_ROW * (j % nrows)
        short = name if len(name) <= LEGEND_CHARS else name[:LEGEND_CHARS - 1] + "…"
        out.append(f'<g class="legend"><title>{esc(name)}</title>'
                   f'<line x1="{lx}" x2="{lx + 22}" y1="{ly}" y2="{ly}" stroke="{col}" stroke-width="2"{da}/>'
                   f'<text x="{lx + 26}" y="{ly + 4}" font-size="10">{esc(short)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` = (anchor id, heading, inner HTML)."""
    nav = "".join(f'<a href="#sec-{esc(i)}">{esc(t)}</a>' for i, t, _ in sections)
    body = "".join(f'<section id="sec-{esc(i)}"><h2>{esc(t)}</h2>{inner}</section>' for i, t, inner in sections)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>{body}</main><script>{JS}</script></body></html>\n")
