"""The torch reference runtime: the blockwise CSR executor (online softmax) and the dense executor
against an independent float64 oracle built from the pattern's own mask, on random layouts
(shared, per-head and per-batch groups, GQA, odd lengths, chunking); empty rows; gradients;
packed variable-length batches; the API's input checks; one 65,536-token run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.compiler.layout import replace
from spattern.patterns.base import Geometry
from spattern.runtime.reference import attention_blockwise, attention_dense, attention_reference
from spattern.testing import expected_masks
from spattern.testing import strategies as sst

F64 = torch.float64
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def one_thread(request):
    """These tensors are tiny: intra-op threads only add synchronization (and on a busy 2-core CI
    machine, spinning). The long-sequence test keeps the default."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def oracle(q, k, v, masks, scale):
    """float64 masked softmax, written independently of the runtime.
    q (B, H, Nq, D), k/v (B, Hkv, Nk, D), masks bool broadcastable to (B, H, Nq, Nk).
    Empty rows: output 0, LSE -inf."""
    q, k, v = q.to(F64), k.to(F64), v.to(F64)
    H, Hkv = q.shape[1], k.shape[1]
    idx = torch.arange(H) // (H // Hkv)  # query head h reads kv head h // (H / Hkv)
    k, v = k[:, idx], v[:, idx]
    masks = torch.from_numpy(np.array(masks, dtype=bool))  # a writable copy
    s = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    s = torch.where(masks, s, torch.tensor(-math.inf, dtype=F64))
    lse = torch.logsumexp(s, dim=-1)
    finite = torch.isfinite(lse)
    p = torch.where(masks & finite[..., None], torch.exp(s - torch.where(finite, lse, 0)[..., None]),
                    torch.zeros((), dtype=F64))
    return p @ v, lse


def group_masks(p, context, layout):
    """The truth as (Bg, Hg, Nq, Nk) from the pattern's predicate (not from the layout)."""
    m = expected_masks(p, layout.q_len, layout.kv_len, context)
    Bg, Hg = layout.group_shape
    return m.reshape(Bg, Hg, layout.q_len, layout.kv_len)


def rand(*shape, dtype=F64, seed=None, requires_grad=False):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(*shape, dtype=dtype, generator=g).requires_grad_(requires_grad)


def close(a, b, atol=1e-10, what=""):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    inf_a, inf_b = torch.isinf(a), torch.isinf(b)
    assert torch.equal(inf_a, inf_b), f"{what}: -inf at different places ({int(inf_a.sum())} vs {int(inf_b.sum())})"
    assert not torch.isnan(a).any(), f"{what}: NaN"
    d = (a[~inf_a].to(F64) - b[~inf_b].to(F64)).abs()
    if d.numel():
        assert d.max() <= atol, f"{what}: max abs error {d.max().item():.3g} > {atol}"


@st.composite
def problems(draw):
    """(pattern, context, layout, B, H, Hkv, D, rows_per_chunk, blocks_per_step)."""
    p, context, layout = draw(sst.layouts(geometry_strategy=sst.geometries(max_len=90), with_pattern=True))
    Bg, Hg = layout.group_shape
    B = Bg if Bg > 1 else draw(st.integers(1, 2))
    H = Hg if Hg > 1 else draw(st.sampled_from((1, 2, 4)))
    Hkv = draw(st.sampled_from([d for d in (1, 2, 3, 4) if H % d == 0]))
    D = draw(st.sampled_from((4, 8)))
    rows_per_chunk = draw(st.sampled_from((1, 3, 64)))
    blocks_per_step = draw(st.sampled_from((1, 2, 16)))
    return p, context, layout, B, H, Hkv, D, rows_per_chunk, blocks_per_step


# ------------------------------------------------------------------------------------------
# executors against the oracle
# ------------------------------------------------------------------------------------------
@SETTINGS
@given(problems(), st.integers(0, 2**31 - 1))
def test_blockwise_and_dense_match_the_oracle(prob, seed):
    p, context, layout, B, H, Hkv, D, rpc, bps = prob
    Nq, Nk = layout.q_len, layout.kv_len
    q, k, v = rand(B, H, Nq, D, seed=seed), rand(B, Hkv, Nk, D, seed=seed + 1), rand(B, Hkv, Nk, D, seed=seed + 2)
    scale = 0.37
    want_o, want_lse = oracle(q, k, v, _broadcast(group_masks(p, context, layout), B, H), scale)
    o, lse = attention_blockwise(q, k, v, layout, scale, True, rows_per_chunk=rpc, blocks_per_step=bps)
    close(o, want_o, what="blockwise out")
    close(lse, want_lse, atol=1e-5, what="blockwise lse")  # the LSE is fp32 by contract
    assert o.dtype == F64 and lse.dtype == torch.float32 and lse.shape == (B, H, Nq)
    o2, lse2 = attention_dense(q, k, v, layout, scale, True)
    close(o2, want_o, what="dense out")
    close(lse2, want_lse.float(), atol=1e-5, what="dense lse")
    o3, lse3 = sp.attention(q, k, v, layout, scale=scale, backend="reference", return_lse=True)
    close(o3, want_o, what="api out")


