"""`spattern bench attention`: block-sparse kernel vs SDPA (flash, cuDNN) vs FlexAttention.

Layouts are structured: a token band around the diagonal (|i - j| <= W) plus landmark tokens
(the first L queries attend everywhere, every query attends the first L keys), optionally
causal; W is chosen so that the fraction of computed blocks hits the requested density.
The layout is compiled by spattern from the pattern ``local(W + 1) | landmark(positions=[0..L))``
(``& causal``), so the benchmark runs exactly what a user of the toolkit gets; its partial blocks
carry the mask program (a band OR a key range OR a query range [AND causal]).

TFLOP/s are counted on computed blocks: 4 * block_q * block_k * D per computed block per head
(two matmuls), the same count for every method (dense methods: the dense count for density 1).
Speedups are SDPA-flash time / method time.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from typing import Sequence

import numpy as np

from spattern.compiler import program as _prog
from spattern.compiler.layout import BlockLayout

INF = _prog.INF
# opcodes (docs/design.md, "Mask programs"); re-exported for the kernel tests and scripts
TRUE, FALSE, BAND, DIFF_MOD, KEY_MOD, QUERY_MOD, KEY_RANGE, QUERY_RANGE, OR, AND, ANDNOT, NOT = range(12)
eval_program = _prog.evaluate  # the numpy/torch evaluator of mask programs


def block_density(layout) -> float:
    """Fraction of the (groups x rows x cols) block grid that is computed."""
    G = int(np.prod(layout.group_shape))
    R = -(-layout.q_len // layout.block_q)
    C = -(-layout.kv_len // layout.block_k)
    return int(layout.row_ptr[-1, -1]) / (G * R * C)


# ============================================================================ layouts
def layout_from_masks(masks: np.ndarray, block_q: int, block_k: int, group_shape=(1, 1),
                      programs: Sequence | None = None, bitmask_every: int = 0) -> BlockLayout:
    """A BlockLayout built block by block from dense boolean masks (G, q_len, kv_len), with the
    block kinds chosen here rather than by the compiler: the kernel tests' independent twin.

    Partial blocks of a group with a program become PROGRAM blocks (every ``bitmask_every``-th
    partial block a BITMASK block instead, to exercise both paths), otherwise BITMASK.
    ``programs[g]`` must reproduce ``masks[g]`` exactly (checked).
    """
    masks = np.asarray(masks, bool)
    G, q_len, kv_len = masks.shape
    assert G == int(np.prod(group_shape))
    R, C = -(-q_len // block_q), -(-kv_len // block_k)
    W = -(-block_k // 32)
    pad = np.zeros((G, R * block_q, C * block_k), bool)
    pad[:, :q_len, :kv_len] = masks
    inr = np.zeros((R * block_q, C * block_k), bool)
    inr[:q_len, :kv_len] = True
    if programs is None:
        programs = [[] for _ in range(G)]
    P = max(1, max(len(p) for p in programs))
    prog_arr = np.zeros((G, P, 4), np.int32)
    prog_len = np.zeros(G, np.int32)
    ii, jj = np.meshgrid(np.arange(q_len), np.arange(kv_len), indexing="ij")
    for g, p in enumerate(programs):
        if len(p):
            assert np.array_equal(eval_program(p, ii, jj), masks[g]), f"program of group {g} != mask"
            prog_arr[g, : len(p)] = np.asarray(p, np.int32)
            prog_len[g] = len(p)
    row_ptr = np.zeros((G, R + 1), np.int32)
    cols, kinds, midx, bms = [], [], [], []
    npart = 0
    for g in range(G):
        row_ptr[g, 0] = len(cols)
        for r in range(R):
            for c in range(C):
                blk = pad[g, r * block_q:(r + 1) * block_q, c * block_k:(c + 1) * block_k]
                ib = inr[r * block_q:(r + 1) * block_q, c * block_k:(c + 1) * block_k]
                if not blk.any():
                    continue
                cols.append(c)
                if np.array_equal(blk, ib):
                    kinds.append(0)
                    midx.append(-1)
                    continue
                npart += 1
                if prog_len[g] > 0 and not (bitmask_every and npart % bitmask_every == 0):
                    kinds.append(1)
                    midx.append(-1)
                else:
                    kinds.append(2)
                    midx.append(len(bms))
                    bits = np.zeros((block_q, W * 32), bool)
                    bits[:, :block_k] = blk
                    sh = np.arange(32, dtype=np.uint64)
                    words = (bits.reshape(block_q, W, 32).astype(np.uint64) << sh).sum(-1)
                    bms.append(words.astype(np.uint32))
            row_ptr[g, r + 1] = len(cols)
    bitmasks = np.stack(bms).astype(np.uint32) if bms else np.zeros((0, block_q, W), np.uint32)
    return BlockLayout(q_len, kv_len, block_q, block_k, tuple(group_shape), row_ptr,
                       np.asarray(cols, np.int32), np.asarray(kinds, np.uint8),
                       np.asarray(midx, np.int32), bitmasks, prog_arr, prog_len).validate()


def layout_dense_mask(layout) -> np.ndarray:
    """(G, q_len, kv_len) token mask of a layout (small N; tests)."""
    return layout.to_dense()


def band_landmark_pattern(W: int, L: int, causal: bool, dense: bool = False):
    """|i - j| <= W, or i < L, or j < L (the landmark tokens); ``& causal`` when causal."""
    import spattern

    p = spattern.full() if dense else spattern.local(W + 1) | spattern.landmark(positions=list(range(L)))
    return p & spattern.causal if causal else p


def band_landmark_layout(n: int, block=(128, 128), W: int = 256, L: int = 64, causal: bool = False,
                         dense: bool = False) -> BlockLayout:
    """The band+landmark pattern (or a dense one) compiled by spattern (analytic path)."""
    import spattern

    return spattern.compile(band_landmark_pattern(W, L, causal, dense), n, block=tuple(block))


def structured_layout(n: int, density: float, block=(128, 128), causal: bool = False) -> BlockLayout:
    """Band+landmark layout whose computed-block fraction (of the full grid) is close to `density`."""
    if density >= 0.999:
        return band_landmark_layout(n, block, causal=causal, dense=True)
    bq, bk = block
    L = max(bk, int(round(0.02 * density * n / bk)) * bk)  # a few landmark blocks
    lo, hi = 0, n
    best = None
    for _ in range(40):  # bisection on the band half-width
        W = (lo + hi) // 2
        lay = band_landmark_layout(n, block, W=W, L=L, causal=False)
        d = block_density(lay)
        best = (W, d) if best is None or abs(d - density) < abs(best[1] - density) else best
        if d < density:
            lo = W + 1
        else:
            hi = W - 1
        if lo > hi:
            break
    return band_landmark_layout(n, block, W=best[0], L=L, causal=causal)


# ============================================================================ timing
def _median_ms(fn, inputs, warmup=5, iters=30):
    import torch

    for i in range(warmup):
        fn(*inputs[i % len(inputs)])
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        args = inputs[i % len(inputs)]
        s.record()
        fn(*args)
        e.record()
        times.append((s, e))
    torch.cuda.synchronize()
    return float(np.median([s.elapsed_time(e) for s, e in times]))


def run_benchmark(seqs=(4096, 8192, 16384, 32768), head_dims=(64, 128), densities=(1.0, 0.5, 0.25, 0.1),
                  causals=(False, True), heads=16, batch=1, block=(128, 128), methods=None,
                  warmup=5, iters=30, n_buffers=3, check=True, log=print, json_path=None) -> dict:
    """Run the grid; returns {env, config, results}. With json_path, the JSON is rewritten after each row
    (atomically), so an interrupted run keeps what it measured."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from spattern.runtime import cupy_backend

    methods = list(methods or ["spattern", "sdpa_flash", "sdpa_cudnn", "flex"])
    dev = torch.device("cuda")
    dtype = torch.bfloat16
    results = []
    flex_fn = None
    if "flex" in methods:
        try:
            from spattern.runtime import flex as flexmod

            flex_fn = flexmod
        except Exception as e:  # pragma: no cover
            log(f"flex unavailable: {e}")
            methods.remove("flex")
    for n in seqs:
        for D in head_dims:
            bufs = []
            for _ in range(n_buffers):
                q = torch.randn(batch, heads, n, D, device=dev, dtype=dtype)
                k = torch.randn(batch, heads, n, D, device=dev, dtype=dtype)
                v = torch.randn(batch, heads, n, D, device=dev, dtype=dtype)
                bufs.append((q, k, v))
            scale = 1.0 / math.sqrt(D)
            for causal in causals:
                dense_t = {}
                for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION),
                                      ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
                    if name not in methods:
                        continue

                    def f(q, k, v, _b=backend):
                        with sdpa_kernel([_b]):
                            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
                    try:
                        dense_t[name] = _median_ms(f, bufs, warmup, iters)
                    except Exception as e:
                        log(f"{name} failed at N={n} D={D}: {type(e).__name__}: {e}")
                        dense_t[name] = None
                for dens in densities:
                    t0 = time.time()
                    lay = structured_layout(n, dens, block, causal)
                    nnz = lay.nnz
                    flops = 4.0 * block[0] * block[1] * D * nnz * heads * batch
                    row = dict(N=n, D=D, causal=causal, density_target=dens, density=block_density(lay),
                               nnz_blocks=nnz, block=list(block), flops_computed=flops, ms={}, tflops={},
                               speedup_vs_flash={})
                    row["ms"].update(dense_t)
                    if "spattern" in methods:
                        f = lambda q, k, v: cupy_backend.attention_cupy(q, k, v, lay, scale, False, None)
                        try:
                            if check:
                                q, k, v = bufs[0]
                                out, _ = f(q, k, v)
                                ref = flex_or_sdpa_check(q, k, v, lay, scale, causal, dens)
                                if ref is not None:
                                    row["max_abs_err_vs_check"] = float((out.float() - ref.float()).abs().max())
                            row["ms"]["spattern"] = _median_ms(f, bufs, warmup, iters)
                            torch.cuda.synchronize()
                            h0 = time.perf_counter()
                            for _ in range(20):
                                f(*bufs[0])
                            row["spattern_host_us_per_call"] = (time.perf_counter() - h0) / 20 * 1e6
                            torch.cuda.synchronize()
                        except Exception as e:
                            log(f"spattern failed at N={n} D={D} d={dens}: {type(e).__name__}: {e}")
                            row["ms"]["spattern"] = None
                    if "flex" in methods:
                        try:
                            # A fresh compile per layout: otherwise dynamo's recompile limit is hit after a
                            # few layouts and flex silently falls back to its dense eager path.
                            torch._dynamo.reset()
                            ff = flex_fn.make_flex_callable(lay, batch, heads, n, n, dev)
                            try:
                                ff(*bufs[0], scale)
                            except Exception as e:  # default Triton config too large (seen at D=64)
                                log(f"flex default config failed ({type(e).__name__}); retrying with num_stages=2")
                                torch._dynamo.reset()
                                ff = flex_fn.make_flex_callable(lay, batch, heads, n, n, dev, {"num_stages": 2})
                                row["flex_kernel_options"] = {"num_stages": 2}
                            row["ms"]["flex"] = _median_ms(lambda q, k, v: ff(q, k, v, scale), bufs, warmup, iters)
                        except Exception as e:
                            log(f"flex failed at N={n} D={D} d={dens}: {type(e).__name__}: {str(e)[:300]}")
                            row["ms"]["flex"] = None
                    fl = row["ms"].get("sdpa_flash")
                    for m, t in row["ms"].items():
                        if t:
                            row["tflops"][m] = flops / (t * 1e-3) / 1e12
                            if fl:
                                row["speedup_vs_flash"][m] = fl / t
                    row["wall_s"] = time.time() - t0
                    results.append(row)
                    log(format_row(row))
                    if json_path:
                        _dump(json_path, dict(partial=True, results=results))
            del bufs
            torch.cuda.empty_cache()
    import os

    env = dict(torch=torch.__version__, device=torch.cuda.get_device_name(), python=platform.python_version(),
               compile_route=cupy_backend.last_compile_route, arg_mode=cupy_backend.ARG_MODE,
               kernel_config_defaults={str(k): v for k, v in cupy_backend.DEFAULT_CONFIG.items()},
               kernel_config_override=os.environ.get("SPATTERN_KERNEL_CONFIG"))
    try:
        import cupy

        env["cupy"] = cupy.__version__
    except Exception:
        pass
    return dict(env=env, config=dict(heads=heads, batch=batch, block=list(block), dtype="bfloat16",
                                     warmup=warmup, iters=iters, n_buffers=n_buffers), results=results)


