"""Process bodies for the gloo tests (run under ``torch.multiprocessing.spawn``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def init(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def finish(ok: bool) -> None:
    """End a worker's process group: a barrier first when this rank got through (a rank that tears
    its gloo connections down while another still uses them can abort that one at exit:
    "terminate called without an active exception"), then destroy it. No barrier after an error:
    the other ranks may never reach it.

    A rank that got through then leaves with ``os._exit(0)``, skipping interpreter finalization:
    objects that outlive the group (FSDP2's pending collectives, DTensor meshes) can still hold
    gloo work whose C++ threads abort the process while Python is torn down (CI once saw rank 1 of
    the FSDP2 checkpoint test end with SIGABRT this way). Every caller writes its rank's record
    before this call; an error keeps the normal exit, so its traceback reaches ``mp.spawn``."""
    if ok:
        dist.barrier()
    dist.destroy_process_group()
    if ok:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def cp_attention(rank: int, world: int, port: int, out_dir: str) -> None:
    """Every case, both strategies: forward and backward against the one-process reference;
    bytes counted beside the cost model. Writes rank<r>.json with the figures."""
    import spattern
    from spattern.distributed import (
        ExchangeStats,
        context_parallel_attention,
        exchange_cost,
        make_sharding,
        shard,
    )
    from tests.distributed.cases import cases, inputs

    init(rank, world, port)
    D, records = 16, []
    try:
        for ci, (name, layout, B, H, Hkv) in enumerate(cases()):
            n = layout.q_len
            q, k, v, gout = inputs(n, B, H, Hkv, D, seed=ci)
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]
            ref, ref_lse = spattern.attention(*leaves, layout, backend="reference", return_lse=True)
            (ref * gout).sum().backward()
            for strategy in ("contiguous", "zigzag"):
                sh = make_sharding(n, world, (layout.block_q, layout.block_k), strategy)
                ql, kl, vl = (shard(t, sh, rank).clone().requires_grad_() for t in (q, k, v))
                stats = ExchangeStats()
                out, lse = context_parallel_attention(ql, kl, vl, layout, sh, backend="reference",
                                                      return_lse=True, stats=stats)
                (out * shard(gout, sh, rank)).sum().backward()
                cost = exchange_cost(layout, sh, B, Hkv, D, q.element_size()).rows()[rank]
                err = {"out": (out - shard(ref, sh, rank)).abs().max().item(),
                       "dq": (ql.grad - shard(leaves[0].grad, sh, rank)).abs().max().item(),
                       "dk": (kl.grad - shard(leaves[1].grad, sh, rank)).abs().max().item(),
                       "dv": (vl.grad - shard(leaves[2].grad, sh, rank)).abs().max().item()}
                ref_l = shard(ref_lse, sh, rank)
                records.append({
                    "case": name, "strategy": strategy, "rank": rank, "n_local": sh.n_local(rank), "err": err,
                    "lse_inf_same": bool(torch.equal(torch.isinf(lse), torch.isinf(ref_l))),
                    "lse_err": (lse - ref_l)[torch.isfinite(ref_l)].abs().max().item() if torch.isfinite(ref_l).any()
                    else 0.0,
                    "empty_rows": int(torch.isinf(ref_l).sum()),
                    "nan": bool(torch.isnan(out).any() or torch.isnan(ql.grad).any() or torch.isnan(kl.grad).any()),
                    "measured": {"fwd_sent": stats.fwd_sent_bytes, "fwd_recv": stats.fwd_recv_bytes,
                                 "bwd_sent": stats.bwd_sent_bytes, "bwd_recv": stats.bwd_recv_bytes},
                    "model": {"fwd_sent": cost["fwd_send_bytes"], "fwd_recv": cost["fwd_recv_bytes"],
                              "bwd_sent": cost["bwd_send_bytes"], "bwd_recv": cost["bwd_recv_bytes"],
                              "dense_ring_recv": cost["dense_ring_recv_bytes"]}})
        ok = True
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(records))
        finish(locals().get("ok", False))
