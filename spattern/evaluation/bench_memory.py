"""`spattern bench memory`: the bytes each attention path keeps per layout, on the attention
benchmark's layouts (runs on the CPU).

For every (N, density, causal, family) cell the layout is the one ``spattern bench attention`` times
(``bench_attention.structured_layout``); ``runtime.memory.state_bytes`` builds what each path keeps
between calls with the runtime's own builders and counts the bytes of the tensors built: spattern's
CSR metadata and work orders (mma.sync forward, Hopper forward, what the backward adds), the index
tensors of FlexAttention's BlockMask for the same blocks and the tables its own mask_mod for the pattern
captures (``bench_attention.native_mask_mod``: the random pattern's block table), and a dense boolean mask. Per-call
activations (Q, K, V, O, LSE, gradients) are the same O(N * D) for every path and are not counted;
``spattern bench attention`` records the peak of one call on the GPU.

    spattern bench memory --json results/bench_memory_cpu.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from spattern.evaluation.bench_attention import (
    FAMILIES,
    block_density,
    check_grid,
    native_mask_mod,
    structured_layout,
)

SEQS = (4096, 8192, 16384, 32768, 65536)
DENSITIES = (0.5, 0.25, 0.1, 0.05)


def measure_cell(n: int, density: float, causal: bool, family: str, block=(128, 128), heads: int = 16,
                 batch: int = 1, head_dim: int = 128) -> dict:
    """One cell: the layout's shape and the bytes of each path (``runtime.memory.state_bytes``)."""
    from spattern.runtime.memory import state_bytes, tensor_bytes

    t0 = time.perf_counter()
    lay = structured_layout(n, density, tuple(block), causal, family)
    t1 = time.perf_counter()
    nbytes = state_bytes(lay, "cpu", batch, heads, head_dim)
    mm = native_mask_mod(lay, "cpu")  # FlexAttention's own mask_mod for the pattern: the tables it captures
    nbytes["flex_mask_mod"] = tensor_bytes([c.cell_contents for c in (mm.__closure__ or ())])
    return dict(N=n, family=family, causal=causal, density_target=density, density=block_density(lay),
                nnz_blocks=int(lay.nnz), block=list(block), heads=heads, batch=batch, head_dim=head_dim,
                group_shape=[int(x) for x in lay.group_shape], pattern=lay.pattern, bytes=nbytes,
                layout_s=t1 - t0, count_s=time.perf_counter() - t1)


def run_grid(seqs=SEQS, densities=DENSITIES, causals=(False, True), families=FAMILIES, block=(128, 128),
             heads: int = 16, batch: int = 1, head_dim: int = 128, log=print) -> dict:
    from spattern.utils.env import capture_env

    rows = []
    for fam in families:
        for causal in causals:
            for n in seqs:
                for d in densities:
                    r = measure_cell(n, d, causal, fam, block, heads, batch, head_dim)
                    rows.append(r)
                    log(format_row(r))
    return {"env": capture_env(), "argv": list(sys.argv),
            "config": dict(block=list(block), heads=heads, batch=batch, head_dim=head_dim, device="cpu"),
            "memory": rows}


def format_row(r: dict) -> str:
    kib = {k: v / 1024 for k, v in r["bytes"].items()}
    return (f"{r['family']:>13} {str(r['causal']):>6} {r['N']:>6} {r['density']:5.3f} {r['nnz_blocks']:>7} | "
            f"{kib['mma_sync']:10.1f} {kib['hopper']:10.1f} {kib['backward']:9.1f} {kib.get('flex_blockmask', 0):10.1f} "
            f"{kib.get('flex_mask_mod', 0):9.1f} "
            f"{kib['dense_bool_mask'] / 1024:10.1f}")


HEADER = (f"{'family':>13} {'causal':>6} {'N':>6} {'dens':>5} {'blocks':>7} | {'mma.sync':>10} {'hopper':>10} "
          f"{'+bwd':>9} {'flex BM':>10} {'mask_mod':>9} {'bool MiB':>10}   (KiB unless said)")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--seq", type=int, nargs="+", default=list(SEQS), help="sequence lengths")
    ap.add_argument("--density", type=float, nargs="+", default=list(DENSITIES),
                    help="target fractions of computed blocks (as spattern bench attention)")
    ap.add_argument("--causal", choices=["no", "yes", "both"], default="both", help="causal rows")
    ap.add_argument("--family", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="layout families")
    ap.add_argument("--heads", type=int, default=16, help="query heads")
    ap.add_argument("--batch", type=int, default=1, help="batch size")
    ap.add_argument("--head-dim", type=int, default=128, help="head dim (sets the mma.sync kernel's row split)")
    ap.add_argument("--block", type=int, nargs=2, default=[128, 128], metavar=("BQ", "BK"), help="layout blocks")
    ap.add_argument("--json", default="bench_memory.json", help="output JSON path")


def command(a) -> str:
    """The command line that repeats this run, from the parsed options (what the report lists)."""
    opts = [("--seq", a.seq), ("--density", a.density), ("--causal", [a.causal]), ("--family", a.family),
            ("--heads", [a.heads]), ("--batch", [a.batch]), ("--head-dim", [a.head_dim]), ("--block", a.block),
            ("--json", [a.json])]
    return shlex.join(["spattern", "bench", "memory"] + [str(x) for o, vals in opts for x in (o, *vals)])


def run(a) -> int:
    from spattern.utils.io import write_json

    check_grid(a.seq, a.density)
    causals = {"no": (False,), "yes": (True,), "both": (False, True)}[a.causal]
    print(HEADER, flush=True)
    res = run_grid(a.seq, a.density, causals, a.family, tuple(a.block), a.heads, a.batch, a.head_dim,
                   log=lambda s: print(s, flush=True))
    res["command"] = command(a)
    write_json(a.json, res)
    print(f"wrote {a.json}")
    return 0
