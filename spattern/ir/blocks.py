"""Block sets: the analytic compiler's intermediate form, and exact block classifiers for leaves.

A ``BlockSet`` lists the (query block, key block) pairs a pattern may touch, sorted by (row, col),
each with a state:

- ``FULL``: every in-range (query, key) pair of the block is allowed;
- ``PARTIAL``: some but not all in-range pairs are allowed;
- ``UNKNOWN``: present only as a candidate; the exact state (possibly empty) is decided at the end
  by evaluating the whole pattern's predicate on that block. Composition makes these: the union of
  two partial blocks may be full, the intersection of two partial blocks may be empty.

Leaves classify their blocks exactly, so a composed set is a superset of the true blocks, exact
except for UNKNOWN entries, which the compiler resolves. All work is O(nnz) numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARTIAL, FULL, UNKNOWN = 0, 1, 2
INF = 1 << 40  # "no bound" for band limits in host arithmetic


@dataclass(frozen=True)
class Grid:
    """Block geometry: token extents of query-block rows and key-block columns."""

    q_len: int
    kv_len: int
    block_q: int
    block_k: int

    @property
    def n_rows(self) -> int:
        return -(-self.q_len // self.block_q)

    @property
    def n_cols(self) -> int:
        return -(-self.kv_len // self.block_k)

    def row_extent(self, r: np.ndarray):
        """(first, last) query token of rows r, last inclusive and clipped to q_len."""
        lo = r * self.block_q
        return lo, np.minimum(lo + self.block_q, self.q_len) - 1

    def col_extent(self, c: np.ndarray):
        lo = c * self.block_k
        return lo, np.minimum(lo + self.block_k, self.kv_len) - 1


@dataclass
class BlockSet:
    grid: Grid
    rows: np.ndarray  # int64 [n], sorted by (row, col)
    cols: np.ndarray  # int64 [n]
    state: np.ndarray  # int8  [n]: PARTIAL / FULL / UNKNOWN

    @property
    def keys(self) -> np.ndarray:
        return self.rows * self.grid.n_cols + self.cols

    @classmethod
    def from_unsorted(cls, grid, rows, cols, state) -> "BlockSet":
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        state = np.asarray(state, dtype=np.int8)
        keys = rows * grid.n_cols + cols
        order = np.argsort(keys, kind="stable")
        return cls(grid, rows[order], cols[order], state[order])

    @classmethod
    def empty(cls, grid) -> "BlockSet":
        z = np.zeros(0, dtype=np.int64)
        return cls(grid, z, z.copy(), np.zeros(0, dtype=np.int8))

    def _from_keys(self, keys, state) -> "BlockSet":
        n = self.grid.n_cols
        return BlockSet(self.grid, keys // n, keys % n, state.astype(np.int8))

    # --- composition (states combine exactly where they can, UNKNOWN where they cannot) ----
    def union(self, other: "BlockSet") -> "BlockSet":
        keys = np.concatenate([self.keys, other.keys])
        state = np.concatenate([self.state, other.state])
        order = np.argsort(keys, kind="stable")  # two sorted runs: timsort merges them in O(n)
        keys, state = keys[order], state[order]
        first = np.ones(keys.size, dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        starts = np.flatnonzero(first)
        counts = np.diff(np.append(starts, keys.size))
        any_full = np.logical_or.reduceat(state == FULL, starts) if keys.size else np.zeros(0, bool)
        out = np.where(any_full, FULL, np.where(counts > 1, UNKNOWN, state[starts]))
        return self._from_keys(keys[starts], out)

    def intersection(self, other: "BlockSet") -> "BlockSet":
        keys, ia, ib = np.intersect1d(self.keys, other.keys, assume_unique=True, return_indices=True)
        sa, sb = self.state[ia], other.state[ib]
        out = np.where(
            sa == FULL, sb, np.where(sb == FULL, sa, UNKNOWN)
        )  # full & x = x ; partial/unknown & partial/unknown = unknown
        return self._from_keys(keys, out)

    # --- the same rules against per-block states of another pattern (-1 = absent) ----------
    def filter_states(self, other: np.ndarray) -> "BlockSet":
        """Intersect with a pattern whose state on each of these blocks is ``other``."""
        keep = other >= 0
        sa, sb = self.state[keep], other[keep]
        out = np.where(sa == FULL, sb, np.where(sb == FULL, sa, UNKNOWN))
        return BlockSet(self.grid, self.rows[keep], self.cols[keep], out.astype(np.int8))

    def subtract_states(self, other: np.ndarray) -> "BlockSet":
        """Remove a pattern whose state on each of these blocks is ``other``."""
        keep = other != FULL
        sa, sb = self.state[keep], other[keep]
        out = np.where(sb < 0, sa, np.where((sa == FULL) & (sb == PARTIAL), PARTIAL, UNKNOWN))
        return BlockSet(self.grid, self.rows[keep], self.cols[keep], out.astype(np.int8))

    def difference(self, other: "BlockSet") -> "BlockSet":
        ka, kb = self.keys, other.keys
        if kb.size == 0:
            return self
        pos = np.minimum(np.searchsorted(kb, ka), kb.size - 1)
        hit = kb[pos] == ka
        sb = np.where(hit, other.state[pos], -1)
        sa = self.state
        keep = sb != FULL
        # a - absent = a ; full - partial = partial ; otherwise unknown
        out = np.where(sb == -1, sa, np.where((sa == FULL) & (sb == PARTIAL), PARTIAL, UNKNOWN))
        return self._from_keys(ka[keep], out[keep])


# ------------------------------------------------------------------------------------------
# Leaf helpers
# ------------------------------------------------------------------------------------------
def ranges_to_pairs(c_lo: np.ndarray, c_hi: np.ndarray):
    """Rows r = 0..R-1 with inclusive column ranges [c_lo[r], c_hi[r]] -> (rows, cols)."""
    r = np.arange(len(c_lo), dtype=np.int64)
    return rectangles_to_pairs(r, r, c_lo, c_hi)


def rectangles_to_pairs(r0, r1, c0, c1):
    """Inclusive block rectangles [r0, r1] x [c0, c1] (arrays of one length; empty ones skipped)
    -> (rows, cols), one pair per block of each rectangle (overlaps repeat)."""
    r0, r1, c0, c1 = (np.asarray(a, dtype=np.int64) for a in (r0, r1, c0, c1))
    nr, nc = np.maximum(r1 - r0 + 1, 0), np.maximum(c1 - c0 + 1, 0)
    counts = nr * nc
    idx = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    local = np.arange(idx.size, dtype=np.int64) - (np.cumsum(counts) - counts)[idx]
    return r0[idx] + local // nc[idx], c0[idx] + local % nc[idx]


def _finish(grid, rows, cols, present, full) -> BlockSet:
    keep = present
    state = np.where(full[keep], FULL, PARTIAL).astype(np.int8)
    return BlockSet.from_unsorted(grid, rows[keep], cols[keep], state)


def diff_interval(grid: Grid, rows, cols):
    """Range [dmin, dmax] of i - j over block (r, c): it is the whole integer interval."""
    q0, q1 = grid.row_extent(rows)
    k0, k1 = grid.col_extent(cols)
    return q0 - k1, q1 - k0


def band_state(grid: Grid, rows, cols, lo: int, hi: int, mod: int = 1, rem: int = 0) -> np.ndarray:
    """Exact state (-1 absent, PARTIAL, FULL) of blocks under {lo <= i-j <= hi, (i-j) mod m == rem}."""
    dmin, dmax = diff_interval(grid, rows, cols)
    a, b = np.maximum(dmin, lo), np.minimum(dmax, hi)
    if mod == 1:
        present = a <= b
        full = (dmin >= lo) & (dmax <= hi)
    else:
        first = a + np.mod(rem - a, mod)
        present = (a <= b) & (first <= b)
        full = (dmin >= lo) & (dmax <= hi) & (dmin == dmax) & (np.mod(dmin - rem, mod) == 0)
    return np.where(present, np.where(full, FULL, PARTIAL), -1).astype(np.int8)


def band_blocks(grid: Grid, lo: int, hi: int, mod: int = 1, rem: int = 0) -> BlockSet:
    """Blocks of {lo <= i - j <= hi and (i - j) mod ``mod`` == rem}, classified exactly."""
    R = grid.n_rows
    r = np.arange(R, dtype=np.int64)
    q0, q1 = grid.row_extent(r)
    # keys j with some i - j in [lo, hi]: j in [q0 - hi, q1 - lo]
    k_first = np.clip(q0 - hi, 0, grid.kv_len - 1)
    k_last = np.clip(q1 - lo, -1, grid.kv_len - 1)
    c_lo = k_first // grid.block_k
    c_hi = np.where(q1 - lo < 0, -1, k_last // grid.block_k)
    c_hi = np.where(q0 - hi > grid.kv_len - 1, -1, c_hi)
    rows, cols = ranges_to_pairs(c_lo, c_hi)
    st = band_state(grid, rows, cols, lo, hi, mod, rem)
    keep = st >= 0
    return BlockSet(grid, rows[keep], cols[keep], st[keep])


def count_in_range(count_upto, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Number of selected positions in [lo, hi] given count_upto(x) = #selected in [0, x]."""
    return count_upto(hi) - count_upto(lo - 1)


