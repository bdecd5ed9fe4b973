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
    more than a factor of four; categories (the runs of an experiment, by label) as a dot plot,
    one panel per experiment."""
    pts = [p for p in points if finite(p.get("mean"))]
    if not pts:
        raise ValueError("points: no ablation values")
    palette = palette or Palette(p["key"] for p in pts)
    panels = list(dict.fromkeys((p.get("experiment", ""), p["param"]) for p in pts))
    fig, axes = new_figure(ncols=len(panels), width=min(WIDTH_PAGE, 2.6 * len(panels) + 0.6), height=1.6)
    axes = np.atleast_1d(axes)
    for ax, (exp, name) in zip(axes, panels):
        ps = [p for p in pts if p["param"] == name and p.get("experiment", "") == exp]
        numeric = all(finite(p["value"]) for p in ps)
        metric = LABELS.get(ps[0]["metric"], ps[0]["metric"])
        if not numeric:  # categories (one per run label): a dot plot, best at the top
            qs = sorted(ps, key=lambda p: -p["mean"])
            y = np.arange(len(qs))
            for yi, p in zip(y, qs):
                lo = p["lo"] if finite(p["lo"]) else p["mean"]
                hi = p["hi"] if finite(p["hi"]) else p["mean"]
                ax.errorbar([p["mean"]], [yi], xerr=[[p["mean"] - lo], [hi - p["mean"]]], marker="o",
                            color=palette(p["key"]), capsize=2)
            ax.set_yticks(y, [str(p["value"]) for p in qs])
            ax.set_xlabel(metric)
            ax.set_title(exp, fontsize=6.5)
            if max(p["mean"] for p in qs) > 4 * min(p["mean"] for p in qs) > 0:
                from matplotlib.ticker import NullFormatter, ScalarFormatter

                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            continue
        for key in sorted({p["key"] for p in ps}):
            qs = sorted((p for p in ps if p["key"] == key), key=lambda p: p["value"])
            x = [p["value"] for p in qs]
            y = np.array([p["mean"] for p in qs], float)
            lo = np.array([p["lo"] if finite(p["lo"]) else p["mean"] for p in qs], float)
            hi = np.array([p["hi"] if finite(p["hi"]) else p["mean"] for p in qs], float)
            ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", color=palette(key), capsize=2, label=key)
        if max(p["value"] for p in ps) > 4 * max(min(p["value"] for p in ps), 1e-12) > 0:
            ax.set_xscale("log", base=2)
        if max(p["mean"] for p in ps) > 4 * min(p["mean"] for p in ps) > 0:  # as the dot plots' axis
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
        xs = sorted({p["value"] for p in ps})
        if len(xs) <= 6:  # a few settings: a tick at each, none between
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        if exp:
            docs = {p.get("n_docs") for p in ps}
            ax.set_title(exp + (f" ({docs.pop()} shared documents)" if len(docs) == 1 and None not in docs else ""),
                         fontsize=6.5)
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.legend(fontsize=5.5)
    return fig
