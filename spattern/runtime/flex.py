"""FlexAttention interop: a BlockLayout as a BlockMask that takes FlexAttention's own fast path.

- FULL blocks go to ``full_kv_num_blocks/full_kv_indices`` (flex skips the mask_mod there), PROGRAM
  and BITMASK blocks to ``kv_num_blocks/kv_indices``.
- The mask_mod is generated once per layout as Python source of straight-line torch ops
  (``mask_mod_source``): each program instruction becomes one expression on (q_idx, kv_idx), with
  no interpreter loop and no table lookup when every partial block is a PROGRAM block. BITMASK
  blocks (patterns without a program, e.g. random or top-k) read their bit through a per-block
  lookup ``words[midx[qb, kb], q % bq, (kv % bk) // 32]``; layouts with both kinds select per block.
  Layout groups (Bg, Hg) become the BlockMask's (B, H) dims and the mask_mod selects the group's
  program by (b, h).
- Any layout block size: the BlockMask keeps the layout's blocks; when a side is smaller than
  flex's 128-token tiles, ``kernel_options_for`` picks Triton tiles that divide it (forward and
  backward), instead of failing to compile.
- No silent eager fallback: every compiled call is keyed (shapes, dtype, layout, options); when the
  number of keys seen reaches one below dynamo's recompile limit, a warning is given and dynamo is
  reset (a bounded cache), so flex never drops to its dense eager path.

Cached per layout and device (``BlockLayout.cached``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from spattern.ir import program as P

_compiled = None
_seen: set = set()


def _flex():
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    if _compiled is None:
        _compiled = torch.compile(flex_attention, dynamic=False)
    return _compiled


# ---------------------------------------------------------------- mask_mod generation
def _expr(ins) -> str:
    """One instruction as a torch expression of q_idx (i) and kv_idx (j); '{x}'/'{y}' are operands."""
    op, a, b, c = (int(x) for x in ins)
    if op == P.TRUE:
        return "(i >= 0)"
    if op == P.FALSE:
        return "(i < 0)"
    if op == P.BAND:  # a <= i - j <= b; drop the side that is unbounded
        parts = []
        if a > -P.INF:
            parts.append(f"((i - j) >= {a})")
        if b < P.INF:
            parts.append(f"((i - j) <= {b})")
        return " & ".join(parts) if parts else "(i >= 0)"
    if op == P.DIFF_MOD:
        return f"(((i - j) % {a}) == {b})"
    if op == P.KEY_MOD:
        return f"(((j % {a}) >= {b}) & ((j % {a}) <= {c}))"
    if op == P.QUERY_MOD:
        return f"(((i % {a}) >= {b}) & ((i % {a}) <= {c}))"
    if op == P.KEY_RANGE:
        return f"((j >= {a}) & (j < {b}))"
    if op == P.QUERY_RANGE:
        return f"((i >= {a}) & (i < {b}))"
    raise ValueError(f"not a leaf op: {op}")


def program_lines(program, out: str) -> list[str]:
    """Straight-line Python statements computing ``out`` = the program's mask on (i, j)."""
    lines, stack, n = [], [], 0
    for ins in program:
        op = int(ins[0])
        name = f"{out}_{n}"
        n += 1
        if op in (P.OR, P.AND, P.ANDNOT):
            y, x = stack.pop(), stack.pop()
            e = {P.OR: f"{x} | {y}", P.AND: f"{x} & {y}", P.ANDNOT: f"{x} & ~{y}"}[op]
        elif op == P.NOT:
            e = f"~{stack.pop()}"
        else:
            e = _expr(ins)
        lines.append(f"{name} = {e}")
        stack.append(name)
    if len(stack) != 1:
        raise ValueError(f"mask program left {len(stack)} values on the stack, expected 1")
    lines.append(f"{out} = {stack[0]}")
    return lines


