"""Training curves: loss against step, the mean over seeds with the seeds' range as a band."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


@styled
def training_panels(curves_by: dict, field: str = "val_loss", palette: Palette | None = None, per_row: int = 6):
    """One panel per experiment (``curves_by``: experiment -> curves): ``field`` (validation loss,
    else the training loss where an experiment logged no validation) against step, mean over seeds
    with the seeds' range as a band; a page-wide figure, ``per_row`` panels a row."""
    names = [e for e, cs in curves_by.items() if cs]
    if not names:
        raise ValueError("curves_by: expected training curves of at least one experiment, got none")
    palette = palette or Palette(c.key for e in names for c in curves_by[e])
    rows = -(-len(names) // per_row)
    fig, axes = new_figure(nrows=rows, ncols=min(per_row, len(names)), width=WIDTH_PAGE, height=1.35 * rows)
    axes = np.atleast_1d(axes).ravel()
    handles: dict[str, object] = {}
    for ax, e in zip(axes, names):
        curves = curves_by[e]
        f = field if any(field in r for c in curves for r in c.records) else "loss"
        counts = []
        for key in sorted({c.key for c in curves}):
            mine = [c for c in curves if c.key == key]
            steps, mean, lo, hi, n = seed_band(mine, f)
            if n:
                band_line(ax, steps, mean, lo if n > 1 else None, hi if n > 1 else None, palette(key), key,
                          marker="" if len(steps) > 12 else "o")
                counts.append((runs_label(mine, n), n))
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
        # the runs behind each series in the panel's title (one legend for the figure: a legend per panel
        # covered the curves)
        ns = sorted({n for _, n in counts})
        runs = counts[0][0] if len({c for c, _ in counts}) == 1 else f"{ns[0]}-{ns[-1]} runs"
        ax.set_title(f"{e} ({runs})", fontsize=6.0)
        ax.set_xlabel("training step")
        ax.set_ylabel({"loss": "train loss", "val_loss": "val. loss"}.get(f, f) + " (nats)")
    for ax in axes[len(names):]:
        ax.remove()
    keys = sorted(handles, key=lambda k: (k != "dense", k))
    bottom_legend(fig, [handles[k] for k in keys], keys, fontsize=5.5, columnspacing=1.0, handlelength=1.6)
    return fig
