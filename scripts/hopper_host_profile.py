"""Host time of one block-sparse forward call on the GPU (issue 13): is a small cell bound by the host?

    python3 scripts/hopper_host_profile.py [--n 4096] [--density 0.5] [--calls 300] [--json out.json]

For the benchmark's local | random | sink layout (bf16, 16 heads, D 128, 128 x 128 blocks) and each kernel
(Hopper, mma.sync), through the public entry ``spattern.attention(..., backend="cupy", trusted=True)`` as
the benchmark calls it:
  host_us    wall time per call with no synchronisation (what the host spends to enqueue one call),
             median over --calls calls, after warm-up;
  gpu_us     the kernel alone: CUDA events around --calls back-to-back calls, divided by --calls (the GPU
             stays busy when host_us < gpu_us);
  do_bench   the benchmark's timing (triton do_bench median, L2 cleared between calls);
and a cProfile of --calls Hopper calls (top functions by own time), to show where host time goes.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time

import torch

from spattern.evaluation.bench_attention import structured_layout
from spattern.evaluation.timing import median_ms
from spattern.runtime.api import attention
from spattern.runtime.hopper_backend import forced
from spattern.utils.io import write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    lay = structured_layout(a.n, a.density, (128, 128), a.causal, "lrs")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 16, a.n, 128, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    scale = 128 ** -0.5
    res = dict(n=a.n, density=a.density, causal=a.causal, pattern=lay.pattern, calls=a.calls, kernels={})
    for kernel in ("hopper", "mma_sync"):
        def call():
            with forced(kernel):
                return attention(q, k, v, lay, scale=scale, backend="cupy", trusted=True)
        for _ in range(20):
            call()
        torch.cuda.synchronize()
        host = []
        for _ in range(a.calls):
            t0 = time.perf_counter()
            call()
            host.append(time.perf_counter() - t0)
            if len(host) % 50 == 0:
                torch.cuda.synchronize()  # keep the queue short, so enqueueing never blocks
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(a.calls):
            call()
        e.record()
        torch.cuda.synchronize()
        res["kernels"][kernel] = dict(host_us=statistics.median(host) * 1e6,
                                      gpu_us_back_to_back=s.elapsed_time(e) * 1e3 / a.calls,
                                      do_bench_us=median_ms(call, None, 5, 30) * 1e3)
        if kernel == "hopper":
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(a.calls):
                call()
            prof.disable()
            torch.cuda.synchronize()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
            res["cprofile_hopper_top_tottime"] = buf.getvalue()
        print(kernel, json.dumps(res["kernels"][kernel]), flush=True)
    print(res["cprofile_hopper_top_tottime"])
    if a.json:
        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
