"""strided(stride) (Child et al., 2019) and its block-aligned form blockstrided(stride, block).

``strided(s)``: query i attends keys j with (i - j) mod s == 0, the "strided" head of the Sparse
Transformer (with ``local(s)`` for the other head: ``local(s) | strided(s)``). Token density ~1/s,
but block density ~1: a b x b block holds 2b - 1 distinct offsets, so for s <= 2b - 1 every block
holds an allowed pair and a kernel skips nothing. Pairs: N*(2m + 1) - s*m*(m + 1),
m = floor((N - 1)/s); causal N*(m + 1) - s*m*(m + 1)/2. With s = sqrt(N): O(N*sqrt(N)).

``blockstrided(s, block)``: the same idea on a grid of ``block``-token blocks: query block
i // block attends key block j // block when their difference is a multiple of s. Compiled with
that block size its blocks are full and it really skips key blocks: block density ~1/s, the
same as its token density. Pairs (block | N, n = N/block, m = floor((n - 1)/s)):
block^2 * (n*(2m + 1) - s*m*(m + 1)).

Run ``python -m spattern.patterns.strided`` to draw both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spattern.ir import program as P
from spattern.ir.blocks import INF, Grid, band_blocks, band_state, rect_blocks
from spattern.patterns.base import Pattern, check_int
from spattern.patterns.registry import register


def _offset_pairs(N, s, m_cap=None, causal=False):
    """Pairs (i, j) in [0, N)^2 with i - j a multiple of s and |i - j|/s <= m_cap."""
    import sympy as sp  # lazy: `import spattern` stays light
    m = sp.floor((N - 1) / s)
    if m_cap is not None:
        m = sp.Min(m, m_cap)
    if causal:
        return N * (m + 1) - s * m * (m + 1) / 2
    return N * (2 * m + 1) - s * m * (m + 1)


@register("strided")
@dataclass(frozen=True, repr=False)
class Strided(Pattern):
    stride: int

    name = "strided"
    filter_first = True  # touches nearly every block: filter by it, don't enumerate it
    positional = ("stride",)

    def __post_init__(self):
        check_int(self.stride, "strided(stride)", minimum=1)

    def allowed(self, q_idx, kv_idx, geom):
        return (q_idx - kv_idx) % self.stride == 0

    def blocks(self, geom, block_q, block_k):
        return band_blocks(Grid(geom.q_len, geom.kv_len, block_q, block_k), -INF, INF, self.stride, 0)

    def classify(self, grid, rows, cols):
        return band_state(grid, rows, cols, -INF, INF, self.stride, 0)

    def program(self):
        return [(P.DIFF_MOD, self.stride, 0, 0)]

    def pairs_expr(self, N, causal=False, s=None):
        return _offset_pairs(N, self.stride if s is None else s, causal=causal)

    def blocks_expr(self, N, b, causal=False, s=None):
        import sympy as sp  # lazy: `import spattern` stays light
        s = self.stride if s is None else s
        R = sp.ceiling(N / b)
        # a b x b block spans 2b - 1 offsets: with s <= 2b - 1 every block holds a multiple of s
        if isinstance(s, int) and isinstance(b, int) and s > 2 * b - 1:
            return None
        return R * (R + 1) / 2 if causal else R**2


@register("blockstrided")
@dataclass(frozen=True, repr=False)
class BlockStrided(Pattern):
    stride: int
    block: int = 64

    name = "blockstrided"
    positional = ("stride",)

    def __post_init__(self):
        check_int(self.stride, "blockstrided(stride)", minimum=1)
        check_int(self.block, "blockstrided(block)", minimum=1)

    def allowed(self, q_idx, kv_idx, geom):
        return (q_idx // self.block - kv_idx // self.block) % self.stride == 0

    def blocks(self, geom, block_q, block_k):
        B, s = self.block, self.stride
        n_r, n_c = -(-geom.q_len // B), -(-geom.kv_len // B)
        # pattern blocks (rho, gamma) with rho - gamma = t*s: a band in block units
        lo = -((n_c - 1) // s)
        hi = (n_r - 1) // s
        ts = np.arange(lo, hi + 1, dtype=np.int64) * s
        rho = np.arange(n_r, dtype=np.int64)
        rr = np.repeat(rho, ts.size)
        gg = rr - np.tile(ts, n_r)
        ok = (gg >= 0) & (gg < n_c)
        return rect_blocks(Grid(geom.q_len, geom.kv_len, block_q, block_k), rr[ok], gg[ok], B)

    def classify(self, grid, rows, cols):
        # exact when every compile block lies inside one pattern block
        if self.block % grid.block_q or self.block % grid.block_k:
            return None
        hit = ((rows * grid.block_q // self.block - cols * grid.block_k // self.block) % self.stride) == 0
        return np.where(hit, 1, -1).astype(np.int8)

    def program(self):
        return None  # not expressible in the op table; partial blocks (other block sizes) use bitmasks

    def pairs_expr(self, N, causal=False, s=None, B=None):
        import sympy as sp  # lazy: `import spattern` stays light
        s = self.stride if s is None else s
        B = self.block if B is None else B
        n = sp.ceiling(N / B)  # exact when B divides N; else the partial last block counts as full
        m = sp.floor((n - 1) / s)
        if causal:
            return n * B * (B + 1) / 2 + B**2 * (n * m - s * m * (m + 1) / 2)
        return B**2 * (n * (2 * m + 1) - s * m * (m + 1))

    def blocks_expr(self, N, b, causal=False, s=None):
        import sympy as sp  # lazy: `import spattern` stays light
        if b != self.block:
            return None
        s = self.stride if s is None else s
        return _offset_pairs(sp.ceiling(N / b), s, causal=causal)


strided = Strided
blockstrided = BlockStrided

if __name__ == "__main__":
    from spattern.patterns.base import demo_main

    demo_main("strided", [(Strided(8), 'strided.png'), (BlockStrided(4, block=16), 'blockstrided.png')])
