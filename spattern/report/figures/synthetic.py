"""Synthetic long-range tasks: accuracy against the distance between a key and its query."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from spattern.report.figures._common import band_line, bottom_legend, finite, ordered_keys
from spattern.report.style import WIDTH_PAGE, Palette, new_figure, styled

XLABEL = "distance between key and query (tokens)"


def _valid(points: Sequence[dict]) -> list[dict]:
    return [p for p in points if finite(p.get("value")) and finite(p.get("distance"))]


def _draw(ax, pts: list[dict], palette: Palette, xlabel: str) -> None:
    for key in ordered_keys(pts):
        ps = sorted((p for p in pts if p["key"] == key), key=lambda p: p["distance"])
        band_line(ax, [p["distance"] for p in ps], [p["value"] for p in ps], [p["lo"] for p in ps],
                  [p["hi"] for p in ps], palette(key), key, ls="--" if key == "dense" else "-")
    if min(p["distance"] for p in pts) > 0:
        ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)


@styled
def synthetic_figure(points: Sequence[dict], palette: Palette | None = None, title: str | None = None,
                     xlabel: str = XLABEL):
    """Accuracy vs distance (log2 axis), one line per pattern family with its 95% CI band
    (``points``: dicts key, distance, value, lo, hi)."""
    pts = _valid(points)
    if not pts:
        raise ValueError("points: no (distance, accuracy) values")
    palette = palette or Palette(p["key"] for p in pts)
    fig, ax = new_figure()
    _draw(ax, pts, palette, xlabel)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=5.5)
    if title:
        ax.set_title(title)
    return fig


MAX_PER_ROW = 7  # panels a row of the page-wide figure


@styled
def synthetic_panels(panels: Mapping[str, tuple[Sequence[dict], str]], palette: Palette | None = None,
                     per_row: int | None = None):
    """One panel per experiment (``panels``: title -> (points, x label)), ``per_row`` panels a row (default:
    the fewest rows of at most 7, shared out evenly: 12 panels two rows of 6, 13 two of 7),
    the y axis shared (its label once a row), an x label the panel below repeats given once, and one
    legend for every series: the experiments' retrieval curves in one figure."""
    panels = {t: (_valid(pts), x) for t, (pts, x) in panels.items()}
    panels = {t: v for t, v in panels.items() if v[0]}
    if not panels:
        raise ValueError("panels: no (distance, accuracy) values")
    every = [p for pts, _ in panels.values() for p in pts]
    palette = palette or Palette(p["key"] for p in every)
    if per_row is None:  # the fewest rows of at most MAX_PER_ROW, the panels shared out evenly over them
        per_row = math.ceil(len(panels) / math.ceil(len(panels) / MAX_PER_ROW))
    rows = -(-len(panels) // per_row)
    fig, axes = new_figure(ncols=min(per_row, len(panels)), nrows=rows, width=WIDTH_PAGE, height=0.72 * rows + 0.42,
                           sharey=True)
    axes = np.atleast_1d(axes).ravel()
    for i, (ax, (title, (pts, xlabel))) in enumerate(zip(axes, panels.items())):
        _draw(ax, pts, palette, xlabel)
        if per_row > 6:  # seven labels a row at the default size run into each other
            ax.xaxis.label.set_fontsize(5.5)
        name = title.removeprefix("study_")
        # long names would overlap at six a row, sooner at seven
        ax.set_title(name, fontsize=6.5 if len(name) <= 18 else 5 if per_row <= 6 or len(name) <= 22 else 4.4)
        if i % per_row == 0:  # the axis is shared: its label once a row
            ax.set_ylabel("accuracy")
        ax.set_yticks([0, 0.5, 1])  # the shared accuracy axis: at this height the default keeps 0 and 1 only
    for i in range(len(panels) - per_row):  # a label the panel below repeats: once, under the lower one
        if axes[i].get_xlabel() == axes[i + per_row].get_xlabel():
            axes[i].set_xlabel("")
    for ax in axes[len(panels):]:
        ax.remove()
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    keys = [k for k in ordered_keys([{"key": k} for k in handles])]
    # one row for up to 12 series at the training figure's spacing (the page's width holds them), then two
    bottom_legend(fig, [handles[k] for k in keys], keys, fontsize=5.5, columnspacing=1.0, handlelength=1.6)
    return fig
