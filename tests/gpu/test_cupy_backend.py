"""GPU correctness of the CuPy block-sparse kernel against a float64 dense reference.

Every test is marked `gpu`; it is skipped where CUDA or CuPy is missing. Bound (per the issue):
max |out - ref64| <= 2 * max |torch dense attention (same dtype, same mask) - ref64| + floor.
Outputs (and LSE) are poisoned with NaN before each run and must be fully overwritten.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kernel_fixtures import (  # noqa: E402
    PROGRAM_FAMILIES, AND, BAND, INF, eval_program, layout_dense_mask, layout_from_masks,
)
from spattern.evaluation.bench_attention import band_landmark_layout  # noqa: E402
from spattern.runtime import cupy_backend  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cupy_backend.is_available(), reason="needs CUDA and CuPy"),
]

FLOOR = {torch.bfloat16: 2e-3, torch.float16: 5e-4}

# Program-described families (one per opcode family) on (i, j).
FAMILIES = {name: PROGRAM_FAMILIES[name] for name in ['causal', 'window', 'causal_window', 'dilated', 'strided', 'landmark', 'query_mod', 'not_andnot', 'empty_rows']}


def _mask_from_program(prog, nq, nk):
    i, j = np.meshgrid(np.arange(nq), np.arange(nk), indexing="ij")
    return eval_program(prog, i, j)


def reference(q, k, v, masks, group_shape, scale):
    """float64 dense masked softmax. q (B,H,Nq,D), k/v (B,Hkv,Nk,D), masks (G,Nq,Nk) bool."""
    B, H, Nq, _ = q.shape
    Hkv = k.shape[1]
    q64, k64, v64 = q.double(), k.double(), v.double()
    k64 = k64.repeat_interleave(H // Hkv, dim=1)
    v64 = v64.repeat_interleave(H // Hkv, dim=1)
    m = bh_mask(masks, group_shape, B, H, q.device)
    s = (q64 @ k64.transpose(-1, -2)) * scale
    s = s.masked_fill(~m, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None].clamp(min=-1e300))
    p = torch.where(m, p, torch.zeros_like(p))
    out = p @ v64
    return out, lse, m


def bh_mask(masks, group_shape, B, H, device):
    Bg, Hg = group_shape
    mt = torch.from_numpy(np.asarray(masks)).to(device)
    idx = torch.tensor([[(b if Bg > 1 else 0) * Hg + (h if Hg > 1 else 0) for h in range(H)] for b in range(B)],
                       device=device)
    return mt[idx]  # (B,H,Nq,Nk)


def torch_dense_error(q, k, v, m, scale, ref):
    import torch.nn.functional as F

    H, Hkv = q.shape[1], k.shape[1]
    kk = k.repeat_interleave(H // Hkv, dim=1)
    vv = v.repeat_interleave(H // Hkv, dim=1)
    o = F.scaled_dot_product_attention(q, kk, vv, attn_mask=m, scale=scale)
    rows = m.any(-1)
    err = (o.double() - ref).abs().nan_to_num(0.0)
    return float(err[rows].max()) if rows.any() else 0.0


def run_and_check(q, k, v, lay, masks, scale=None, check_lse=True, attend=None):
    """Run ``attend`` (default: the mma.sync kernel, ``cupy_backend.attention_cupy``; test_hopper_gpu.py
    passes the Hopper kernel) into NaN-poisoned outputs and check them against the float64 reference.
    Returns (err, torch dense err, out)."""
    attend = attend or cupy_backend.attention_cupy
    D = q.shape[-1]
    scale = scale if scale is not None else 1.0 / math.sqrt(D)
    out = torch.full_like(q, float("nan"))
    lse_out = torch.full(q.shape[:3], float("nan"), device=q.device, dtype=torch.float32)
    o, lse = attend(q, k, v, lay, scale, True, None, out=out, lse_out=lse_out)
    torch.cuda.synchronize()
    assert o.data_ptr() == out.data_ptr()
    assert not torch.isnan(o).any(), "output has unwritten (NaN) elements"
    assert not torch.isnan(lse).any(), "LSE has unwritten (NaN) elements"
    ref, ref_lse, m = reference(q, k, v, masks, tuple(lay.group_shape), scale)
    err = float((o.double() - ref).abs().max())
    terr = torch_dense_error(q, k, v, m, scale, ref)
    bound = 2 * terr + FLOOR[q.dtype]
    assert err <= bound, f"max abs err {err:.3e} > bound {bound:.3e} (torch dense err {terr:.3e})"
    rows = m.any(-1)
    assert torch.all(o[~rows] == 0), "empty rows must be zeros"
    if check_lse:
        assert torch.all(torch.isneginf(lse[~rows])), "empty rows must have LSE = -inf"
        if rows.any():
            lerr = float((lse.double()[rows] - ref_lse[rows]).abs().max())
            assert lerr <= 2e-2, f"LSE err {lerr:.3e}"
    return err, terr, o


def _qkv(B, H, Hkv, Nq, Nk, D, dtype, seed=None):
    g = torch.Generator(device="cuda")
    g.manual_seed(seed if seed is not None else int(np.random.randint(1 << 30)))
    mk = lambda *s: torch.randn(*s, device="cuda", dtype=torch.float32, generator=g).to(dtype)
    return mk(B, H, Nq, D), mk(B, Hkv, Nk, D), mk(B, Hkv, Nk, D)


DTYPES = [torch.bfloat16, torch.float16]
HDS = [64, 128]


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", HDS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("reads", ["0", "1"], ids=["programs", "bits"])
def test_program_families(family, D, dtype, reads, monkeypatch):
    """Each mask-program family, its PROGRAM blocks run by the kernels (SPATTERN_MMA_BITMASK=0) and read
    as their bitmask twin (=1; the default, auto, takes one or the other by the program's ops)."""
    monkeypatch.setenv(cupy_backend.ENV_BITMASK, reads)
    n = 200 if family != "empty_rows" else 230
    prog = FAMILIES[family]
    mask = _mask_from_program(prog, n, n)
    lay = layout_from_masks(mask[None], 64, 64, programs=[prog])
    assert np.array_equal(layout_dense_mask(lay)[0], mask)
    q, k, v = _qkv(1, 2, 2, n, n, D, dtype)
    run_and_check(q, k, v, lay, mask[None])


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", HDS)
@pytest.mark.parametrize("kind", ["dense", "custom_bitmask", "mixed_program_bitmask"])
def test_bitmask_and_dense(kind, D, dtype):
    nq, nk = 171, 301
    rng = np.random.default_rng()
    if kind == "dense":
        mask, progs, every = np.ones((nq, nk), bool), None, 0
    elif kind == "custom_bitmask":  # a pattern with no program: random blocks of random tokens
        mask = rng.random((nq, nk)) < 0.3
        mask[:, :64] |= rng.random((nq, 64)) < 0.9
        mask[40:60] = False  # some empty rows
        progs, every = None, 0
    else:
        prog = FAMILIES["landmark"]
        mask = _mask_from_program(prog, nq, nk)
        progs, every = [prog], 2
    lay = layout_from_masks(mask[None], 64, 64, programs=progs, bitmask_every=every)
    assert np.array_equal(layout_dense_mask(lay)[0], mask)
    q, k, v = _qkv(2, 2, 2, nq, nk, D, dtype)
    run_and_check(q, k, v, lay, mask[None])


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", HDS)
@pytest.mark.parametrize("block", [(64, 128), (128, 64), (128, 128)], ids=str)
@pytest.mark.parametrize("cfg", sorted(cupy_backend.KERNEL_CONFIGS))
def test_block_sizes(block, D, dtype, cfg, monkeypatch):
    monkeypatch.setenv("SPATTERN_KERNEL_CONFIG", cfg)
    if block[0] == 64 and cfg != cupy_backend.DEFAULT_CONFIG[D]:
        pytest.skip("64-row layouts have one kernel configuration")
    n = 333
    prog = FAMILIES["landmark"] + [(BAND, 0, INF, 0), (AND, 0, 0, 0)]
    mask = _mask_from_program(prog, n, n)
    lay = layout_from_masks(mask[None], *block, programs=[prog], bitmask_every=3)
    q, k, v = _qkv(1, 3, 3, n, n, D, dtype)
    run_and_check(q, k, v, lay, mask[None])


@pytest.mark.parametrize("group_shape", [(1, 4), (2, 1), (2, 4)], ids=str)
def test_per_group_layouts(group_shape):
    check_per_group_layouts(group_shape, (128, 64))


def check_per_group_layouts(group_shape, block, run=run_and_check):
    """Per-(batch, head) group layouts, program and bitmask groups mixed; ``run``: run_and_check or the
    Hopper suite's variant of it (test_hopper_gpu.py)."""
    B, H, n = 2, 4, 190
    G = group_shape[0] * group_shape[1]
    rng = np.random.default_rng()
    names = ["causal", "window", "dilated", "landmark", "strided", "query_mod", "not_andnot", "empty_rows"]
    progs, masks = [], []
    for g in range(G):
        if g % 3 == 2:  # no program: bitmask group
            m = rng.random((n, n)) < 0.2
            progs.append([])
        else:
            p = FAMILIES[names[g % len(names)]]
            m = _mask_from_program(p, n, n)
            progs.append(p)
        masks.append(m)
    masks = np.stack(masks)
    lay = layout_from_masks(masks, *block, group_shape=group_shape, programs=progs, bitmask_every=4)
    q, k, v = _qkv(B, H, H, n, n, 128, torch.bfloat16)
    run(q, k, v, lay, masks)


@pytest.mark.parametrize("Hkv", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_gqa(Hkv, dtype):
    check_gqa(Hkv, dtype)


def check_gqa(Hkv, dtype, run=run_and_check):
    n = 257
    prog = FAMILIES["causal_window"]
    mask = _mask_from_program(prog, n, n)
    lay = layout_from_masks(mask[None], 128, 64, programs=[prog])
    q, k, v = _qkv(2, 4, Hkv, n, n, 64, dtype)
    run(q, k, v, lay, mask[None])


# ---- checks shared with tests/gpu/test_hopper_gpu.py: `attend` is the forward under test (the signature
# of cupy_backend.attention_cupy), `block` the layout's (block_q, block_k)
def check_varlen_packed(attend, D, dtype, block):
    lens = [130, 257, 1, 64, 0, 200]
    H, Hkv = 4, 2
    Lmax = max(lens)
    prog = FAMILIES["causal_window"]
    mask = _mask_from_program(prog, Lmax, Lmax)
    lay = layout_from_masks(mask[None], *block, programs=[prog], bitmask_every=2)
    T = sum(lens)
    g = torch.Generator(device="cuda")
    g.manual_seed(int(np.random.randint(1 << 30)))
    q = torch.randn(T, H, D, device="cuda", generator=g).to(dtype)
    k = torch.randn(T, Hkv, D, device="cuda", generator=g).to(dtype)
    v = torch.randn(T, Hkv, D, device="cuda", generator=g).to(dtype)
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32, device="cuda")
    out = torch.full_like(q, float("nan"))
    lse_out = torch.full((H, T), float("nan"), device="cuda")
    o, lse = attend(q, k, v, lay, 1 / math.sqrt(D), True, cu, out=out, lse_out=lse_out)
    torch.cuda.synchronize()
    assert not torch.isnan(o).any() and not torch.isnan(lse).any()
    s0 = 0
    for L in lens:
        if L == 0:
            continue
        qs = q[s0:s0 + L].transpose(0, 1)[None]
        ks = k[s0:s0 + L].transpose(0, 1)[None]
        vs = v[s0:s0 + L].transpose(0, 1)[None]
        ref, ref_lse, m = reference(qs, ks, vs, mask[None, :L, :L], (1, 1), 1 / math.sqrt(D))
        err = float((o[s0:s0 + L].transpose(0, 1)[None].double() - ref).abs().max())
        terr = torch_dense_error(qs, ks, vs, m, 1 / math.sqrt(D), ref)
        assert err <= 2 * terr + FLOOR[dtype], f"seq len {L}: err {err:.3e}, torch {terr:.3e}"
        lerr = float((lse[:, s0:s0 + L].double() - ref_lse[0]).abs().max())
        assert lerr <= 2e-2
        s0 += L


def check_noncontiguous_inputs_and_no_lse(attend, block):
    n, D = 256, 64
    prog = FAMILIES["window"]
    mask = _mask_from_program(prog, n, n)
    lay = layout_from_masks(mask[None], *block, programs=[prog])
    q, k, v = _qkv(1, 2, 2, n, n, D, torch.bfloat16)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # (B,H,N,D) view with non-contiguous strides
    o, lse = attend(qt, k, v, lay, 0.125, False, None)
    assert lse is None
    ref, _, _ = reference(q, k, v, mask[None], (1, 1), 0.125)
    assert float((o.double() - ref).abs().max()) < 2e-2


def check_structured_layout_large(attend):
    """Analytic band+landmark layout (the benchmark's), N=4096, checked on sampled rows."""
    n, D, H = 4096, 128, 2
    lay = band_landmark_layout(n, (128, 128), W=300, L=128, causal=True)
    q, k, v = _qkv(1, H, H, n, n, D, torch.bfloat16)
    o, lse = attend(q, k, v, lay, 1 / math.sqrt(D), True, None)
    rows = torch.randint(0, n, (256,), device="cuda")
    i = rows[:, None]
    j = torch.arange(n, device="cuda")[None, :]
    m = (((i - j) >= -300) & ((i - j) <= 300) | (j < 128) | (i < 128)) & (i >= j)
    s = (q[0][:, rows].double() @ k[0].double().transpose(-1, -2)) / math.sqrt(D)
    s = s.masked_fill(~m, -math.inf)
    ref = torch.softmax(s, -1) @ v[0].double()
    err = float((o[0][:, rows].double() - ref).abs().max())
    assert err < 1.5e-2, err
    assert float((lse[0][:, rows].double() - torch.logsumexp(s, -1)).abs().max()) < 2e-2


def check_long_sequences(attend, n, H):
    D = 128
    lay = band_landmark_layout(n, (128, 64), W=512, L=64, causal=True)
    q, k, v = _qkv(1, H, H, n, n, D, torch.bfloat16)
    o, lse = attend(q, k, v, lay, 1 / math.sqrt(D), True, None)
    torch.cuda.synchronize()
    rows = torch.cat([torch.randint(0, n, (64,), device="cuda"), torch.tensor([n - 1], device="cuda")])
    hs = [0, H - 1]
    i = rows[:, None]
    j = torch.arange(n, device="cuda")[None, :]
    m = ((((i - j) >= -512) & ((i - j) <= 512)) | (j < 64) | (i < 64)) & (i >= j)
    for h in hs:
        s = (q[0, h, rows].double() @ k[0, h].double().T) / math.sqrt(D)
        s = s.masked_fill(~m, -math.inf)
        ref = torch.softmax(s, -1) @ v[0, h].double()
        assert float((o[0, h, rows].double() - ref).abs().max()) < 1.5e-2


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", HDS)
def test_varlen_packed(D, dtype):
    check_varlen_packed(cupy_backend.attention_cupy, D, dtype, (64, 64))


def test_noncontiguous_inputs_and_no_lse():
    check_noncontiguous_inputs_and_no_lse(cupy_backend.attention_cupy, (64, 64))


def test_structured_layout_large():
    check_structured_layout_large(cupy_backend.attention_cupy)


@pytest.mark.parametrize("n,H", [(65536, 16), (131072, 1)])
def test_long_sequences(n, H):
    check_long_sequences(cupy_backend.attention_cupy, n, H)


# Built-in families through the project compiler (spattern.compile), plus a custom predicate.
COMPILED_PATTERNS = [
    "full()", "causal(full())", "local(37)", "local(40, causal=true) | sink(3)", "sink(5)", "strided(7) & causal",
    "dilated(3, dilation=5)", "landmark(every=31)", "(local(9) | landmark(every=31)) & causal - sink(2)",
    "blockstrided(2, block=24)", "random(2, seed=3, block=16)", "document([0, 100, 131, 300]) & causal",
    "heads(local(3), strided(5))", "custom('sp_kernel_test') & causal",
]


def _compiled(spec, n, block):
    spattern = pytest.importorskip("spattern")
    if not hasattr(spattern, "compile"):
        pytest.skip("spattern.compile not available")
    from spattern.patterns.registry import PREDICATES, register_predicate

    if "sp_kernel_test" not in PREDICATES:
        register_predicate("sp_kernel_test", lambda qi, ki: ((qi * 7 + ki * 3) % 11) < 4)
    return spattern.compile(spec, n, block=block)


@pytest.mark.parametrize("block", [(64, 64), (128, 64), (128, 128)], ids=str)
@pytest.mark.parametrize("spec", COMPILED_PATTERNS)
def test_compiled_patterns(spec, block):
    n = 300
    lay = _compiled(spec, n, block)
    masks = lay.to_dense()
    H = 2
    D = 64 if block[1] == 64 else 128
    dtype = torch.bfloat16 if block[0] == 128 else torch.float16
    q, k, v = _qkv(1, H, H if lay.group_shape[1] > 1 else 1, n, n, D, dtype)
    run_and_check(q, k, v, lay, masks)


def test_project_reference_and_api_agree():
    """The project's own float64 reference and spattern.attention(backend='cupy') on a compiled layout."""
    from spattern.runtime.reference import attention_reference

    spattern = pytest.importorskip("spattern")
    n, D = 257, 128
    lay = _compiled("(local(20) | sink(3)) & causal", n, (64, 64))
    q, k, v = _qkv(2, 4, 2, n, n, D, torch.bfloat16)
    ref, ref_lse = attention_reference(q.double(), k.double(), v.double(), lay, D ** -0.5, True, None)
    mine, lse = spattern.attention(q, k, v, lay, backend="cupy", return_lse=True)
    ref2, ref2_lse, _ = reference(q, k, v, lay.to_dense(), tuple(lay.group_shape), D ** -0.5)
    assert float((ref.double() - ref2).abs().max()) < 1e-9
    assert float((mine.double() - ref.double()).abs().max()) < 2e-2
    finite = torch.isfinite(ref_lse)
    assert float((lse.double()[finite] - ref_lse.double()[finite]).abs().max()) < 2e-2


def test_cupy_stream_is_torchs_stream_without_deprecation_warning():
    """The kernels launch on torch's current stream (a side stream too), through CuPy's non-deprecated
    external-stream entry, and work queued there is ordered with torch's."""
    import warnings

    import cupy

    dev = torch.device("cuda", torch.cuda.current_device())
    side = torch.cuda.Stream(dev)
    with torch.cuda.stream(side), warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        s = cupy_backend.cupy_stream(dev)
        assert s.ptr == side.cuda_stream
        x = torch.zeros(1 << 20, device=dev)
        torch.cuda._sleep(1_000_000)                      # keep the stream busy before the CuPy work
        with s:
            cupy.from_dlpack(x).fill(1.0)                 # queued behind the sleep, on the same stream
        y = x.sum()
    side.synchronize()
    assert float(y) == float(1 << 20)
