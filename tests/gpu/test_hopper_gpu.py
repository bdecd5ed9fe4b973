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
import spattern as sp  # noqa: E402
from spattern.runtime import cupy_backend, hopper_backend  # noqa: E402
from test_cupy_backend import (  # noqa: E402  (the one oracle of the forward kernels, and the shared checks)
    COMPILED_PATTERNS, DTYPES, FAMILIES, FLOOR, HDS, _compiled, _mask_from_program, _qkv, check_gqa,
    check_long_sequences, check_noncontiguous_inputs_and_no_lse, check_per_group_layouts,
    check_structured_layout_large, check_varlen_packed, reference, torch_dense_error,
)
from test_cupy_backend import run_and_check as _check  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not hopper_backend.is_available(), reason="needs CuPy and a compute-capability 9.0 GPU"),
]

BLOCKS = [(128, 64), (128, 128)]


def run_and_check(q, k, v, lay, masks, scale=None, check_lse=True, twin=True):
    """test_cupy_backend.run_and_check on the Hopper kernel (NaN-poisoned outputs, float64 reference, empty
    rows, LSE), then, with ``twin``, the mma.sync kernel's output under the same bound."""
    err, terr, o = _check(q, k, v, lay, masks, scale, check_lse, attend=hopper_backend.attention_hopper)
    if twin:
        scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
        o2, _ = cupy_backend.attention_cupy(q, k, v, lay, scale, True, None)
        bound = 2 * terr + FLOOR[q.dtype]
        diff = float((o2.double() - o.double()).abs().max())
        assert diff <= bound, f"Hopper vs mma.sync kernel: max abs diff {diff:.3e} > {bound:.3e}"
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
    check_per_group_layouts(group_shape, block, run=run_and_check)


