"""random(k, seed, block): BigBird-style random blocks, deterministic per seed.

The pattern has its own grid of ``block``-token blocks. Each query block attends ``k`` distinct key
blocks chosen uniformly at random (Floyd's sampling driven by ``numpy.random.default_rng(seed)``,
row by row, so a row's choice does not depend on how many rows follow). Compiled with the same
block size every block is full. Pairs (block | N, k <= N/block): N*k*block; blocks R*k. O(N*k*b).
``random(...) & causal`` keeps the chosen blocks that are not in the future (fewer than k).

Run ``python -m spattern.patterns.random`` to draw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from spattern.ir.blocks import Grid, rect_blocks
from spattern.patterns.base import Pattern, check_int
from spattern.patterns.registry import register


@lru_cache(maxsize=64)
def _choices(k: int, seed: int, n_rows: int, n_cols: int) -> np.ndarray:
    """int64 [n_rows, min(k, n_cols)]: the chosen key blocks of each query block (Floyd)."""
    kk = min(k, n_cols)
    rng = np.random.default_rng(seed)
    u = rng.random((n_rows, max(kk, 1)))[:, :kk]
    chosen = np.empty((n_rows, kk), dtype=np.int64)
    for step, t in enumerate(range(n_cols - kk, n_cols)):
        r = np.floor(u[:, step] * (t + 1)).astype(np.int64)
        dup = (chosen[:, :step] == r[:, None]).any(axis=1)
        chosen[:, step] = np.where(dup, t, r)
    chosen.sort(axis=1)
    chosen.setflags(write=False)
    return chosen


@lru_cache(maxsize=16)
def _chosen_matrix(k: int, seed: int, n_rows: int, n_cols: int) -> np.ndarray:
    table = _choices(k, seed, n_rows, n_cols)
    m = np.zeros((n_rows, n_cols), dtype=bool)
    m[np.repeat(np.arange(n_rows), table.shape[1]), table.reshape(-1)] = True
    m.setflags(write=False)
    return m


@register("random")
@dataclass(frozen=True, repr=False)
class Random(Pattern):
    k: int
    seed: int = 0
    block: int = 64

    name = "random"
    positional = ("k",)

    def __post_init__(self):
        check_int(self.k, "random(k)", minimum=0)
        check_int(self.seed, "random(seed)", minimum=0)
        check_int(self.block, "random(block)", minimum=1)

    def table(self, q_len: int, kv_len: int) -> np.ndarray:
        B = self.block
        return _choices(self.k, self.seed, -(-q_len // B), -(-kv_len // B))

    def chosen(self, q_len: int, kv_len: int) -> np.ndarray:
        """bool [n_rows, n_cols]: whether pattern block (rho, gamma) is chosen."""
        return _chosen_matrix(self.k, self.seed, -(-q_len // self.block), -(-kv_len // self.block))

    def allowed(self, q_idx, kv_idx, geom):
        m = self.chosen(geom.q_len, geom.kv_len)
        rows = np.clip(q_idx // self.block, 0, m.shape[0] - 1)
        cols = np.clip(kv_idx // self.block, 0, m.shape[1] - 1)
        return m[rows, cols]

    def classify(self, grid, rows, cols):
        # exact when every compile block lies inside one pattern block
        if self.block % grid.block_q or self.block % grid.block_k:
            return None
        m = self.chosen(grid.q_len, grid.kv_len)
        hit = m[rows * grid.block_q // self.block, cols * grid.block_k // self.block]
        return np.where(hit, 1, -1).astype(np.int8)

    def blocks(self, geom, block_q, block_k):
        table = self.table(geom.q_len, geom.kv_len)
        rho = np.repeat(np.arange(table.shape[0], dtype=np.int64), table.shape[1])
        return rect_blocks(Grid(geom.q_len, geom.kv_len, block_q, block_k), rho, table.reshape(-1), self.block)

    def pairs_expr(self, N, causal=False):
        return None if causal else N * self.k * self.block

    def blocks_expr(self, N, b, causal=False):
        if causal or b != self.block:
            return None
        import sympy as sp

        return sp.ceiling(N / b) * self.k


random = Random

if __name__ == "__main__":
    from spattern.patterns.base import demo_main

    demo_main("random", [(Random(2, seed=0, block=16), 'random.png')])
