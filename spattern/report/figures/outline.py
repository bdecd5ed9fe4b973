"""Outline attention drawn on text: the token mask of the study's outline pattern on a piece of
code and a piece of prose (one token per character, so the structure is visible), beside the block
grid that a kernel computes for it."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure

from spattern.report.style import WIDTH_PAGE, styled

CODE = '''import os

def load(path, mode="r"):
    with open(path, mode) as f:
        text = f.read()
    return text

class Store:
    def __init__(self, root):
        self.root = root
        self.items = {}

    def get(self, key):
        if key not in self.items:
            path = os.path.join(self.root, key)
            self.items[key] = load(path)
        return self.items[key]

    def clear(self):
        self.items.clear()
'''

PROSE = '''The State of the Union

We meet tonight at a time of change. The work ahead is long,
and the choices before us are hard.

Our economy has grown, but not for everyone. Families still
worry about the cost of care and of school.

So tonight I ask for three things. First, that we invest
in the places that were left behind.
'''


@styled
def outline_figure(window: int = 24, header: int = 8, recent: int = 2, block: int = 32):
    """Two texts x (token mask, block grid) of ``outline(window, header, recent) & causal``."""
    from spattern.compiler.compile import compile as compile_pattern
    from spattern.patterns import parse
    from spattern.patterns.outline import text_tree

    p = parse(f"outline(window={window}, header={header}, recent={recent}) & causal")
    fig = Figure(figsize=(WIDTH_PAGE, 2.05), layout="constrained")
    subs = fig.subfigures(1, 2, wspace=0.02)
    cmap = ListedColormap([(1, 1, 1, 1), to_rgba("#1f5fa8")])
    for sub, (name, text) in zip(subs, (("code", CODE), ("prose", PROSE))):
        n = len(text)
        layout = compile_pattern(p, n, block=(block, block), context={"tree": text_tree(text)})
        mask = layout.to_dense(0)
        grid = layout.block_grid(0) >= 0
        ax_tok, ax_blk = sub.subplots(1, 2)
        sub.suptitle(f"{name}: {str(p)}", fontsize=6.5)
        ax_tok.imshow(mask, cmap=cmap, vmin=0, vmax=1, extent=(0, n, n, 0), interpolation="nearest")
        ax_tok.set_title(f"characters, N={n}, density {mask.mean():.3f}", fontsize=6)
        starts = np.flatnonzero(np.r_[True, np.array(list(text[:-1])) == "\n"])
        ax_tok.set_yticks(starts[::4])
        ax_tok.set_xticks(starts[::4])
        ax_blk.imshow(grid, cmap=cmap, vmin=0, vmax=1, extent=(0, grid.shape[1], grid.shape[0], 0),
                      interpolation="nearest")
        ax_blk.set_title(f"blocks of {block}, block density {grid.mean():.3f}", fontsize=6)
        for ax, lab in ((ax_tok, "character"), (ax_blk, "block")):
            ax.set_xlabel(f"key {lab}", fontsize=6)
            ax.set_ylabel(f"query {lab}", fontsize=6)
            ax.grid(False)
            ax.tick_params(labelsize=5)
    return fig
