"""Drawings of patterns, compiled layouts and receptive fields (matplotlib, Agg; no pyplot state).

- ``draw_pattern(pattern, q_len, ...)``: the token mask as a heatmap (query rows, key columns),
  with the block grid of the compiled layout underneath when ``block`` is given: FULL, PROGRAM and
  BITMASK blocks shaded in different colours. Per-head stacks give one panel per head. Above
  ``MAX_TOKEN_PAIRS`` (2048 x 2048) it draws the compiled block grid instead of the token mask, so
  the N x N mask is never built for large N.
- ``draw_layout(layout, ...)``: the block grid of a compiled layout, from its CSR arrays only
  (O(nnz) work and O(pixels) memory), so it works at N = 65,536 and beyond.
- ``draw_receptive_field(results, ...)``: reach fraction against depth for several patterns
  (``spattern.compiler.analysis.receptive_field`` results).

Each returns a ``matplotlib.figure.Figure`` (Agg canvas) and writes a PNG when ``path`` is given.
Large images are max-pooled to at most ``MAX_PIXELS`` cells a side (a cell shows whether any
token/block in it is attended, so thin bands never vanish in the downsampling).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from spattern.compiler.layout import BITMASK, FULL, PROGRAM, BlockLayout

MAX_TOKEN_PAIRS = 2048 * 2048  # above this, draw_pattern shows blocks instead of tokens
MAX_PIXELS = 1024  # image cells per side after max-pooling
DEFAULT_BLOCK = 64

KIND_COLORS = {  # (label, RGBA)
    FULL: ("full", (0.20, 0.55, 0.85, 1.0)),
    PROGRAM: ("program (partial)", (0.95, 0.60, 0.15, 1.0)),
    BITMASK: ("bitmask (partial)", (0.60, 0.30, 0.75, 1.0)),
}
TOKEN_COLOR = (0.08, 0.08, 0.25, 1.0)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _figure(n_panels: int, panel_in: float = 4.6) -> tuple[Figure, list]:
    cols = min(n_panels, 4)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(panel_in * cols + 0.4, panel_in * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1).tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Figure, path) -> None:
    if path is not None:
        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)


def _pool_factor(n: int) -> int:
    return max(1, math.ceil(n / MAX_PIXELS))


def _maxpool(a: np.ndarray, fr: int, fc: int) -> np.ndarray:
    """Max over fr x fc cells (the array is padded with zeros to multiples)."""
    if fr == 1 and fc == 1:
        return a
    R, C = a.shape
    Rp, Cp = -(-R // fr) * fr, -(-C // fc) * fc
    pad = np.zeros((Rp, Cp), dtype=a.dtype)
    pad[:R, :C] = a
    return pad.reshape(Rp // fr, fr, Cp // fc, fc).max(axis=(1, 3))


def _kind_cmap(alpha: float = 1.0) -> ListedColormap:
    colors = [(1, 1, 1, 0)] + [(*KIND_COLORS[k][1][:3], alpha) for k in (FULL, PROGRAM, BITMASK)]
    return ListedColormap(colors)


def _pooled_block_grid(layout: BlockLayout, group: int) -> tuple[np.ndarray, int, int]:
    """int8 [ceil(R/f), ceil(C/f)]: 0 absent, else 1 + the highest block kind in the cell
    (full < program < bitmask), built from the CSR arrays in O(nnz)."""
    R, C = layout.n_rows, layout.n_cols
    fr, fc = _pool_factor(R), _pool_factor(C)
    out = np.zeros((-(-R // fr), -(-C // fc)), dtype=np.int8)
    sl = layout.group_slice(group)
    rows = layout.block_rows()[sl] // fr
    cols = layout.col_idx[sl].astype(np.int64) // fc
    np.maximum.at(out, (rows, cols), (layout.block_kind[sl] + 1).astype(np.int8))
    return out, fr, fc


def _kind_legend(ax, kinds_present: Sequence[int], extra: Sequence[Patch] = ()) -> None:
    handles = list(extra) + [Patch(color=KIND_COLORS[k][1], label=f"{KIND_COLORS[k][0]} block")
                             for k in (FULL, PROGRAM, BITMASK) if k in kinds_present]
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.85)


def _draw_block_panel(ax, layout: BlockLayout, group: int, title: str) -> None:
    grid, fr, fc = _pooled_block_grid(layout, group)
    R, C = layout.n_rows, layout.n_cols
    ax.imshow(grid, cmap=_kind_cmap(), vmin=0, vmax=3, interpolation="nearest",
              extent=(0, grid.shape[1] * fc, grid.shape[0] * fr, 0), aspect="auto")
    ax.set_xlim(0, C)
    ax.set_ylim(R, 0)
    ax.set_xlabel(f"key block (x{layout.block_k} tokens)")
    ax.set_ylabel(f"query block (x{layout.block_q} tokens)")
    sl = layout.group_slice(group)
    kinds = np.bincount(layout.block_kind[sl], minlength=3)
    nnz = int(sl.stop - sl.start)
    pooled = f", 1 px = {fr}x{fc} blocks" if fr > 1 or fc > 1 else ""
    ax.set_title(f"{title}\nN={layout.q_len}, {nnz} of {R * C} blocks ({nnz / (R * C):.2%}){pooled}",
                 fontsize=8)
    _kind_legend(ax, [k for k in (FULL, PROGRAM, BITMASK) if kinds[k]])


def _as_pattern(pattern):
    from spattern.patterns.base import Pattern
    from spattern.patterns.parse import parse

    if isinstance(pattern, str):
        pattern = parse(pattern)
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern: expected a Pattern or its string, got {type(pattern).__name__}")
    if not pattern.is_static:
        raise ValueError(f"pattern {pattern} needs a context to draw (e.g. document() without "
                         "boundaries): bind it first, p.bind({'cu_seqlens': [...]}), or write document([...])")
    return pattern


def _check_len(value, what) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what}: expected a positive int, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------
# public
# ------------------------------------------------------------------------------------------
def draw_pattern(pattern, q_len: int, path: str | Path | None = None, kv_len: int | None = None,
                 block: int | tuple[int, int] | None = None, show_blocks: bool = True) -> Figure:
    """Heatmap of the token mask (rows: queries, columns: keys; dark = attended).

    ``block`` (an int or (block_q, block_k)): also compile the pattern with that block size and
    shade its blocks underneath by kind (FULL / PROGRAM / BITMASK) with the block grid drawn
    (``show_blocks=False`` leaves the shading out). Per-head stacks (``heads(...)``) get one panel
    per head. For q_len * kv_len above ``MAX_TOKEN_PAIRS`` the token mask is not built: the
    compiled block grid is drawn instead (``block`` or 64). Returns the Figure; writes a PNG to
    ``path`` when given.
    """
    from spattern.compiler.compile import compile as compile_pattern
    from spattern.patterns.base import Heads

    pattern = _as_pattern(pattern)
    q_len = _check_len(q_len, "q_len")
    kv_len = q_len if kv_len is None else _check_len(kv_len, "kv_len")
    heads = list(pattern.patterns) if isinstance(pattern, Heads) else [pattern]

    if q_len * kv_len > MAX_TOKEN_PAIRS:  # blocks only: never the N x N mask
        layout = compile_pattern(pattern, q_len, kv_len, block=block or DEFAULT_BLOCK)
        fig, axes = _figure(len(heads))
        for h, ax in enumerate(axes):
            label = str(heads[h]) if len(heads) == 1 else f"head {h}: {heads[h]}"
            _draw_block_panel(ax, layout, h, f"{label} (blocks; token mask too large to draw)")
        _save(fig, path)
        return fig

    layout = None
    if block is not None:
        layout = compile_pattern(pattern, q_len, kv_len, block=block)
    fig, axes = _figure(len(heads))
    for h, (ax, p) in enumerate(zip(axes, heads)):
        mask = p.dense_mask(q_len, kv_len)  # (q_len, kv_len) bool
        density = float(mask.mean())
        fr, fc = _pool_factor(q_len), _pool_factor(kv_len)
        shown = _maxpool(mask.view(np.uint8), fr, fc)
        title = str(p) if len(heads) == 1 else f"head {h}: {p}"
        title += f"\nq_len={q_len}" + (f", kv_len={kv_len}" if kv_len != q_len else "") + f", density {density:.3f}"
        kinds_present: list[int] = []
        if layout is not None and show_blocks:
            bq, bk = layout.block_q, layout.block_k
            grid, gr, gc = _pooled_block_grid(layout, h)
            ax.imshow(grid, cmap=_kind_cmap(alpha=0.35), vmin=0, vmax=3, interpolation="nearest",
                      extent=(-0.5, grid.shape[1] * gc * bk - 0.5, grid.shape[0] * gr * bq - 0.5, -0.5),
                      aspect="auto")
            if layout.n_rows <= 64 and layout.n_cols <= 64:
                for r in range(1, layout.n_rows):
                    ax.axhline(r * bq - 0.5, color="0.6", lw=0.4)
                for c in range(1, layout.n_cols):
                    ax.axvline(c * bk - 0.5, color="0.6", lw=0.4)
            sl = layout.group_slice(h)
            counts = np.bincount(layout.block_kind[sl], minlength=3)
            kinds_present = [k for k in (FULL, PROGRAM, BITMASK) if counts[k]]
            title += (f"\n{bq}x{bk} blocks: {counts[FULL]} full, {counts[PROGRAM]} program, "
                      f"{counts[BITMASK]} bitmask of {layout.n_rows * layout.n_cols}")
        ax.imshow(shown, cmap=ListedColormap([(1, 1, 1, 0), TOKEN_COLOR]), vmin=0, vmax=1,
                  interpolation="nearest", aspect="auto",
                  extent=(-0.5, shown.shape[1] * fc - 0.5, shown.shape[0] * fr - 0.5, -0.5))
        ax.set_xlim(-0.5, kv_len - 0.5)
        ax.set_ylim(q_len - 0.5, -0.5)
        ax.set_xlabel("key position j")
        ax.set_ylabel("query position i")
        ax.set_title(title, fontsize=8)
        if kinds_present:
            _kind_legend(ax, kinds_present, [Patch(color=TOKEN_COLOR, label="attended (i, j)")])
    _save(fig, path)
    return fig


def draw_layout(layout: BlockLayout, path: str | Path | None = None, group: int | None = 0) -> Figure:
    """The block grid of a compiled layout: each stored block coloured by kind (FULL / PROGRAM /
    BITMASK), absent blocks white. Built from the CSR arrays (never the token mask), max-pooled to
    at most ``MAX_PIXELS`` cells a side, so it works at any N. ``group=None`` draws every group
    (one panel each). Returns the Figure; writes a PNG to ``path`` when given."""
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout: expected a BlockLayout, got {type(layout).__name__}")
    G = layout.n_groups
    if group is None:
        groups = list(range(G))
    else:
        if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or not 0 <= group < G:
            raise ValueError(f"group: expected an int in [0, {G}) or None (all groups), got {group!r}")
        groups = [int(group)]
    fig, axes = _figure(len(groups))
    for ax, g in zip(axes, groups):
        title = layout.pattern or "layout"
        if G > 1:
            title += f" [group {g}]"
        _draw_block_panel(ax, layout, g, title)
    _save(fig, path)
    return fig


def draw_receptive_field(results: Mapping[str, Any] | Sequence[Any], path: str | Path | None = None,
                         title: str = "receptive field over depth") -> Figure:
    """Line plot of the reach fraction against depth (layers), one line per pattern.

    ``results``: ``{label: ReceptiveField}`` or ``{label: [fraction at depth 1, 2, ...]}``, or a
    list of ReceptiveField (labelled by their pattern). Lines of saturated results are extended
    flat to the largest depth shown; the depth where a line reaches 1 is marked. Log2 depth axis
    when depths exceed 32. Returns the Figure; writes a PNG to ``path`` when given."""
    from spattern.compiler.analysis import ReceptiveField

    if isinstance(results, Mapping):
        items = list(results.items())
    elif isinstance(results, (list, tuple)):
        items = [(getattr(r, "pattern", f"#{n}") or f"#{n}", r) for n, r in enumerate(results)]
    else:
        raise TypeError("results: expected {label: ReceptiveField or fractions} or a list of "
                        f"ReceptiveField, got {type(results).__name__}")
    if not items:
        raise ValueError("results: expected at least one result, got none")
    series = []
    for label, r in items:
        if isinstance(r, ReceptiveField):
            fr, sat = r.fractions, r.saturated
        else:
            fr, sat = [float(x) for x in r], False
        if not fr:
            raise ValueError(f"results[{label!r}]: no depths")
        series.append((str(label), fr, sat))
    max_d = max(len(fr) for _, fr, _ in series)
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, fr, sat in series:
        d = np.arange(1, len(fr) + 1)
        if sat and len(fr) < max_d:
            d = np.arange(1, max_d + 1)
            fr = fr + [fr[-1]] * (max_d - len(fr))
        line, = ax.plot(d, fr, marker="o" if max_d <= 32 else None, ms=3, lw=1.5, label=label)
        full = next((i for i, f in enumerate(fr) if f >= 1.0), None)
        if full is not None:
            ax.plot([d[full]], [1.0], marker="*", ms=11, color=line.get_color())
    if max_d > 32:
        ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("fraction of dense-reachable (query, key) pairs")
    ax.set_title(title + "  (* full reach)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)
    return fig


__all__ = ["draw_pattern", "draw_layout", "draw_receptive_field"]
