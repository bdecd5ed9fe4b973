"""`spattern bench attention`: block-sparse kernels vs SDPA (flash, cuDNN) vs FlexAttention.

Two layout families, both compiled by spattern from a pattern (what a user of the toolkit gets):

- ``band_landmark``: ``local(W + 1) | landmark(positions=[0..L))`` (|i - j| <= W, or i < L, or j < L),
  whose partial blocks carry a mask program;
- ``lrs``: ``local(w) | random(2, seed=3) | sink(128)`` (issue 12's family), whose partial blocks
  are bitmasks (random blocks have no program).

Either is optionally ``& causal``; the band width is bisected so that the fraction of computed
blocks of the non-causal pattern hits the requested density. Methods:

- ``spattern``: the CUDA kernels with the mma.sync forward kernel (``--backward``: forward + backward
  through autograd);
- ``spattern_hopper``: the same with the sm_90a wgmma/TMA forward kernel (``runtime/hopper_backend.py``);
- ``flex``: FlexAttention with the BlockMask converted from the layout (``runtime/flex.py``);
- ``flex_native``: FlexAttention with a mask_mod written for the same token mask (not converted
  from the layout) and ``create_block_mask``; the reference for "flex's own speed";
- ``sdpa_flash``, ``sdpa_cudnn``: dense SDPA (causal when the layout is).

``--backward`` times one forward plus ``torch.autograd.grad`` of every method. Times are medians
(``evaluation/timing.py``). TFLOP/s count computed blocks: 4 * block_q * block_k * D per block and
head forward, 2.5x that more for the backward (the FlashAttention convention), the same count for
every method. Ratios are within one run.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from spattern.compiler.layout import BlockLayout
from spattern.evaluation.timing import median_ms, timing_method

SINK = 128
RANDOM_K, RANDOM_SEED, RANDOM_BLOCK = 2, 3, 64
FAMILIES = ("lrs", "band_landmark")


def block_density(layout) -> float:
    """Fraction of the (groups x rows x cols) block grid that is computed."""
    G = int(np.prod(layout.group_shape))
    return int(layout.row_ptr[-1, -1]) / (G * layout.n_rows * layout.n_cols)


# ============================================================================ layouts
def band_landmark_pattern(W: int, L: int, causal: bool, dense: bool = False):
    """|i - j| <= W, or i < L, or j < L (the landmark tokens); ``& causal`` when causal."""
    from spattern.patterns import causal as causal_pattern
    from spattern.patterns import full, landmark, local

    p = full() if dense else local(W + 1) | landmark(positions=list(range(L)))
    return p & causal_pattern if causal else p


def band_landmark_layout(n: int, block=(128, 128), W: int = 256, L: int = 64, causal: bool = False,
                         dense: bool = False) -> BlockLayout:
    """The band+landmark pattern (or a dense one) compiled by spattern (analytic path)."""
    from spattern.compiler.compile import compile as compile_pattern

    return compile_pattern(band_landmark_pattern(W, L, causal, dense), n, block=tuple(block))


def lrs_text(w: int, causal: bool) -> str:
    t = f"local({w}) | random({RANDOM_K}, seed={RANDOM_SEED}) | sink({SINK})"
    return f"({t}) & causal" if causal else t


def _bisect(make, n: int, density: float):
    """The band parameter in [1, n] whose non-causal layout's block density is closest to `density`."""
    lo, hi, best = 1, n, None
    for _ in range(40):
        W = (lo + hi) // 2
        d = block_density(make(W, False))
        best = (W, d) if best is None or abs(d - density) < abs(best[1] - density) else best
        if d < density:
            lo = W + 1
        else:
            hi = W - 1
        if lo > hi:
            break
    return best[0]


def structured_layout(n: int, density: float, block=(128, 128), causal: bool = False,
                      family: str = "band_landmark") -> BlockLayout:
    """A layout of `family` whose computed-block fraction (non-causal) is close to `density`."""
    from spattern.compiler.compile import compile as compile_pattern

    if density >= 0.999:
        return band_landmark_layout(n, block, causal=causal, dense=True)
    if family == "lrs":
        make = lambda w, c: compile_pattern(lrs_text(w, c), n, block=tuple(block))  # noqa: E731
        return make(_bisect(make, n, density), causal)
    bk = block[1]
    L = max(bk, int(round(0.02 * density * n / bk)) * bk)  # a few landmark blocks
    make = lambda W, c: band_landmark_layout(n, block, W=W, L=L, causal=c)  # noqa: E731
    return make(_bisect(make, n, density), causal)


