"""Context-parallel sparse attention on torch.distributed.

    sharding = make_sharding(N, world, block=(layout.block_q, layout.block_k), strategy="zigzag")
    q_r, k_r, v_r = (shard(x, sharding, rank) for x in (q, k, v))      # (B, H|Hkv, n_r, D)
    out_r, lse_r = context_parallel_attention(q_r, k_r, v_r, layout, sharding, return_lse=True)

Each rank holds the queries, keys and values of its tokens (``sharding.py``). The layout tells
which key blocks the rank's query rows read (``plan.py``); the rank fetches exactly those it does
not hold, in one ``all_to_all_single`` (K and V together, uneven splits, nothing else travels:
both sides derive the block lists from the layout), and runs ``spattern.attention`` on its queries
over the gathered blocks with its sub-layout. One softmax over all the keys a row reads, so no
LSE merge is needed: out_r and lse_r equal the single-process result on the rank's rows (empty
rows: zeros and LSE = -inf). Backward: dQ stays local; dK/dV of fetched blocks go back to their
owners through the reverse ``all_to_all_single`` and are added to the owners' own dK/dV.
Bytes per call are those of ``cost.exchange_cost`` (counted in ``ExchangeStats``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from spattern.compiler.layout import BlockLayout
from spattern.distributed.plan import RankPlan, rank_plan
from spattern.distributed.sharding import Sharding
from spattern.runtime.api import attention


@dataclass
class ExchangeStats:
    """Bytes this rank actually put on / took off the wire (self-copies excluded), summed over calls."""

    fwd_sent_bytes: int = 0
    fwd_recv_bytes: int = 0
    bwd_sent_bytes: int = 0
    bwd_recv_bytes: int = 0
    forward_calls: int = 0
    backward_calls: int = 0


def shard(x: torch.Tensor, sharding: Sharding, rank: int, dim: int = 2) -> torch.Tensor:
    """The rank's shard of a full-sequence tensor: ``x.index_select(dim, token_index(rank))``."""
    if x.shape[dim] != sharding.n_tokens:
        raise ValueError(f"x.shape[{dim}]: expected the sharding's n_tokens {sharding.n_tokens}, got {x.shape[dim]}")
    return x.index_select(dim, torch.from_numpy(sharding.token_index(rank)).to(x.device))


