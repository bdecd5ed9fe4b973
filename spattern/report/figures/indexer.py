"""The top-k indexer at work: its raw scores, the blocks it selects, the attention that results
(per indexer head) and its recall of dense attention mass over training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import PowerNorm

from spattern.report.figures.training import runs_label, seed_band
from spattern.report.style import WIDTH_COLUMN, WIDTH_PAGE, Palette, styled


def _parts(snapshot: dict | None, curves: Sequence) -> tuple[list, list]:
    heads = list((snapshot or {}).get("heads") or [])
    with_recall = [c for c in curves if any("indexer_mass_recall" in r for r in c.records)]
    return heads, with_recall


def indexer_caption(snapshot: dict | None, curves: Sequence = ()) -> str:
    """The caption of ``indexer_figure(snapshot, curves)``, naming only the parts it draws."""
    heads, with_recall = _parts(snapshot, curves)
    parts = (["raw index scores, the key blocks it selects and the attention on that selection (per indexer head)"]
             if heads else []) + (["its recall of dense attention mass over training (mean over seeds, band = range)"]
                                  if with_recall else [])
    return "The top-k indexer: " + "; ".join(parts) + "."


@styled
def indexer_figure(snapshot: dict | None, curves: Sequence = (), max_heads: int = 2,
                   palette: Palette | None = None):
    """Rows: indexer heads of ``snapshot`` (``{"block", "heads": [{"scores" (N, N), "selected"
    (R, C) 0/1, "attention" (N, N)}]}``), columns: raw scores, selected blocks, attention on the
    selection. Right: ``indexer_mass_recall`` over training steps (mean over seeds, band = range)
    from the curves that log it. Either part may be absent, not both."""
    from matplotlib.figure import Figure

    heads, with_recall = _parts(snapshot, curves)
    heads = heads[:max_heads]
    if not heads and not with_recall:
        raise ValueError("indexer_figure: needs a snapshot with heads or curves with indexer_mass_recall")
    palette = palette or Palette(c.key for c in with_recall)
    rows = max(len(heads), 1)
    width = WIDTH_PAGE if heads else WIDTH_COLUMN  # the recall curve alone fits a column
    fig = Figure(figsize=(width, 1.75 * rows + 0.4 if heads else 1.0), layout="constrained")  # recall alone: short
    gs = fig.add_gridspec(rows, 4 if heads and with_recall else (3 if heads else 1))
    for h, head in enumerate(heads):
        panels = (("scores", "raw index scores", "magma", "query position"),
                  ("selected", "selected key blocks", "Blues", "query block"),
                  ("attention", "attention on the selection", "viridis", "query position"))
        for j, (field, title, cmap, ylabel) in enumerate(panels):
            ax = fig.add_subplot(gs[h, j])
            arr = np.asarray(head.get(field, []), dtype=float)
            if arr.ndim == 2 and arr.size:
                if field == "scores":
                    arr = np.where(np.isfinite(arr), arr, np.nan)
                norm = PowerNorm(0.4, vmin=0.0) if field == "attention" else None  # small weights stay visible
                ax.imshow(arr, cmap=cmap, aspect="auto", interpolation="nearest", norm=norm)
            ax.set_title(f"head {h}: {title}", fontsize=7)
            ax.set_xlabel("key block" if field == "selected" else "key position")
            ax.set_ylabel(ylabel)
            ax.grid(False)
    if with_recall:
        ax = fig.add_subplot(gs[:, -1])
        for key in sorted({c.key for c in with_recall}):
            steps, mean, lo, hi, n = seed_band([c for c in with_recall if c.key == key], "indexer_mass_recall")
            if n:
                label = runs_label([c for c in with_recall if c.key == key], n)
                ax.plot(steps, mean, color=palette(key), label=f"{key} ({label})")
                if n > 1:
                    ax.fill_between(steps, lo, hi, color=palette(key), alpha=0.2, lw=0)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training step")
        ax.set_ylabel("dense mass\nrecalled")
        ax.set_title("indexer recall over training", fontsize=7)
        ax.legend(fontsize=5.5)
    return fig
