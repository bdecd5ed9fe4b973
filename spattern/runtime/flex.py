"""FlexAttention baseline / interop: a BlockLayout as a flex_attention BlockMask.

FULL blocks go to ``full_kv_num_blocks/full_kv_indices`` (no mask_mod), PROGRAM and BITMASK
blocks to ``kv_num_blocks/kv_indices`` with a mask_mod that evaluates the token mask: the
group's mask program in torch ops, or a bit lookup in the layout's bitmasks. The BlockMask block
size is the layout's (block_q, block_k); flex's own kernels are tuned for 128 x 128.
Layout groups (Bg, Hg) become the BlockMask's (B, H) dims (size 1 broadcasts).
"""
from __future__ import annotations

import numpy as np
import torch

from spattern.compiler import program as _program

_compiled = None


def _flex():
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    if _compiled is None:
        _compiled = torch.compile(flex_attention, dynamic=False)
    return _compiled


# the mask-program evaluator is the compiler's own (it works on torch tensors: % is remainder)
_eval_program_torch = _program.evaluate


def block_mask_from_layout(layout, device, B: int | None = None, H: int | None = None):
    """BlockMask of a layout (block size = the layout's), dims (Bg, Hg, R, C)."""
    from torch.nn.attention.flex_attention import BlockMask

    Bg, Hg = (int(x) for x in layout.group_shape)
    G = Bg * Hg
    bq, bk = int(layout.block_q), int(layout.block_k)
    R = -(-int(layout.q_len) // bq)
    C = -(-int(layout.kv_len) // bk)
    row_ptr = np.asarray(layout.row_ptr).reshape(G, R + 1)
    col = np.asarray(layout.col_idx)
    kind = np.asarray(layout.block_kind)
    midx = np.asarray(layout.mask_idx)
    kind_tab = np.zeros((G, R, C), np.int32)  # 0 absent, 1 program, 2 bitmask, 3 full
    midx_tab = np.zeros((G, R, C), np.int32)
    part_n = np.zeros((G, R), np.int32)
    full_n = np.zeros((G, R), np.int32)
    part_i = np.zeros((G, R, C), np.int32)
    full_i = np.zeros((G, R, C), np.int32)
    for g in range(G):
        for r in range(R):
            s, e = int(row_ptr[g, r]), int(row_ptr[g, r + 1])
            cs, ks = col[s:e], kind[s:e]
            f, p = cs[ks == 0], cs[ks != 0]
            full_n[g, r], part_n[g, r] = len(f), len(p)
            full_i[g, r, : len(f)] = f
            part_i[g, r, : len(p)] = p
            kind_tab[g, r, cs] = np.where(ks == 0, 3, ks)
            midx_tab[g, r, cs] = np.maximum(midx[s:e], 0)
    t = lambda a: torch.from_numpy(a).to(device)
    shape4 = (Bg, Hg, R, C)
    progs = [[tuple(int(x) for x in ins) for ins in np.asarray(layout.programs)[g][: int(layout.program_len[g])]]
             for g in range(G)]
    bm_np = np.asarray(layout.bitmasks, dtype=np.uint32)
    has_bm = bm_np.size > 0
    bitmasks = t(bm_np.view(np.int32).copy()) if has_bm else None
    kind_t, midx_t = t(kind_tab), t(midx_tab)

    def mask_mod(b, h, q_idx, kv_idx):
        g = (b if Bg > 1 else 0) * Hg + (h if Hg > 1 else 0)
        qb, kb = q_idx // bq, kv_idx // bk
        kd = kind_t[g, qb, kb]
        ok = kd == 3
        uniq = {tuple(p) for p in progs if p}
        if uniq:
            if len(uniq) == 1:
                prog_ok = _eval_program_torch(progs[next(i for i, p in enumerate(progs) if p)], q_idx, kv_idx)
            else:
                prog_ok = q_idx < 0
                for gi, p in enumerate(progs):
                    if p:
                        prog_ok = prog_ok | ((g == gi) & _eval_program_torch(p, q_idx, kv_idx))
            ok = ok | ((kd == 1) & prog_ok)
        if has_bm:
            mi = midx_t[g, qb, kb]
            word = bitmasks[mi, q_idx % bq, (kv_idx % bk) // 32]
            bit = ((word >> (kv_idx % 32)) & 1) == 1
            ok = ok | ((kd == 2) & bit)
        return ok

    bmask = BlockMask.from_kv_blocks(
        t(part_n).view(Bg, Hg, R), t(part_i).view(shape4), t(full_n).view(Bg, Hg, R), t(full_i).view(shape4),
        BLOCK_SIZE=(bq, bk), mask_mod=mask_mod, seq_lengths=(int(layout.q_len), int(layout.kv_len)))
    return bmask


def _cached_block_mask(layout, device):
    cache = getattr(layout, "_device_cache", None)
    if not isinstance(cache, dict):
        try:
            layout._device_cache = cache = {}
        except Exception:
            cache = {}
    key = ("flex_blockmask", str(device))
    if key not in cache:
        cache[key] = block_mask_from_layout(layout, device)
    return cache[key]


def make_flex_callable(layout, B, H, Nq, Nk, device, kernel_options=None):
    """fn(q, k, v, scale) -> out running the compiled flex kernel with this layout's BlockMask.

    ``kernel_options`` go to flex_attention (e.g. {"num_stages": 2} where the default Triton
    config needs more shared memory than the GPU has, seen for head dim 64 with 128x128 blocks)."""
    bm = _cached_block_mask(layout, device)
    fa = _flex()

    def fn(q, k, v, scale):
        return fa(q, k, v, block_mask=bm, scale=scale, enable_gqa=q.shape[1] != k.shape[1],
                  kernel_options=kernel_options)
    return fn


# kernel options that compiled, per (head dim, dtype, device, block): FlexAttention's default Triton
# configuration can need more shared memory than the GPU has (seen on the H100 at head dim 64 with
# 128 x 128 blocks: 245,760 bytes needed, 232,448 available); fewer pipeline stages fit
_OPTIONS: dict = {}
_FALLBACK_OPTIONS = (None, {"num_stages": 2}, {"num_stages": 1, "BLOCK_M": 64, "BLOCK_N": 64})


def _is_resource_error(e: Exception) -> bool:
    msg = str(e)
    return "out of resource" in msg or "No valid triton configs" in msg or "Hardware limit" in msg


def attention_flex(q, k, v, layout, scale, return_lse=False, cu_seqlens=None):
    """Same signature as the other backends; q (B,H,Nq,D). Packed input is not supported.

    The first call per (head dim, dtype, device, block) tries flex's default kernel options and,
    if the kernel does not fit the GPU's shared memory, fewer stages (then smaller tiles); the
    options that compiled are kept for later calls (and their backward pass)."""
    if cu_seqlens is not None:
        raise ValueError("cu_seqlens: the flex backend does not take packed input; expected None, got a tensor")
    if q.dim() != 4:
        raise ValueError(f"q: expected (B, H, N, D), got shape {tuple(q.shape)}")
    bm = _cached_block_mask(layout, q.device)
    fa = _flex()
    gqa = q.shape[1] != k.shape[1]
    key = (q.shape[-1], q.dtype, str(q.device), layout.block_q, layout.block_k)
    candidates = [_OPTIONS[key]] if key in _OPTIONS else list(_FALLBACK_OPTIONS)
    for n, opts in enumerate(candidates):
        try:
            res = fa(q, k, v, block_mask=bm, scale=scale, enable_gqa=gqa, return_lse=return_lse,
                     kernel_options=opts)
        except Exception as e:  # noqa: BLE001 - only resource errors are retried
            if not _is_resource_error(e) or n == len(candidates) - 1:
                raise
            import warnings

            warnings.warn(f"flex_attention: kernel options {opts} need more shared memory than the GPU has; "
                          f"retrying with {candidates[n + 1]}", RuntimeWarning, stacklevel=2)
            torch._dynamo.reset()
            continue
        _OPTIONS[key] = opts
        if return_lse:
            out, lse = res
            return out, lse.float()
        return res, None
