"""GPU correctness of the block-sparse backward kernels (through autograd) against float64.

Bound per gradient (issue 12): max |grad - grad64| <= 2 * max |torch dense same-dtype grad - grad64|
+ floor, on every family of mask programs, bitmask blocks, empty rows and columns, GQA, layout
groups, packed varlen, odd lengths, 64/128 blocks, head dims 64/128, fp16/bf16. The dense twins are
plain torch ops on the dense token mask (``layout.to_dense()``).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spattern as sp  # noqa: E402
from kernel_fixtures import (  # noqa: E402
    PROGRAM_FAMILIES, AND, BAND, INF, eval_program, layout_from_masks,
)
from spattern.runtime import cupy_backend  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cupy_backend.is_available(), reason="needs CUDA and CuPy")]

FLOOR = {torch.bfloat16: 4e-3, torch.float16: 1e-3}
DTYPES = [torch.bfloat16, torch.float16]

FAMILIES = {name: PROGRAM_FAMILIES[name] for name in ['causal', 'window', 'dilated', 'strided', 'landmark', 'query_mod', 'not_andnot', 'empty_rows_cols']}


def _mask(prog, nq, nk):
    i, j = np.meshgrid(np.arange(nq), np.arange(nk), indexing="ij")
    return np.asarray(eval_program(prog, i, j), bool)


def dense_attention(q, k, v, m, scale, dtype):
    """Masked softmax attention in `dtype` with plain torch ops (zeros on empty rows). m (B,H,Nq,Nk)."""
    H, Hkv = q.shape[1], k.shape[1]
    q, k, v = q.to(dtype), k.to(dtype).repeat_interleave(H // Hkv, 1), v.to(dtype).repeat_interleave(H // Hkv, 1)
    rows = m.any(-1, keepdim=True)
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~m, -math.inf)
    s = torch.where(rows, s, torch.zeros_like(s))
    p = torch.softmax(s, -1) * rows
    return p @ v


def _bh_mask(masks, group_shape, B, H):
    Bg, Hg = group_shape
    mt = torch.from_numpy(np.asarray(masks)).cuda()
    idx = torch.tensor([[(b if Bg > 1 else 0) * Hg + (h if Hg > 1 else 0) for h in range(H)] for b in range(B)],
                       device="cuda")
    return mt[idx]


def _grads(fn, q, k, v, dout):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(dout.to(out.dtype))
    return out.detach(), q.grad, k.grad, v.grad


def check_grads(q, k, v, lay, masks, cu=None, scale=None):
    """Kernel grads (spattern.attention, backend='cupy') vs float64 and vs torch's own dtype error."""
    D = q.shape[-1]
    scale = scale if scale is not None else 1 / math.sqrt(D)
    dout = torch.randn_like(q)
    got = _grads(lambda a, b, c: sp.attention(a, b, c, lay, scale=scale, backend="cupy", cu_seqlens=cu),
                 q, k, v, dout)
    for g in got:
        assert not torch.isnan(g).any() and not torch.isinf(g).any(), "NaN/inf in outputs or gradients"
    if cu is None:
        seqs = [(slice(None), q, k, v, dout, masks)]
    else:
        seqs, cuh = [], cu.tolist()
        for s0, s1 in zip(cuh[:-1], cuh[1:]):
            if s1 > s0:
                t = lambda x: x[s0:s1].transpose(0, 1)[None]  # noqa: E731
                seqs.append((slice(s0, s1), t(q), t(k), t(v), t(dout), masks[:, : s1 - s0, : s1 - s0]))
    for sl, qs, ks, vs, ds, ms in seqs:
        B, H = qs.shape[:2]
        m = _bh_mask(ms, tuple(lay.group_shape), B, H)
        ref = _grads(lambda a, b, c: dense_attention(a, b, c, m, scale, torch.float64), qs, ks, vs, ds)
        same = _grads(lambda a, b, c: dense_attention(a, b, c, m, scale, q.dtype), qs, ks, vs, ds)
        mine = got if cu is None else [t[sl].transpose(0, 1)[None] for t in got]
        for name, a, r, s in zip(("out", "dq", "dk", "dv"), mine, ref, same):
            err = float((a.double() - r).abs().max()) if a.numel() else 0.0
            terr = float((s.double() - r).abs().max()) if a.numel() else 0.0
            bound = 2 * terr + FLOOR[q.dtype]
            assert err <= bound, f"{name}: max err {err:.3e} > bound {bound:.3e} (torch {q.dtype} err {terr:.3e})"
        rows = m.any(-1)  # (B,H,Nq): empty rows have zero dq
        assert torch.all(mine[1][~rows] == 0)
    return got


