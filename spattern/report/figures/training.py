"""Training curves: loss against step, the mean over seeds with the seeds' range as a band."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spattern.report.figures._common import band_line
from spattern.report.style import WIDTH_COLUMN, Palette, new_figure, styled


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
def training_figure(curves: Sequence, fields: Sequence[str] = ("loss", "val_loss"), palette: Palette | None = None):
    """One panel per field (training loss, validation loss): for each pattern family the mean
    over seeds (or runs), shaded between the lowest and highest (``curves``: objects with key, seed,
    records as written by the training loop)."""
    if not curves:
        raise ValueError("curves: expected training curves, got none")
    palette = palette or Palette(c.key for c in curves)
    present = [f for f in fields if any(f in r for c in curves for r in c.records)]
    if not present:
        raise ValueError(f"curves: none has any of {list(fields)}")
    fig, axes = new_figure(ncols=len(present), width=WIDTH_COLUMN, height=1.9)  # one column: one per experiment
    axes = np.atleast_1d(axes)
    keys = sorted({c.key for c in curves})
    for ax, f in zip(axes, present):
        for key in keys:
            steps, mean, lo, hi, n = seed_band([c for c in curves if c.key == key], f)
            if n == 0:
                continue
            band_line(ax, steps, mean, lo if n > 1 else None, hi if n > 1 else None, palette(key),
                      f"{key} ({runs_label([c for c in curves if c.key == key], n)})",
                      marker="" if len(steps) > 12 else "o")
        ax.set_xlabel("training step")
        ax.set_ylabel({"loss": "training loss (nats/token)", "val_loss": "validation loss (nats/token)"}.get(f, f))
    axes[0].legend(fontsize=5.5)
    return fig
