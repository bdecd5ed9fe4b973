"""The one-page HTML presentation: self-contained (PNG figures inlined as base64), one scrolling
page readable on a laptop and printable, built from the same numbers, figures and tables as the PDF.

A small inline script checks that every image decoded (it logs ``console.error`` for a broken one
and sets ``data-images-ok`` / ``data-images-broken`` on ``<body>``), so a headless browser test can
read the result from the DOM.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from spattern.utils.io import atomic_write_text

SHARED_CSS = """
:root { --fg: #1a1a1a; --muted: #5a5a5a; --accent: #0072B2; --bad: #b00020; }
* { box-sizing: border-box; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px; }
.card .v { font-size: 1.5rem; font-weight: 600; color: var(--accent); }
.card .k { font-size: 0.85rem; color: var(--muted); }
table { border-collapse: collapse; font-size: 0.8rem; width: 100%; margin: 8px 0; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e3e3e3; text-align: left; white-space: nowrap; }
th { border-bottom: 2px solid #999; }
.missing { color: var(--bad); background: #ffe8ea; border: 1px dashed var(--bad); padding: 6px 10px;
           border-radius: 4px; display: inline-block; margin: 6px 0; }
"""  # the page's and the slides' common rules

CSS = SHARED_CSS + """
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: var(--fg); margin: 0;
       line-height: 1.45; background: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.9rem; margin: 0.2em 0; } h2 { font-size: 1.3rem; border-bottom: 2px solid var(--accent);
  padding-bottom: 4px; margin-top: 2em; }
.sub { color: var(--muted); margin-top: 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; margin: 16px 0; }
figure { margin: 16px 0; page-break-inside: avoid; break-inside: avoid; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: 0.85rem; color: var(--muted); margin-top: 4px; }
.scroll { overflow-x: auto; }
code, pre { font-family: "DejaVu Sans Mono", monospace; font-size: 0.8rem; }
pre { background: #f6f6f6; padding: 8px 12px; overflow-x: auto; }
@media print { main { max-width: none; padding: 0 8mm; } h2 { page-break-after: avoid; }
  .scroll { overflow: visible; } th, td { white-space: normal; } }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0, broken = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
    else { broken++; console.error('broken image: ' + imgs[i].alt); }
  }
  document.body.setAttribute('data-images-ok', String(ok));
  document.body.setAttribute('data-images-broken', String(broken));
});
"""


def _missing(what: str) -> str:
    return f'<p class="missing">missing: {escape(what)}</p>'


def _figure(out: Path, figs: dict, name: str, what: str) -> str:
    f = figs.get(name)
    if f is None or not (out / f["png"]).exists():
        return _missing(what)
    data = base64.b64encode((out / f["png"]).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(f['caption'])}</figcaption></figure>")


def _table(tables: dict, name: str, what: str) -> str:
    t = tables.get(name)
    if t is None:
        return _missing(what)
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
            f"<p class=\"sub\">{escape(t.caption)}</p>")


def _get(n: dict, path: str):
    cur = n
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _card(n: dict, path: str, label: str) -> str:
    v = _get(n, path)
    value = escape(str(v)) if v not in (None, "") else '<span class="missing">missing</span>'
    return f'<div class="card"><div class="v">{value}</div><div class="k">{escape(label)}</div></div>'


def _unfinished(n: dict) -> list[str]:
    """The runs the report leaves out as not finished (``numbers.unfinished_rows``), as the PDF names them."""
    rows = n.get("unfinished") or []
    if not rows:
        return []
    items = "".join(f"<li>{escape(u['experiment'])}: {escape(u['runs'])}</li>" for u in rows)
    return ["<h2>Runs not finished</h2>", f"<p>Left out of every figure and table:</p><ul>{items}</ul>"]


def build_html(out: Path, n: dict, figs: dict, tables: dict) -> Path:
    """Write ``out/report.html`` and return its path."""
    parts = [f"<h1>{escape(n['title'])}</h1>",
             (f'<p class="sub">Built from {escape(n["study"]["results"] or "no results")} by <code>'
              f'{escape(n["report_command"])}</code>: {escape(n["study"]["runs_phrase"])} in '
              f'{escape(n["study"]["experiments_phrase"])}.</p>'), '<div class="cards">']
    parts.append(_card(n, "kernel.best.speedup", "best kernel speed-up over dense SDPA flash (sparse layouts)"))
    parts.append(_card(n, "kernel.met", f"Project C speed-up targets met (of {_get(n, 'kernel.n_targets') or '–'}, "
                       "against both flash and cuDNN)"))
    parts.append(_card(n, "significance.significant",
                       f"significant paired comparisons (of {_get(n, 'significance.rows') or '–'} distinct ones, Holm-corrected)"))
    parts.append(_card(n, "topk.fraction", "top-k layout build time relative to attention (graph replay)"))
    parts.append("</div>")
    parts += ["<h2>The pattern</h2>", _figure(out, figs, "outline", "outline attention"),
              _figure(out, figs, "heatmap", "pattern heatmaps"),
              _figure(out, figs, "cost", "cost curves"), _table(tables, "cost", "cost table")]
    parts += ["<h2>Kernel speed</h2>", _figure(out, figs, "kernels", "forward kernel benchmark"),
              _table(tables, "targets", "speed-up targets")]
    if "kernels_hopper" in tables:  # only benchmarks of the sm_90a kernel have it
        parts.append(_table(tables, "kernels_hopper", "Hopper kernel benchmark"))
    parts += [_figure(out, figs, "kernels_backward", "forward+backward kernel benchmark"),
              _table(tables, "memory", "memory kept per layout")]
    parts.append("<h2>Quality</h2>")
    q_names = [k for k in figs if k.startswith("quality_")]
    parts += [_figure(out, figs, k, k) for k in q_names] or [_missing("quality vs density")]
    parts += [_table(tables, k, k) for k in sorted(tables) if k.startswith("quality_")]  # every value with its CI
    parts.append(_figure(out, figs, "synthetic", "synthetic-task accuracy"))
    if "synthetic" in tables:
        parts.append(_table(tables, "synthetic", "synthetic-task accuracy"))
    parts += [
              _figure(out, figs, "training", "training curves"), _table(tables, "training_cost", "training cost"),
              *[_table(tables, k, k) for k in sorted(tables) if k.startswith("file_loss_")],
              _figure(out, figs, "ablation", "ablations"),
              *([] if figs.get("training", {}).get("indexer_panel") else [_figure(out, figs, "indexer", "top-k indexer")])]
    parts += ["<h2>Significance</h2>", _table(tables, "significance", "significance table")]
    parts += ["<h2>Environment and reproduction</h2>", _table(tables, "environment", "environment"),
              "<pre>" + escape("\n".join(n.get("commands", []) + [n["report_command"]])) + "</pre>"]
    parts += _unfinished(n)
    if n.get("missing"):
        parts += ["<h2>Missing results</h2>"] + [_missing(m) for m in n["missing"]]
    body = "\n".join(parts)
    doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{escape(n['title'])}</title><style>{CSS}</style></head>\n"
           f"<body><main>\n{body}\n</main><script>{SCRIPT}</script></body></html>\n")
    return atomic_write_text(out / "report.html", doc)
