"""Pattern heatmaps: the token mask at a small N and the compiled block grid at the study's N."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure

from spattern.report.style import WIDTH_PAGE, Palette, styled


def _pool(mask: np.ndarray, cells: int) -> np.ndarray:
    """Max-pool a bool [R, C] grid to at most ``cells`` a side (thin bands stay visible)."""
    r, c = mask.shape
    fr, fc = max(1, -(-r // cells)), max(1, -(-c // cells))
    pad = np.zeros((-(-r // fr) * fr, -(-c // fc) * fc), dtype=bool)
    pad[:r, :c] = mask
    return pad.reshape(pad.shape[0] // fr, fr, pad.shape[1] // fc, fc).any(axis=(1, 3))


@styled
def heatmap_figure(patterns: Sequence[tuple[str, str]], n_token: int = 256, n_block: int = 4096,
                   block: int = 64, palette: Palette | None = None, max_cells: int = 256):
    """One column per pattern ``(key, pattern string)``: left, the token mask at ``n_token`` (query
    rows, key columns; density = allowed pairs / N^2); right, the layout's block grid at
    ``n_block`` with ``block`` x ``block`` blocks (block density = stored blocks / (N/b)^2).
    Per-head patterns show head 0. Compiled with ``spattern.compile`` (deterministic)."""
    from spattern.compiler.compile import compile as compile_pattern

    if not patterns:
        raise ValueError("patterns: expected at least one (key, pattern string), got none")
    palette = palette or Palette(k for k, _ in patterns)
    n = len(patterns)
    fig = Figure(figsize=(WIDTH_PAGE if n > 1 else WIDTH_PAGE * 0.5, 1.85 if n > 2 else 2.3), layout="constrained")
    subs = np.atleast_1d(fig.subfigures(1, n, wspace=0.02))
    for sub, (key, text) in zip(subs, patterns):
        colour = palette(key)
        cmap = ListedColormap([(1, 1, 1, 1), to_rgba(colour)])
        sub.suptitle(key, fontsize=7.5, color=colour, fontweight="bold")
        ax_tok, ax_blk = sub.subplots(1, 2)
        small = compile_pattern(text, n_token, block=(min(block, 64), min(block, 64)))
        tok = small.to_dense(0)
        ax_tok.imshow(_pool(tok, max_cells), cmap=cmap, vmin=0, vmax=1, extent=(0, n_token, n_token, 0))
        ax_tok.set_title(f"N={n_token}\ndensity\n{tok.mean():.3f}", fontsize=5.5)
        ax_tok.set_xlabel("key token", fontsize=5.5)
        big = compile_pattern(text, n_block, block=(block, block))
        grid = big.block_grid(0) >= 0
        ax_blk.imshow(_pool(grid, max_cells), cmap=cmap, vmin=0, vmax=1, extent=(0, grid.shape[1], grid.shape[0], 0))
        ax_blk.set_title(f"N={n_block}, b={block}\nblock density\n{grid.mean():.3f}", fontsize=5.5)
        ax_blk.set_xlabel("key block", fontsize=5.5)
        ax_tok.set_ylabel("query", fontsize=5.5, labelpad=1)
        ax_blk.set_ylabel("query", fontsize=5.5, labelpad=1)
        for ax in (ax_tok, ax_blk):
            ax.grid(False)
            ax.set_xticks([])
            ax.set_yticks([])
    return fig