def _broadcast(m, B, H):
    """(Bg, Hg, Nq, Nk) group masks -> (B, H, Nq, Nk) by the layout's broadcasting rule."""
    Bg, Hg = m.shape[:2]
    return np.broadcast_to(m, (B if Bg == 1 else Bg, H if Hg == 1 else Hg) + m.shape[2:])


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(problems(), st.integers(0, 2**31 - 1))
def test_blockwise_gradients_match_the_oracle(prob, seed):
    p, context, layout, B, H, Hkv, D, rpc, bps = prob
    Nq, Nk = layout.q_len, layout.kv_len
    ins = [rand(B, H, Nq, D, seed=seed, requires_grad=True),
           rand(B, Hkv, Nk, D, seed=seed + 1, requires_grad=True),
           rand(B, Hkv, Nk, D, seed=seed + 2, requires_grad=True)]
    dout = rand(B, H, Nq, D, seed=seed + 3)
    o, _ = attention_blockwise(*ins, layout, 0.5, False, rows_per_chunk=rpc, blocks_per_step=bps)
    got = torch.autograd.grad((o * dout).sum(), ins)
    ins2 = [t.detach().clone().requires_grad_(True) for t in ins]
    o2, _ = oracle(*ins2, _broadcast(group_masks(p, context, layout), B, H), 0.5)
    want = torch.autograd.grad((o2 * dout).sum(), ins2, allow_unused=True)
    for name, a, b in zip("qkv", got, want):
        close(a, b if b is not None else torch.zeros_like(a), atol=1e-9, what=f"d{name}")


def test_oracle_comparison_catches_a_missing_block():
    """The comparison above can fail: a layout with one block removed gives different outputs."""
    p = (sp.local(20) | sp.sink(3)) & sp.causal
    layout = sp.compile(p, 64, block=16)
    rows = layout.block_rows()
    e = layout.nnz - 1
    keep = np.arange(layout.nnz) != e
    rp = layout.row_ptr.copy()
    rp[0, rows[e] + 1:] -= 1
    broken = replace(layout, row_ptr=rp, col_idx=layout.col_idx[keep].copy(),
                     block_kind=layout.block_kind[keep].copy(), mask_idx=layout.mask_idx[keep].copy())
    q, k, v = rand(1, 1, 64, 8, seed=0), rand(1, 1, 64, 8, seed=1), rand(1, 1, 64, 8, seed=2)
    want, _ = oracle(q, k, v, p.dense_mask(64), 0.5)
    good, _ = attention_blockwise(q, k, v, layout, 0.5)
    close(good, want)
    bad, _ = attention_blockwise(q, k, v, broken, 0.5)
    with pytest.raises(AssertionError, match="max abs error"):
        close(bad, want)


# ------------------------------------------------------------------------------------------
# groups and GQA, checked head by head and batch by batch
# ------------------------------------------------------------------------------------------
def test_gqa_head_h_reads_kv_head_h_div_rep():
    layout = sp.compile((sp.local(7) | sp.sink(2)) & sp.causal, 45, block=16)
    q, k, v = rand(2, 6, 45, 8, seed=0), rand(2, 2, 45, 8, seed=1), rand(2, 2, 45, 8, seed=2)
    out = attention_blockwise(q, k, v, layout, 0.4)[0]
    for h in range(6):
        kv = h // 3
        one = attention_blockwise(q[:, h:h + 1], k[:, kv:kv + 1], v[:, kv:kv + 1], layout, 0.4)[0]
        close(out[:, h:h + 1], one, what=f"head {h}")


