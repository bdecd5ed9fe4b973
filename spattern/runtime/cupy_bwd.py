"""CuPy launcher of the block-sparse backward kernels (``kernels/block_sparse_bwd.cu``).

    dq, dk, dv = attention_backward_cupy(dout, q, k, v, out, lse, layout, scale, cu_seqlens)

Inputs are the forward's (already checked by ``runtime/problem.describe`` and the forward's
``supports``) plus ``out``, ``lse`` (natural log, fp32: (B, H, Nq), packed (H, T)) and ``dout``.
Three launches on torch's current stream: ``delta = rowsum(dout * out)``; dQ over the CSR rows
(one CTA per 64-query tile, deterministic: no atomics); dK/dV over the CSC columns (one CTA per
(kv head, 64-key tile), GQA heads summed in registers). The CSC transpose and both work orders
(longest first) are built on the device once per layout (``BlockLayout.cached``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from spattern.runtime import cupy_backend as cb

KERNEL_FILE = cb.KERNEL_DIR / "block_sparse_bwd.cu"
NAMES = ("sp_bwd_delta", "sp_bwd_dq", "sp_bwd_dkdv")
TILE = 64          # rows of every backward tile (kernel constant BT)
MAX_GROUP = 64     # query heads per kv head (kernel constant MAX_GROUP)

_fns: dict[tuple, dict] = {}


def supports(prob) -> str | None:
    """The backward's declaration (beyond the forward's ``cupy_backend.supports``)."""
    if prob.group_size > MAX_GROUP:
        return f"k heads: the backward kernel sums at most {MAX_GROUP} query heads per kv head, got {prob.group_size}"
    return None


def smem_bytes(head_dim: int) -> int:
    """Own tiles (2) + 2 stages x 2 streamed tiles of [64][D] halves, 2 x 64 row masks, 2 x 128 floats."""
    return 6 * TILE * head_dim * 2 + 2 * 64 * 8 + 2 * 128 * 4


def kernel_defines(bf16: bool, head_dim: int, block_q: int, block_k: int) -> list[str]:
    return [f"-DSP_BF16={int(bool(bf16))}", f"-DSP_HD={head_dim}", f"-DSP_LQ={block_q}", f"-DSP_LK={block_k}"]


def get_functions(device_index: int, bf16: bool, head_dim: int, block_q: int, block_k: int) -> dict:
    key = (device_index, bool(bf16), head_dim, block_q, block_k)
    fns = _fns.get(key)
    if fns is None:
        tag = f"bsbwd_{'bf16' if bf16 else 'fp16'}_d{head_dim}_q{block_q}_k{block_k}"
        fns = _fns[key] = cb.compile_functions(device_index, KERNEL_FILE, NAMES,
                                               kernel_defines(bf16, head_dim, block_q, block_k), tag,
                                               smem_bytes(head_dim))
    return fns


# ------------------------------------------------------------------ per-layout device arrays
def _csc_tensors(layout, device) -> dict:
    """col_ptr [G, C+1], row_idx [nnz], perm [nnz] (int32, on the device), once per layout and device."""
    def build():
        c = layout.to_device(device, csc=True)  # with the forward's arrays, when the trainer uploaded them ahead
        d = {n: c[n].reshape(-1) for n in ("col_ptr", "row_idx", "perm")}
        for n in ("row_idx", "perm"):
            if d[n].numel() == 0:
                d[n] = torch.zeros(1, dtype=torch.int32, device=device)
        return d

    return layout.cached(device, "cupy_csc", build)


def _dq_work(layout, lt, B, H, R, Bg, Hg, device):
    """(b, h, r, 64-row part) items by row length, longest first."""
    split = layout.block_q // TILE
    return layout.cached(device, "cupy_bwd_dq_work",
                         lambda: cb._build_work_order(lt, B, H, R, Bg, Hg, device, split), B, H)


def _dkdv_work(layout, csc, B, H, Hkv, C, Bg, Hg, device):
    """(b, kv head, key column c, 64-key part) items by the number of query tiles they visit, longest first."""
    def build():
        G = Bg * Hg
        cp = csc["col_ptr"][: G * (C + 1)].view(G, C + 1).long()
        lens = cp[:, 1:] - cp[:, :-1]                                   # (G, C)
        gb = torch.arange(B, device=device) if Bg > 1 else torch.zeros(B, dtype=torch.long, device=device)
        gh = torch.arange(H, device=device) if Hg > 1 else torch.zeros(H, dtype=torch.long, device=device)
        g = gb[:, None] * Hg + gh[None, :]                              # (B, H)
        per = lens[g.reshape(-1)].reshape(B, Hkv, H // Hkv, C).sum(2)   # (B, Hkv, C)
        per = per.reshape(-1).repeat_interleave(layout.block_k // TILE)
        return torch.argsort(per, descending=True, stable=True).to(torch.int32)

    return layout.cached(device, "cupy_bwd_dkdv_work", build, B, H, Hkv)


# ------------------------------------------------------------------ entry point
def attention_backward_cupy(dout, q, k, v, out, lse, layout, scale, cu_seqlens=None):
    """(dq, dk, dv) of block-sparse attention; shapes as q, k, v. Inputs trusted (checked by the forward)."""
    import cupy  # noqa: F401  (the launch goes through CuPy)

    packed = cu_seqlens is not None
    q, k, v, out, dout = (t if t.is_contiguous() else t.contiguous() for t in (q, k, v, out, dout))
    lse = lse.contiguous()
    dev = q.device
    dev_index = dev.index if dev.index is not None else torch.cuda.current_device()
    D = q.shape[-1]
    if packed:
        T, H, _ = q.shape
        Hkv = k.shape[1]
        B = cu_seqlens.numel() - 1
        Nq = Nk = int(layout.q_len)
        qs, ks, ls = (0, D, H * D), (0, D, Hkv * D), (0, T)
        if cu_seqlens.dtype != torch.int32:
            cu_seqlens = cu_seqlens.to(torch.int32)
        rows, Tlen = T * H, T
    else:
        B, H, Nq, _ = q.shape
        Hkv, Nk = k.shape[1], k.shape[2]
        qs, ks, ls = (H * Nq * D, Nq * D, D), (Hkv * Nk * D, Nk * D, D), (H * Nq, Nq)
        rows, Tlen = B * H * Nq, Nq
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    if q.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    layout = cb.kernel_layout(layout, dev)  # the forward's twin: the same blocks read the same way
    Bg, Hg = (int(x) for x in layout.group_shape)
    R, C = layout.n_rows, layout.n_cols
    lt = cb._layout_tensors(layout, dev)
    csc = _csc_tensors(layout, dev)
    fns = get_functions(dev_index, q.dtype == torch.bfloat16, D, layout.block_q, layout.block_k)
    delta = torch.empty_like(lse)
    wq = _dq_work(layout, lt, B, H, R, Bg, Hg, dev)
    wkv = _dkdv_work(layout, csc, B, H, Hkv, C, Bg, Hg, dev)
    ptr = lambda t: np.uint64(t.data_ptr())  # noqa: E731
    i64, i32, f32 = np.int64, np.int32, np.float32
    cu = ptr(cu_seqlens) if packed else ptr(lt["program_len"])
    common = (i64(qs[0]), i64(qs[1]), i64(qs[2]), i64(ks[0]), i64(ks[1]), i64(ks[2]), i64(ls[0]), i64(ls[1]),
              i32(H), i32(Hkv), i32(Nq), i32(Nk), cu, i32(int(packed)))
    tail_layout = (ptr(lt["block_kind"]), ptr(lt["mask_idx"]), ptr(lt["bitmasks"]), ptr(lt["programs"]),
                   ptr(lt["program_len"]), i32(Bg), i32(Hg))
    sc = (f32(scale), f32(scale * math.log2(math.e)))
    smem = smem_bytes(D)
    with cb.cupy_stream(dev):
        fns["sp_bwd_delta"]((-(-rows // 32), 1, 1), (256, 1, 1),
                            (ptr(out), ptr(dout), ptr(delta), i64(rows), i32(H), i64(Tlen), i32(int(packed))))
        fns["sp_bwd_dq"]((int(wq.numel()), 1, 1), (128, 1, 1),
                         (ptr(q), ptr(k), ptr(v), ptr(dout), ptr(lse), ptr(delta), ptr(dq), *common,
                          ptr(lt["row_ptr"]), ptr(lt["col_idx"]), *tail_layout, i32(R), i32(lt["P"]), ptr(wq), *sc),
                         shared_mem=smem)
        fns["sp_bwd_dkdv"]((int(wkv.numel()), 1, 1), (128, 1, 1),
                           (ptr(q), ptr(k), ptr(v), ptr(dout), ptr(lse), ptr(delta), ptr(dk), ptr(dv), *common,
                            ptr(csc["col_ptr"]), ptr(csc["row_idx"]), ptr(csc["perm"]), *tail_layout, i32(C),
                            i32(lt["P"]), ptr(wkv), *sc),
                           shared_mem=smem)
    return dq, dk, dv
