"""The slides: the report as a presentation, one self-contained HTML file (``slides.html``) of full-screen
slides built from the same numbers, figures and tables as the PDF and the one-page HTML.

One slide per figure (the figure fills the slide, its caption below), the speed-up targets and the
headline comparisons as slides of their own, a title slide with the headline numbers and a last slide
with the commands that reproduce everything. Arrow keys, Page Up/Down, space, Home and End move between
slides; ``#<k>`` in the address opens slide k; printing gives one slide per page. The images are
checked as in the one-page HTML (``data-images-ok`` / ``data-images-broken`` on ``<body>``).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from spattern.report.html import SCRIPT, SHARED_CSS, _card, _figure, _missing, _table
from spattern.utils.io import atomic_write_text

# (figure, slide title), in the order of the PDF; a figure absent from the build gets a "missing" slide,
# except those the PDF also shows only when the study has them: quality at one density and against
# density (an experiment is one or the other), and the indexer's (a panel of the training figure unless a
# snapshot made it a figure of its own)
FIGURES = (("outline", "Outline attention: the study's own pattern"), ("heatmap", "The pattern families"),
           ("cost", "Cost: attended pairs against N"), ("kernels", "Forward kernel speed"),
           ("kernels_backward", "Forward + backward kernel speed"),
           ("quality_matched", "Quality at one matched density (pretrained SmolLM2)"),
           ("quality_density", "Quality against density"), ("synthetic", "Long-range retrieval"),
           ("training", "Training from scratch"), ("ablation", "Ablations"), ("indexer", "The top-k indexer"))
OPTIONAL = frozenset({"quality_matched", "quality_density"})
TABLES = (("targets", "Project C speed-up targets", "kernels"), ("headline", "Headline comparisons", "ablation"))

CSS = SHARED_CSS + """
html, body { margin: 0; height: 100%; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: #fff; }
.deck { height: 100vh; overflow-y: auto; scroll-snap-type: y mandatory; }
section { height: 100vh; scroll-snap-align: start; display: flex; flex-direction: column;
          padding: 3vh 5vw 2vh; border-bottom: 1px solid #eee; overflow: hidden; }
h1 { font-size: 2.4rem; margin: 18vh 0 0.3em; } h2 { font-size: 1.6rem; margin: 0 0 1vh;
  border-bottom: 3px solid var(--accent); padding-bottom: 4px; }
.sub { color: var(--muted); font-size: 0.95rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 14px; margin-top: 4vh; }
.card .v { font-size: 1.8rem; font-weight: 600; color: var(--accent); } .card .k { color: var(--muted); }
figure { margin: 0; flex: 1; display: flex; flex-direction: column; min-height: 0; }
figure img { width: 100%; height: auto; max-height: 72vh; object-fit: contain; margin: 0 auto; display: block; }
figcaption { font-size: 0.85rem; color: var(--muted); margin-top: 1vh; }
.scroll { overflow: auto; max-height: 78vh; }
pre { font-family: "DejaVu Sans Mono", monospace; font-size: 0.62rem; background: #f6f6f6; padding: 8px 12px;
      overflow: auto; flex: 1; white-space: pre-wrap; }
.count { position: fixed; right: 14px; bottom: 10px; color: var(--muted); font-size: 0.8rem; }
@media print { .deck { height: auto; overflow: visible; } section { height: auto; min-height: 0;
  page-break-after: always; break-after: page; } .count { display: none; } }
"""

NAV = """
(function () {
  var deck = document.querySelector('.deck'), slides = document.querySelectorAll('section');
  var count = document.querySelector('.count');
  function current() {
    var top = deck.scrollTop, best = 0;
    for (var i = 0; i < slides.length; i++) { if (slides[i].offsetTop <= top + 5) { best = i; } }
    return best;
  }
  function show(i) {
    i = Math.max(0, Math.min(slides.length - 1, i));
    deck.scrollTop = slides[i].offsetTop;
    count.textContent = (i + 1) + ' / ' + slides.length;
  }
  document.addEventListener('keydown', function (e) {
    var k = e.key, i = current();
    if (k === 'ArrowRight' || k === 'ArrowDown' || k === 'PageDown' || k === ' ') { show(i + 1); e.preventDefault(); }
    else if (k === 'ArrowLeft' || k === 'ArrowUp' || k === 'PageUp') { show(i - 1); e.preventDefault(); }
    else if (k === 'Home') { show(0); e.preventDefault(); }
    else if (k === 'End') { show(slides.length - 1); e.preventDefault(); }
  });
  deck.addEventListener('scroll', function () { count.textContent = (current() + 1) + ' / ' + slides.length; });
  var start = parseInt((location.hash || '#1').slice(1), 10);
  show(isNaN(start) ? 0 : start - 1);
})();
"""


def _slide(title: str | None, inner: str) -> str:
    head = f"<h2>{escape(title)}</h2>" if title else ""
    return f"<section>{head}{inner}</section>"


def build_slides(out: Path, n: dict, figs: dict, tables: dict) -> Path:
    """Write ``out/slides.html`` and return its path."""
    cards = "".join([
        _card(n, "kernel.best.speedup", "best kernel speed-up over dense SDPA flash (sparse layouts)"),
        _card(n, "significance.significant", "significant paired comparisons (Holm-corrected)"),
        _card(n, "topk.fraction", "top-k layout build time relative to attention")])
    slides = [_slide(None, f"<h1>{escape(n['title'])}</h1>"
                           f'<p class="sub">Built from {escape(n["study"]["results"] or "no results")} by '
                           f'<code>{escape(n["report_command"])}</code>: {escape(n["study"]["runs_phrase"])} in '
                           f'{escape(n["study"]["experiments_phrase"])}.</p><div class="cards">{cards}</div>')]
    for name, title in FIGURES:
        if name in OPTIONAL and name not in figs or name == "indexer" and figs.get("training", {}).get("indexer_panel"):
            continue
        slides.append(_slide(title, _figure(out, figs, name, title)))
        for t_name, t_title, after in TABLES:
            if after == name:
                slides.append(_slide(t_title, _table(tables, t_name, t_title)))
    commands = "\n".join(n.get("commands", []) + [n["report_command"]])
    slides.append(_slide("Reproduce", f"<pre>{escape(commands)}</pre>"))
    if n.get("missing"):
        slides.append(_slide("Missing results", "".join(_missing(m) for m in n["missing"])))
    doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{escape(n['title'])} (slides)</title><style>{CSS}</style></head>\n"
           f'<body><div class="deck">\n' + "\n".join(slides) + '\n</div><div class="count"></div>'
           f"<script>{SCRIPT}{NAV}</script></body></html>\n")
    return atomic_write_text(out / "slides.html", doc)