def key_set_state(grid: Grid, rows, cols, count_upto) -> np.ndarray:
    k0, k1 = grid.col_extent(cols)
    n = count_in_range(count_upto, k0, k1)
    return np.where(n > 0, np.where(n == k1 - k0 + 1, FULL, PARTIAL), -1).astype(np.int8)


def query_set_state(grid: Grid, rows, cols, count_upto) -> np.ndarray:
    q0, q1 = grid.row_extent(rows)
    n = count_in_range(count_upto, q0, q1)
    return np.where(n > 0, np.where(n == q1 - q0 + 1, FULL, PARTIAL), -1).astype(np.int8)


def key_set_blocks(grid: Grid, count_upto) -> BlockSet:
    """Blocks of {j selected}, for a key selection given by its counting function."""
    c = np.arange(grid.n_cols, dtype=np.int64)
    st = key_set_state(grid, None, c, count_upto)
    cols1, st1 = c[st >= 0], st[st >= 0]
    rows = np.repeat(np.arange(grid.n_rows, dtype=np.int64), cols1.size)
    return BlockSet(grid, rows, np.tile(cols1, grid.n_rows), np.tile(st1, grid.n_rows))


def query_set_blocks(grid: Grid, count_upto) -> BlockSet:
    """Blocks of {i selected}: a selected query attends every key."""
    r = np.arange(grid.n_rows, dtype=np.int64)
    st = query_set_state(grid, r, None, count_upto)
    rows1, st1 = r[st >= 0], st[st >= 0]
    rows = np.repeat(rows1, grid.n_cols)
    cols = np.tile(np.arange(grid.n_cols, dtype=np.int64), rows1.size)
    return BlockSet(grid, rows, cols, np.repeat(st1, grid.n_cols))