def native_mask_mod(layout: BlockLayout, device):
    """A mask_mod written for the layout's pattern from the pattern's own definition (not from the
    layout): band/landmark arithmetic, the sink, and the random pattern's own block table."""
    import torch

    text = layout.pattern
    causal = "causal" in text
    if text.startswith("(local(") or text.startswith("local("):
        if "random" in text:  # lrs
            from spattern.patterns.random import Random

            w = int(text.split("local(")[1].split(")")[0])
            tab = torch.from_numpy(np.array(Random(RANDOM_K, seed=RANDOM_SEED, block=RANDOM_BLOCK)
                                            .chosen(layout.q_len, layout.kv_len))).to(device)

            def mm(b, h, q, kv):
                ok = ((q - kv).abs() < w) | (kv < SINK) | tab[q // RANDOM_BLOCK, kv // RANDOM_BLOCK]
                return ok & (q >= kv) if causal else ok
            return mm
        W = int(text.split("local(")[1].split(")")[0]) - 1
        L = text.count(",") + 1 if "positions" in text else 0

        def mm(b, h, q, kv):
            ok = ((q - kv).abs() <= W) | (q < L) | (kv < L)
            return ok & (q >= kv) if causal else ok
        return mm
    if "full" in text:
        return (lambda b, h, q, kv: q >= kv) if causal else (lambda b, h, q, kv: q >= 0)
    raise ValueError(f"no native mask_mod for pattern {text!r}")


# ============================================================================ runners
def _grad_runner(fwd):
    """fn(q, k, v, do): forward + autograd.grad of q, k, v (no accumulation into .grad)."""
    import torch

    def run(q, k, v, do):
        out = fwd(q, k, v)
        return torch.autograd.grad(out, (q, k, v), do)
    return run


def _forced(kernel: str, fn, **variant):
    """fn run with the forward kernel (and the Hopper kernel's variant flags) forced
    (``hopper_backend.forced``)."""
    from spattern.runtime.hopper_backend import forced

    def run(*args):
        with forced(kernel, **variant):
            return fn(*args)
    return run


# the CUDA kernels a benchmark can time, each through the public entry: method -> (kernel, variant flags);
# spattern_hopper_v1 is the Hopper kernel as first measured (one CTA per work item, PV and QK as one group,
# mask programs run in the kernel); spattern_hopper_programs is the current one running the mask programs
KERNEL_METHODS = {"spattern": ("mma_sync", {}), "spattern_hopper": ("hopper", {}),
                  "spattern_hopper_v1": ("hopper", {"persistent": False, "overlap": False, "bitmask": False}),
                  "spattern_hopper_programs": ("hopper", {"bitmask": False})}


def _methods(lay, n, D, causal, scale, methods, log):
    """{name: fwd(q, k, v) -> out} for the requested methods (flex ones compiled on first call)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from spattern.runtime.api import attention

    fns = {}
    # both CUDA kernels through the public entry, as a user calls it, the forward kernel forced
    for name, (kernel, variant) in KERNEL_METHODS.items():
        if name in methods:
            fns[name] = _forced(kernel, lambda q, k, v: attention(q, k, v, lay, scale=scale, backend="cupy",
                                                                 trusted=True), **variant)
    for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        if name in methods:
            def f(q, k, v, _b=backend):
                with sdpa_kernel([_b]):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
            fns[name] = f
    if "flex" in methods:
        from spattern.runtime import flex

        fns["flex"] = lambda q, k, v: flex.attention_flex(q, k, v, lay, scale)[0]
    if "flex_native" in methods:
        from torch.nn.attention.flex_attention import create_block_mask

        from spattern.runtime import flex

        bm = create_block_mask(native_mask_mod(lay, "cuda"), None, None, n, n, device="cuda", BLOCK_SIZE=128)
        comp = flex._flex()

        def fn(q, k, v):
            flex._guard_recompiles(("native", tuple(q.shape), q.dtype, id(bm)))
            return comp(q, k, v, block_mask=bm, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
        fns["flex_native"] = fn
    return fns


def run_benchmark(seqs=(4096, 8192, 16384, 32768), head_dims=(64, 128), densities=(0.5, 0.25, 0.1, 0.05),
                  causals=(False, True), families=FAMILIES, heads=16, batch=1, block=(128, 128), methods=None,
                  backward=False, warmup=5, iters=30, n_buffers=3, time_budget=None, log=print,
                  json_path=None, cells=None) -> dict:
    """Run the grid (rows in the order given); returns {env, config, results}. With json_path the JSON is
    rewritten after each row, so an interrupted run keeps what it measured; `time_budget` (s) stops
    starting new rows once spent. ``cells``: explicit (N, density, causal, family) rows, in priority
    order, instead of the grid (one head dim each: ``head_dims``)."""
    import torch

    from spattern.runtime import cupy_backend

    methods = list(methods or ["spattern", "flex_native", "flex", "sdpa_flash", "sdpa_cudnn"])
    dev, dtype = torch.device("cuda"), torch.bfloat16
    results, t_start = [], time.time()
    cfg = dict(heads=heads, batch=batch, block=list(block), dtype="bfloat16", warmup=warmup, iters=iters,
               n_buffers=n_buffers, backward=backward, timing=timing_method(), methods=methods)
    out = dict(env=_env(cupy_backend), config=cfg, results=results)
    grid = cells or [(n, dens, causal, fam) for n in seqs for causal in causals for fam in families for dens in densities]
    order = {}
    for cell in grid:  # group by N (one set of buffers per N and head dim), keeping the priority order
        order.setdefault(cell[0], []).append(cell)
    for n, todo in order.items():
        for D in head_dims:
            g = torch.Generator(device="cuda").manual_seed(n + D)
            mk = lambda: torch.randn(batch, heads, n, D, device=dev, dtype=dtype, generator=g)  # noqa: E731
            bufs = [tuple(mk().requires_grad_(backward) for _ in range(3)) + ((mk(),) if backward else ())
                    for _ in range(n_buffers)]
            scale = 1.0 / math.sqrt(D)
            for _, dens, causal, fam in todo:
                if time_budget and time.time() - t_start > time_budget:
                    log(f"time budget of {time_budget} s spent; stopping")
                    return _finish(out, json_path)
                row = _row(n, D, causal, fam, dens, block, heads, batch, scale, methods, backward, bufs,
                           warmup, iters, log)
                results.append(row)
                log(format_row(row))
                if json_path:
                    _dump(json_path, dict(out, partial=True))
            del bufs
            torch.cuda.empty_cache()
    return _finish(out, json_path)


def call_peak_bytes(fn, args) -> int:
    """Device memory one call of ``fn(*args)`` allocates above what was allocated before it (outputs,
    LSE, workspaces, autograd's saved tensors and gradients): torch's peak-allocated counter, reset
    before the call. Run after warm-up, so per-layout state built on the first call (kept on the
    layout; ``runtime.memory``) is not counted; every spattern allocation goes through torch."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn(*args)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return int(peak)


def _row(n, D, causal, fam, dens, block, heads, batch, scale, methods, backward, bufs, warmup, iters, log):
    import torch

    from spattern.runtime.memory import state_bytes

    t0 = time.time()
    lay = structured_layout(n, dens, block, causal, fam)
    nnz = lay.nnz
    flops = 4.0 * block[0] * block[1] * D * nnz * heads * batch * (3.5 if backward else 1.0)
    row = dict(N=n, D=D, causal=causal, family=fam, pattern=lay.pattern, density_target=dens,
               density=block_density(lay), nnz_blocks=nnz, block=list(block), flops_computed=flops,
               pass_="fwd+bwd" if backward else "fwd", ms={}, tflops={}, speedup_vs_flash={}, errors={}, peak_mib={},
               state_bytes=state_bytes(lay, "cpu", batch, heads, D))
    for name, fwd in _methods(lay, n, D, causal, scale, methods, log).items():
        fn = _grad_runner(fwd) if backward else fwd
        try:
            fn(*bufs[0])  # compile / warm up (flex compiles here)
            torch.cuda.synchronize()
            row["ms"][name] = median_ms(fn, bufs, warmup, iters)
            row["peak_mib"][name] = call_peak_bytes(fn, bufs[0]) / 2**20
        except Exception as e:  # noqa: BLE001 - a failing method is recorded, the row goes on
            row["ms"][name] = None
            row["errors"][name] = f"{type(e).__name__}: {str(e)[:300]}"
            log(f"{name} failed at N={n} D={D} {fam} d={dens}: {row['errors'][name]}")
    _derive(row)
    row["wall_s"] = time.time() - t0
    return row


def _derive(row: dict) -> dict:
    """TFLOP/s and the ratios of a row, from its ``ms`` and ``flops_computed`` (set in place)."""
    row["tflops"], row["speedup_vs_flash"] = {}, {}
    for k in ("spattern_vs_flex_native", "vs_flex_native", "vs_cudnn", "flex_converted_over_native"):
        row.pop(k, None)
    fl = row["ms"].get("sdpa_flash")
    for m, t in row["ms"].items():
        if t:
            row["tflops"][m] = row["flops_computed"] / (t * 1e-3) / 1e12
            if fl:
                row["speedup_vs_flash"][m] = fl / t
    sp_t, nat = row["ms"].get("spattern"), row["ms"].get("flex_native")
    if sp_t and nat:
        row["spattern_vs_flex_native"] = nat / sp_t
    cu = row["ms"].get("sdpa_cudnn")
    for m in KERNEL_METHODS:  # each kernel against the baselines measured in this row
        if row["ms"].get(m):
            row.setdefault("vs_flex_native", {})[m] = nat / row["ms"][m] if nat else None
            row.setdefault("vs_cudnn", {})[m] = cu / row["ms"][m] if cu else None
    if row["ms"].get("flex") and nat:
        row["flex_converted_over_native"] = row["ms"]["flex"] / nat
    return row


def merge_repeats(outs: list[dict], sources: list[str] | None = None) -> dict:
    """One benchmark from repeated runs of the same cells (each a ``run_benchmark`` result, e.g. separate
    processes on one machine): per cell and method the median time over the runs (``ms``; every run's in
    ``ms_runs``), TFLOP/s and ratios recomputed from those medians. Raises if the runs' cells differ."""
    import statistics

    if not outs:
        raise ValueError("outs: expected at least one benchmark result, got none")
    key = lambda r: (r["N"], r["D"], bool(r["causal"]), r["family"], r["density_target"], r.get("pass_"))  # noqa: E731
    keys = [[key(r) for r in o["results"]] for o in outs]
    if any(k != keys[0] for k in keys[1:]):
        raise ValueError("outs: expected repeats of the same cells in the same order, got different cells")
    results = []
    for rows in zip(*(o["results"] for o in outs)):
        row = {k: v for k, v in rows[0].items() if k not in ("ms", "errors", "wall_s")}
        methods = sorted({m for r in rows for m in r["ms"]})
        row["ms_runs"] = {m: [r["ms"].get(m) for r in rows] for m in methods}
        row["ms"] = {m: (statistics.median([t for t in ts if t]) if any(ts) else None)
                     for m, ts in row["ms_runs"].items()}
        row["errors"] = {m: e for r in rows for m, e in (r.get("errors") or {}).items()}
        results.append(_derive(row))
    methods = list(dict.fromkeys(m for o in outs for m in o["config"].get("methods", [])))  # union, in order
    cfg = dict(outs[0]["config"], methods=methods, repeats=len(outs),
               aggregate="median over the repeats that timed each method (ms_runs: None where one did not)")
    merged = dict(env=outs[0]["env"], config=cfg, results=results)
    if sources:
        merged["merged_from"] = list(sources)
    return merged


def _env(cupy_backend) -> dict:
    from spattern.utils.env import capture_env

    env = capture_env()
    env.update(compile_route=cupy_backend.last_compile_route, arg_mode=cupy_backend.ARG_MODE,
               kernel_config_defaults={str(k): v for k, v in cupy_backend.DEFAULT_CONFIG.items()})
    return env


def _finish(out, json_path):
    from spattern.runtime import cupy_backend

    out["env"]["compile_route"] = cupy_backend.last_compile_route
    if json_path:
        _dump(json_path, out)
    return out


def _dump(path, obj):
    from spattern.utils.io import write_json

    write_json(path, obj)


def format_header() -> str:
    return (f"{'N':>6} {'D':>4} {'causal':>6} {'family':>13} {'dens':>5} | {'spattern':>8} {'hopper':>8} {'flex_nat':>8}"
            f" {'flex':>8} {'flash':>8} {'cudnn':>8} ms | {'x flex':>6} {'x flash':>7} {'x cudnn':>7} {'flex/nat':>8}"
            f" | hopper {'x flex':>6} {'x cudnn':>7} {'TF/s':>5}")


def format_row(r: dict) -> str:
    ms = r["ms"]
    f = lambda x: f"{x:8.3f}" if x else f"{'-':>8}"  # noqa: E731
    g = lambda x: f"{x:7.2f}" if x else f"{'-':>7}"  # noqa: E731
    sp_t = ms.get("spattern")
    xc = ms["sdpa_cudnn"] / sp_t if sp_t and ms.get("sdpa_cudnn") else None
    return (f"{r['N']:>6} {r['D']:>4} {str(r['causal']):>6} {r['family']:>13} {r['density']:5.2f} | {f(sp_t)} "
            f"{f(ms.get('spattern_hopper'))} {f(ms.get('flex_native'))} {f(ms.get('flex'))} {f(ms.get('sdpa_flash'))} {f(ms.get('sdpa_cudnn'))}    | "
            f"{g(r.get('spattern_vs_flex_native'))} {g(r['speedup_vs_flash'].get('spattern'))} {g(xc)} "
            f"{g(r.get('flex_converted_over_native'))} | {g(r.get('vs_flex_native', {}).get('spattern_hopper'))} "
            f"{g(r.get('vs_cudnn', {}).get('spattern_hopper'))} {r['tflops'].get('spattern_hopper', 0):5.0f}")


# ============================================================================ CLI
def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--seq", type=int, nargs="+", default=[4096, 8192, 16384, 32768], help="sequence lengths")
    ap.add_argument("--head-dim", type=int, nargs="+", default=[128, 64], help="head dims")
    ap.add_argument("--density", type=float, nargs="+", default=[0.5, 0.25, 0.1, 0.05],
                    help="target fractions of computed blocks (non-causal pattern; 1.0 = dense)")
    ap.add_argument("--causal", choices=["no", "yes", "both"], default="both", help="causal rows")
    ap.add_argument("--family", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="layout families")
    ap.add_argument("--heads", type=int, default=16, help="query heads")
    ap.add_argument("--batch", type=int, default=1, help="batch size")
    ap.add_argument("--block", type=int, nargs=2, default=[128, 128], metavar=("BQ", "BK"), help="layout blocks")
    ap.add_argument("--methods", nargs="+", default=["spattern", "flex_native", "flex", "sdpa_flash", "sdpa_cudnn"],
                    help="methods to time")
    ap.add_argument("--backward", action="store_true", help="time forward + backward (autograd.grad)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls per method and row")
    ap.add_argument("--iters", type=int, default=30, help="timed calls per method and row (median)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds after which no new row starts")
    ap.add_argument("--cells", nargs="+", default=None, metavar="N:DENSITY:CAUSAL:FAMILY",
                    help="explicit rows in priority order (CAUSAL yes/no), e.g. 16384:0.1:no:lrs; replaces the grid")
    ap.add_argument("--json", default="bench_attention.json", help="output JSON path")


def check_grid(seqs, densities) -> None:
    """The benchmark grid's options, checked once at the command line: --seq positive, --density in (0, 1]."""
    from spattern.utils.errors import UserError

    bad = [n for n in seqs if n < 1]
    if bad:
        raise UserError(f"--seq: expected positive sequence lengths, got {bad}")
    bad = [d for d in densities if not 0 < d <= 1]
    if bad:
        raise UserError(f"--density: expected fractions in (0, 1], got {bad}")


def _parse_cells(cells):
    if not cells:
        return None
    out = []
    for c in cells:
        try:
            n, d, causal, fam = c.split(":")
            out.append((int(n), float(d), {"yes": True, "no": False}[causal], fam))
        except (ValueError, KeyError):
            from spattern.utils.errors import UserError

            raise UserError(f"--cells: expected N:DENSITY:yes|no:FAMILY, got {c!r}") from None
        if fam not in FAMILIES:
            from spattern.utils.errors import UserError

            raise UserError(f"--cells: family must be one of {FAMILIES}, got {fam!r}")
    return out


def run(a) -> int:
    check_grid(a.seq, a.density)
    causals = {"no": (False,), "yes": (True,), "both": (False, True)}[a.causal]
    print(format_header(), flush=True)
    res = run_benchmark(a.seq, a.head_dim, a.density, causals, a.family, a.heads, a.batch, tuple(a.block), a.methods,
                        a.backward, a.warmup, a.iters, time_budget=a.time_budget,
                        log=lambda s: print(s, flush=True), json_path=a.json, cells=_parse_cells(a.cells))
    res["argv"] = list(sys.argv)
    _dump(a.json, res)
    print("\n" + format_header())
    for r in res["results"]:
        print(format_row(r))
    print(f"wrote {a.json}")
    return 0
