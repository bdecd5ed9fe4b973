"""Shared drawing helpers: a line with its confidence band, series ordering."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def band_line(ax, x: Sequence[float], y: Sequence[float], lo: Sequence[float] | None, hi: Sequence[float] | None,
              colour, label: str, marker: str = "o", ls: str = "-"):
    """Plot y(x) and shade [lo, hi] where both are finite (a band with fewer than two finite points
    is drawn as error bars)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    line = ax.plot(x, y, marker=marker, ls=ls, color=colour, label=label)[0]
    if lo is not None and hi is not None:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.sum() >= 2:
            ax.fill_between(x[ok], lo[ok], hi[ok], color=colour, alpha=0.2, lw=0)
        elif ok.any():
            ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="none", color=colour, lw=0.8)
    return line


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ordered_keys(points: Sequence[dict]) -> list[str]:
    """Series keys with dense first, then sorted."""
    keys = sorted({p["key"] for p in points})
    return (["dense"] if "dense" in keys else []) + [k for k in keys if k != "dense"]


def bottom_legend(fig, handles: Sequence, labels: Sequence[str], **kw):
    """One legend for the figure under its panels, in as few rows as fit the figure's width: one row if it
    fits (measured with the figure's renderer), else two, three, ... (a label cut at the page edge is lost)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n = len(labels)
    renderer = (fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)).get_renderer()
    for rows in range(1, n + 1):
        leg = fig.legend(handles, labels, loc="outside lower center", ncol=-(-n // rows), **kw)
        if rows == n or leg.get_window_extent(renderer).width <= fig.bbox.width:
            return leg
        leg.remove()
    return None
