"""Top-k selection from indexer scores: block granularity (a BlockLayout built on the device)
and token granularity (per-query key indices, executed by the reference runtime).

Block scores pool the indexer's distribution over a (query block, key block) tile: each query's
scores become a distribution over keys (softmax; masked keys get 0), summed over the block's keys
and averaged over the block's queries. The result is the share of attention mass the key block
would capture for a query of the block, which is exactly what a selection should maximize (the
dense attention mass it keeps), once the indexer matches the dense attention (what its KL
objective trains it to do). Raw-score pooling is the alternative (``pooling="max"``: max over
keys, mean over queries): it keeps a block that holds one strongly relevant key, but it depends
on the score scale and ignores how many keys of a block matter; on the indexer test of
``tests/test_indexer.py`` the mass pooling recovers more of the dense mass.

Selection per query block row: forced blocks (the first ``sink`` key blocks and the ``local``
key blocks ending at the diagonal) always, then the highest-scoring allowed blocks up to k;
causality is respected (no key block entirely in the future of the row). Ties break towards the
lower key-block index (a stable sort), so selection is deterministic. A row holds exactly
min(k, available) blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch

from spattern.ir import program as prog
from spattern.compiler.layout import FULL, PROGRAM, BlockLayout

NEG = -3.0e38  # a finite floor for valid blocks, so that invalid (-inf) ones always sort last


def block_scores(scores: torch.Tensor, block_q: int, block_k: int, pooling: str = "mass") -> torch.Tensor:
    """Token scores (B, Nq, Nk) (-inf = masked) -> block scores (B, R, C) (-inf: no valid pair)."""
    if scores.dim() != 3:
        raise ValueError(f"scores: expected (batch, q_len, kv_len), got {tuple(scores.shape)}")
    if pooling not in ("mass", "max"):
        raise ValueError(f"pooling: expected 'mass' or 'max', got {pooling!r}")
    B, Nq, Nk = scores.shape
    R, C = -(-Nq // block_q), -(-Nk // block_k)
    s = torch.full((B, R * block_q, C * block_k), float("-inf"), dtype=torch.float32, device=scores.device)
    s[:, :Nq, :Nk] = scores.float()
    valid = torch.isfinite(s).view(B, R * block_q, C, block_k).any(dim=-1)  # (B, R*bq, C)
    any_valid = valid.view(B, R, block_q, C).any(dim=2)
    if pooling == "mass":
        row_ok = torch.isfinite(s).any(dim=-1, keepdim=True)
        p = torch.softmax(torch.where(row_ok, s, torch.zeros_like(s)), dim=-1) * row_ok
        p = torch.where(torch.isfinite(s), p, torch.zeros_like(p))
        m = p.view(B, R * block_q, C, block_k).sum(dim=-1)  # (B, R*bq, C): mass per key block
        nq = row_ok.view(B, R, block_q).sum(dim=2).clamp(min=1)[..., None]  # queries per row
        out = m.view(B, R, block_q, C).sum(dim=2) / nq
    else:
        m = s.view(B, R * block_q, C, block_k).amax(dim=-1)  # max over the block's keys
        tot = torch.where(valid, m, torch.zeros_like(m)).view(B, R, block_q, C).sum(dim=2)
        out = tot / valid.view(B, R, block_q, C).sum(dim=2).clamp(min=1)
    return torch.where(any_valid, out, torch.full_like(out, float("-inf")))


def available_blocks(q_len: int, kv_len: int, block_q: int, block_k: int, causal: bool) -> np.ndarray:
    """int64 [R]: key blocks a query block row may use."""
    R, C = -(-q_len // block_q), -(-kv_len // block_k)
    if not causal:
        return np.full(R, C, dtype=np.int64)
    last_q = np.minimum((np.arange(R) + 1) * block_q, q_len) - 1
    return np.minimum(C, last_q // block_k + 1).astype(np.int64)


@lru_cache(maxsize=32)
def _plan(B, q_len, kv_len, bq, bk, k, causal):
    """Host-side shape of the selection: per-row counts, row_ptr, flat gather index, entry rows."""
    R = -(-q_len // bq)
    avail = available_blocks(q_len, kv_len, bq, bk, causal)
    kk = int(min(k, avail.max()))
    counts = np.minimum(k, avail)
    row_ptr = np.zeros((B, R + 1), dtype=np.int64)
    per = np.concatenate([[0], np.cumsum(counts)])
    for b in range(B):
        row_ptr[b] = per + b * per[-1]
    rows = np.repeat(np.arange(R), counts)
    slots = np.arange(rows.size) - np.repeat(per[:-1], counts)
    flat = (np.arange(B)[:, None] * R * kk + (rows * kk + slots)[None, :]).reshape(-1)
    return kk, counts, row_ptr.astype(np.int32), flat, np.tile(rows, B)


def _check_scores(bscores, k, q_len, kv_len, block_q, block_k, sink, local):
    if bscores.dim() != 3:
        raise ValueError(f"bscores: expected (batch, rows, cols), got {tuple(bscores.shape)}")
    B, R, C = bscores.shape
    if R != -(-q_len // block_q) or C != -(-kv_len // block_k):
        raise ValueError(f"bscores: expected (B, {-(-q_len // block_q)}, {-(-kv_len // block_k)}) for "
                         f"q_len={q_len}, kv_len={kv_len}, block=({block_q}, {block_k}), got {tuple(bscores.shape)}")
    if k < 1 or k < sink + local:
        raise ValueError(f"k: expected k >= 1 and >= sink + local = {sink + local} (forced blocks), got {k}")


def _cuda_ok(bscores, k) -> bool:
    from spattern.indexer import cuda_select

    return cuda_select.available() and bscores.shape[2] <= cuda_select.MAX_C and k <= cuda_select.MAX_K


def _select(bscores: torch.Tensor, k: int, q_len: int, kv_len: int, block_q: int, block_k: int,
            causal: bool, sink: int, local: int):
    B, R, C = bscores.shape
    _check_scores(bscores, k, q_len, kv_len, block_q, block_k, sink, local)
    dev = bscores.device
    kk, counts, row_ptr, flat, rows = _plan(B, q_len, kv_len, block_q, block_k, k, causal)
    r = torch.arange(R, device=dev)[:, None]
    c = torch.arange(C, device=dev)[None, :]
    last_q = torch.clamp((r + 1) * block_q, max=q_len) - 1
    valid = (c * block_k <= last_q) if causal else torch.ones(R, C, dtype=torch.bool, device=dev)
    diag = torch.clamp(last_q // block_k, max=C - 1)
    forced = valid & ((c < sink) | ((c > diag - local) & (c <= diag)))
    s = torch.nan_to_num(bscores.float(), nan=NEG, neginf=NEG, posinf=-NEG)
    s = torch.where(forced, torch.full_like(s, float("inf")), torch.where(valid, s, torch.full_like(s, float("-inf"))))
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :kk]  # (B, R, kk)
    counts_t = _device_static(("counts", B, q_len, kv_len, block_q, block_k, k, causal), dev,
                              lambda: torch.from_numpy(counts))
    keep = torch.arange(kk, device=dev)[None, :] < counts_t[:, None]
    cols = torch.sort(torch.where(keep, order, torch.full_like(order, C)), dim=-1).values
    return cols, kk, counts, row_ptr, flat, rows


def topk_block_table(bscores, k, q_len, kv_len, block_q, block_k, causal=True, sink=1, local=1):
    """Host copy of the selection: a list (per batch) of lists (per row) of key blocks."""
    cols, kk, counts, *_ = _select(bscores, k, q_len, kv_len, block_q, block_k, causal, sink, local)
    cols = cols.cpu().numpy()
    return [[tuple(int(x) for x in cols[b, r, : counts[r]]) for r in range(cols.shape[1])]
            for b in range(cols.shape[0])]


class DeviceBlockLayout(BlockLayout):
    """A BlockLayout whose ``col_idx`` and ``block_kind`` were built on a device with torch ops
    (no host synchronization). Every other array is known on the host from the shape alone.
    Reading ``col_idx`` or ``block_kind`` on the host copies them (and synchronizes) once."""

    _LAZY = ("col_idx", "block_kind")

    def __init__(self, *, device_arrays: dict, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        # the device arrays seed the layout's one device cache (``BlockLayout.cached``) under the
        # key ``to_device`` reads; ``_device_arrays`` keeps them for the lazy host copies
        dev = torch.device(device_arrays["col_idx"].device)
        object.__setattr__(self, "_device_cache", OrderedDict({(str(dev), "arrays"): device_arrays}))
        object.__setattr__(self, "_device_arrays", device_arrays)
        object.__setattr__(self, "_csc", None)
        object.__setattr__(self, "_validated", True)  # valid by construction

    def __getattr__(self, name):
        if name in DeviceBlockLayout._LAZY:
            arr = self.__dict__["_device_arrays"][name].cpu().numpy()
            arr = arr.astype(np.int32) if name == "col_idx" else arr.astype(np.uint8)
            object.__setattr__(self, name, arr)
            return arr
        raise AttributeError(name)


def topk_block_layout(bscores: torch.Tensor, k: int, q_len: int, kv_len: int | None = None,
                      block: tuple[int, int] = (64, 64), causal: bool = True, sink: int = 1,
                      local: int = 1, pattern: str = "", impl: str = "auto") -> DeviceBlockLayout:
    """Top-k key blocks per query block from block scores (B, R, C): a layout with one group per
    batch element, built on ``bscores.device`` without host synchronization.

    ``impl``: "cuda" (one fused kernel, ``kernels/topk_select.cu``), "torch" (about 30 torch
    operations; the twin the kernel is tested against), "auto" (cuda on a GPU with CuPy).
    """
    kv_len = q_len if kv_len is None else kv_len
    bq, bk = block
    if impl not in ("auto", "cuda", "torch"):
        raise ValueError(f"impl: expected 'auto', 'cuda' or 'torch', got {impl!r}")
    _check_scores(bscores, k, q_len, kv_len, bq, bk, sink, local)
    B = bscores.shape[0]
    dev = bscores.device
    host, static = _static_parts(B, int(q_len), int(kv_len), int(bq), int(bk), int(k), bool(causal), str(dev),
                                 pattern or f"topk({k})")
    nnz = int(host["row_ptr"][-1, -1])
    use_cuda = impl == "cuda" or (impl == "auto" and bscores.is_cuda and _cuda_ok(bscores, k))
    if use_cuda:
        from spattern.indexer import cuda_select

        col_idx = torch.empty(nnz, dtype=torch.int32, device=dev)
        kind = torch.empty(nnz, dtype=torch.uint8, device=dev)
        cuda_select.select_into(bscores, static["row_ptr"], col_idx, kind, q_len, bq, bk, causal, sink, local)
    else:
        cols, *_ = _select(bscores, k, q_len, kv_len, bq, bk, causal, sink, local)
        col_idx = cols.reshape(-1)[static["flat"]].to(torch.int32)
        if causal:  # blocks holding a key later than some query of the row: the causal program decides
            partial = (col_idx.long() * bk + bk - 1) > static["rows"] * bq
            kind = torch.where(partial, PROGRAM, FULL).to(torch.uint8)
        else:
            kind = torch.full_like(col_idx, FULL, dtype=torch.uint8)
    device_arrays = {n: static[n] for n in ("row_ptr", "mask_idx", "bitmasks", "programs", "program_len")}
    device_arrays.update(col_idx=col_idx, block_kind=kind)
    return DeviceBlockLayout(device_arrays=device_arrays, **host)


@lru_cache(maxsize=32)
def _static_parts(B, q_len, kv_len, bq, bk, k, causal, dev, pattern):
    """Everything of a top-k layout that depends only on its shape: the host arrays (read-only,
    shared by every layout of this shape) and their device copies, made once. Nothing is copied
    per call, so the build can be captured in a CUDA graph."""
    kk, counts, row_ptr, flat, rows = _plan(B, q_len, kv_len, bq, bk, k, causal)
    nnz = int(row_ptr[-1, -1])
    program = [(prog.BAND, 0, prog.INF, 0)] if causal else []
    programs = np.zeros((B, 1, 4), dtype=np.int32)
    if program:
        programs[:, 0] = program[0]
    arrays = dict(row_ptr=row_ptr, mask_idx=np.full(nnz, -1, dtype=np.int32),
                  bitmasks=np.zeros((0, bq, -(-bk // 32)), dtype=np.uint32), programs=programs,
                  program_len=np.full(B, len(program), dtype=np.int32))
    static = {n: torch.from_numpy(np.array(a.view(np.int32) if n == "bitmasks" else a)).to(dev)
              for n, a in arrays.items()}
    static["flat"] = torch.from_numpy(flat).to(dev)
    static["rows"] = torch.from_numpy(rows).to(dev)
    for a in arrays.values():
        a.setflags(write=False)
    host = dict(q_len=q_len, kv_len=kv_len, block_q=bq, block_k=bk, group_shape=(B, 1), pattern=pattern, **arrays)
    return host, static


_DEVICE_STATIC: OrderedDict = OrderedDict()
_STATIC_SIZE = 64


def _device_static(key, dev, make):
    """A tensor that depends only on shapes (not on one layout: many layouts share it), moved to
    ``dev`` once and kept in a bounded LRU (``_STATIC_SIZE`` entries)."""
    full = key + (str(dev),)
    if full in _DEVICE_STATIC:
        _DEVICE_STATIC.move_to_end(full)
    else:
        _DEVICE_STATIC[full] = make().to(dev)
        while len(_DEVICE_STATIC) > _STATIC_SIZE:
            _DEVICE_STATIC.popitem(last=False)
    return _DEVICE_STATIC[full]


# ------------------------------------------------------------------------------------------
# Token granularity
# ------------------------------------------------------------------------------------------
def topk_token_indices(scores: torch.Tensor, k: int, causal: bool = True):
    """Per-query top-k keys: scores (B, Nq, Nk) -> (idx (B, Nq, kk) int64, valid (B, Nq, kk) bool).

    Query t may use keys s <= t when causal; it gets min(k, available) valid entries, the
    highest-scoring first, ties towards the lower key index.
    """
    if scores.dim() != 3:
        raise ValueError(f"scores: expected (batch, q_len, kv_len), got {tuple(scores.shape)}")
    B, Nq, Nk = scores.shape
    kk = min(k, Nk)
    t = torch.arange(Nq, device=scores.device)[:, None]
    s_idx = torch.arange(Nk, device=scores.device)[None, :]
    allowed = (s_idx <= t) if causal else torch.ones(Nq, Nk, dtype=torch.bool, device=scores.device)
    s = torch.nan_to_num(scores.float(), nan=NEG, neginf=NEG, posinf=-NEG)
    s = torch.where(allowed, s, torch.full_like(s, float("-inf")))
    idx = torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :kk]
    avail = allowed.sum(dim=-1)  # (Nq,)
    valid = torch.arange(kk, device=scores.device)[None, None, :] < torch.clamp(avail, max=k)[None, :, None]
    return idx, valid.expand(B, Nq, kk)


def attention_topk_tokens(q, k, v, idx, valid, scale: float | None = None, return_lse: bool = False):
    """Reference attention over per-query selected keys (shared by all heads).

    q (B, H, Nq, D), k/v (B, Hkv, Nk, D), idx/valid (B, Nq, kk) -> out (B, H, Nq, D).
    """
    B, H, Nq, D = q.shape
    Hkv = k.shape[1]
    if H % Hkv:
        raise ValueError(f"k heads: expected a divisor of q's {H} heads, got {Hkv}")
    if idx.shape[:2] != (B, Nq) or valid.shape != idx.shape:
        raise ValueError(f"idx/valid: expected (B={B}, Nq={Nq}, kk) of one shape, got {tuple(idx.shape)}, "
                         f"{tuple(valid.shape)}")
    scale = D ** -0.5 if scale is None else scale
    rep = H // Hkv
    kk = idx.shape[-1]
    gather = idx[:, None, :, :, None].expand(B, Hkv, Nq, kk, D)
    ks = torch.gather(k[:, :, None].expand(B, Hkv, Nq, k.shape[2], D), 3, gather)  # (B, Hkv, Nq, kk, D)
    vs = torch.gather(v[:, :, None].expand(B, Hkv, Nq, v.shape[2], D), 3, gather)
    ks, vs = ks.repeat_interleave(rep, dim=1), vs.repeat_interleave(rep, dim=1)  # (B, H, Nq, kk, D)
    cd = torch.float64 if q.dtype == torch.float64 else torch.float32
    s = (q.to(cd)[..., None, :] * ks.to(cd)).sum(-1) * scale  # (B, H, Nq, kk)
    s = s.masked_fill(~valid[:, None], float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    out = (p[..., None] * vs.to(cd)).sum(-2).to(q.dtype)
    return (out, lse) if return_lse else out


def selection_token_mask(bscores: torch.Tensor, k: int, q_len: int, kv_len: int | None = None,
                         block: tuple[int, int] = (64, 64), causal: bool = True, sink: int = 1,
                         local: int = 1) -> torch.Tensor:
    """bool (B, q_len, kv_len): the token mask of the top-k block selection, on the device."""
    kv_len = q_len if kv_len is None else kv_len
    bq, bk = block
    cols, kk, counts, *_ = _select(bscores, k, q_len, kv_len, bq, bk, causal, sink, local)
    B, R, C = bscores.shape
    sel = torch.zeros(B, R, C + 1, dtype=torch.bool, device=bscores.device)
    sel.scatter_(2, cols, True)  # padding slots point at column C
    m = sel[:, :, :C].repeat_interleave(bq, dim=1).repeat_interleave(bk, dim=2)[:, :q_len, :kv_len]
    if causal:
        m = m & torch.ones(q_len, kv_len, dtype=torch.bool, device=m.device).tril()
    return m
