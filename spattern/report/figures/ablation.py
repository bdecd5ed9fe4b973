"""Ablations: one parameter varied at a time, the metric with its CI against the parameter value."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spattern.report.figures._common import finite
from spattern.report.figures.quality import LABELS
from spattern.report.style import WIDTH_PAGE, Palette, new_figure, styled


@styled
def ablation_figure(points: Sequence[dict], palette: Palette | None = None):
    """One panel per varied parameter (``points``: dicts param, value, key, metric, mean, lo, hi):
    the metric at each value with 95% CI error bars; numeric values on a log2 axis when they span
    more than a factor of four, other values as categories."""
    pts = [p for p in points if finite(p.get("mean"))]
    if not pts:
        raise ValueError("points: no ablation values")
    palette = palette or Palette(p["key"] for p in pts)
    params = list(dict.fromkeys(p["param"] for p in pts))
    fig, axes = new_figure(ncols=len(params), width=min(WIDTH_PAGE, 2.4 * len(params) + 0.6), height=2.0)
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, params):
        ps = [p for p in pts if p["param"] == name]
        numeric = all(finite(p["value"]) for p in ps)
        for key in sorted({p["key"] for p in ps}):
            qs = sorted((p for p in ps if p["key"] == key), key=lambda p: p["value"] if numeric else str(p["value"]))
            x = [p["value"] for p in qs] if numeric else list(range(len(qs)))
            y = np.array([p["mean"] for p in qs], float)
            lo = np.array([p["lo"] if finite(p["lo"]) else p["mean"] for p in qs], float)
            hi = np.array([p["hi"] if finite(p["hi"]) else p["mean"] for p in qs], float)
            ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", color=palette(key), capsize=2, label=key)
            if not numeric:
                ax.set_xticks(x, [str(p["value"]) for p in qs], rotation=30)
        if numeric and max(p["value"] for p in ps) > 4 * max(min(p["value"] for p in ps), 1e-12) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(name)
        ax.set_ylabel(LABELS.get(ps[0]["metric"], ps[0]["metric"]))
    axes[0].legend(fontsize=5.5)
    return fig
