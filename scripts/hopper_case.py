"""One small case of the Hopper forward kernel (issue 13), for the first GPU runs and compute-sanitizer.

    python3 scripts/hopper_case.py [--d 128] [--bk 128] [--dtype bf16] [--n 300] [--heads 2] [--kv-heads 1]
                                   [--pattern "(local(40) | sink(3)) & causal"] [--packed] [--no-twin]

Prints one JSON line: the configuration, the kernel's max error against the float64 reference
(runtime/reference.py), the mma.sync kernel's error on the same inputs, and whether every output
element was written. Exit 0 when the Hopper error is within 2x the mma.sync kernel's error + a floor.
SPATTERN_HOPPER_PINGPONG / _OVERLAP / _PERSISTENT / _STAGES / _MAX_CTAS select the variant, as for the
library.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

import spattern
from spattern.runtime import cupy_backend, hopper_backend
from spattern.runtime.reference import attention_reference


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--bk", type=int, default=128)
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--kv-heads", type=int, default=1)
    ap.add_argument("--pattern", default="(local(40) | sink(3)) & causal")
    ap.add_argument("--lrs", type=float, default=None, metavar="DENSITY",
                    help="instead of --pattern: the benchmark's local | random | sink layout at this density")
    ap.add_argument("--causal", action="store_true", help="with --lrs: & causal")
    ap.add_argument("--packed", action="store_true", help="two packed sequences of n and n // 3 tokens")
    ap.add_argument("--no-twin", action="store_true", help="skip the mma.sync kernel (sanitizer runs)")
    ap.add_argument("--no-check", action="store_true", help="run the kernel only, no reference (ncu runs)")
    a = ap.parse_args(argv)
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float16
    if a.lrs is not None:
        from spattern.evaluation.bench_attention import structured_layout

        lay = structured_layout(a.n, a.lrs, (128, a.bk), a.causal, "lrs")
        a.pattern = lay.pattern
    else:
        lay = spattern.compile(a.pattern, a.n, block=(128, a.bk))
    g = torch.Generator(device="cuda").manual_seed(0)
    scale = a.d ** -0.5
    if a.packed:
        lens = [a.n, a.n // 3]
        T = sum(lens)
        cu = torch.tensor([0, lens[0], T], dtype=torch.int32, device="cuda")
        q = torch.randn(T, a.heads, a.d, device="cuda", generator=g).to(dt)
        k = torch.randn(T, a.kv_heads, a.d, device="cuda", generator=g).to(dt)
        v = torch.randn(T, a.kv_heads, a.d, device="cuda", generator=g).to(dt)
        out = torch.full_like(q, float("nan"))
    else:
        cu = None
        q = torch.randn(1, a.heads, a.n, a.d, device="cuda", generator=g).to(dt)
        k = torch.randn(1, a.kv_heads, a.n, a.d, device="cuda", generator=g).to(dt)
        v = torch.randn(1, a.kv_heads, a.n, a.d, device="cuda", generator=g).to(dt)
        out = torch.full_like(q, float("nan"))
    t0 = time.time()
    o, lse = hopper_backend.attention_hopper(q, k, v, lay, scale, True, cu, out=out)
    torch.cuda.synchronize()
    t_first = time.time() - t0
    if a.no_check:
        print(json.dumps(dict(first_call_s=round(t_first, 3), all_written=bool(not torch.isnan(o).any()))))
        return 0
    ref, ref_lse = attention_reference(q.double(), k.double(), v.double(), lay, scale, True, cu)
    res = dict(config=dict(d=a.d, bk=a.bk, dtype=a.dtype, n=a.n, heads=a.heads, kv_heads=a.kv_heads,
                           pattern=a.pattern, packed=a.packed, stages=hopper_backend.stages(a.d, a.bk),
                           pingpong=hopper_backend.pingpong(), overlap=hopper_backend.overlap(),
                           persistent=hopper_backend.persistent(), max_ctas=hopper_backend.max_ctas()),
               first_call_s=round(t_first, 3), all_written=bool(not torch.isnan(o).any()),
               hopper_err=float((o.double() - ref).abs().nan_to_num(math.inf).max()))
    fin = torch.isfinite(ref_lse)
    res["hopper_lse_err"] = float((lse.double()[fin] - ref_lse.double()[fin]).abs().nan_to_num(math.inf).max()) \
        if fin.any() else 0.0
    res["lse_empty_rows_ok"] = bool(torch.all(torch.isneginf(lse[~fin])))
    ok = res["all_written"] and res["lse_empty_rows_ok"]
    if not a.no_twin:
        o2, _ = cupy_backend.attention_cupy(q, k, v, lay, scale, True, cu)
        res["mma_sync_err"] = float((o2.double() - ref).abs().max())
        ok = ok and res["hopper_err"] <= 2 * res["mma_sync_err"] + (4e-3 if dt == torch.bfloat16 else 1e-3)
    res["ok"] = bool(ok)
    print(json.dumps(res), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
