"""The exchange cost of context-parallel sparse attention, from the layout alone.

A rank holds the query blocks and key/value blocks of its units (``sharding.py``). Its query rows
read the key blocks their layout rows list (the union over layout groups, i.e. over batch and
heads); the ones it does not hold are fetched once per call from their owners. Per rank r:

    recv_blocks[r] = |{c : need[r, c] and owner[c] != r}|
    send_blocks[r] = sum over d != r of |{c : need[d, c] and owner[c] == r}|
    bytes(blocks)  = blocks * B * Hkv * block_k * D * 2 (K and V) * dtype bytes

where B is the batch (every fetched block carries all of it) and Hkv the key/value heads.
Forward: rank r receives recv_bytes and sends send_bytes. Backward: the gradients of the fetched
blocks go back to their owners, so r sends its forward recv_bytes and receives its send_bytes.
A dense ring (every rank reads every key) would receive (N - n_r) * B * Hkv * D * 2 * bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spattern.compiler.layout import BlockLayout
from spattern.distributed.sharding import Sharding


def row_owner(layout: BlockLayout, sharding: Sharding) -> np.ndarray:
    """int64 [R]: rank holding each query block row."""
    return sharding.owner_of_blocks(layout.block_q, layout.n_rows)


def col_owner(layout: BlockLayout, sharding: Sharding) -> np.ndarray:
    """int64 [C]: rank holding each key block column."""
    return sharding.owner_of_blocks(layout.block_k, layout.n_cols)


def needed_blocks(layout: BlockLayout, sharding: Sharding) -> np.ndarray:
    """bool [W, C]: key blocks read by each rank's query rows (any group)."""
    need = np.zeros((sharding.world, layout.n_cols), dtype=bool)
    if layout.nnz:
        need[row_owner(layout, sharding)[layout.block_rows()], layout.col_idx.astype(np.int64)] = True
    return need


@dataclass(frozen=True)
class ExchangeCost:
    """Blocks and bytes per rank (int64 arrays [W]) of one forward (+ one backward)."""

    block_bytes: int         # B * Hkv * block_k * D * 2 * dtype bytes
    recv_blocks: np.ndarray  # fetched by the rank in the forward
    send_blocks: np.ndarray  # served by the rank to others in the forward
    dense_bytes: np.ndarray  # what the rank would receive if it read every key (a dense ring)

    @property
    def fwd_recv_bytes(self) -> np.ndarray:
        return self.recv_blocks * self.block_bytes

    @property
    def fwd_send_bytes(self) -> np.ndarray:
        return self.send_blocks * self.block_bytes

    @property
    def bwd_send_bytes(self) -> np.ndarray:  # dK/dV of the fetched blocks go back
        return self.fwd_recv_bytes

    @property
    def bwd_recv_bytes(self) -> np.ndarray:
        return self.fwd_send_bytes

    def rows(self) -> list[dict]:
        """One dict per rank (for tables and JSON)."""
        return [{"rank": r, "recv_blocks": int(self.recv_blocks[r]), "send_blocks": int(self.send_blocks[r]),
                 "fwd_recv_bytes": int(self.fwd_recv_bytes[r]), "fwd_send_bytes": int(self.fwd_send_bytes[r]),
                 "bwd_send_bytes": int(self.bwd_send_bytes[r]), "bwd_recv_bytes": int(self.bwd_recv_bytes[r]),
                 "dense_ring_recv_bytes": int(self.dense_bytes[r]),
                 "fraction_of_dense": (float(self.recv_blocks[r] * self.block_bytes / self.dense_bytes[r])
                                       if self.dense_bytes[r] else None)}
                for r in range(self.recv_blocks.size)]


def exchange_cost(layout: BlockLayout, sharding: Sharding, batch: int, kv_heads: int, head_dim: int,
                  dtype_bytes: int) -> ExchangeCost:
    """The exchange of ``context_parallel_attention`` on this layout and sharding (see module doc)."""
    for name, v in (("batch", batch), ("kv_heads", kv_heads), ("head_dim", head_dim), ("dtype_bytes", dtype_bytes)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if layout.q_len != sharding.n_tokens or layout.kv_len != sharding.n_tokens:
        raise ValueError(f"layout: expected q_len = kv_len = the sharding's n_tokens ({sharding.n_tokens}), "
                         f"got q_len={layout.q_len}, kv_len={layout.kv_len}")
    need = needed_blocks(layout, sharding)
    owner = col_owner(layout, sharding)
    W = sharding.world
    remote = need & (owner[None, :] != np.arange(W)[:, None])  # [W, C]
    recv = remote.sum(axis=1).astype(np.int64)
    send = np.bincount(np.nonzero(remote)[1], minlength=layout.n_cols)  # requests per column
    send = np.bincount(owner, weights=send, minlength=W).astype(np.int64)
    token_bytes = batch * kv_heads * head_dim * 2 * dtype_bytes
    dense = np.array([(sharding.n_tokens - sharding.n_local(r)) * token_bytes for r in range(W)], dtype=np.int64)
    return ExchangeCost(block_bytes=layout.block_k * token_bytes, recv_blocks=recv, send_blocks=send,
                        dense_bytes=dense)
