"""landmark(every=..., positions=[...]): global tokens (Longformer's global attention, BigBird's
ITC global tokens, Child et al.'s "summary" positions).

A token is global when its position is a multiple of ``every`` or is listed in ``positions``.
Global tokens attend to all keys and are attended by all queries:
allowed(i, j) = global(i) or global(j).

With G global tokens below N: pairs 2*G*N - G^2; causal G*N - G*(G - 1)/2 (position-independent:
the causal row and column of each global token together hold N + 1 pairs). G = floor((N-1)/e) + 1
for ``every=e``. O(N) for a fixed number of globals, O(N^2/e) for a fixed spacing e.
Blocks (b | e, b | N): global rows and columns of blocks: 2*G*R - G^2; causal G*R - G*(G - 1)/2.

Run ``python -m spattern.patterns.landmark`` to draw it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spattern.ir import program as P
from spattern.ir.blocks import FULL, PARTIAL, BlockSet, Grid, count_in_range
from spattern.patterns.base import Pattern, as_int_tuple, check_int
from spattern.patterns.registry import register


@register("landmark")
@dataclass(frozen=True, repr=False)
class Landmark(Pattern):
    every: int | None = None
    positions: tuple[int, ...] = ()

    name = "landmark"

    def __post_init__(self):
        if self.every is not None:
            check_int(self.every, "landmark(every)", minimum=1)
        object.__setattr__(self, "positions", tuple(sorted(set(as_int_tuple(self.positions, "positions")))))
        if any(p < 0 for p in self.positions):
            raise ValueError(f"landmark(positions): expected positions >= 0, got {list(self.positions)}")
        if self.every is None and not self.positions:
            raise ValueError("landmark: expected every=<int> and/or positions=[...], got neither")

    # positions that are not already multiples of `every`
    @property
    def _extra(self) -> np.ndarray:
        pos = np.asarray(self.positions, dtype=np.int64)
        if self.every is not None:
            pos = pos[pos % self.every != 0]
        return pos

    def is_global(self, t):
        out = (t % self.every == 0) if self.every is not None else (t != t)
        for p in self.positions:
            out = out | (t == p)
        return out

    def count_upto(self, x: np.ndarray) -> np.ndarray:
        """Number of global positions in [0, x] (x may be -1)."""
        x = np.asarray(x, dtype=np.int64)
        n = np.where(x >= 0, x // self.every + 1, 0) if self.every is not None else np.zeros_like(x)
        return n + np.searchsorted(self._extra, x, side="right")

    def allowed(self, q_idx, kv_idx, geom):
        return self.is_global(q_idx + 0 * kv_idx) | self.is_global(kv_idx + 0 * q_idx)

    def blocks(self, geom, block_q, block_k):
        # rows holding a global query take every column; other rows the columns holding a global
        # key; built already sorted by (row, col), then classified exactly
        g = Grid(geom.q_len, geom.kv_len, block_q, block_k)
        r, c = np.arange(g.n_rows, dtype=np.int64), np.arange(g.n_cols, dtype=np.int64)
        q0, q1 = g.row_extent(r)
        k0, k1 = g.col_extent(c)
        global_row = count_in_range(self.count_upto, q0, q1) > 0
        key_cols = c[count_in_range(self.count_upto, k0, k1) > 0]
        counts = np.where(global_row, g.n_cols, key_cols.size)
        rows = np.repeat(r, counts)
        k = np.arange(rows.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = np.where(global_row[rows], k, key_cols[np.minimum(k, max(key_cols.size - 1, 0))] if key_cols.size else k)
        st = self.classify(g, rows, cols)
        return BlockSet(g, rows, cols, st)

    def classify(self, grid, rows, cols):
        # exact: nq global rows and nk global columns in an h x w block allow
        # nq*w + nk*h - nq*nk pairs (global rows and columns overlap in nq*nk pairs)
        q0, q1 = grid.row_extent(rows)
        k0, k1 = grid.col_extent(cols)
        h, w = q1 - q0 + 1, k1 - k0 + 1
        nq = count_in_range(self.count_upto, q0, q1)
        nk = count_in_range(self.count_upto, k0, k1)
        n = nq * w + nk * h - nq * nk
        return np.where(n > 0, np.where(n == h * w, FULL, PARTIAL), -1).astype(np.int8)

    def program(self):
        # listed positions merge into ranges: positions 0..63 are one KEY_RANGE and one QUERY_RANGE
        runs = []
        for p in self._extra.tolist():
            if runs and p == runs[-1][1]:
                runs[-1][1] = p + 1
            else:
                runs.append([p, p + 1])

        def terms(mod_op, range_op):
            out = [(mod_op, self.every, 0, 0)] if self.every is not None else []
            out += [(range_op, a, b, 0) for a, b in runs]
            return out[:1] + [t for x in out[1:] for t in (x, (P.OR, 0, 0, 0))]

        prog = terms(P.KEY_MOD, P.KEY_RANGE) + terms(P.QUERY_MOD, P.QUERY_RANGE) + [(P.OR, 0, 0, 0)]
        return prog if len(prog) <= P.MAX_PROGRAM else None

    def n_global(self, N, e=None):
        import sympy as sp  # lazy: `import spattern` stays light
        e = self.every if e is None else e
        G = sp.floor((N - 1) / e) + 1 if self.every is not None else 0
        # listed positions count only when they lie inside the sequence
        return G + sp.Add(*[sp.Piecewise((1, N > p), (0, True)) for p in self._extra.tolist()])

    def pairs_expr(self, N, causal=False, e=None):
        G = self.n_global(N, e)
        return G * N - G * (G - 1) / 2 if causal else 2 * G * N - G**2

    def blocks_expr(self, N, b, causal=False):
        import sympy as sp  # lazy: `import spattern` stays light
        if self.positions or self.every is None or self.every % b:
            return None
        R = sp.ceiling(N / b)
        G = self.n_global(N)
        return G * R - G * (G - 1) / 2 if causal else 2 * G * R - G**2


landmark = Landmark

if __name__ == "__main__":
    from spattern.patterns.base import demo_main

    demo_main("landmark", [(Landmark(every=32, positions=(5,)), 'landmark.png')])