def _dump(path, obj):
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def flex_or_sdpa_check(q, k, v, lay, scale, causal, dens):
    """Dense check for density 1 (SDPA math on the same inputs); None otherwise (tests cover sparse)."""
    import torch.nn.functional as F

    if dens < 0.999 or q.shape[2] > 8192:
        return None
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def format_header() -> str:
    return (f"{'N':>6} {'D':>4} {'causal':>6} {'dens':>5} | {'spattern':>9} {'flash':>8} {'cudnn':>8} {'flex':>8} ms"
            f" | {'sp TF/s':>7} {'x flash':>7} {'x cudnn':>7} {'x flex':>7}")


def format_row(r: dict) -> str:
    ms = r["ms"]

    def f(x):
        return f"{x:8.3f}" if x else f"{'-':>8}"
    sp = ms.get("spattern")
    xf = r["speedup_vs_flash"].get("spattern")
    xc = (ms["sdpa_cudnn"] / sp) if sp and ms.get("sdpa_cudnn") else None
    xx = (ms["flex"] / sp) if sp and ms.get("flex") else None
    g = lambda x: f"{x:7.2f}" if x else f"{'-':>7}"
    return (f"{r['N']:>6} {r['D']:>4} {str(r['causal']):>6} {r['density']:5.2f} | {f(sp):>9} {f(ms.get('sdpa_flash'))} "
            f"{f(ms.get('sdpa_cudnn'))} {f(ms.get('flex'))}    | {g(r['tflops'].get('spattern'))} {g(xf)} {g(xc)} {g(xx)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="spattern bench attention", description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    ap.add_argument("--head-dim", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--density", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    ap.add_argument("--causal", choices=["no", "yes", "both"], default="both")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--block", type=int, nargs=2, default=[128, 128], metavar=("BQ", "BK"))
    ap.add_argument("--methods", nargs="+", default=["spattern", "sdpa_flash", "sdpa_cudnn", "flex"])
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--json", default="bench_attention.json", help="output JSON path")
    a = ap.parse_args(argv)
    causals = {"no": (False,), "yes": (True,), "both": (False, True)}[a.causal]
    print(format_header(), flush=True)
    res = run_benchmark(a.seq, a.head_dim, a.density, causals, a.heads, a.batch, tuple(a.block), a.methods,
                        a.warmup, a.iters, log=lambda s: print(s, flush=True), json_path=a.json)
    res["argv"] = sys.argv if argv is None else ["spattern", "bench", "attention", *argv]
    _dump(a.json, res)
    print("\n" + format_header())
    for r in res["results"]:
        print(format_row(r))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
