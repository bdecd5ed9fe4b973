"""Quality against density: perplexity, KL to dense, top-1 agreement, attention-mass recall, passkey retrieval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.ticker import NullFormatter

from spattern.report.figures._common import band_line, finite, ordered_keys
from spattern.report.style import WIDTH_PAGE, Palette, new_figure, styled

LABELS = {"ppl": "perplexity", "nll": "NLL (nats/token)", "kl": "KL(dense || sparse) (nats)",
          "top1_agreement": "top-1 agreement with dense", "recall": "dense attention mass kept",
          "passkey_correct": "passkey retrieved (fraction)"}
LOG_Y = {"kl"}
DASHES = ("-", "--", "-.", ":")  # one per context length
REFERENCE = ("dense", "causal")  # full attention (bidirectional / causal): the references of a matched comparison
# bounds, not contenders: oracle top-k chooses blocks from the exact attention it is scored against
BOUNDS = ("oracle",)


def _metric_panel(ax, points: Sequence[dict], m: str, palette: Palette) -> None:
    """One metric's panel: a line per pattern family (colour) and context (line style) over density with
    its CI band; dense as a horizontal reference."""
    pts = [p for p in points if p["metric"] == m and finite(p["value"]) and finite(p["density"])]
    contexts = sorted({p.get("context") or 0 for p in pts})
    for key in ordered_keys(pts):
        for series in sorted({p.get("series", key) for p in pts if p["key"] == key}):
            ps = sorted((p for p in pts if p["key"] == key and p.get("series", key) == series),
                        key=lambda p: p["density"])
            ls = DASHES[contexts.index(ps[0].get("context") or 0) % len(DASHES)]
            if key == "dense":  # the reference; KL to itself is zero by definition (not drawn on a log axis)
                if m not in LOG_Y:
                    ax.axhline(ps[0]["value"], color=palette(key), ls=":" if ls != "-" else "--", lw=0.9,
                               label=series)
                continue
            band_line(ax, [p["density"] for p in ps], [p["value"] for p in ps], [p["lo"] for p in ps],
                      [p["hi"] for p in ps], palette(key), series, ls=ls)
    xs = [p["density"] for p in pts if p["density"] > 0 and p["key"] != "dense"]  # dense is a line, not a point
    if xs and max(xs) >= 2 * min(xs):  # log2 only when the densities span a factor of two
        ax.set_xscale("log", base=2)
    sparse = [p["value"] for p in pts if p["key"] != "dense"]
    if m in LOG_Y and sparse and min(sparse) > 0 and max(sparse) >= 10 * min(sparse):
        ax.set_yscale("log")
    ax.set_xlabel("block density" if pts and pts[0].get("measure") == "block_density" else "density")
    ax.set_ylabel(LABELS.get(m, m))


def _legend(fig, axes) -> None:
    handles: dict = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 8),
               fontsize=6)


@styled
def quality_figure(points: Sequence[dict],
                   metrics: Sequence[str] = ("ppl", "kl", "top1_agreement", "recall", "passkey_correct"),
                   palette: Palette | None = None, title: str | None = None):
    """One panel per metric present in ``points`` (dicts: key, density, metric, value, lo, hi; a
    95% CI or NaN; optional series/context): one line per pattern family (colour) and context
    length (line style) over density (log2 axis) with its CI band; dense attention (density 1) as
    a horizontal reference."""
    present = [m for m in metrics if any(p["metric"] == m for p in points)]
    if not present:
        raise ValueError(f"points: no values for any of {list(metrics)}")
    palette = palette or Palette(p["key"] for p in points)
    fig, axes = new_figure(ncols=len(present), width=WIDTH_PAGE, height=2.0)
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, present):
        _metric_panel(ax, points, m, palette)
    _legend(fig, axes)
    if title:
        fig.suptitle(title, fontsize=8)
    return fig


SHORT = {"ppl": "perplexity", "nll": "NLL", "kl": "KL to dense (nats)", "top1_agreement": "top-1 agreement",
         "recall": "dense mass kept", "passkey_correct": "passkey retrieved"}


@styled
def quality_sweeps_figure(groups: dict[str, Sequence[dict]],
                          metrics: Sequence[str] = ("ppl", "kl", "top1_agreement", "recall", "passkey_correct"),
                          palette: Palette | None = None, row_height: float = 0.85):
    """Density sweeps one row each (``groups``: experiment -> points as for ``quality_figure``), each row a
    subfigure titled with its experiment; short metric names as y labels, the x label under a column's
    last panel only where all panels share it, one legend for all rows.
    Perplexity goes on a log axis where a row's values span more than 10x (a collapsed pattern beside
    intact ones)."""
    from matplotlib.figure import Figure

    # dense is each row's reference line; causal (full causal attention through spattern's kernel, the
    # numerical control) sits at the causal density, far off the sweep: its value is in the tables
    groups = {e: [p for p in pts if p["key"] != "causal"] for e, pts in groups.items()}
    names = [e for e, pts in groups.items() if any(p["metric"] in metrics for p in pts)]
    present = [m for m in metrics if any(p["metric"] == m for e in names for p in groups[e])]
    if not names:
        raise ValueError(f"groups: no values for any of {list(metrics)}")
    palette = palette or Palette(p["key"] for e in names for p in groups[e])
    fig = Figure(figsize=(WIDTH_PAGE, row_height * len(names) + 0.45), layout="constrained")
    rows = np.atleast_1d(fig.subfigures(len(names), 1))
    axes = []
    for sub, e in zip(rows, names):
        row = np.atleast_1d(sub.subplots(1, len(present)))
        axes.append(row)
        sub.suptitle(e.removeprefix("study_"), x=0.0, ha="left", fontsize=6.5, fontweight="bold")
        for ax, m in zip(row, present):
            if not any(p["metric"] == m for p in groups[e]):
                ax.set_axis_off()
                continue
            _metric_panel(ax, groups[e], m, palette)
            vals = [p["value"] for p in groups[e] if p["metric"] == m and finite(p["value"]) and p["value"] > 0]
            if m in ("ppl", "nll") and vals and max(vals) > 10 * min(vals):
                ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())  # a log axis within a decade: no 6x10^-1 labels
            ax.set_ylabel(SHORT.get(m, m), fontsize=6)
            ax.set_xlabel("block density" if ax.get_xlabel() == "block density" else "density", fontsize=6)
    # the x label once a column, under its last drawn panel, where every panel shares it (each row keeps
    # its ticks: the rows' density ranges differ)
    if len({ax.get_xlabel() for row in axes for ax in row if ax.axison}) == 1:
        for j in range(len(present)):
            for ax in [row[j] for row in axes if row[j].axison][:-1]:
                ax.set_xlabel("")
    _legend(fig, np.concatenate(axes))
    return fig


def single_density(points: Sequence[dict]) -> bool:
    """True when the sparse points of an experiment sit at one matched density (within a factor 2:
    matching reaches the target only in block steps, and a family may not reach it), not a density
    sweep: such experiments share one dot-plot figure (``quality_matched_figure``). Dense and
    ``causal`` (full causal attention, the model's own) are references, not matched."""
    dens = [float(p["density"]) for p in points
            if p["key"] not in REFERENCE and finite(p["density"]) and p["density"] > 0]
    return not dens or max(dens) / min(dens) < 2


@styled
def quality_matched_figure(points_by_exp: dict, metrics: Sequence[str] = ("kl", "top1_agreement", "recall"),
                           palette: Palette | None = None):
    """Experiments at one matched density side by side: one panel per metric, one row per experiment
    (``points_by_exp``: experiment -> points as for ``quality_figure``), one marker per pattern family
    with its 95% CI; dense attention is the reference (KL 0, agreement 1, recall 1) and not drawn."""
    exps = [e for e, pts in points_by_exp.items() if any(p["key"] not in REFERENCE for p in pts)]
    present = [m for m in metrics if any(p["metric"] == m for e in exps for p in points_by_exp[e])]
    if not exps or not present:
        raise ValueError("points_by_exp: no sparse-pattern values at a matched density")
    every = [p for e in exps for p in points_by_exp[e] if p["key"] not in REFERENCE]
    palette = palette or Palette(p["key"] for p in every)
    keys = ordered_keys(every)
    fig, axes = new_figure(ncols=len(present), width=WIDTH_PAGE, height=0.2 * len(exps) + 0.75, sharey=True)
    axes = np.atleast_1d(axes)
    step = 0.7 / max(len(keys), 1)
    for ax, m in zip(axes, present):
        for yi, e in enumerate(exps):
            for ki, key in enumerate(keys):
                for p in points_by_exp[e]:
                    if p["key"] != key or p["metric"] != m or not finite(p["value"]):
                        continue
                    y = yi - 0.35 + step * (ki + 0.5)
                    lo, hi = p.get("lo"), p.get("hi")
                    err = [[p["value"] - lo], [hi - p["value"]]] if finite(lo) and finite(hi) else None
                    ax.errorbar([p["value"]], [y], xerr=err, fmt="o", ms=3, color=palette(key), lw=0.8,
                                label=key if yi == 0 or key not in ax.get_legend_handles_labels()[1] else None)
        if m in LOG_Y:
            ax.set_xscale("log")
        ax.set_xlabel(LABELS.get(m, m))
        ax.set_ylabel("experiment")
        ax.yaxis.label.set_visible(ax is axes[0])
        ax.grid(axis="x", lw=0.3)
    axes[0].set_yticks(range(len(exps)), [e.removeprefix("study_") for e in exps], fontsize=6)
    axes[0].invert_yaxis()
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend([handles[k] for k in keys if k in handles], [k for k in keys if k in handles],
               loc="outside lower center", ncol=min(len(handles), 8), fontsize=6)
    return fig
