"""dilated(window, dilation): a window with holes (Longformer's dilated sliding window).

Query i attends keys j = i + t*dilation for |t| < window: 2*window - 1 keys spread over
2*(window - 1)*dilation + 1 positions. Pairs: N*(2m + 1) - d*m*(m + 1) with
m = min(window - 1, floor((N - 1)/d)); causal N*(m + 1) - d*m*(m + 1)/2. O(N*w).
Blocks: bounded by local((window - 1)*dilation + 1)'s count; like strided, a dilation below
2b - 1 leaves no block of the band empty.

Run ``python -m spattern.patterns.dilated`` to draw it.
"""

from __future__ import annotations

from dataclasses import dataclass

from spattern.ir import program as P
from spattern.ir.blocks import Grid, band_blocks, band_state
from spattern.patterns.base import Pattern, check_int
from spattern.patterns.local import Local
from spattern.patterns.registry import register
from spattern.patterns.strided import _offset_pairs


@register("dilated")
@dataclass(frozen=True, repr=False)
class Dilated(Pattern):
    window: int
    dilation: int = 2

    name = "dilated"
    positional = ("window",)

    def __post_init__(self):
        check_int(self.window, "dilated(window)", minimum=1)
        check_int(self.dilation, "dilated(dilation)", minimum=1)

    @property
    def reach(self) -> int:
        return (self.window - 1) * self.dilation

    def allowed(self, q_idx, kv_idx, geom):
        d = q_idx - kv_idx
        return (d >= -self.reach) & (d <= self.reach) & (d % self.dilation == 0)

    def blocks(self, geom, block_q, block_k):
        return band_blocks(
            Grid(geom.q_len, geom.kv_len, block_q, block_k), -self.reach, self.reach, self.dilation, 0
        )

    def classify(self, grid, rows, cols):
        return band_state(grid, rows, cols, -self.reach, self.reach, self.dilation, 0)

    def program(self):
        return [(P.BAND, -self.reach, self.reach, 0), (P.DIFF_MOD, self.dilation, 0, 0), (P.AND, 0, 0, 0)]

    def pairs_expr(self, N, causal=False, w=None, d=None):
        w = self.window if w is None else w
        d = self.dilation if d is None else d
        return _offset_pairs(N, d, m_cap=w - 1, causal=causal)

    def blocks_expr(self, N, b, causal=False):
        if self.dilation > 2 * b - 1:
            return None
        return Local(self.reach + 1).blocks_expr(N, b, causal=causal)


dilated = Dilated

if __name__ == "__main__":
    from spattern.patterns.base import demo_main

    demo_main("dilated", [(Dilated(8, 3), 'dilated.png')])
