"""The per-rank plan of context-parallel attention, computed from the layout on every rank alike.

For rank r of a sharding (``sharding.py``):

- ``rows``: the global query block rows r holds (ascending; its shard's order);
- ``cols``: the key blocks those rows read (``cost.needed_blocks``, ascending), plus, when they
  read none, r's own first block (so the gathered buffer is never empty; no communication);
- ``recv_from[s]``: the blocks of ``cols`` that rank s != r owns (ascending) — what r receives;
- ``send_to[d]``: r's own blocks that rank d reads (ascending) — what r sends; the receiver
  orders them the same way, so no indices travel;
- ``sub``: the layout of r's rows over the gathered buffer of ``cols`` (rows and columns
  renumbered). Programs evaluate absolute positions, which renumbering breaks, so PROGRAM blocks
  become BITMASK blocks (their token masks from ``layout.block_masks``), as do FULL blocks in the
  partial last key block (the gathered buffer pads it to block_k keys). The result is exactly
  the global layout's token mask restricted to r's queries and the gathered keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spattern.compiler.layout import BITMASK, FULL, BlockLayout, pack_bits
from spattern.distributed.cost import col_owner, needed_blocks, row_owner
from spattern.distributed.sharding import Sharding


@dataclass(frozen=True)
class RankPlan:
    rank: int
    rows: np.ndarray            # int64 [Rl]: global query block rows of this rank
    local_cols: np.ndarray      # int64 [Lk]: global key blocks this rank owns (its shard's key blocks)
    cols: np.ndarray            # int64 [Cl]: global key blocks of the gathered buffer
    recv_from: list             # [W] int64 arrays: blocks of `cols` received from each rank (empty for self)
    send_to: list               # [W] int64 arrays: own blocks sent to each rank (empty for self)
    gather_index: np.ndarray    # int64 [Cl]: position of cols[i] in cat(local blocks, received blocks)
    send_index: np.ndarray      # int64 [sum send]: local block positions, in send order (rank by rank)
    sub: BlockLayout            # the rank's layout over the gathered buffer

    @property
    def send_counts(self) -> list[int]:
        return [int(a.size) for a in self.send_to]

    @property
    def recv_counts(self) -> list[int]:
        return [int(a.size) for a in self.recv_from]


def _sub_layout(layout: BlockLayout, rows: np.ndarray, cols: np.ndarray, n_local: int) -> BlockLayout:
    G = layout.n_groups
    colmap = np.full(layout.n_cols, -1, dtype=np.int64)
    colmap[cols] = np.arange(cols.size)
    rp = layout.row_ptr.astype(np.int64)
    starts, counts = rp[:, rows], rp[:, rows + 1] - rp[:, rows]  # [G, Rl]
    flat_counts = counts.reshape(-1)
    offs = np.repeat(starts.reshape(-1) - np.concatenate([[0], np.cumsum(flat_counts)[:-1]]), flat_counts)
    idx = offs + np.arange(int(flat_counts.sum()))  # entries of the global layout, in new order
    new_cols = colmap[layout.col_idx[idx].astype(np.int64)]
    assert (new_cols >= 0).all(), "a needed block is missing from the gathered columns"
    kinds = layout.block_kind[idx]
    partial_last = (layout.kv_len % layout.block_k != 0) & (layout.col_idx[idx] == layout.n_cols - 1)
    as_mask = (kinds != FULL) | partial_last
    mask_pos = np.flatnonzero(as_mask)
    bitmasks = np.zeros((mask_pos.size, layout.block_q, layout.words_per_row), dtype=np.uint32)
    for s in range(0, mask_pos.size, 2048):  # bounded host memory
        sl = slice(s, s + 2048)
        bitmasks[sl] = pack_bits(layout.block_masks(idx[mask_pos[sl]]))
    new_kind = np.where(as_mask, BITMASK, FULL).astype(np.uint8)
    mask_idx = np.full(idx.size, -1, dtype=np.int32)
    mask_idx[mask_pos] = np.arange(mask_pos.size, dtype=np.int32)
    row_ptr = np.zeros((G, rows.size + 1), dtype=np.int64)
    row_ptr[:, 1:] = np.cumsum(counts, axis=1)
    row_ptr += np.concatenate([[0], np.cumsum(counts.sum(axis=1))[:-1]])[:, None]
    sub = BlockLayout(q_len=int(n_local), kv_len=int(cols.size * layout.block_k), block_q=layout.block_q,
                      block_k=layout.block_k, group_shape=tuple(layout.group_shape),
                      row_ptr=row_ptr.astype(np.int32), col_idx=new_cols.astype(np.int32), block_kind=new_kind,
                      mask_idx=mask_idx, bitmasks=bitmasks, programs=np.zeros((G, 1, 4), dtype=np.int32),
                      program_len=np.zeros(G, dtype=np.int32), pattern=f"cp-shard({layout.pattern})")
    sub.validate()
    sub.mark_validated()
    return sub


def rank_plan(layout: BlockLayout, sharding: Sharding, rank: int) -> RankPlan:
    """The plan of ``rank`` (cached on the layout per sharding and rank)."""
    key = (sharding.n_tokens, sharding.world, sharding.unit, sharding.strategy, int(rank))
    return layout.cached("cpu", "cp-plan", lambda: _build(layout, sharding, int(rank)), *key)


def _build(layout: BlockLayout, sharding: Sharding, rank: int) -> RankPlan:
    W = sharding.world
    need = needed_blocks(layout, sharding)  # [W, C]
    cowner = col_owner(layout, sharding)
    rows = np.flatnonzero(row_owner(layout, sharding) == rank)
    local_cols = sharding.local_blocks(rank, layout.block_k)
    cols = np.flatnonzero(need[rank])
    if cols.size == 0:
        cols = local_cols[:1]
    recv_from = [cols[cowner[cols] == s] if s != rank else cols[:0] for s in range(W)]
    send_to = [np.flatnonzero(need[d] & (cowner == rank)) if d != rank else cols[:0] for d in range(W)]
    # position of each gathered column in cat(local blocks, received blocks in rank order)
    local_pos = np.full(layout.n_cols, -1, dtype=np.int64)
    local_pos[local_cols] = np.arange(local_cols.size)
    recv_all = np.concatenate(recv_from) if W else cols[:0]
    recv_pos = np.full(layout.n_cols, -1, dtype=np.int64)
    recv_pos[recv_all] = local_cols.size + np.arange(recv_all.size)
    gather_index = np.where(cowner[cols] == rank, local_pos[cols], recv_pos[cols])
    send_index = local_pos[np.concatenate(send_to)] if W else cols[:0]
    n_local = sharding.n_local(rank)
    return RankPlan(rank=rank, rows=rows, local_cols=local_cols, cols=cols, recv_from=recv_from, send_to=send_to,
                    gather_index=gather_index, send_index=send_index,
                    sub=_sub_layout(layout, rows, cols, n_local))