def test_per_head_layouts():
    ps = [sp.local(3) & sp.causal, sp.strided(5), sp.sink(4) | sp.landmark(every=17)]
    layout = sp.compile(sp.heads(*ps), 50, 37, block=(16, 32))
    q, k, v = rand(2, 3, 50, 4, seed=3), rand(2, 3, 37, 4, seed=4), rand(2, 3, 37, 4, seed=5)
    out, lse = attention_blockwise(q, k, v, layout, 0.5, True)
    for h, p in enumerate(ps):
        want_o, want_lse = oracle(q[:, h:h + 1], k[:, h:h + 1], v[:, h:h + 1], p.dense_mask(50, 37), 0.5)
        close(out[:, h:h + 1], want_o, what=f"head {h}")
        close(lse[:, h:h + 1], want_lse, atol=1e-5, what=f"lse head {h}")


def test_per_batch_document_groups():
    cus = [[0, 10, 30, 41], [0, 41], [0, 1, 2, 3, 40]]
    layout = sp.compile(sp.document() & sp.causal, 41, block=16, context=[{"cu_seqlens": c} for c in cus])
    q, k, v = rand(3, 2, 41, 8, seed=6), rand(3, 1, 41, 8, seed=7), rand(3, 1, 41, 8, seed=8)
    out = attention_blockwise(q, k, v, layout, 0.3)[0]
    for b, cu in enumerate(cus):
        want, _ = oracle(q[b:b + 1], k[b:b + 1], v[b:b + 1], (sp.document(cu) & sp.causal).dense_mask(41), 0.3)
        close(out[b:b + 1], want, what=f"batch {b}")


# ------------------------------------------------------------------------------------------
# empty rows and gradients
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("executor", ["blockwise", "dense", "api"])
def test_empty_rows_give_zeros_and_minus_inf_without_nan(executor):
    p = sp.document([0, 10]) | (sp.local(3) & sp.causal - sp.document([0, 50]))  # rows 10..49 empty
    layout = sp.compile(p, 64, block=16)
    assert (np.diff(layout.row_ptr[0]) == 0).any()  # whole empty block rows too
    q, k, v = (rand(1, 2, 64, 8, seed=s, requires_grad=True) for s in (0, 1, 2))
    if executor == "blockwise":
        out, lse = attention_blockwise(q, k, v, layout, 0.5, True)
    elif executor == "dense":
        out, lse = attention_dense(q, k, v, layout, 0.5, True)
    else:
        out, lse = sp.attention(q, k, v, layout, return_lse=True)
    empty = ~p.dense_mask(64).any(axis=1)
    assert empty.sum() == 40
    assert torch.equal(out[:, :, torch.from_numpy(empty)], torch.zeros(1, 2, 40, 8, dtype=F64))
    assert torch.isneginf(lse[:, :, torch.from_numpy(empty)]).all()
    assert torch.isfinite(lse[:, :, torch.from_numpy(~empty)]).all()
    assert not torch.isnan(out).any()
    (out.sum() + lse[torch.isfinite(lse)].sum()).backward()
    for name, t in zip("qkv", (q, k, v)):
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
    assert torch.equal(q.grad[:, :, torch.from_numpy(empty)], torch.zeros(1, 2, 40, 8, dtype=F64))


def test_all_empty_layout():
    layout = sp.compile(sp.local(3) - sp.local(3), 20, block=16)
    assert layout.nnz == 0
    q, k, v = (rand(1, 1, 20, 4, seed=s, requires_grad=True) for s in (0, 1, 2))
    out, lse = attention_blockwise(q, k, v, layout, 0.5, True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_gradcheck_blockwise_float64():
    layout = sp.compile((sp.local(5) & sp.causal) | sp.sink(16) | sp.custom(lambda q, k: (q - k) % 9 == 4, name="tr_g9"),
                        20, block=16)
    assert {0, 2} <= set(layout.block_kind.tolist())  # full and bitmask blocks
    q = rand(1, 2, 20, 3, seed=0, requires_grad=True)
    k, v = (rand(1, 1, 20, 3, seed=s, requires_grad=True) for s in (1, 2))  # GQA: 2 query heads, 1 kv head

    def f(q, k, v):  # several chunks and steps: the online-softmax rescaling is differentiated too
        return attention_blockwise(q, k, v, layout, 0.5, False, rows_per_chunk=1, blocks_per_step=1)[0]

    assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=True)
    small = [t[:, :1, :, :2].detach().requires_grad_(True) for t in (q, k, v)]
    assert torch.autograd.gradcheck(f, tuple(small))  # full Jacobian on a smaller case


