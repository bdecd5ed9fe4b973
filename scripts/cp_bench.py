"""Context-parallel sparse attention on several GPUs: time, bytes exchanged vs the cost model, and
scaling efficiency against one GPU measured in the same run.

    torchrun --standalone --nproc_per_node=2 scripts/cp_bench.py --out results/cp_bench/w2.json
    torchrun --standalone --nproc_per_node=8 scripts/cp_bench.py --out results/cp_bench/w8.json
    python scripts/cp_bench.py --dry-run [--seq-lens 4096]     # no GPU: the plan and the cost model

Per (N, density, family, strategy): q/k/v (1, heads, N, head_dim) bf16 are made on every rank from
one seed; each rank keeps its shard (``spattern.distributed.shard``) and runs
``context_parallel_attention`` forward, and forward + backward, ``--iters`` times after
``--warmup`` (a barrier before each call; CUDA events; the median per rank, the slowest rank's
median is the step time). Rank 0 also runs ``spattern.attention`` on the whole sequence on its
GPU when it fits (``--baseline-max-gib``): efficiency = t_1 / (W * t_W). Bytes: what each rank
sent and received (``ExchangeStats``) per call against ``exchange_cost`` (ratio; target <= 1.2).
NVLink multicast stays off: NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1,
NVSHMEM_DISABLE_NVLS=1 are set in this process's environment before NCCL is initialised.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
os.environ.update(NO_MULTICAST)  # before torch (and NCCL) is imported

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[131072, 262144],
                    help="sequence lengths N (one name torchrun does not take for its own --nnodes etc.)")
    ap.add_argument("--density", type=float, nargs="+", default=[0.10, 0.05],
                    help="computed-block fraction of the non-causal layout (bench_attention.structured_layout)")
    ap.add_argument("--family", nargs="+", default=["band_landmark", "lrs"], choices=["band_landmark", "lrs"],
                    help="layout families (band + landmarks; local + random + sink)")
    ap.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True, help="causal layouts")
    ap.add_argument("--strategy", nargs="+", default=["contiguous", "zigzag"], choices=["contiguous", "zigzag"],
                    help="how the sequence is split over the ranks")
    ap.add_argument("--heads", type=int, default=16, help="query heads")
    ap.add_argument("--kv-heads", type=int, default=16, help="key/value heads (GQA when fewer)")
    ap.add_argument("--head-dim", type=int, default=128, help="head dimension")
    ap.add_argument("--block", type=int, nargs=2, default=[128, 128], help="block_q block_k")
    ap.add_argument("--backend", default="auto", help="spattern.attention backend on each rank")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cuda: NCCL, bf16, CUDA events; cpu: gloo, float32, wall clock (a smoke test of this script)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    ap.add_argument("--iters", type=int, default=10, help="timed calls (median)")
    ap.add_argument("--baseline-max-gib", type=float, default=60.0,
                    help="skip the one-GPU baseline when its tensors would exceed this many GiB")
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 4, 8], help="(dry run) world sizes to plan")
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write (rank 0)")
    ap.add_argument("--dry-run", action="store_true", help="no GPU, no process group: print the plan and cost model")
    a = ap.parse_args(argv)
    for name in ("seq_lens", "density"):
        if any(x <= 0 for x in getattr(a, name)):
            ap.error(f"--{name.replace('_', '-')}: expected positive values, got {getattr(a, name)}")
    if any(d > 1 for d in a.density):
        ap.error(f"--density: expected fractions in (0, 1], got {a.density}")
    if a.heads % a.kv_heads:
        ap.error(f"--kv-heads: expected a divisor of --heads {a.heads}, got {a.kv_heads}")
    if a.iters < 1 or a.warmup < 0:
        ap.error("--iters >= 1 and --warmup >= 0 expected")
    return a


def layouts(a):
    """(n, density, family, layout) for every configuration."""
    from spattern.evaluation.bench_attention import structured_layout

    for n in a.seq_lens:
        for d in a.density:
            for fam in a.family:
                yield n, d, fam, structured_layout(n, d, tuple(a.block), a.causal, fam)


def pair_density(layout) -> float:
    return float(layout.pair_counts().sum() / (layout.n_groups * layout.q_len * layout.kv_len))


def dry_run(a) -> dict:
    import numpy as np

    from spattern.distributed import exchange_cost, make_sharding
    from spattern.utils.console import fmt_si, print_table

    plan, rows = [], []
    for n, d, fam, layout in layouts(a):
        for w in a.worlds:
            for strat in a.strategy:
                sh = make_sharding(n, w, tuple(a.block), strat)
                c = exchange_cost(layout, sh, 1, a.kv_heads, a.head_dim, 2)
                work = sh.owner_of_blocks(a.block[0], layout.n_rows)[layout.block_rows()]
                per_rank_blocks = [int(x) for x in np.bincount(work, minlength=w)]
                rec = {"n": n, "density_target": d, "family": fam, "pattern": layout.pattern,
                       "pair_density": pair_density(layout), "world": w, "strategy": strat,
                       "blocks_per_rank": per_rank_blocks, "cost": c.rows()}
                plan.append(rec)
                worst = max(c.rows(), key=lambda r: r["fwd_recv_bytes"])
                rows.append([n, d, fam, f"{rec['pair_density']:.3f}", w, strat,
                             f"{max(per_rank_blocks) / (sum(per_rank_blocks) / w):.2f}",
                             fmt_si(worst["fwd_recv_bytes"]), fmt_si(worst["dense_ring_recv_bytes"]),
                             f"{worst['fraction_of_dense']:.2f}"])
    print_table("cp_bench plan (dry run): bf16, per call; worst rank",
                ["N", "density", "family", "pairs/N^2", "world", "strategy", "max/mean work",
                 "recv fwd (B)", "dense ring (B)", "fraction"], rows)
    return {"dry_run": True, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
            "env": dict(NO_MULTICAST), "plan": plan}


def fwd_and_fwd_bwd(call):
    """call() -> attention output: (a forward without autograd, a forward + backward of out.sum())."""
    import torch

    def fwd():
        with torch.no_grad():
            call()

    def fwd_bwd():
        call().sum().backward()
    return fwd, fwd_bwd


def measure(a) -> dict:
    import numpy as np
    import torch
    import torch.distributed as dist

    import spattern
    from spattern.distributed import (
        ExchangeStats,
        context_parallel_attention,
        exchange_cost,
        make_sharding,
        shard,
    )
    from spattern.utils.env import capture_env

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = a.device == "cuda"
    if cuda:
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    dtype = torch.bfloat16 if cuda else torch.float32

    def one_ms(fn) -> float:
        if not cuda:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e)

    def timed(fn) -> float:
        """Median ms over a.iters calls (barrier before each), then the slowest rank's median."""
        for _ in range(a.warmup):
            fn()
        ts = []
        for _ in range(a.iters):
            dist.barrier()
            ts.append(one_ms(fn))
        t = torch.tensor([float(np.median(ts))], device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    records = []
    for n, d, fam, layout in layouts(a):
        g = torch.Generator(device=dev).manual_seed(0)
        full = [torch.randn(1, h, n, a.head_dim, device=dev, dtype=dtype, generator=g)
                for h in (a.heads, a.kv_heads, a.kv_heads)]
        base = {"fwd_ms": None, "fwd_bwd_ms": None, "skipped": None}
        gib = 8 * sum(t.numel() for t in full) * full[0].element_size() / 2**30  # inputs, outputs, gradients
        if rank == 0 and gib <= a.baseline_max_gib:
            qkv = [t.clone().requires_grad_() for t in full]
            calls = fwd_and_fwd_bwd(partial(spattern.attention, *qkv, layout, backend=a.backend, trusted=True))
            for key, fn in zip(("fwd_ms", "fwd_bwd_ms"), calls):
                for _ in range(a.warmup):
                    fn()
                base[key] = float(np.median([one_ms(fn) for _ in range(a.iters)]))
            del qkv, calls
        elif rank == 0:
            base["skipped"] = f"needs about {gib:.1f} GiB > --baseline-max-gib {a.baseline_max_gib}"
        dist.barrier()
        for strat in a.strategy:
            sh = make_sharding(n, world, tuple(a.block), strat)
            local = [shard(t, sh, rank).contiguous().requires_grad_() for t in full]
            stats = ExchangeStats()
            fwd, fb = fwd_and_fwd_bwd(partial(context_parallel_attention, *local, layout, sh, backend=a.backend,
                                              stats=stats))
            t_f = timed(fwd)
            calls_f = stats.forward_calls
            sent_f = stats.fwd_sent_bytes / calls_f
            recv_f = stats.fwd_recv_bytes / calls_f
            t_fb = timed(fb)
            c = exchange_cost(layout, sh, 1, a.kv_heads, a.head_dim, full[0].element_size()).rows()[rank]
            mine = {"rank": rank, "n_local": sh.n_local(rank), "fwd_sent": sent_f, "fwd_recv": recv_f,
                    "bwd_sent": stats.bwd_sent_bytes / max(stats.backward_calls, 1),
                    "bwd_recv": stats.bwd_recv_bytes / max(stats.backward_calls, 1), "model": c}
            gathered = [None] * world
            dist.all_gather_object(gathered, mine)
            if rank == 0:
                worst = max(gathered, key=lambda r: r["fwd_recv"])
                ratio = worst["fwd_recv"] / worst["model"]["fwd_recv_bytes"] if worst["model"]["fwd_recv_bytes"] else None
                eff = {k: (base[f"{k}_ms"] / (world * t) if base[f"{k}_ms"] else None)
                       for k, t in (("fwd", t_f), ("fwd_bwd", t_fb))}
                rec = {"n": n, "density_target": d, "family": fam, "pattern": layout.pattern,
                       "pair_density": pair_density(layout), "strategy": strat, "world": world,
                       "cp_fwd_ms": t_f, "cp_fwd_bwd_ms": t_fb, "one_gpu": base, "efficiency": eff,
                       "bytes_vs_model_worst_rank": ratio, "ranks": gathered}
                records.append(rec)
                print(f"N={n} d={d} {fam} {strat} W={world}: fwd {t_f:.2f} ms, fwd+bwd {t_fb:.2f} ms, "
                      f"1 rank {base['fwd_ms']} / {base['fwd_bwd_ms']} ms, efficiency {eff}, "
                      f"bytes/model {ratio}", flush=True)
            del local, fwd, fb
        del full
        if cuda:
            torch.cuda.empty_cache()
    out = {"dry_run": False, "world": world, "device": a.device, "dtype": str(dtype), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                      for k, v in vars(a).items()},
           "multicast_env": {k: os.environ.get(k) for k in NO_MULTICAST}, "records": records}
    if rank == 0:
        out["env"] = capture_env(seed=0)
    dist.destroy_process_group()
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    result = dry_run(a) if a.dry_run else measure(a)
    if a.out is not None and (a.dry_run or int(os.environ.get("RANK", "0")) == 0):
        from spattern.utils.io import write_json

        write_json(a.out, result)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
