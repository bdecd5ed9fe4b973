"""Training curves: loss against step, the mean over seeds with the seeds' range as a band."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from spattern.report.figures._common import band_line, bottom_legend
from spattern.report.style import WIDTH_PAGE, Palette, new_figure, styled


def seed_band(curves: Sequence, field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(steps, mean, min, max, n_seeds) of ``field`` over the steps every curve logged it."""
    series = []
    for c in curves:
        pts = {int(r["step"]): float(r[field]) for r in c.records
               if isinstance(r.get(field), (int, float)) and "step" in r}
        if pts:
            series.append(pts)
    if not series:
        return np.array([]), np.array([]), np.array([]), np.array([]), 0
    steps = sorted(set.intersection(*(set(s) for s in series)))
    y = np.array([[s[t] for t in steps] for s in series])  # (seeds, steps)
    return np.array(steps), y.mean(0), y.min(0), y.max(0), len(series)


def runs_label(curves: Sequence, n: int) -> str:
    """'3 seeds' when the n curves have n distinct recorded seeds, else 'n runs' (or '1 run')."""
    seeds = {repr(c.seed) for c in curves if c.seed is not None}
    if len(seeds) == n and n > 1:
        return f"{n} seeds"
    return f"{n} run{'s' if n != 1 else ''}"


LINESTYLES = ("-", "--", ":", "-.")


def series_style(key: str, keys: Sequence[str], palette: Palette) -> tuple[object, str]:
    """(colour, line style) of a panel's series: a key "<pattern>: <experiment>" (one pattern's series of
    several experiments) takes its pattern's colour, as in every other figure, and a line style of its
    own among the panel's keys of that pattern; any other key its own colour and a solid line."""
    base, sep, _ = key.partition(": ")
    if not sep:
        return palette(key), "-"
    same = [k for k in keys if k.partition(": ")[0] == base and k.partition(": ")[1]]
    return palette(base), LINESTYLES[same.index(key) % len(LINESTYLES)]


PANEL_FIELDS = {"indexer_mass_recall": ("dense mass\nrecalled", (0.0, 1.02))}  # extra panels: y label, limits


@styled
def training_panels(curves_by: dict, field: str = "val_loss", palette: Palette | None = None, per_row: int = 7,
                    extra: dict | None = None):
    """One panel per experiment (``curves_by``: experiment -> curves): ``field`` (validation loss,
    else the training loss where an experiment logged no validation) against step, mean over seeds
    with the seeds' range as a band; a page-wide figure, ``per_row`` panels a row. ``extra``: more
    panels after those, title -> (curves, field of ``PANEL_FIELDS``), e.g. the top-k indexer's recall of
    dense attention mass over training."""
    panels = [(e, cs, None) for e, cs in curves_by.items() if cs]
    panels += [(t, cs, f) for t, (cs, f) in (extra or {}).items()
               if any(f in r for c in cs for r in c.records)]
    if not panels:
        raise ValueError("curves_by: expected training curves of at least one experiment, got none")
    palette = palette or Palette(c.key for _, cs, _ in panels for c in cs)
    rows = -(-len(panels) // per_row)
    fig, axes = new_figure(nrows=rows, ncols=min(per_row, len(panels)), width=WIDTH_PAGE, height=1.35 * rows)
    axes = np.atleast_1d(axes).ravel()
    handles: dict[str, object] = {}
    previous = None  # a y label where it changes along a row (neighbours of one quantity share it)
    for i, (ax, (e, curves, fixed)) in enumerate(zip(axes, panels)):
        if i % per_row == 0:
            previous = None
        f = fixed or (field if any(field in r for c in curves for r in c.records) else "loss")
        counts = []
        keys = sorted({c.key for c in curves})
        for key in keys:
            mine = [c for c in curves if c.key == key]
            steps, mean, lo, hi, n = seed_band(mine, f)
            if n:
                colour, ls = series_style(key, keys, palette)
                band_line(ax, steps, mean, lo if n > 1 else None, hi if n > 1 else None, colour, key,
                          marker="" if len(steps) > 12 else "o", ls=ls)
                counts.append((runs_label(mine, n), n))
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
        # the runs behind each series in the panel's title (one legend for the figure: a legend per panel
        # covered the curves)
        ns = sorted({n for _, n in counts})
        runs = counts[0][0] if len({c for c, _ in counts}) == 1 else f"{ns[0]}-{ns[-1]} runs"
        # up to seven panels a row: the name and the runs on two lines, few step ticks
        ax.set_title(f"{e.removeprefix('study_')}\n({runs})", fontsize=5.5)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=2, integer=True))
        ax.tick_params(labelsize=5)
        if fixed:  # a field of PANEL_FIELDS has its label and limits; another, its name and free limits
            label, lim = PANEL_FIELDS.get(fixed, (fixed, None))
            if lim:
                ax.set_ylim(*lim)
        else:
            label = {"loss": "train loss", "val_loss": "val. loss"}.get(f, f) + " (nats)"
        if label != previous:
            ax.set_ylabel(label)
        previous = label
    for ax in axes[len(panels):]:
        ax.remove()
    keys = sorted(handles, key=lambda k: (k != "dense", k))
    bottom_legend(fig, [handles[k] for k in keys], keys, fontsize=5.5, columnspacing=1.0, handlelength=1.6)
    return fig