def _blocks(x: torch.Tensor, bk: int) -> torch.Tensor:
    """(B, Hkv, n, D) -> (nb, B, Hkv, bk, D), the last block zero-padded."""
    B, Hkv, n, D = x.shape
    nb = -(-n // bk)
    if nb * bk != n:
        x = torch.cat([x, x.new_zeros(B, Hkv, nb * bk - n, D)], dim=2)
    return x.reshape(B, Hkv, nb, bk, D).permute(2, 0, 1, 3, 4)


def _a2a(send: torch.Tensor, send_counts, recv_counts, group) -> torch.Tensor:
    """Uneven all-to-all along dim 0 (counts in rows of dim 0)."""
    out = send.new_empty((sum(recv_counts), *send.shape[1:]))
    dist.all_to_all_single(out, send.contiguous(), output_split_sizes=list(recv_counts),
                           input_split_sizes=list(send_counts), group=group)
    return out


class _GatherBlocks(torch.autograd.Function):
    """kv_local (Lk, 2, B, Hkv, bk, D) -> gathered (Cl, 2, B, Hkv, bk, D); backward returns the
    gathered gradients to the owners and adds them to the local gradient."""

    @staticmethod
    def forward(ctx, kv_local, plan: RankPlan, index: dict, group, stats):
        send = kv_local.index_select(0, index["send"])  # blocks for the other ranks (none for self)
        recv = _a2a(send, plan.send_counts, plan.recv_counts, group)
        gathered = torch.cat([kv_local, recv]).index_select(0, index["gather"])
        if stats is not None:
            stats.fwd_sent_bytes += send.numel() * send.element_size()
            stats.fwd_recv_bytes += recv.numel() * recv.element_size()
            stats.forward_calls += 1
        ctx.plan, ctx.index, ctx.group, ctx.stats, ctx.n_local = plan, index, group, stats, kv_local.shape[0]
        return gathered

    @staticmethod
    def backward(ctx, grad):
        plan, index = ctx.plan, ctx.index
        Lk = ctx.n_local
        # scatter the gathered gradient back to cat(local, received) positions
        full = grad.new_zeros((Lk + sum(plan.recv_counts), *grad.shape[1:]))
        full.index_add_(0, index["gather"], grad)
        back = _a2a(full[Lk:], plan.recv_counts, plan.send_counts, ctx.group)  # to the owners
        dlocal = full[:Lk].clone()
        dlocal.index_add_(0, index["send"], back)
        if ctx.stats is not None:
            ctx.stats.bwd_sent_bytes += full[Lk:].numel() * full.element_size()
            ctx.stats.bwd_recv_bytes += back.numel() * back.element_size()
            ctx.stats.backward_calls += 1
        return dlocal, None, None, None, None


def _check(q, k, v, layout: BlockLayout, sharding: Sharding, rank: int, world: int) -> None:
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout: expected a BlockLayout, got {type(layout).__name__}")
    if not isinstance(sharding, Sharding):
        raise TypeError(f"sharding: expected a Sharding (make_sharding), got {type(sharding).__name__}")
    if sharding.world != world:
        raise ValueError(f"sharding.world: expected the group's size {world}, got {sharding.world}")
    if layout.q_len != sharding.n_tokens or layout.kv_len != sharding.n_tokens:
        raise ValueError(f"layout: expected q_len = kv_len = sharding.n_tokens = {sharding.n_tokens} "
                         f"(self-attention), got q_len={layout.q_len}, kv_len={layout.kv_len}")
    if sharding.unit % layout.block_q or sharding.unit % layout.block_k:
        raise ValueError(f"sharding.unit: expected a multiple of the layout's blocks "
                         f"({layout.block_q}, {layout.block_k}), got {sharding.unit}")
    if not getattr(layout, "_validated", False):
        layout.validate()  # once per layout (the sub-layouts are built from it and trusted)
        layout.mark_validated()
    n = sharding.n_local(rank)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D tensor (B, heads, n_local, D), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.shape[2] != n:
            raise ValueError(f"{name}.shape[2]: expected rank {rank}'s shard length {n}, got {t.shape[2]}")
    if k.shape != v.shape:
        raise ValueError(f"k/v: expected one shape, got {tuple(k.shape)} and {tuple(v.shape)}")


def context_parallel_attention(q, k, v, layout: BlockLayout, sharding: Sharding, *, group=None,
                               scale: float | None = None, backend: str = "auto", return_lse: bool = False,
                               stats: ExchangeStats | None = None):
    """This rank's shard of ``spattern.attention(q, k, v, layout)`` over a context-parallel group.

    q (B, H, n_r, D), k/v (B, Hkv, n_r, D): the rank's tokens (``shard``; n_r = sharding.n_local(rank)),
    ``layout`` the whole sequence's (q_len = kv_len = sharding.n_tokens), identical on every rank.
    Returns out (B, H, n_r, D) (and lse fp32 (B, H, n_r)). ``group``: the process group of the
    context-parallel ranks (default: the world). ``stats`` accumulates the bytes exchanged."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    _check(q, k, v, layout, sharding, rank, world)
    plan = rank_plan(layout, sharding, rank)
    bk = layout.block_k
    kv_local = torch.stack([_blocks(k, bk), _blocks(v, bk)], dim=1)  # (Lk, 2, B, Hkv, bk, D)
    key = (sharding.n_tokens, sharding.world, sharding.unit, sharding.strategy, rank)
    index = layout.cached(q.device, "cp-index", lambda: {
        "send": torch.from_numpy(plan.send_index).to(q.device),
        "gather": torch.from_numpy(plan.gather_index).to(q.device)}, *key)  # device copies, once
    kv = _GatherBlocks.apply(kv_local, plan, index, group, stats)  # (Cl, 2, B, Hkv, bk, D)
    Cl, _, B, Hkv, _, D = kv.shape
    kg = kv[:, 0].permute(1, 2, 0, 3, 4).reshape(B, Hkv, Cl * bk, D)
    vg = kv[:, 1].permute(1, 2, 0, 3, 4).reshape(B, Hkv, Cl * bk, D)
    return attention(q, kg, vg, plan.sub, scale=scale, backend=backend, return_lse=return_lse, trusted=True)


def gathered_tokens(layout: BlockLayout, sharding: Sharding, rank: int) -> np.ndarray:
    """int64 [Cl * block_k]: the global key position behind each key of the rank's gathered
    buffer (positions >= kv_len are padding): for checks and for position-dependent callers."""
    plan = rank_plan(layout, sharding, rank)
    return (plan.cols[:, None] * layout.block_k + np.arange(layout.block_k)[None, :]).reshape(-1)
