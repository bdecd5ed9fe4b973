"""The torch reference runtime: the oracle every kernel is tested against.

Two executors with one semantics (softmax over the allowed keys only; a query with no allowed key
gives zeros and LSE = -inf, never NaN):

- ``dense``: materializes the token mask from ``layout.to_dense()`` and runs masked softmax in
  float32 (float64 for float64 inputs). O(N^2) memory: for small N and as the oracle.
- ``blockwise``: walks the CSR rows in chunks and streams each row's key blocks with an online
  softmax (running max, running sum, rescaled accumulator), as a FlashAttention kernel does.
  Memory is O(rows_per_chunk * blocks_per_step * block_q * block_k), never N x N, so one head
  of N = 65,536 runs on a CPU. Differentiable (plain torch ops).

Non-finite inputs stay local in both: a NaN/Inf in k or v at key j reaches only the outputs of
queries whose allowed keys include j (``_pv``: masked probabilities are exact zeros, and 0 * NaN
must not leak into rows that never attend j), and a NaN/Inf in q reaches only its own row.

Both take normalized inputs (the API checks them): q (B, H, Nq, D), k/v (B, Hkv, Nk, D) with
Nq <= layout.q_len and Nk <= layout.kv_len (packed sequences use prefixes of the layout).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from spattern.ir import program as prog
from spattern.compiler.layout import BITMASK, FULL, PROGRAM, BlockLayout

DENSE_LIMIT = 1 << 24  # q_len * kv_len up to which `auto` uses the dense executor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _group_slices(layout: BlockLayout, B: int, H: int):
    """Yield (group, batch index list or slice, head index list or slice)."""
    Bg, Hg = layout.group_shape
    for bg in range(Bg):
        for hg in range(Hg):
            bs = slice(bg, bg + 1) if Bg > 1 else slice(0, B)
            hs = slice(hg, hg + 1) if Hg > 1 else slice(0, H)
            yield bg * Hg + hg, bs, hs


def _expand_kv(k: torch.Tensor, H: int) -> torch.Tensor:
    """(B, Hkv, N, D) -> (B, H, N, D) for grouped-query attention (head h uses kv head h // rep)."""
    rep = H // k.shape[1]
    return k if rep == 1 else k.repeat_interleave(rep, dim=1)


def _pv(p: torch.Tensor, allowed: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """out[..., i, :] = sum over ALLOWED j of p[..., i, j] * v[..., j, :]: p (..., Q, K),
    allowed bool broadcastable to p, v (..., K, Dv) -> (..., Q, Dv).

    Equals ``p @ v`` when v is finite (the fast path). Otherwise the non-finite entries of v are
    taken out of the product and put back only through allowed pairs, with IEEE semantics per
    output element: NaN if an allowed key's value is NaN, or is +-Inf with p == 0, or both +Inf and
    -Inf arrive with p > 0; else +-Inf if one arrives with p > 0; else the finite sum."""
    fin = torch.isfinite(v)
    if bool(fin.all()):
        return p @ v
    out = p @ torch.where(fin, v, torch.zeros_like(v))
    allowed = allowed.expand_as(p)
    live = (allowed & (p > 0)).to(v.dtype)
    nan_hits = allowed.to(v.dtype) @ torch.isnan(v).to(v.dtype) + (allowed & (p == 0)).to(v.dtype) @ torch.isinf(v).to(v.dtype)
    pos = live @ (v == float("inf")).to(v.dtype)
    neg = live @ (v == float("-inf")).to(v.dtype)
    out = torch.where(pos > 0, torch.full_like(out, float("inf")), out)
    out = torch.where(neg > 0, torch.full_like(out, float("-inf")), out)
    return torch.where((nan_hits > 0) | ((pos > 0) & (neg > 0)), torch.full_like(out, float("nan")), out)


def attention_dense(q, k, v, layout: BlockLayout, scale: float, return_lse: bool = False):
    """Dense masked-softmax oracle. q (B,H,Nq,D), k/v (B,Hkv,Nk,D)."""
    B, H, Nq, _ = q.shape
    Nk = k.shape[2]
    cd = _compute_dtype(q.dtype)
    masks = torch.from_numpy(layout.to_dense()[:, :Nq, :Nk]).to(q.device)  # (G, Nq, Nk)
    kk, vv = _expand_kv(k, H).to(cd), _expand_kv(v, H).to(cd)
    s = torch.matmul(q.to(cd), kk.transpose(-1, -2)) * scale  # (B, H, Nq, Nk)
    Bg, Hg = layout.group_shape
    m = masks.reshape(Bg, Hg, Nq, Nk)
    s = s.masked_fill(~m, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # (B, H, Nq); -inf on empty rows
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    out = _pv(p, m, vv).to(q.dtype)
    return out, (lse.float() if return_lse else None)


def _row_tables(layout: BlockLayout, g: int, rows: np.ndarray):
    """Padded per-row block tables of group g: cols, kinds, mask_idx int64 [n, L] (-1 = none)."""
    rp = layout.row_ptr[g].astype(np.int64)
    start, count = rp[rows], rp[rows + 1] - rp[rows]
    L = int(count.max()) if rows.size else 0
    slot = np.arange(L)[None, :]
    valid = slot < count[:, None]
    idx = np.where(valid, start[:, None] + slot, 0)
    # widen before mixing in -1 (block_kind is uint8: NumPy >= 2.5 refuses the implicit cast)
    take = lambda a: a[idx].astype(np.int64) if layout.nnz else np.zeros(idx.shape, np.int64)  # noqa: E731
    cols = np.where(valid, take(layout.col_idx), -1)
    kinds = np.where(valid, take(layout.block_kind), -1)
    midx = np.where(valid, take(layout.mask_idx), -1)
    return cols, kinds, midx


def _row_chunks(counts: np.ndarray, rows_per_chunk: int, blocks_per_chunk: int):
    """Rows sorted by block count, cut into chunks of similar length (little padding)."""
    order = np.argsort(counts, kind="stable")
    chunks, start = [], 0
    while start < order.size:
        end = start + 1
        while (end < order.size and end - start < rows_per_chunk
               and (end - start + 1) * max(int(counts[order[end]]), 1) <= blocks_per_chunk):
            end += 1
        chunks.append(order[start:end])
        start = end
    return order, chunks


def attention_blockwise(
    q, k, v, layout: BlockLayout, scale: float, return_lse: bool = False,
    rows_per_chunk: int = 64, blocks_per_step: int = 16, blocks_per_chunk: int = 2048,
):
    """CSR executor with online softmax. q (B,H,Nq,D), k/v (B,Hkv,Nk,D).

    Rows are grouped by block count into chunks (padding stays small when a few rows are long,
    e.g. global tokens); each chunk streams its key blocks ``blocks_per_step`` at a time.
    """
    B, H, Nq, D = q.shape
    Nk, Dv = k.shape[2], v.shape[-1]
    bq, bk = layout.block_q, layout.block_k
    cd = _compute_dtype(q.dtype)
    dev = q.device
    R = -(-Nq // bq)
    kk, vv = _expand_kv(k, H), _expand_kv(v, H)
    qpad = torch.zeros(B, H, R * bq, D, dtype=q.dtype, device=dev)
    qpad[:, :, :Nq] = q
    bitmasks = torch.from_numpy(layout.bitmasks.view(np.int32).astype(np.int64)).to(dev)  # (M, bq, W)
    bit, qbit = torch.arange(bk, device=dev), torch.arange(bq, device=dev)
    group_out, group_lse = {}, {}
    for g, bs, hs in _group_slices(layout, B, H):
        program = layout.programs[g, : layout.program_len[g]].tolist()
        qg, kg, vg = qpad[bs, hs].to(cd), kk[bs, hs].to(cd), vv[bs, hs].to(cd)
        qg = qg.reshape(*qg.shape[:2], R, bq, D)
        counts = np.diff(layout.row_ptr[g, : R + 1].astype(np.int64))
        order, chunks = _row_chunks(counts, rows_per_chunk, blocks_per_chunk)
        outs, lses = [], []
        for rows in chunks:
            cols, kinds, midx = _row_tables(layout, g, rows)
            n, L = cols.shape
            rows_t = torch.from_numpy(rows).to(dev)
            qi = rows_t[:, None, None] * bq + torch.arange(bq, device=dev)[None, :, None]  # (n, bq, 1)
            qrows = qg[:, :, rows_t]  # (b, h, n, bq, D)
            m_run = torch.full((*qg.shape[:2], n, bq), float("-inf"), dtype=cd, device=dev)
            l_run = torch.zeros_like(m_run)
            acc = torch.zeros(*qg.shape[:2], n, bq, Dv, dtype=cd, device=dev)
            for s0 in range(0, L, blocks_per_step):
                c = torch.from_numpy(cols[:, s0 : s0 + blocks_per_step]).to(dev)  # (n, S)
                kd = torch.from_numpy(kinds[:, s0 : s0 + blocks_per_step]).to(dev)
                mi = torch.from_numpy(midx[:, s0 : s0 + blocks_per_step]).to(dev)
                S = c.shape[1]
                kj = (c[:, :, None] * bk + bit).reshape(n, 1, S * bk)  # (n, 1, S*bk)
                # token masks per (row, slot): (n, S, bq, bk); only partial blocks are evaluated
                allowed = (kd == FULL)[:, :, None, None].expand(n, S, bq, bk).clone()
                if program:
                    sel = (kd == PROGRAM).nonzero(as_tuple=True)
                    if sel[0].numel():
                        qs = rows_t[sel[0]][:, None, None] * bq + qbit[None, :, None]
                        ks = c[sel][:, None, None] * bk + bit[None, None, :]
                        allowed[sel] = prog.evaluate(program, qs, ks)
                sel = (kd == BITMASK).nonzero(as_tuple=True)
                if sel[0].numel():
                    words = bitmasks[mi[sel]]  # (nB, bq, W)
                    allowed[sel] = ((words[..., bit // 32] >> (bit % 32)) & 1).bool()
                ok = ((c >= 0)[:, :, None] & (c[:, :, None] * bk + bit < Nk)).reshape(n, 1, S * bk) & (qi < Nq)
                allowed = allowed.permute(0, 2, 1, 3).reshape(n, bq, S * bk) & ok  # (n, bq, S*bk)
                kidx = kj.reshape(-1).clamp(0, max(Nk - 1, 0))
                kb = kg[:, :, kidx].reshape(*kg.shape[:2], n, S * bk, D)
                vb = vg[:, :, kidx].reshape(*vg.shape[:2], n, S * bk, Dv)
                s = torch.einsum("bhnqd,bhnkd->bhnqk", qrows, kb) * scale
                s = s.masked_fill(~allowed, float("-inf"))
                m_new = torch.maximum(m_run, s.amax(dim=-1))
                m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
                p = torch.exp(s - m_safe[..., None])
                alpha = torch.exp(m_run - m_safe)
                l_run = l_run * alpha + p.sum(dim=-1)
                acc = acc * alpha[..., None] + _pv(p, allowed, vb)  # (b, h, n, bq, Dv)
                m_run = m_new
            empty = l_run == 0
            l_safe = torch.where(empty, torch.ones_like(l_run), l_run)
            outs.append(acc / l_safe[..., None])
            m_fin = torch.where(torch.isinf(m_run), torch.zeros_like(m_run), m_run)
            lses.append(torch.where(empty, torch.full_like(l_run, float("-inf")), m_fin + torch.log(l_safe)))
        # undo the sort by row length: (b, h, R, bq, .) in row order
        inv = torch.from_numpy(np.argsort(order, kind="stable")).to(dev)
        o = torch.cat(outs, dim=2)[:, :, inv]
        lse = torch.cat(lses, dim=2)[:, :, inv]
        group_out[g] = o.reshape(*o.shape[:2], R * bq, Dv)
        group_lse[g] = lse.reshape(*lse.shape[:2], R * bq)
    # groups tile (batch, heads): concatenate (differentiable, no in-place writes)
    out = _tile(group_out, layout.group_shape)
    lse_all = _tile(group_lse, layout.group_shape)
    if not out.requires_grad and (q.requires_grad or k.requires_grad or v.requires_grad):
        # no block at all: zeros, but still a function of the inputs (zero gradients, no error)
        out = out + 0.0 * (q.sum() + k.sum() + v.sum())
    return out[:, :, :Nq].to(q.dtype), (lse_all[:, :, :Nq].float() if return_lse else None)


def _tile(per_group: dict, group_shape) -> torch.Tensor:
    Bg, Hg = group_shape
    rows = [torch.cat([per_group[b * Hg + h] for h in range(Hg)], dim=1) for b in range(Bg)]
    return torch.cat(rows, dim=0)


def attention_reference(q, k, v, layout: BlockLayout, scale: float, return_lse: bool = False,
                        cu_seqlens=None, method: str = "auto"):
    """Reference backend entry (the API's normalized signature). ``method``: auto|dense|blockwise."""
    if method not in ("auto", "dense", "blockwise"):
        raise ValueError(f"method: expected 'auto', 'dense' or 'blockwise', got {method!r}")
    if cu_seqlens is not None:
        return _packed(q, k, v, layout, scale, return_lse, cu_seqlens, method)
    use_dense = method == "dense" or (method == "auto" and q.shape[2] * k.shape[2] <= DENSE_LIMIT
                                      and q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] <= 4 * DENSE_LIMIT)
    fn = attention_dense if use_dense else attention_blockwise
    return fn(q, k, v, layout, scale, return_lse)


def _packed(q, k, v, layout, scale, return_lse, cu_seqlens, method):
    """q (T, H, D), k/v (T, Hkv, D): each sequence runs on a prefix of the layout; sequence b
    uses layout groups (b if Bg > 1 else 0, *)."""
    cu = [int(x) for x in torch.as_tensor(cu_seqlens).cpu().tolist()]
    T, H, _ = q.shape
    outs, lses = [], []
    for b in range(len(cu) - 1):
        s, e = cu[b], cu[b + 1]
        sub = _sequence_layout(layout, b)
        qb = q[s:e].permute(1, 0, 2)[None]
        kb = k[s:e].permute(1, 0, 2)[None]
        vb = v[s:e].permute(1, 0, 2)[None]
        if e == s:
            outs.append(q.new_zeros(0, H, v.shape[-1]))
            lses.append(torch.zeros(H, 0, device=q.device))
            continue
        o, lse = attention_reference(qb, kb, vb, sub, scale, True, None, method)
        outs.append(o[0].permute(1, 0, 2))
        lses.append(lse[0])
    out = torch.cat(outs, dim=0)
    return out, (torch.cat(lses, dim=1) if return_lse else None)


def _sequence_layout(layout: BlockLayout, b: int) -> BlockLayout:
    """The layout groups that sequence b of a packed batch uses (a view with Bg = 1)."""
    Bg, Hg = layout.group_shape
    if Bg == 1:
        return layout
    from spattern.compiler.layout import replace

    rp = layout.row_ptr[b * Hg : (b + 1) * Hg]
    s, e = int(rp[0, 0]), int(rp[-1, -1])
    return replace(layout, group_shape=(1, Hg), row_ptr=(rp - s).astype(np.int32),
                   col_idx=layout.col_idx[s:e], block_kind=layout.block_kind[s:e],
                   mask_idx=layout.mask_idx[s:e], programs=layout.programs[b * Hg : (b + 1) * Hg],
                   program_len=layout.program_len[b * Hg : (b + 1) * Hg])


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
