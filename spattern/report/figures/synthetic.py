"""Synthetic long-range tasks: accuracy against the distance between a key and its query."""

from __future__ import annotations

from collections.abc import Sequence

from spattern.report.figures._common import band_line, finite, ordered_keys
from spattern.report.style import Palette, new_figure, styled


@styled
def synthetic_figure(points: Sequence[dict], palette: Palette | None = None, title: str | None = None,
                     xlabel: str = "distance between key and query (tokens)"):
    """Accuracy vs distance (log2 axis), one line per pattern family with its 95% CI band
    (``points``: dicts key, distance, value, lo, hi)."""
    pts = [p for p in points if finite(p.get("value")) and finite(p.get("distance"))]
    if not pts:
        raise ValueError("points: no (distance, accuracy) values")
    palette = palette or Palette(p["key"] for p in pts)
    fig, ax = new_figure()
    for key in ordered_keys(pts):
        ps = sorted((p for p in pts if p["key"] == key), key=lambda p: p["distance"])
        band_line(ax, [p["distance"] for p in ps], [p["value"] for p in ps], [p["lo"] for p in ps],
                  [p["hi"] for p in ps], palette(key), key, ls="--" if key == "dense" else "-")
    if min(p["distance"] for p in pts) > 0:
        ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=5.5)
    if title:
        ax.set_title(title)
    return fig
