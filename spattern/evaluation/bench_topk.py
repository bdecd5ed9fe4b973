"""`spattern bench topk`: cost of building a top-k layout from scores vs attention on it.

At N tokens, 64 x 64 blocks and k selected key blocks per query block: random block scores
(B, R, C) -> ``topk_block_layout`` (torch ops on the device, no host synchronization), timed
eagerly and as a replayed CUDA graph (the build is capturable because nothing syncs), against
the attention on the resulting layout (16 heads, bf16) with the fastest backend available.
Times are medians after warm-up (``evaluation/timing.py``); JSON with --json.
"""

from __future__ import annotations

import argparse


def _median_ms(fn, warmup: int = 10, iters: int = 50) -> float:
    from spattern.evaluation.timing import median_ms

    return median_ms(fn, None, warmup, iters)


def measure(n: int = 16384, heads: int = 16, head_dim: int = 128, k: int = 32, block: int = 64,
            batch: int = 1, backends=("cupy", "flex", "reference")) -> dict:
    import torch

    from spattern.indexer import topk_block_layout
    from spattern.runtime.api import attention

    if not torch.cuda.is_available():
        raise RuntimeError("bench topk needs a CUDA device")
    dev = torch.device("cuda")
    R = -(-n // block)
    g = torch.Generator(device=dev).manual_seed(0)
    scores = torch.randn(batch, R, R, device=dev, generator=g)

    def build():
        return topk_block_layout(scores, k, n, n, (block, block))

    layout = build()
    eager_ms = _median_ms(build)
    graph_ms = None
    try:
        static = {}
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                build()
        torch.cuda.current_stream().wait_stream(s)
        cg = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cg):
            static["layout"] = build()
        graph_ms = _median_ms(cg.replay)
    except Exception as e:  # capture can fail on older stacks; report it
        graph_ms = f"capture failed: {type(e).__name__}: {e}"

    q = torch.randn(batch, heads, n, head_dim, device=dev, dtype=torch.bfloat16)
    kk = torch.randn_like(q)
    v = torch.randn_like(q)
    attn_ms, used = None, None
    errors = {}
    for backend in backends:
        try:
            attention(q, kk, v, layout, backend=backend, trusted=True)
            attn_ms = _median_ms(lambda: attention(q, kk, v, layout, backend=backend, trusted=True),
                                 warmup=3, iters=20)
            used = backend
            break
        except Exception as e:
            errors[backend] = f"{type(e).__name__}: {e}"[:300]
    out = {
        "n": n, "heads": heads, "head_dim": head_dim, "k": k, "block": block, "batch": batch,
        "nnz_blocks": int(layout.row_ptr[-1, -1]),
        "build_eager_ms": eager_ms, "build_graph_ms": graph_ms,
        "attention_ms": attn_ms, "attention_backend": used, "backend_errors": errors,
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
    }
    if attn_ms:
        out["build_over_attention_eager"] = eager_ms / attn_ms
        if isinstance(graph_ms, float):
            out["build_over_attention_graph"] = graph_ms / attn_ms
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--seq", type=int, default=16384, help="sequence length (default 16384)")
    ap.add_argument("--heads", type=int, default=16, help="attention heads (default 16)")
    ap.add_argument("--head-dim", type=int, default=128, help="head dim (default 128)")
    ap.add_argument("--k", type=int, default=32, help="key blocks kept per query block (default 32)")
    ap.add_argument("--block", type=int, default=64, help="block size (default 64)")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")


def run(args) -> int:
    from spattern.utils.errors import UserError
    from spattern.utils.io import write_json

    try:
        res = measure(args.seq, args.heads, args.head_dim, args.k, args.block)
    except RuntimeError as e:
        if "needs a CUDA device" in str(e):
            raise UserError(str(e)) from None
        raise
    for key, val in res.items():
        print(f"{key:28s} {val}")
    if args.json:
        write_json(args.json, res)
    return 0