# ------------------------------------------------------------------------------------------
# packed variable-length batches
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["auto", "blockwise"])
def test_packed_varlen_equals_each_sequence_alone(method):
    p = (sp.local(9) | sp.sink(2)) & sp.causal
    cu = torch.tensor([0, 37, 37, 100, 150], dtype=torch.int32)  # an empty sequence included
    layout = sp.compile(p, 64, block=16)
    T, H, Hkv, D = 150, 4, 2, 8
    q, k, v = rand(T, H, D, seed=0), rand(T, Hkv, D, seed=1), rand(T, Hkv, D, seed=2)
    if method == "auto":
        out, lse = sp.attention(q, k, v, layout, cu_seqlens=cu, return_lse=True)
    else:
        out, lse = attention_reference(q, k, v, layout, 0.5 ** 1.5, True, cu, method="blockwise")
    assert out.shape == (T, H, D) and lse.shape == (H, T)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if e == s:
            continue
        qs, ks, vs = (t[s:e].permute(1, 0, 2)[None] for t in (q, k, v))
        alone, lse_alone = sp.attention(qs, ks, vs, sp.compile(p, e - s, block=16), return_lse=True)
        close(out[s:e], alone[0].permute(1, 0, 2), what=f"sequence {s}:{e}")
        close(lse[:, s:e], lse_alone[0], atol=1e-5, what=f"lse {s}:{e}")
        want, _ = oracle(qs, ks, vs, p.dense_mask(e - s), 1 / math.sqrt(D))
        close(out[s:e], want[0].permute(1, 0, 2), what=f"oracle {s}:{e}")


def test_packed_with_per_sequence_groups():
    cus = [[0, 5, 20], [0, 33], [0, 8, 9, 40]]
    lens = [20, 33, 40]
    layout = sp.compile(sp.document() & sp.causal, 40, block=16, context=[{"cu_seqlens": c} for c in cus])
    cu = torch.tensor(np.cumsum([0, *lens]), dtype=torch.int64)
    T = int(cu[-1])
    q, k, v = rand(T, 2, 4, seed=3), rand(T, 2, 4, seed=4), rand(T, 2, 4, seed=5)
    out = sp.attention(q, k, v, layout, cu_seqlens=cu)
    for b, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        qs, ks, vs = (t[s:e].permute(1, 0, 2)[None] for t in (q, k, v))
        want, _ = oracle(qs, ks, vs, (sp.document(cus[b]) & sp.causal).dense_mask(e - s), 0.5)
        close(out[s:e], want[0].permute(1, 0, 2), what=f"sequence {b}")


# ------------------------------------------------------------------------------------------
# the API's input checks
# ------------------------------------------------------------------------------------------
@pytest.fixture
def qkv():
    layout = sp.compile(sp.local(4) & sp.causal, 32, block=16)
    return rand(2, 4, 32, 8), rand(2, 2, 32, 8), rand(2, 2, 32, 8), layout


def _bad_layout(layout):
    cols = layout.col_idx.copy()
    cols[-1] = 99
    return replace(layout, col_idx=cols, row_ptr=layout.row_ptr.copy(), block_kind=layout.block_kind.copy(),
                   mask_idx=layout.mask_idx.copy())