def mask_mod_source(layout) -> str:
    """Source of ``mask_mod(b, h, q_idx, kv_idx)`` for the layout's partial blocks (see module doc)."""
    Bg, Hg = (int(x) for x in layout.group_shape)
    G = Bg * Hg
    kinds = np.asarray(layout.block_kind)
    has_prog, has_bm = bool((kinds == 1).any()), bool((kinds == 2).any())
    body = ["i, j = q_idx, kv_idx"]
    if G > 1:
        body.append(f"g = {'b' if Bg > 1 else '0'} * {Hg} + {'h' if Hg > 1 else '0'}")
    if has_prog:
        progs = [tuple(tuple(int(x) for x in ins) for ins in layout.programs[g][: int(layout.program_len[g])])
                 for g in range(G)]
        uniq = sorted({p for p in progs if p})
        for u, p in enumerate(uniq):
            body += program_lines(p, f"p{u}")
        if len(uniq) == 1:
            body.append("prog = p0")
        else:  # select the group's program (groups without one never have PROGRAM blocks)
            expr = "(i < 0)"
            for u, p in enumerate(uniq):
                gs = [g for g in range(G) if progs[g] == p]
                cond = " | ".join(f"(g == {g})" for g in gs)
                expr = f"torch.where({cond}, p{u}, {expr})"
            body.append(f"prog = {expr}")
    bq, bk, R, C, W = (int(layout.block_q), int(layout.block_k), layout.n_rows, layout.n_cols,
                       layout.words_per_row)
    blk = f"({'g * ' + str(R) + ' + ' if G > 1 else ''}i // {bq}) * {C} + j // {bk}"  # flat block index
    if has_bm:  # flat (1-D) tables: one index computation per gather
        body += [f"mi = midx[{blk}]",
                 f"w = words[(mi * {bq} + i % {bq}) * {W} + (j % {bk}) // 32]",
                 "bit = ((w >> (j % 32)) & 1) != 0"]
    if has_prog and has_bm:
        body.append(f"ok = torch.where(isbm[{blk}], bit, prog)")
    else:
        body.append("ok = prog" if has_prog else ("ok = bit" if has_bm else "ok = (i < 0)"))
    body.append("return ok")
    # a factory, so that the tables are closure cells of mask_mod (flex's tracer lifts them as inputs)
    return ("def make_mask_mod(torch, midx, words, isbm):\n    def mask_mod(b, h, q_idx, kv_idx):\n"
            + "\n".join("        " + ln for ln in body) + "\n    return mask_mod\n")


def _tables(layout):
    """Block tables for the BlockMask (numpy): partial/full counts [G, R] and indices [G, R, C];
    per-block bitmask index and is-bitmask flag [G, R, C]."""
    G, R, C = layout.n_groups, layout.n_rows, layout.n_cols
    rows, groups = layout.block_rows(), layout.block_groups()
    cols = np.asarray(layout.col_idx, np.int64)
    kinds = np.asarray(layout.block_kind)
    full = kinds == 0
    out = {}
    for name, sel in (("full", full), ("part", ~full)):
        n = np.zeros((G, R), np.int32)
        np.add.at(n, (groups[sel], rows[sel]), 1)
        idx = np.zeros((G, R, C), np.int32)
        # position of each selected block inside its row's list (CSR order keeps columns ascending)
        gr = groups[sel] * R + rows[sel]
        start = np.zeros(G * R + 1, np.int64)
        start[1:] = np.cumsum(np.bincount(gr, minlength=G * R))
        pos = np.arange(gr.size) - start[gr]
        idx[groups[sel], rows[sel], pos] = cols[sel]
        out[name] = (n, idx)
    # FULL blocks read an all-ones bitmask (index M) and absent blocks an all-zeros one (M + 1), both
    # appended by the caller: flex's compiled kernels skip the mask_mod on full blocks and never visit
    # absent ones, but its eager path ignores the block lists and applies the mask_mod everywhere
    M = np.asarray(layout.bitmasks).shape[0]
    midx = np.full((G, R, C), M + 1, np.int32)
    isbm = np.ones((G, R, C), bool)
    bm = kinds == 2
    midx[groups[bm], rows[bm], cols[bm]] = np.asarray(layout.mask_idx)[bm]
    midx[groups[full], rows[full], cols[full]] = M
    prog = kinds == 1
    isbm[groups[prog], rows[prog], cols[prog]] = False
    return out, midx, isbm


def block_mask_from_layout(layout, device, B: int | None = None, H: int | None = None):
    """BlockMask of a layout (block size = the layout's), dims (Bg, Hg, R, C); B/H are ignored
    (size-1 group dims broadcast). Cached per layout and device."""
    return layout.cached(torch.device(device), "flex_blockmask", lambda: _build_block_mask(layout, device))


def _build_block_mask(layout, device):
    from torch.nn.attention.flex_attention import BlockMask

    Bg, Hg = (int(x) for x in layout.group_shape)
    R, C = layout.n_rows, layout.n_cols
    tabs, midx, isbm = _tables(layout)
    t = lambda a: torch.from_numpy(np.array(a)).to(device)  # noqa: E731  (writable copy)
    ns = {}
    midx, isbm = midx.reshape(-1), isbm.reshape(-1)
    bm = np.asarray(layout.bitmasks, dtype=np.uint32).reshape(-1, layout.block_q, layout.words_per_row)
    ones = np.full((1, layout.block_q, layout.words_per_row), 0xFFFFFFFF, np.uint32)
    words = t(np.concatenate([bm, ones, 0 * ones]).view(np.int32).reshape(-1))
    src = mask_mod_source(layout)
    exec(compile(src, f"<spattern mask_mod {layout.pattern or 'layout'}>", "exec"), ns)
    mask_mod = ns["make_mask_mod"](torch, t(midx), words, t(isbm))
    mask_mod.source = src
    (pn, pi), (fn, fi) = tabs["part"], tabs["full"]
    return BlockMask.from_kv_blocks(
        t(pn).view(Bg, Hg, R), t(pi).view(Bg, Hg, R, C), t(fn).view(Bg, Hg, R), t(fi).view(Bg, Hg, R, C),
        BLOCK_SIZE=(int(layout.block_q), int(layout.block_k)), mask_mod=mask_mod,
        seq_lengths=(int(layout.q_len), int(layout.kv_len)))


