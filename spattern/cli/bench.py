"""``spattern bench attention | topk | compile | train | memory``: benchmarks (GPU ones need CUDA).

Each benchmark module in ``spattern.evaluation`` declares its options (``add_arguments(parser)``)
and runs from them (``run(args) -> int``); this file only lists them."""

from __future__ import annotations

import importlib

BENCHMARKS = {
    "attention": ("spattern.evaluation.bench_attention",
                  "attention kernels: spattern vs SDPA (flash, cuDNN) vs FlexAttention (CUDA)"),
    "topk": ("spattern.evaluation.bench_topk", "building a top-k layout on the GPU vs attention on it (CUDA)"),
    "compile": ("spattern.evaluation.bench_compile", "compile time and memory of the CSR block compiler (CPU)"),
    "train": ("spattern.evaluation.bench_train", "training-step throughput, dense SDPA vs a pattern (CUDA)"),
    "memory": ("spattern.evaluation.bench_memory",
               "bytes each attention path keeps per layout: CSR metadata, Flex BlockMask, dense mask (CPU)"),
}


def register(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks: attention, topk, compile, train, memory")
    bsub = b.add_subparsers(dest="bench", required=True, metavar="<benchmark>")
    for name, (module, text) in BENCHMARKS.items():
        p = bsub.add_parser(name, help=text)
        try:
            mod = importlib.import_module(module)
        except ImportError as e:  # a benchmark whose module cannot import here says so when asked
            p.set_defaults(func=lambda args, e=e, m=module: _missing(m, e))
            continue
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)


def _missing(module: str, err: Exception) -> int:
    from spattern.utils.errors import UserError

    raise UserError(f"{module} cannot be imported here: {err}")
