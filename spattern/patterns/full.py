"""full() and causal: dense attention and the causal (lower-triangular) mask.

Both are pattern values that can also be called: ``full``, ``full()`` and ``Full()`` are one
pattern (so ``full | local(3)`` and ``full() | local(3)`` both work), and ``causal``,
``causal()`` and ``Causal()`` are one pattern, with ``causal(p)`` meaning ``p & causal``.
Run ``python -m spattern.patterns.full`` to draw both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spattern.ir import program as P
from spattern.ir.blocks import INF, Grid, band_blocks, band_state
from spattern.patterns.base import Pattern
from spattern.patterns.registry import register


@register("full")
@dataclass(frozen=True, repr=False)
class Full(Pattern):
    """Every query attends every key: O(N^2)."""

    name = "full"
    filter_first = True  # in an intersection, filter by it rather than enumerate it

    def __call__(self) -> "Full":
        """``full()`` is ``full`` (the instance is also the constructor call's result)."""
        return self

    def allowed(self, q_idx, kv_idx, geom):
        return (q_idx - kv_idx) == (q_idx - kv_idx)

    def key_intervals(self, geom):
        return np.zeros(geom.kv_len, dtype=np.int64), np.full(geom.kv_len, INF, dtype=np.int64)

    def blocks(self, geom, block_q, block_k):
        return band_blocks(Grid(geom.q_len, geom.kv_len, block_q, block_k), -INF, INF)

    def classify(self, grid, rows, cols):
        return band_state(grid, rows, cols, -INF, INF)

    def program(self):
        return [(P.TRUE, 0, 0, 0)]

    def pairs_expr(self, N, causal=False):
        return N * (N + 1) / 2 if causal else N**2

    def blocks_expr(self, N, b, causal=False):
        import sympy as sp  # lazy: `import spattern` stays light
        R = sp.ceiling(N / b)
        return R * (R + 1) / 2 if causal else R**2


@register("causal")
@dataclass(frozen=True, repr=False)
class Causal(Pattern):
    """Query i attends keys j <= i (absolute positions). Call it to restrict a pattern:
    ``causal(local(64)) == local(64) & causal``."""

    name = "causal"
    filter_first = True
    claims_causal = True

    def __call__(self, pattern: Pattern | None = None) -> Pattern:
        if pattern is None:
            return self  # causal() is causal
        if not isinstance(pattern, Pattern):
            raise TypeError(f"causal(...): expected a Pattern, got {type(pattern).__name__}")
        return pattern & self

    def allowed(self, q_idx, kv_idx, geom):
        return kv_idx <= q_idx

    def key_intervals(self, geom):
        return np.arange(geom.kv_len, dtype=np.int64), np.full(geom.kv_len, INF, dtype=np.int64)

    def blocks(self, geom, block_q, block_k):
        return band_blocks(Grid(geom.q_len, geom.kv_len, block_q, block_k), 0, INF)

    def classify(self, grid, rows, cols):
        return band_state(grid, rows, cols, 0, INF)

    def program(self):
        return [(P.BAND, 0, P.INF, 0)]

    def pairs_expr(self, N, causal=False):
        return N * (N + 1) / 2

    def blocks_expr(self, N, b, causal=False):
        import sympy as sp  # lazy: `import spattern` stays light
        R = sp.ceiling(N / b)
        return R * (R + 1) / 2

    def __str__(self):
        return "causal"


full = Full()
causal = Causal()

if __name__ == "__main__":
    from spattern.patterns.base import demo_main

    demo_main("full", [(Full(), 'full.png'), (causal, 'causal.png')])
