"""sink(n): the first n tokens are attended by every query (attention sinks, StreamingLLM).

allowed(i, j) = j < n. Pairs N*min(n, N); causal n*(n + 1)/2 + (N - n)*n for N >= n. O(N*n).
Blocks: R*ceil(n/b); causal sum_r min(r + 1, ceil(n/b)).

Run ``python -m spattern.patterns.sink`` to draw it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spattern.ir import program as P
from spattern.ir.blocks import Grid, key_set_blocks, key_set_state
from spattern.patterns.base import Pattern, check_int
from spattern.patterns.registry import register


@register("sink")
@dataclass(frozen=True, repr=False)
class Sink(Pattern):
    n: int

    name = "sink"
    positional = ("n",)

    def __post_init__(self):
        check_int(self.n, "sink(n)", minimum=1)

    def allowed(self, q_idx, kv_idx, geom):
        return (kv_idx + 0 * q_idx) < self.n

    def count_upto(self, x):
        return np.clip(np.asarray(x) + 1, 0, self.n)

    def blocks(self, geom, block_q, block_k):
        return key_set_blocks(Grid(geom.q_len, geom.kv_len, block_q, block_k), self.count_upto)

    def classify(self, grid, rows, cols):
        return key_set_state(grid, rows, cols, self.count_upto)

    def program(self):
        return [(P.KEY_RANGE, 0, self.n, 0)]

    def pairs_expr(self, N, causal=False, n=None):
        import sympy as sp  # lazy: `import spattern` stays light
        n = self.n if n is None else n
        if causal:
            return sp.Piecewise((N * (N + 1) / 2, N <= n), (n * (n + 1) / 2 + (N - n) * n, True))
        return N * sp.Min(n, N)

    def blocks_expr(self, N, b, causal=False):
        import sympy as sp  # lazy: `import spattern` stays light
        R = sp.ceiling(N / b)
        nb = sp.Min(sp.ceiling(sp.Integer(self.n) / b), R)
        if causal:
            return sp.Piecewise((R * (R + 1) / 2, R <= nb), (nb * (nb + 1) / 2 + (R - nb) * nb, True))
        return R * nb


sink = Sink

if __name__ == "__main__":
    from spattern.patterns.base import demo_main

    demo_main("sink", [(Sink(8), 'sink.png')])