def rect_blocks(grid: Grid, rect_rows: np.ndarray, rect_cols: np.ndarray, B: int, Bk: int | None = None) -> BlockSet:
    """Blocks of a union of disjoint B x Bk token rectangles on a pattern grid (Bk defaults to B).

    Rectangle (rho, gamma) covers queries [rho*B, (rho+1)*B) and keys [gamma*Bk, (gamma+1)*Bk).
    Exact for any compile block sizes: a block is full when the covered in-range area equals
    the block's in-range area.
    """
    rect_rows = np.asarray(rect_rows, dtype=np.int64)
    rect_cols = np.asarray(rect_cols, dtype=np.int64)
    bq, bk = grid.block_q, grid.block_k
    # clip rectangles to the token extents
    q0 = rect_rows * B
    q1 = np.minimum(q0 + B, grid.q_len) - 1
    Bk = B if Bk is None else Bk
    k0 = rect_cols * Bk
    k1 = np.minimum(k0 + Bk, grid.kv_len) - 1
    ok = (q0 <= q1) & (k0 <= k1)
    q0, q1, k0, k1 = q0[ok], q1[ok], k0[ok], k1[ok]
    if q0.size == 0:
        return BlockSet.empty(grid)
    r_lo, r_hi = q0 // bq, q1 // bq
    c_lo, c_hi = k0 // bk, k1 // bk
    nr, nc = r_hi - r_lo + 1, c_hi - c_lo + 1
    per = nr * nc
    idx = np.repeat(np.arange(q0.size), per)
    local = np.arange(idx.size) - np.repeat(np.cumsum(per) - per, per)
    rr = r_lo[idx] + local // nc[idx]
    cc = c_lo[idx] + local % nc[idx]
    br0, br1 = grid.row_extent(rr)
    bc0, bc1 = grid.col_extent(cc)
    area = (np.minimum(q1[idx], br1) - np.maximum(q0[idx], br0) + 1) * (
        np.minimum(k1[idx], bc1) - np.maximum(k0[idx], bc0) + 1
    )
    keys = rr * grid.n_cols + cc
    uniq, inv = np.unique(keys, return_inverse=True)
    covered = np.bincount(inv, weights=area, minlength=uniq.size).astype(np.int64)
    ur, uc = uniq // grid.n_cols, uniq % grid.n_cols
    r0, r1 = grid.row_extent(ur)
    c0, c1 = grid.col_extent(uc)
    full = covered == (r1 - r0 + 1) * (c1 - c0 + 1)
    return BlockSet(grid, ur, uc, np.where(full, FULL, PARTIAL).astype(np.int8))


