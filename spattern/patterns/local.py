"""local(window): a sliding window around the diagonal (Longformer, Mistral, BigBird's band).

Query i attends keys j with |i - j| < window (2*window - 1 keys in the interior), or with
``causal=True`` keys i - window < j <= i (``window`` keys, as in Mistral's sliding window).
``local(w) & causal`` and ``local(w, causal=True)`` give the same mask.

Pairs (N >= window): N*(2w - 1) - w*(w - 1); causal: N*w - w*(w - 1)/2. O(N*w).
Blocks (b x b, b | N): K = floor((w + b - 2)/b) block diagonals on each side:
R*(2K + 1) - K*(K + 1); causal R*(K + 1) - K*(K + 1)/2, R = N/b.

Run ``python -m spattern.patterns.local`` to draw it.
"""

from __future__ import annotations

from dataclasses import dataclass


from spattern.ir import program as P
from spattern.ir.blocks import Grid, band_blocks, band_state
from spattern.patterns.base import Pattern, check_int
from spattern.patterns.registry import register


@register("local")
@dataclass(frozen=True, repr=False)
class Local(Pattern):
    window: int
    causal: bool = False

    name = "local"
    positional = ("window",)

    def __post_init__(self):
        check_int(self.window, "local(window)", minimum=1)
        if not isinstance(self.causal, bool):
            raise TypeError(f"local(causal=...): expected a bool, got {self.causal!r}")

    @property
    def is_causal(self):
        return self.causal

    @property
    def band(self):
        return (0 if self.causal else -(self.window - 1), self.window - 1)

    def allowed(self, q_idx, kv_idx, geom):
        lo, hi = self.band
        d = q_idx - kv_idx
        return (d >= lo) & (d <= hi)

    def blocks(self, geom, block_q, block_k):
        lo, hi = self.band
        return band_blocks(Grid(geom.q_len, geom.kv_len, block_q, block_k), lo, hi)

    def classify(self, grid, rows, cols):
        lo, hi = self.band
        return band_state(grid, rows, cols, lo, hi)

    def program(self):
        lo, hi = self.band
        return [(P.BAND, lo, hi, 0)]

    def pairs_expr(self, N, causal=False, w=None):
        import sympy as sp  # lazy: `import spattern` stays light
        w = self.window if w is None else w
        if causal or self.causal:
            return sp.Piecewise((N * (N + 1) / 2, N < w), (N * w - w * (w - 1) / 2, True))
        return sp.Piecewise((N**2, N < w), (N * (2 * w - 1) - w * (w - 1), True))

    def blocks_expr(self, N, b, causal=False, w=None):
        import sympy as sp  # lazy: `import spattern` stays light
        w = self.window if w is None else w
        R = sp.ceiling(N / b)
        K = sp.floor((w + b - 2) / b)
        if causal or self.causal:
            return sp.Piecewise((R * (R + 1) / 2, R <= K), (R * (K + 1) - K * (K + 1) / 2, True))
        return sp.Piecewise((R**2, R <= K), (R * (2 * K + 1) - K * (K + 1), True))


local = Local

if __name__ == "__main__":
    from spattern.patterns.base import demo_main

    demo_main("local", [(Local(16), 'local.png')])