@pytest.mark.parametrize("change,exc,match", [
    (lambda q, k, v, L: dict(q=q[0]), ValueError, r"q.shape: expected 4 dims \(batch, heads, seq, head_dim\)"),
    (lambda q, k, v, L: dict(k=k[None]), ValueError, r"k.shape: expected 4 dims"),
    (lambda q, k, v, L: dict(q=q.float()), ValueError, r"q/k/v dtypes: expected one dtype"),
    (lambda q, k, v, L: dict(v=v.to(torch.int64)), ValueError, r"v.dtype: expected float16"),
    (lambda q, k, v, L: dict(q=q.numpy()), TypeError, r"q: expected a torch.Tensor, got ndarray"),
    (lambda q, k, v, L: dict(k=rand(2, 3, 32, 8), v=rand(2, 3, 32, 8)), ValueError,
     r"k heads: expected a divisor of q's 4 heads"),
    (lambda q, k, v, L: dict(v=v[:, :1]), ValueError, r"v heads: expected as many as k"),
    (lambda q, k, v, L: dict(k=k[..., :4]), ValueError, r"k.shape\[-1\]: expected q's head_dim 8"),
    (lambda q, k, v, L: dict(k=k[:1], v=v[:1]), ValueError, r"k/v batch: expected q's batch 2"),
    (lambda q, k, v, L: dict(v=v[:, :, :31]), ValueError, r"v.shape\[2\]: expected k's length 32"),
    (lambda q, k, v, L: dict(layout=sp.compile(sp.local(4), 33, block=16)), ValueError,
     r"layout: expected q_len=32 and kv_len=32 .* got q_len=33, kv_len=33"),
    (lambda q, k, v, L: dict(layout=sp.compile(sp.local(4), 32, 48, block=16)), ValueError, r"layout: expected"),
    (lambda q, k, v, L: dict(layout=_bad_layout(L)), ValueError, r"layout: invalid BlockLayout: col_idx"),
    (lambda q, k, v, L: dict(layout="local(4)"), TypeError, r"layout: expected a BlockLayout"),
    (lambda q, k, v, L: dict(layout=sp.compile(sp.heads(sp.local(1), sp.local(2), sp.local(3)), 32, block=16)),
     ValueError, r"layout.group_shape\[1\]: expected 1 or the number of query heads 4, got 3"),
    (lambda q, k, v, L: dict(layout=sp.compile(sp.document(), 32, block=16,
                                               context=[{"cu_seqlens": [0, 32]}] * 3)),
     ValueError, r"layout.group_shape\[0\]: expected 1 or the batch size 2, got 3"),
    (lambda q, k, v, L: dict(backend="cuda"), ValueError, r"backend: expected one of .*'reference'.* got 'cuda'"),
    (lambda q, k, v, L: dict(scale="big"), ValueError, r"scale: expected a float or None"),
])
def test_bad_inputs_name_the_argument(qkv, change, exc, match):
    q, k, v, layout = qkv
    args = dict(q=q, k=k, v=v, layout=layout)
    args.update(change(q, k, v, layout))
    kw = {n: args.pop(n) for n in ("backend", "scale") if n in args}
    with pytest.raises(exc, match=match):
        sp.attention(args["q"], args["k"], args["v"], args["layout"], **kw)


def test_device_mismatch_is_named():
    # a CUDA device is not needed: the check runs before any computation, so 'meta' tensors do
    q = rand(1, 1, 16, 4)
    k = torch.empty(1, 1, 16, 4, dtype=F64, device="meta")
    with pytest.raises(ValueError, match=r"q/k/v devices: expected one device for all three, got q cpu, k meta"):
        sp.attention(q, k, k, sp.compile(sp.causal, 16, block=16))


def test_trusted_skips_validation_and_invalid_layout_is_checked_otherwise(qkv):
    q, k, v, layout = qkv
    bad = _bad_layout(layout)
    with pytest.raises(ValueError, match="layout: invalid BlockLayout"):
        sp.attention(q, k, v, bad)
    # the same layout object again: still rejected (a failed check must not mark it validated)
    with pytest.raises(ValueError, match="layout: invalid BlockLayout"):
        sp.attention(q, k, v, bad)
    # invalid only in a field the executor never reads (mask_idx of a FULL block): trusted=True runs it
    causal = sp.compile(sp.causal, 32, block=16)
    midx = causal.mask_idx.copy()
    midx[np.flatnonzero(causal.block_kind == 0)[0]] = 0
    odd = replace(causal, mask_idx=midx)
    with pytest.raises(ValueError, match="layout: invalid BlockLayout: mask_idx"):
        sp.attention(q, k, v, odd)
    out = sp.attention(q, k, v, odd, trusted=True)
    close(out, sp.attention(q, k, v, causal))


@pytest.mark.parametrize("cu,match", [
    (torch.tensor([0, 10, 30]), r"cu_seqlens: expected non-decreasing from 0 to total_tokens=32"),
    (torch.tensor([1, 10, 32]), r"cu_seqlens: expected non-decreasing from 0"),
    (torch.tensor([0, 20, 10, 32]), r"cu_seqlens: expected non-decreasing"),
    (torch.tensor([0.0, 32.0]), r"cu_seqlens: expected a 1-D int32/int64 tensor"),
    (torch.tensor([[0, 32]]), r"cu_seqlens: expected a 1-D"),
    (torch.tensor([0]), r"cu_seqlens: expected a 1-D"),
    (torch.tensor([0, 32]), r"layout: expected q_len and kv_len >= the longest sequence \(32\)"),
])
def test_bad_cu_seqlens(cu, match):
    layout = sp.compile(sp.causal, 20, block=16)
    q = rand(32, 2, 4)
    with pytest.raises(ValueError, match=match):
        sp.attention(q, q, q, layout, cu_seqlens=cu)