# ---------------------------------------------------------------- kernel options and calls
def kernel_options_for(block_q: int, block_k: int) -> dict | None:
    """Triton tile sizes that divide the layout's blocks (None: flex's defaults, 128 x 128 layouts).

    Forward: BLOCK_M | block_q, BLOCK_N | block_k. Backward: BLOCK_M1, BLOCK_M2 | block_q,
    BLOCK_N1, BLOCK_N2 | block_k, BLOCK_N1 % BLOCK_M1 == 0 and BLOCK_M2 % BLOCK_N2 == 0."""
    m, n = math.gcd(block_q, 128), math.gcd(block_k, 128)
    if m == n == 128:
        return None
    return {"BLOCK_M": min(m, 64), "BLOCK_N": min(n, 64), "BLOCK_M1": min(m, n, 32), "BLOCK_N1": min(n, 64),
            "BLOCK_M2": min(m, 64), "BLOCK_N2": min(m, n, 32)}


def _guard_recompiles(key) -> None:
    """Bounded compile cache: reset dynamo (with a warning) before its recompile limit would send
    flex to the eager path."""
    if key in _seen:
        return
    limit = int(getattr(torch._dynamo.config, "recompile_limit", getattr(torch._dynamo.config, "cache_size_limit", 8)))
    if len(_seen) >= max(1, limit - 1):
        warnings.warn(f"flex_attention: {len(_seen)} compiled variants (dynamo recompile limit {limit}); "
                      "resetting torch._dynamo so flex does not fall back to eager", RuntimeWarning, stacklevel=3)
        torch._dynamo.reset()
        _seen.clear()
    _seen.add(key)


def _call(q, k, v, layout, bm, scale, return_lse, options):
    key = (tuple(q.shape), tuple(k.shape), q.dtype, str(q.device), id(bm), repr(options), return_lse)
    _guard_recompiles(key)
    return _flex()(q, k, v, block_mask=bm, scale=scale, enable_gqa=q.shape[1] != k.shape[1],
                   return_lse=return_lse, kernel_options=options)


def make_flex_callable(layout, B, H, Nq, Nk, device, kernel_options=None):
    """fn(q, k, v, scale) -> out running the compiled flex kernel with this layout's BlockMask."""
    bm = block_mask_from_layout(layout, device)
    opts = dict(kernel_options_for(layout.block_q, layout.block_k) or {}, **(kernel_options or {})) or None

    def fn(q, k, v, scale):
        return _call(q, k, v, layout, bm, scale, False, opts)
    return fn


# kernel options that compiled, per (head dim, dtype, device, block): flex's default Triton configuration
# can need more shared memory than the GPU has (seen on the H100 at head dim 64 with 128 x 128 blocks)
_OPTIONS: dict = {}
_FALLBACK_OPTIONS = ({}, {"num_stages": 2}, {"num_stages": 1})


def _is_resource_error(e: Exception) -> bool:
    msg = str(e)
    return "out of resource" in msg or "No valid triton configs" in msg or "Hardware limit" in msg


def attention_flex(q, k, v, layout, scale, return_lse=False, cu_seqlens=None):
    """Same signature as the other backends; q (B,H,Nq,D). Packed input is not supported."""
    if cu_seqlens is not None:
        raise ValueError("cu_seqlens: the flex backend does not take packed input; expected None, got a tensor")
    if q.dim() != 4:
        raise ValueError(f"q: expected (B, H, N, D), got shape {tuple(q.shape)}")
    bm = block_mask_from_layout(layout, q.device)
    base = kernel_options_for(layout.block_q, layout.block_k) or {}
    key = (q.shape[-1], q.dtype, str(q.device), layout.block_q, layout.block_k)
    candidates = [_OPTIONS[key]] if key in _OPTIONS else list(_FALLBACK_OPTIONS)
    for n, extra in enumerate(candidates):
        opts = dict(base, **extra) or None
        try:
            res = _call(q, k, v, layout, bm, scale, return_lse, opts)
        except Exception as e:  # noqa: BLE001 - only resource errors are retried
            if not _is_resource_error(e) or n == len(candidates) - 1:
                raise
            warnings.warn(f"flex_attention: kernel options {opts} need more shared memory than the GPU has; "
                          f"retrying with {dict(base, **candidates[n + 1])}", RuntimeWarning, stacklevel=2)
            torch._dynamo.reset()
            _seen.clear()
            continue
        _OPTIONS[key] = extra
        if return_lse:
            out, lse = res
            return out, lse.float()
        return res, None