def _qkv(B, H, Hkv, N, D, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda *s: torch.randn(*s, device="cuda", generator=g).to(dtype)  # noqa: E731
    return mk(B, H, N, D), mk(B, Hkv, N, D), mk(B, Hkv, N, D)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("reads", ["0", "1"], ids=["programs", "bits"])
def test_program_families(family, D, dtype, reads, monkeypatch):
    """Each mask-program family, its PROGRAM blocks run by the kernels (SPATTERN_MMA_BITMASK=0) and read
    as their bitmask twin (=1; the default, auto, takes one or the other by the program's ops)."""
    monkeypatch.setenv(cupy_backend.ENV_BITMASK, reads)
    n = 231
    prog = FAMILIES[family]
    mask = _mask(prog, n, n)
    lay = layout_from_masks(mask[None], 64, 64, programs=[prog])
    q, k, v = _qkv(1, 2, 2, n, D, dtype, seed=sorted(FAMILIES).index(family))
    check_grads(q, k, v, lay, mask[None])


@pytest.mark.parametrize("block", [(64, 128), (128, 64), (128, 128)])
@pytest.mark.parametrize("D", [64, 128])
def test_block_sizes_program_and_bitmask(block, D):
    n = 300
    prog = FAMILIES["landmark"]
    mask = _mask(prog, n, n) & _mask(FAMILIES["causal"], n, n)
    progc = prog + [(BAND, 0, INF, 0), (AND, 0, 0, 0)]
    lay = layout_from_masks(mask[None], *block, programs=[progc], bitmask_every=3)
    q, k, v = _qkv(1, 2, 1, n, D, torch.bfloat16, seed=7)
    check_grads(q, k, v, lay, mask[None])


@pytest.mark.parametrize("seed", range(6))
def test_random_bitmask_layouts(seed):
    """Custom bitmask patterns with empty rows and empty columns, random sizes and block shapes."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(65, 400))
    block = [(64, 64), (64, 128), (128, 64), (128, 128)][seed % 4]
    mask = rng.random((n, n)) < rng.choice([0.02, 0.1, 0.5])
    mask[rng.integers(0, n, 5)] = False      # empty rows
    mask[:, rng.integers(0, n, 5)] = False   # empty columns
    mask[: n // 3, : n // 3] |= np.tril(np.ones((n // 3, n // 3), bool))  # some full blocks
    lay = layout_from_masks(mask[None], *block)
    q, k, v = _qkv(1, 2, 1, n, [64, 128][seed % 2], DTYPES[seed % 2], seed)
    check_grads(q, k, v, lay, mask[None])


@pytest.mark.parametrize("Hkv", [1, 2, 4])
def test_gqa(Hkv):
    n = 257
    prog = FAMILIES["strided"]
    mask = _mask(prog, n, n)
    lay = layout_from_masks(mask[None], 128, 64, programs=[prog], bitmask_every=2)
    q, k, v = _qkv(2, 4, Hkv, n, 64, torch.bfloat16, seed=Hkv)
    check_grads(q, k, v, lay, mask[None])


@pytest.mark.parametrize("group_shape", [(1, 4), (2, 1), (2, 4)])
def test_layout_groups(group_shape):
    n = 190
    G = group_shape[0] * group_shape[1]
    names = sorted(FAMILIES)
    progs = [FAMILIES[names[g % len(names)]] for g in range(G)]
    masks = np.stack([_mask(p, n, n) for p in progs])
    lay = layout_from_masks(masks, 64, 64, group_shape=group_shape, programs=progs, bitmask_every=3)
    q, k, v = _qkv(2, 4, 2, n, 128, torch.float16, seed=11)
    check_grads(q, k, v, lay, masks)


@pytest.mark.parametrize("D", [64, 128])
def test_varlen_packed(D):
    lens = [130, 257, 1, 64, 0, 200]
    H, Hkv = 4, 2
    prog = FAMILIES["landmark"]
    L = max(lens)
    mask = _mask(prog, L, L)
    lay = layout_from_masks(mask[None], 64, 64, programs=[prog], bitmask_every=2)
    T = sum(lens)
    g = torch.Generator(device="cuda").manual_seed(5)
    q = torch.randn(T, H, D, device="cuda", generator=g).bfloat16()
    k = torch.randn(T, Hkv, D, device="cuda", generator=g).bfloat16()
    v = torch.randn(T, Hkv, D, device="cuda", generator=g).bfloat16()
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32, device="cuda")
    check_grads(q, k, v, lay, mask[None], cu=cu)


@pytest.mark.parametrize("text", ["(local(200) | random(2, seed=3) | sink(128)) & causal",
                                  "local(100) | random(2, seed=3) | sink(64)"])
@pytest.mark.parametrize("block", [(64, 64), (128, 128)])
def test_compiled_patterns(text, block):
    n = 1000
    lay = sp.compile(text, n, block=block)
    q, k, v = _qkv(1, 2, 2, n, 128, torch.bfloat16, seed=3)
    check_grads(q, k, v, lay, lay.to_dense())


@pytest.mark.parametrize("text", ["(local(322) | landmark(every=512) | sink(64)) & causal",
                                  "(local(64) | strided(128)) & causal", "local(200) & causal"])
def test_programs_and_their_bits_give_identical_outputs_and_gradients(text, monkeypatch):
    """SPATTERN_MMA_BITMASK: the forward and the backward read a layout's PROGRAM blocks as the kernels'
    programs (0) or as the bitmask twin (1, and auto where the program is more than bands): the same token
    mask, so the same outputs and gradients to the bit. Each mode's twin is built once per layout."""
    n = 1024
    lay = sp.compile(text, n, block=(64, 64))
    q, k, v = _qkv(2, 4, 4, n, 64, torch.bfloat16, seed=11)
    dout = torch.randn_like(q)
    got = {}
    for mode in ("0", "1", "auto"):
        monkeypatch.setenv(cupy_backend.ENV_BITMASK, mode)
        got[mode] = _grads(lambda a, b, c: sp.attention(a, b, c, lay, backend="cupy"), q, k, v, dout)
    for mode in ("1", "auto"):
        for name, x, y in zip(("out", "dq", "dk", "dv"), got["0"], got[mode]):
            assert torch.equal(x, y), f"{text}, mode {mode}: {name} differs by {(x - y).abs().max().item()}"
    twin = cupy_backend.kernel_layout(lay, q.device)
    assert (twin is lay) == (not cupy_backend.reads_as_bits(lay, "auto"))
    assert cupy_backend.kernel_layout(lay, q.device) is twin  # cached on the layout


def test_poisoned_outputs_overwritten():
    """The backward's outputs come from the caching allocator: fill the blocks it will reuse with NaN first."""
    from spattern.runtime import cupy_bwd

    n, D = 333, 128
    mask = _mask(FAMILIES["empty_rows_cols"], n, n)
    lay = layout_from_masks(mask[None], 128, 64, programs=[FAMILIES["empty_rows_cols"]], bitmask_every=2)
    q, k, v = _qkv(1, 4, 2, n, D, torch.bfloat16, seed=1)
    out, lse = cupy_backend.attention_cupy(q, k, v, lay, 1 / math.sqrt(D), True, None)
    dout = torch.randn_like(out)
    for _ in range(3):
        poison = [torch.full_like(t, float("nan")) for t in (q, k, v)]
        del poison
        dq, dk, dv = cupy_bwd.attention_backward_cupy(dout, q, k, v, out, lse, lay, 1 / math.sqrt(D))
        torch.cuda.synchronize()
        for t in (dq, dk, dv):
            assert not torch.isnan(t).any()


def test_auto_picks_cuda_kernels_for_training_and_compile_works():
    lay = sp.compile("(local(128) | sink(64)) & causal", 512, block=(128, 128))
    q, k, v = (t.requires_grad_(True) for t in _qkv(1, 2, 2, 512, 64, torch.bfloat16, seed=2))
    assert sp.runtime.api.backend_for(q, k, v, lay) == "cupy"
    from spattern.runtime.cupy_autograd import bs_attn_fwd, layout_id

    lid, scale = layout_id(lay), 1 / math.sqrt(64)
    f = torch.compile(lambda a, b, c: bs_attn_fwd(a, b, c, lid, scale, None)[0], fullgraph=True)
    out = f(q, k, v)
    out.sum().backward()
    g_c = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    sp.attention(q, k, v, lay).sum().backward()
    for a, b in zip(g_c, (q.grad, k.grad, v.grad)):
        assert torch.equal(a, b), "compiled and eager gradients differ (the kernels are deterministic)"
