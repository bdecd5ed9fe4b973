"""Cost vs sequence length: closed form (sympy, evaluated at each N) against exact counts (log-log)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spattern.report.style import Palette, new_figure, styled


def cost_points(patterns: Sequence[tuple[str, str]], sizes: Sequence[int], block: int = 64,
                head_dim: int = 64, exact_max: int = 4096, exact_at: Sequence[int] = ()) -> list[dict]:
    """One row per (pattern, N): the closed form of the attended pairs at N (None when the pattern
    has none) and whether it is exact or a bound; for N <= ``exact_max`` and N in ``exact_at`` also
    the exact pairs/blocks from the compiled layout, density and FLOPs
    (``spattern.compiler.complexity.cost``); above it those are None (exact counts cost O(nnz * b^2))."""
    from spattern.compiler.complexity import closed_form, cost, evaluate_form
    from spattern.patterns.parse import parse

    rows = []
    for key, text in patterns:
        form = closed_form(parse(text), "pairs")
        for n in sizes:
            row = {"key": key, "pattern": text, "N": int(n), "pairs": None,
                   "pairs_closed": None if form is None else int(evaluate_form(form[0], int(n))),
                   "pairs_exact": bool(form is not None and form[1]), "blocks": None, "density": None,
                   "block_density": None, "asymptotic": None, "flops_fwd": None, "flops_fwd_bwd": None}
            if n <= exact_max or n in exact_at:
                c = cost(text, int(n), block=(block, block), head_dim=head_dim)
                row.update(pairs=int(c.pairs), blocks=int(c.blocks), density=float(c.density),
                           block_density=float(c.block_density), asymptotic=str(c.asymptotic),
                           flops_fwd=float(c.flops_fwd), flops_fwd_bwd=float(c.flops_fwd_bwd))
            rows.append(row)
    return rows


@styled
def cost_figure(rows: Sequence[dict], palette: Palette | None = None, causal_dense: bool = True):
    """Attended pairs against N on log-log axes: exact counts as markers, closed forms as lines
    (dashed where the form is an upper bound), and dense causal attention N(N+1)/2 for scale."""
    if not rows:
        raise ValueError("rows: expected cost rows (cost_points), got none")
    keys = list(dict.fromkeys(r["key"] for r in rows))
    palette = palette or Palette(keys)
    fig, ax = new_figure(height=2.0)
    ns = np.array(sorted({r["N"] for r in rows}), dtype=np.float64)
    if causal_dense:
        ax.plot(ns, ns * (ns + 1) / 2, color=palette("dense"), lw=0.9, ls=":", label="dense causal N(N+1)/2")
    for key in keys:
        rs = sorted((r for r in rows if r["key"] == key), key=lambda r: r["N"])
        exact_pts = [(r["N"], r["pairs"]) for r in rs if r["pairs"] is not None]
        if exact_pts:
            ax.plot(*zip(*exact_pts), "o", color=palette(key), label=f"{key} exact")
        closed = [(r["N"], r["pairs_closed"]) for r in rs if r["pairs_closed"] is not None]
        if closed:
            exact = all(r["pairs_exact"] for r in rs)
            ax.plot(*zip(*closed), ls="-" if exact else "--", color=palette(key),
                    label=f"{key} closed form" + ("" if exact else " (bound)"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_ylabel("attended (query, key) pairs")
    ax.legend(ncols=2, loc="upper left", fontsize=4.5, columnspacing=0.8, handlelength=1.6)  # two columns: the figure is short
    return fig