def test_packed_shapes_are_checked():
    layout = sp.compile(sp.causal, 32, block=16)
    q = rand(32, 2, 4)
    with pytest.raises(ValueError, match=r"q.shape: expected 3 dims \(total_tokens, heads, head_dim\)"):
        sp.attention(q[None], q[None], q[None], layout, cu_seqlens=torch.tensor([0, 32]))
    with pytest.raises(ValueError, match=r"q/k/v total tokens: expected equal"):
        sp.attention(q, q[:30], q[:30], layout, cu_seqlens=torch.tensor([0, 32]))
    lay2 = sp.compile(sp.document(), 32, block=16, context=[{"cu_seqlens": [0, 32]}] * 3)
    with pytest.raises(ValueError, match=r"layout.group_shape\[0\]: expected 1 or the number of sequences \(2\)"):
        sp.attention(q, q, q, lay2, cu_seqlens=torch.tensor([0, 16, 32]))


def test_dtypes_and_return_value_forms():
    layout = sp.compile(sp.local(6), 40, block=16)
    q, k, v = (rand(1, 2, 40, 8, seed=s, dtype=torch.float32) for s in (0, 1, 2))
    out = sp.attention(q, k, v, layout)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (1, 2, 40, 8)
    out, lse = sp.attention(q, k, v, layout, return_lse=True)
    assert lse.dtype == torch.float32 and lse.shape == (1, 2, 40)
    want, want_lse = oracle(q, k, v, sp.local(6).dense_mask(40), 1 / math.sqrt(8))
    close(out, want, atol=1e-5)
    close(lse, want_lse, atol=1e-5)
    ob, _ = attention_blockwise(q, k, v, layout, 1 / math.sqrt(8))
    close(ob, want, atol=1e-5)
    for dt in (torch.float16, torch.bfloat16):
        o = sp.attention(q.to(dt), k.to(dt), v.to(dt), layout)
        assert o.dtype == dt
        close(o.float(), want, atol=2e-2)


# ------------------------------------------------------------------------------------------
# one long sequence
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_65536_tokens_single_head_blockwise(monkeypatch):
    import spattern.runtime.reference as ref

    def no_dense(*a, **k):
        raise AssertionError("the dense executor (N x N memory) was used for N = 65,536")

    monkeypatch.setattr(ref, "attention_dense", no_dense)
    N, D = 65536, 16
    p = (sp.local(256) | sp.sink(64)) & sp.causal
    layout = sp.compile(p, N, block=64)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, N, D, generator=g) for _ in range(3))
    out, lse = sp.attention(q, k, v, layout, backend="reference", return_lse=True)
    assert out.shape == (1, 1, N, D) and torch.isfinite(out).all() and torch.isfinite(lse).all()
    rows = np.sort(np.concatenate([[0, 1, 63, 64, 255, 256, 257, N - 1],
                                   np.random.default_rng(0).choice(N, 56, replace=False)]))
    geom = Geometry(N, N)
    keys = np.arange(N)
    scale = 1 / math.sqrt(D)
    for i in rows:
        allowed = np.flatnonzero(p.allowed(np.array([i]), keys, geom))
        if i >= 319:  # window [i - 255, i] and sinks [0, 64) are disjoint
            assert allowed.size == 320
        s = (k[0, 0, allowed].double() @ q[0, 0, i].double()) * scale
        w = torch.softmax(s, dim=0)
        want = w @ v[0, 0, allowed].double()
        assert torch.allclose(out[0, 0, i].double(), want, atol=1e-5), (i, (out[0, 0, i].double() - want).abs().max())
        assert abs(lse[0, 0, i].item() - torch.logsumexp(s, 0).item()) < 1e-4, i


def test_explicit_backend_that_cannot_run_the_call_says_why():
    layout = sp.compile(sp.local(4) & sp.causal, 32, block=16)
    q = torch.randn(1, 1, 32, 8, requires_grad=True)
    with pytest.raises(ValueError, match=r"backend='cupy' cannot run this call: q: expected dtype float16"):
        sp.attention(q, q, q, layout, backend="cupy")
    with torch.no_grad():  # auto on the CPU: the reference, with or without gradients
        assert sp.attention(q, q, q, layout).shape == q.shape
    sp.attention(q, q, q, layout).sum().backward()
    assert q.grad is not None
