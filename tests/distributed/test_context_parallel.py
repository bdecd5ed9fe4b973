"""Context-parallel sparse attention: plans, cost model, and 2/4 gloo processes against the
one-process reference (float64: forward, LSE, dQ, dK, dV; bytes sent == the cost model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spattern
from spattern.distributed import (
    context_parallel_attention,
    exchange_cost,
    gathered_tokens,
    make_sharding,
    needed_blocks,
    rank_plan,
    shard,
)
from spattern.testing.strategies import geometries, layouts, patterns
from tests.distributed import workers
from tests.distributed.cases import cases, inputs

TOL = 1e-12  # float64; the sub-layout keeps each row's keys in ascending order


def _self_layouts():
    geo = geometries(min_len=40, max_len=300, same_len=True)
    return layouts(patterns(max_depth=2, heads_stacks=True, max_len=300), geo)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=_self_layouts(), data=st.data(), strategy=st.sampled_from(["contiguous", "zigzag"]))
def test_sub_layouts_are_the_global_mask_restricted_to_each_rank(layout, data, strategy):
    """For every rank: its sub-layout's token mask == the global mask on (its queries, the gathered
    keys), padding keys never attended; the shards partition the sequence; the needed blocks of
    the cost model are exactly the blocks holding an allowed pair (dense twin)."""
    bq, bk = layout.block_q, layout.block_k
    units = -(-layout.q_len // int(np.lcm(bq, bk)))
    world = data.draw(st.integers(1, min(4, units)), label="world")
    sh = make_sharding(layout.q_len, world, (bq, bk), strategy)
    dense = layout.to_dense()  # (G, N, N)
    seen = np.concatenate([sh.token_index(r) for r in range(world)])
    assert np.array_equal(np.sort(seen), np.arange(layout.q_len))
    need = needed_blocks(layout, sh)
    for r in range(world):
        rows, keys = sh.token_index(r), gathered_tokens(layout, sh, r)
        real = keys < layout.kv_len
        want = np.zeros((dense.shape[0], rows.size, keys.size), dtype=bool)
        want[:, :, real] = dense[:, rows][:, :, keys[real]]
        assert np.array_equal(rank_plan(layout, sh, r).sub.to_dense(), want)
        kb = np.zeros((layout.n_cols,), dtype=bool)
        hit = np.flatnonzero(dense[:, rows].any(axis=(0, 1)))
        kb[hit // bk] = True
        assert np.array_equal(need[r], kb)


def test_sharding_padding_rule_and_zigzag_balance():
    sh = make_sharding(500, 4, (32, 64), "contiguous")  # units of 64: 8 units, the last of 52 tokens
    assert sh.unit == 64 and [sh.n_local(r) for r in range(4)] == [128, 128, 128, 116]
    zz = make_sharding(500, 4, (32, 64), "zigzag")
    assert [list(zz.units(r)) for r in range(4)] == [[0, 7], [1, 6], [2, 5], [3, 4]]
    assert zz.n_local(0) == 116 and zz.token_index(0)[-1] == 499
    with pytest.raises(ValueError, match="at least one unit per rank"):
        make_sharding(90, 4, (32, 32))
    with pytest.raises(ValueError, match="strategy"):
        make_sharding(512, 2, strategy="ring")
    layout = spattern.compile("local(512) & causal", 4096, block=(64, 64))
    work = {s: np.bincount(make_sharding(4096, 4, (64, 64), s).owner_of_blocks(64, layout.n_rows)[layout.block_rows()])
            for s in ("contiguous", "zigzag")}
    assert work["zigzag"].max() <= work["contiguous"].max()
    causal = spattern.compile("causal", 4096, block=(64, 64))
    work = {s: np.bincount(make_sharding(4096, 4, (64, 64), s).owner_of_blocks(64, causal.n_rows)[causal.block_rows()])
            for s in ("contiguous", "zigzag")}
    assert work["zigzag"].max() / work["zigzag"].min() < 1.1 < work["contiguous"].max() / work["contiguous"].min()


def test_cost_model_counts_remote_blocks_and_is_below_the_dense_ring():
    layout = spattern.compile("local(128) & causal", 1024, block=(64, 64))
    sh = make_sharding(1024, 4, (64, 64))
    c = exchange_cost(layout, sh, batch=2, kv_heads=3, head_dim=16, dtype_bytes=2)
    # local(128) & causal: each shard of 256 tokens reads 2 blocks (128 tokens) before its first
    assert list(c.recv_blocks) == [0, 2, 2, 2] and list(c.send_blocks) == [2, 2, 2, 0]
    assert c.block_bytes == 64 * 2 * 3 * 16 * 2 * 2
    assert (c.fwd_recv_bytes < c.dense_bytes).all() and list(c.bwd_send_bytes) == list(c.fwd_recv_bytes)
    with pytest.raises(ValueError, match="kv_heads"):
        exchange_cost(layout, sh, 1, 0, 16, 2)


def test_one_rank_is_the_reference_and_inputs_are_checked(single_group):
    _name, layout, B, H, Hkv = cases()[1]
    q, k, v, _ = inputs(layout.q_len, B, H, Hkv, 16, seed=0)
    sh = make_sharding(layout.q_len, 1, (layout.block_q, layout.block_k))
    out, lse = context_parallel_attention(q, k, v, layout, sh, backend="reference", return_lse=True)
    ref, ref_lse = spattern.attention(q, k, v, layout, backend="reference", return_lse=True)
    assert torch.allclose(out, ref, atol=TOL, rtol=0) and torch.allclose(lse, ref_lse, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="sharding.world"):
        context_parallel_attention(q, k, v, layout, make_sharding(layout.q_len, 2, (32, 64)))
    with pytest.raises(ValueError, match=r"q.shape\[2\]"):
        context_parallel_attention(q[:, :, :10], k, v, layout, sh)
    with pytest.raises(ValueError, match="q_len = kv_len"):
        context_parallel_attention(q, k, v, spattern.compile("causal", 512, block=(32, 64)), sh)
    assert torch.equal(shard(q, sh, 0), q)


@pytest.mark.parametrize("world", [2, 4])
def test_context_parallel_matches_the_reference_forward_and_backward(spawn, world):
    """Every case (compiled patterns with PROGRAM blocks, per-head and per-batch groups, random
    masks with empty rows/columns, top-k, GQA, odd N), contiguous and zig-zag: output, LSE, dQ,
    dK, dV equal the one-process float64 reference; bytes sent/received == the cost model."""
    recs = [r for per_rank in spawn(workers.cp_attention, world) for r in per_rank]
    assert len(recs) == world * len(cases()) * 2
    for r in recs:
        where = f"{r['case']} {r['strategy']} rank {r['rank']}"
        assert max(r["err"].values()) < TOL, (where, r["err"])
        assert r["lse_inf_same"] and r["lse_err"] < TOL and not r["nan"], where
        assert r["measured"] == {k: r["model"][k] for k in r["measured"]}, where
    assert any(r["empty_rows"] for r in recs)  # empty rows were exercised
    assert any(r["n_local"] % 32 for r in recs)  # a partial last block was exercised
    assert any(r["measured"]["fwd_recv"] < r["model"]["dense_ring_recv"] for r in recs)