# ------------------------------------------------------------------------------------------
# Key-interval masks: query i sees key j iff lo[j] <= i < hi[j]
# ------------------------------------------------------------------------------------------
def _clipped(grid: Grid, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    if lo.shape != (grid.kv_len,) or hi.shape != (grid.kv_len,):
        raise ValueError(f"key intervals: expected lo and hi of shape ({grid.kv_len},) (one per key), "
                         f"got {lo.shape} and {hi.shape}")
    return np.clip(lo, 0, grid.q_len), np.clip(hi, 0, grid.q_len)


def interval_segments(grid: Grid, lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The block rows that the mask {lo[j] <= i < hi[j]} touches in each key column, as maximal runs:
    (col, r0, r1) int64 arrays sorted by (col, r0), r1 inclusive. O(kv_len log kv_len): each key's
    rows are one range, and a column's ranges are merged where they overlap or touch."""
    lo, hi = _clipped(grid, lo, hi)
    j = np.flatnonzero(hi > lo)
    c, r0, r1 = j // grid.block_k, lo[j] // grid.block_q, (hi[j] - 1) // grid.block_q
    if j.size == 0:
        return j, j.copy(), j.copy()
    order = np.lexsort((r0, c))
    c, r0, r1 = c[order], r0[order], r1[order]
    stride = grid.n_rows + 1  # r1 + c * stride grows with the column: one running max serves every column
    reach = np.maximum.accumulate(r1 + c * stride) - c * stride
    new = np.ones(c.size, dtype=bool)
    new[1:] = (c[1:] != c[:-1]) | (r0[1:] > reach[:-1] + 1)
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], c.size) - 1
    return c[starts], r0[starts], reach[ends]


def interval_state(grid: Grid, rows, cols, lo, hi) -> np.ndarray:
    """Exact state (-1 absent, PARTIAL, FULL) of blocks (rows, cols) under {lo[j] <= i < hi[j]}: full
    when every key of the column has lo at or before the block's first query and hi after its last."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    sc, s0, s1 = interval_segments(grid, lo, hi)
    stride = grid.n_rows + 1
    at = np.searchsorted(sc * stride + s0, cols * stride + rows, side="right") - 1
    a = np.maximum(at, 0)
    present = (at >= 0) & (sc[a] == cols) & (rows <= s1[a]) if sc.size else np.zeros(rows.size, bool)
    lo_c, hi_c = _clipped(grid, lo, hi)
    starts = np.arange(0, grid.kv_len, grid.block_k)
    max_lo, min_hi = np.maximum.reduceat(lo_c, starts)[cols], np.minimum.reduceat(hi_c, starts)[cols]
    q0, q1 = grid.row_extent(rows)
    full = present & (max_lo <= q0) & (min_hi > q1)
    return np.where(present, np.where(full, FULL, PARTIAL), -1).astype(np.int8)


def interval_blocks(grid: Grid, lo, hi) -> BlockSet:
    """Blocks of {lo[j] <= i < hi[j]} (lo, hi: int64 [kv_len], clipped to [0, q_len]), classified
    exactly, in O(kv_len log kv_len + blocks): what a pattern with ``key_intervals`` compiles to."""
    sc, s0, s1 = interval_segments(grid, lo, hi)
    rows, cols = rectangles_to_pairs(s0, s1, sc, sc)
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    return BlockSet(grid, rows, cols, interval_state(grid, rows, cols, lo, hi))


def interval_signatures(grid: Grid, rows, cols, lo, hi) -> np.ndarray:
    """int32 [n, 2, block_k]: per block and key of its column, the first and end query row (relative
    to the block, clipped to [0, block_q]) that sees the key; (0, 0) when none does, and for keys past
    kv_len. Two blocks with equal signatures have equal token masks (``interval_masks``)."""
    lo_c, hi_c = _clipped(grid, lo, hi)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    k = cols[:, None] * grid.block_k + np.arange(grid.block_k)[None, :]
    kk = np.minimum(k, grid.kv_len - 1)
    q0 = (rows * grid.block_q)[:, None]
    a = np.clip(lo_c[kk] - q0, 0, grid.block_q)
    b = np.clip(hi_c[kk] - q0, 0, grid.block_q)
    seen = (k < grid.kv_len) & (b > a)
    return np.stack([np.where(seen, a, 0), np.where(seen, b, 0)], axis=1).astype(np.int32)


def interval_masks(signatures: np.ndarray, block_q: int) -> np.ndarray:
    """bool [m, block_q, block_k]: the token masks of ``interval_signatures`` rows."""
    r = np.arange(block_q)[None, :, None]
    return (r >= signatures[:, 0, None, :]) & (r < signatures[:, 1, None, :])