@pytest.mark.parametrize("Hkv", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_gqa(Hkv, dtype):
    check_gqa(Hkv, dtype, run=run_and_check)


@pytest.mark.parametrize("block", BLOCKS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", HDS)
def test_varlen_packed(D, dtype, block):
    check_varlen_packed(hopper_backend.attention_hopper, D, dtype, block)


@pytest.mark.parametrize("block", BLOCKS, ids=str)
@pytest.mark.parametrize("D", HDS)
def test_varlen_next_sequence_nan_stays_out(D, block):
    """A packed sequence's last key block runs into the next sequence's tokens (the TMA zero-fills only past
    the whole tensor); the kernel clears those V rows, so a NaN in the next sequence's k and v does not
    reach this sequence (P = 0 there, but 0 * NaN = NaN). Lengths: partial last blocks, a 1-token sequence."""
    lens = [130, 61, 1, 90]
    H, Hkv, T = 2, 1, sum(lens)
    prog = FAMILIES["window"]
    mask = _mask_from_program(prog, max(lens), max(lens))
    lay = layout_from_masks(mask[None], *block, programs=[prog])
    g = torch.Generator(device="cuda").manual_seed(7)
    q, k, v = (torch.randn(T, h, D, device="cuda", generator=g).to(torch.bfloat16) for h in (H, Hkv, Hkv))
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32, device="cuda")
    poisoned = [1, 3]  # sequences whose k and v are NaN: the ones before them must stay finite
    for i in poisoned:
        k[cu[i]:cu[i + 1]] = float("nan")
        v[cu[i]:cu[i + 1]] = float("nan")
    o, _ = hopper_backend.attention_hopper(q, k, v, lay, D ** -0.5, False, cu)
    torch.cuda.synchronize()
    for i, L in enumerate(lens):
        if i in poisoned:
            continue
        s0 = int(cu[i])
        qs, ks, vs = (x[s0:s0 + L].transpose(0, 1)[None] for x in (q, k, v))
        ref, _, m = reference(qs, ks, vs, mask[None, :L, :L], (1, 1), D ** -0.5)
        got = o[s0:s0 + L].transpose(0, 1)[None].double()
        assert torch.isfinite(got).all(), f"sequence {i}: a NaN of the next sequence reached it"
        err = float((got - ref).abs().max())
        terr = torch_dense_error(qs, ks, vs, m, D ** -0.5, ref)
        assert err <= 2 * terr + FLOOR[torch.bfloat16], f"sequence {i}: err {err:.3e}, torch {terr:.3e}"


def test_noncontiguous_inputs_and_no_lse():
    check_noncontiguous_inputs_and_no_lse(hopper_backend.attention_hopper, (128, 128))


def test_structured_layout_large():
    check_structured_layout_large(hopper_backend.attention_hopper)


@pytest.mark.parametrize("n,H", [(65536, 16), (131072, 1)])
def test_long_sequences(n, H):
    check_long_sequences(hopper_backend.attention_hopper, n, H)


def test_a_layout_of_many_program_blocks_is_read_as_bits():
    """dilated(1024, 4) & causal at 8K in 128 x 64 blocks: 3,168 PROGRAM blocks, over the cap the Hopper
    launcher had (2,048) before their bitmasks were evaluated per class of blocks. It reads them as bits
    now; sampled rows against float64 over the dense mask."""
    n, D, H = 8192, 64, 2
    lay = sp.compile("dilated(1024, 4) & causal", n, block=(128, 64))
    assert (lay.block_kind == 1).sum() > 2048
    kl = hopper_backend.kernel_layout(lay, torch.device("cuda", torch.cuda.current_device()), int(lay.program_len.max()))
    assert kl is not lay and not (kl.block_kind == 1).any()
    q, k, v = _qkv(1, H, H, n, n, D, torch.bfloat16)
    o, _ = hopper_backend.attention_hopper(q, k, v, lay, 1 / math.sqrt(D), True, None)
    rows = torch.cat([torch.randint(0, n, (48,), device="cuda"), torch.tensor([0, n - 1], device="cuda")])
    m = torch.from_numpy(lay.to_dense(0)).cuda()[rows]  # (rows, n)
    for h in range(H):
        s = (q[0, h, rows].double() @ k[0, h].double().T) / math.sqrt(D)
        ref = torch.softmax(s.masked_fill(~m, -math.inf), -1) @ v[0, h].double()
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
    """SPATTERN_KERNEL=hopper routes spattern.attention(backend='cupy') to this kernel, mma_sync to the
    other; `auto` picks the cupy backend as before."""
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
    monkeypatch.setenv("SPATTERN_KERNEL", "mma_sync")
    assert torch.equal(spattern.attention(q, k, v, lay, backend="cupy"), want_c)


@pytest.mark.parametrize("D", [64, 128])
def test_training_forward_on_the_hopper_kernel(monkeypatch, D):
    """Under autograd the forward runs on the Hopper kernel and the backward kernels take its out and
    LSE: the gradients agree with those after the mma.sync forward (the same backward kernels), and the
    outputs are the kernels' no-grad outputs."""
    import spattern

    n = 700
    lay = _compiled("(local(150) | sink(64)) & causal", n, (128, 64))
    q, k, v = _qkv(1, 4, 2, n, n, D, torch.bfloat16)
    do = torch.randn_like(q)
    res = {}
    for kern in ("hopper", "mma_sync"):
        monkeypatch.setenv("SPATTERN_KERNEL", kern)
        qq, kk, vv = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
        o = spattern.attention(qq, kk, vv, lay, backend="cupy")
        res[kern] = (o.detach(), *torch.autograd.grad(o, (qq, kk, vv), do))
    want_o = {"hopper": hopper_backend.attention_hopper(q, k, v, lay, D ** -0.5)[0],
              "mma_sync": cupy_backend.attention_cupy(q, k, v, lay, D ** -0.5)[0]}
    for kern in res:
        assert torch.equal(res[kern][0], want_o[kern])
    for gh, gm in zip(res["hopper"][1:], res["mma_sync"][1:]):
        scale = gm.float().abs().max().item()
        assert (gh.float() - gm.float()).abs().max().item() <= 2e-2 * scale + 1e-3


def test_forced_kernel_declines_with_its_reason(monkeypatch):
    import spattern

    n = 256
    lay = _compiled("local(20)", n, (64, 64))
    q, k, v = _qkv(1, 2, 2, n, n, 64, torch.bfloat16)
    monkeypatch.setenv("SPATTERN_KERNEL", "hopper")
    with pytest.raises(ValueError, match=r"block_q = 128, got 64"):
        spattern.attention(q, k, v, lay, backend="cupy")
