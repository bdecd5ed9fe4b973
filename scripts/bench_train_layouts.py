"""Attention time of saved training layouts (study scenario 2: why outline trains slower than a window
of the same block density), one process, on a GPU.

    python scripts/bench_train_layouts.py DIR [--batch 8] [--heads 6] [--head-dim 64] [--json out.json]
    python scripts/bench_train_layouts.py --pattern NAME=PATTERN [--pattern ...] [--seq 4096] [--block 64 64] [...]

DIR holds layouts written by ``BlockLayout.save`` (``make``: the layouts of one batch of training
sequences for each pattern, built on any machine), or static patterns compiled here (``--pattern``, ``--block`` blocks). For each layout, median ms of the forward and of
forward + backward (autograd.grad of q, k, v) through ``spattern.attention`` (backend cupy), bf16:
  as is       the layout as trained (its device arrays built once, then reused);
  fresh       a copy without device caches every call: adds what a training step pays for a new
              layout (upload, work order, the backward's column order);
  all full    the same blocks with every block FULL (no token masks): the masks' share of the time;
  as bitmask  the same token mask with its PROGRAM blocks stored as BITMASK blocks (only where it has
              PROGRAM blocks): what evaluating the mask program per element costs against reading bits.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def make(out: Path, patterns: dict[str, str], corpus_folder: Path, batch: int = 8, seq: int = 4096, seed: int = 0) -> None:
    """Save each pattern's layout for ``batch`` random training sequences of a prepared corpus."""
    from spattern.data.prepare import PreparedData
    from spattern.train.contexts import TokenBytes, build_contexts

    d = PreparedData(corpus_folder)
    s = d.stream("train")
    idx = np.random.default_rng(seed).choice(len(s) // seq, batch, replace=False)
    rows = np.stack([s[i * seq:(i + 1) * seq] for i in idx]).astype(np.int64)
    tb = TokenBytes(d.tokenizer())
    out.mkdir(parents=True, exist_ok=True)
    for name, p in patterns.items():
        ctx = build_contexts(tb, ((p, (64, 64)),), rows)
        ctx.layout(p, seq, seq, (64, 64)).save(out / f"{name}.npz")


def layouts(folder: str | None, patterns: list[str], seq: int, error, block=(64, 64)) -> list[tuple[str, object]]:
    """(name, BlockLayout) for each saved layout in ``folder`` (sorted by file name), then each NAME=PATTERN
    compiled at ``seq`` x ``seq`` with ``block`` blocks."""
    from spattern import compile as compile_pattern
    from spattern.compiler.layout import BlockLayout

    out = [(p.stem, BlockLayout.load(p)) for p in sorted(Path(folder).glob("*.npz"))] if folder else []
    for spec in patterns:
        name, eq, pattern = spec.partition("=")
        if not eq or not name or not pattern.strip():
            error(f"--pattern: expected NAME=PATTERN, got {spec!r}")
        out.append((name, compile_pattern(pattern.strip(), seq, seq, block=tuple(block))))
    return out


def all_full(layout):
    from spattern.compiler.layout import FULL, replace

    W = -(-layout.block_k // 32)
    return replace(layout, block_kind=np.full_like(layout.block_kind, FULL), mask_idx=np.full_like(layout.mask_idx, -1),
                   bitmasks=np.zeros((0, layout.block_q, W), np.uint32), program_len=np.zeros_like(layout.program_len))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", default=None)
    ap.add_argument("--pattern", action="append", default=[], metavar="NAME=PATTERN",
                    help="a static pattern to compile here (64 x 64 blocks) instead of, or beside, DIR's layouts")
    ap.add_argument("--seq", type=int, default=4096, help="--pattern's sequence length")
    ap.add_argument("--block", type=int, nargs=2, default=(64, 64), metavar=("BQ", "BK"), help="--pattern's blocks")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.dir is None and not a.pattern:
        ap.error("give a folder of saved layouts, or --pattern NAME=PATTERN")
    import torch

    from spattern.compiler.layout import PROGRAM, BlockLayout, programs_as_bitmasks, replace
    from spattern.evaluation.timing import median_ms
    from spattern.runtime.api import attention

    rows = []
    for name, lay in layouts(a.dir, a.pattern, a.seq, ap.error, tuple(a.block)):
        g = torch.Generator(device="cuda").manual_seed(0)
        mk = lambda: torch.randn(a.batch, a.heads, lay.q_len, a.head_dim, device="cuda", dtype=torch.bfloat16,  # noqa: E731
                                 generator=g).requires_grad_(True)
        q, k, v, do = mk(), mk(), mk(), mk().detach()
        row = dict(name=name, pattern=lay.pattern, groups=lay.n_groups, nnz=int(lay.nnz),
                   kinds=np.bincount(lay.block_kind, minlength=3).tolist(), ms={})
        variants = [("as_is", lambda L=lay: L), ("fresh", lambda L=lay: replace(L)), ("all_full", lambda F=all_full(lay): F)]
        if (lay.block_kind == PROGRAM).any():
            variants.append(("as_bitmask", lambda M=programs_as_bitmasks(lay): M))
        for variant, get in variants:
            def fwd(get=get):
                return attention(q, k, v, get(), backend="cupy", trusted=True)

            def fwdbwd(get=get):
                return torch.autograd.grad(attention(q, k, v, get(), backend="cupy", trusted=True), (q, k, v), do)
            for what, fn in (("fwd", fwd), ("fwd_bwd", fwdbwd)):
                fn()
                torch.cuda.synchronize()
                row["ms"][f"{variant}_{what}"] = median_ms(fn, None, 3, a.iters)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(dict(batch=a.batch, heads=a.heads, head_dim=a.head_dim, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
