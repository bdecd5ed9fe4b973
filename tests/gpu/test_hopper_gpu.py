"""GPU correctness of the Hopper (sm_90a) forward kernel (issue 13) against the float64 dense reference
of tests/gpu/test_cupy_backend.py, and against its slow twin, the mma.sync kernel.

Same bound as the mma.sync kernel's tests: max |out - ref64| <= 2 * max |torch dense attention (same
dtype, same mask) - ref64| + floor; outputs and LSE are poisoned with NaN first and must be fully
written. The parametrization follows test_cupy_backend.py with the layouts the kernel takes
(block_q = 128, block_k 64 or 128). Every test is marked `gpu` and needs a compute-capability 9.0 device.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kernel_fixtures import AND, BAND, INF, layout_dense_mask, layout_from_masks  # noqa: E402
from spattern.evaluation.bench_attention import band_landmark_layout  # noqa: E402
from spattern.runtime import cupy_backend, hopper_backend  # noqa: E402
from test_cupy_backend import (  # noqa: E402  (the one oracle of the forward kernels)
    COMPILED_PATTERNS, DTYPES, FAMILIES, FLOOR, HDS, _compiled, _mask_from_program, _qkv, reference,
    torch_dense_error,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not hopper_backend.is_available(), reason="needs CuPy and a compute-capability 9.0 GPU"),
]

BLOCKS = [(128, 64), (128, 128)]


def run_and_check(q, k, v, lay, masks, scale=None, check_lse=True, twin=True):
    """Run the Hopper kernel into NaN-poisoned outputs; check against the float64 reference (and,
    with ``twin``, against the mma.sync kernel under the same bound). Returns (err, torch err)."""
    D = q.shape[-1]
    scale = scale if scale is not None else 1.0 / math.sqrt(D)
    out = torch.full_like(q, float("nan"))
    lse_out = torch.full(q.shape[:3], float("nan"), device=q.device, dtype=torch.float32)
    o, lse = hopper_backend.attention_hopper(q, k, v, lay, scale, True, None, out=out, lse_out=lse_out)
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
    if twin:
        o2, lse2 = cupy_backend.attention_cupy(q, k, v, lay, scale, True, None)
        terr2 = float((o2.double() - o.double()).abs().max())
        assert terr2 <= bound, f"Hopper vs mma.sync kernel: max abs diff {terr2:.3e} > {bound:.3e}"
    return err, terr


@pytest.mark.parametrize("block", BLOCKS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", HDS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_program_families(family, D, dtype, block):
    n = 200 if family != "empty_rows" else 230
    prog = FAMILIES[family]
    mask = _mask_from_program(prog, n, n)
    lay = layout_from_masks(mask[None], *block, programs=[prog])
    assert np.array_equal(layout_dense_mask(lay)[0], mask)
    q, k, v = _qkv(1, 2, 2, n, n, D, dtype)
    run_and_check(q, k, v, lay, mask[None])


@pytest.mark.parametrize("block", BLOCKS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", HDS)
@pytest.mark.parametrize("kind", ["dense", "custom_bitmask", "mixed_program_bitmask"])
def test_bitmask_and_dense(kind, D, dtype, block):
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
    lay = layout_from_masks(mask[None], *block, programs=progs, bitmask_every=every)
    assert np.array_equal(layout_dense_mask(lay)[0], mask)
    q, k, v = _qkv(2, 2, 2, nq, nk, D, dtype)
    run_and_check(q, k, v, lay, mask[None])


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_empty_block_rows_and_long_rows(block):
    """Whole 128-row blocks with no key (the CTA's empty-row path: no TMA, no barrier wait) next to rows
    of many tiles (the K/V ring wraps several times)."""
    n = 1100
    mask = np.ones((n, n), bool)
    mask[128:256] = False
    mask[900:1024] = False
    mask[600:700, 500:] = False
    lay = layout_from_masks(mask[None], *block, bitmask_every=3)
    q, k, v = _qkv(1, 2, 2, n, n, 128, torch.bfloat16)
    run_and_check(q, k, v, lay, mask[None])


@pytest.mark.parametrize("block", BLOCKS, ids=str)
@pytest.mark.parametrize("group_shape", [(1, 4), (2, 1), (2, 4)], ids=str)
def test_per_group_layouts(group_shape, block):
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
    run_and_check(q, k, v, lay, masks)


@pytest.mark.parametrize("Hkv", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_gqa(Hkv, dtype):
    n = 257
    prog = FAMILIES["causal_window"]
    mask = _mask_from_program(prog, n, n)
    lay = layout_from_masks(mask[None], 128, 64, programs=[prog])
    q, k, v = _qkv(2, 4, Hkv, n, n, 64, dtype)
    run_and_check(q, k, v, lay, mask[None])


@pytest.mark.parametrize("block", BLOCKS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", HDS)
def test_varlen_packed(D, dtype, block):
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
    o, lse = hopper_backend.attention_hopper(q, k, v, lay, 1 / math.sqrt(D), True, cu, out=out, lse_out=lse_out)
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


def test_noncontiguous_inputs_and_no_lse():
    n, D = 256, 64
    prog = FAMILIES["window"]
    mask = _mask_from_program(prog, n, n)
    lay = layout_from_masks(mask[None], 128, 128, programs=[prog])
    q, k, v = _qkv(1, 2, 2, n, n, D, torch.bfloat16)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # (B,H,N,D) view with non-contiguous strides
    o, lse = hopper_backend.attention_hopper(qt, k, v, lay, 0.125, False, None)
    assert lse is None
    ref, _, _ = reference(q, k, v, mask[None], (1, 1), 0.125)
    assert float((o.double() - ref).abs().max()) < 2e-2


def test_structured_layout_large():
    """Analytic band+landmark layout (the benchmark's), N=4096, checked on sampled rows."""
    n, D, H = 4096, 128, 2
    lay = band_landmark_layout(n, (128, 128), W=300, L=128, causal=True)
    q, k, v = _qkv(1, H, H, n, n, D, torch.bfloat16)
    o, lse = hopper_backend.attention_hopper(q, k, v, lay, 1 / math.sqrt(D), True, None)
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


@pytest.mark.parametrize("n,H", [(65536, 16), (131072, 1)])
def test_long_sequences(n, H):
    D = 128
    lay = band_landmark_layout(n, (128, 64), W=512, L=64, causal=True)
    q, k, v = _qkv(1, H, H, n, n, D, torch.bfloat16)
    o, lse = hopper_backend.attention_hopper(q, k, v, lay, 1 / math.sqrt(D), True, None)
    torch.cuda.synchronize()
    rows = torch.cat([torch.randint(0, n, (64,), device="cuda"), torch.tensor([n - 1], device="cuda")])
    i = rows[:, None]
    j = torch.arange(n, device="cuda")[None, :]
    m = ((((i - j) >= -512) & ((i - j) <= 512)) | (j < 64) | (i < 64)) & (i >= j)
    for h in [0, H - 1]:
        s = (q[0, h, rows].double() @ k[0, h].double().T) / math.sqrt(D)
        s = s.masked_fill(~m, -math.inf)
        ref = torch.softmax(s, -1) @ v[0, h].double()
        assert float((o[0, h, rows].double() - ref).abs().max()) < 1.5e-2


@pytest.mark.parametrize("block", BLOCKS, ids=str)
@pytest.mark.parametrize("spec", COMPILED_PATTERNS)
def test_compiled_patterns(spec, block):
    n = 300
    lay = _compiled(spec, n, block)
    masks = lay.to_dense()
    H = 2
    D = 64 if block[1] == 64 else 128
    q, k, v = _qkv(1, H, H if lay.group_shape[1] > 1 else 1, n, n, D, torch.bfloat16)
    run_and_check(q, k, v, lay, masks)


# ----------------------------------------------------------------------------- variants and selection
@pytest.mark.parametrize("pingpong,stages", [("0", None), ("1", "3"), ("0", "4")])
def test_variants(pingpong, stages, monkeypatch):
    """Ping-pong off (each consumer warpgroup issues freely) and deeper rings give the same results."""
    monkeypatch.setenv("SPATTERN_HOPPER_PINGPONG", pingpong)
    if stages is not None:
        monkeypatch.setenv("SPATTERN_HOPPER_STAGES", stages)
    n = 700
    prog = FAMILIES["landmark"] + [(BAND, 0, INF, 0), (AND, 0, 0, 0)]
    mask = _mask_from_program(prog, n, n)
    lay = layout_from_masks(mask[None], 128, 64, programs=[prog], bitmask_every=3)
    q, k, v = _qkv(1, 3, 3, n, n, 128, torch.bfloat16)
    run_and_check(q, k, v, lay, mask[None])


def test_api_hook(monkeypatch):
    """SPATTERN_KERNEL=hopper routes spattern.attention(backend='cupy') to this kernel; unset, the
    mma.sync kernel runs, and `auto` picks the cupy backend as before."""
    import spattern
    from spattern.runtime.api import backend_for

    n, D = 300, 128
    lay = _compiled("(local(20) | sink(3)) & causal", n, (128, 128))
    q, k, v = _qkv(1, 4, 2, n, n, D, torch.bfloat16)
    want_h, _ = hopper_backend.attention_hopper(q, k, v, lay, D ** -0.5, False, None)
    want_c, _ = cupy_backend.attention_cupy(q, k, v, lay, D ** -0.5, False, None)
    monkeypatch.setenv("SPATTERN_KERNEL", "hopper")
    assert torch.equal(spattern.attention(q, k, v, lay, backend="cupy"), want_h)
    assert backend_for(q, k, v, lay) == "cupy"
    monkeypatch.delenv("SPATTERN_KERNEL")
    assert torch.equal(spattern.attention(q, k, v, lay, backend="cupy"), want_c)


def test_forced_kernel_declines_with_its_reason(monkeypatch):
    import spattern

    n = 256
    lay = _compiled("local(20)", n, (64, 64))
    q, k, v = _qkv(1, 2, 2, n, n, 64, torch.bfloat16)
    monkeypatch.setenv("SPATTERN_KERNEL", "hopper")
    with pytest.raises(ValueError, match=r"block_q = 128, got 64"):
        spattern.attention(q, k, v, lay, backend="cupy")
