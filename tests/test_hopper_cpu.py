"""CPU-only checks of the Hopper forward kernel (issue 13): every instantiation the launcher can request
compiles with nvcc for sm_90a from the launcher's own source text (headers inlined, as NVRTC gets it)
without spills or wgmma serialization, and the launcher's host-side logic (declaration, selection,
shared-memory budget, tensor-map geometry, defines) is right without a GPU. The kernel's results are
checked on the GPU by tests/gpu/test_hopper_gpu.py."""
from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from spattern.evaluation.bench_attention import band_landmark_layout  # noqa: E402
from spattern.runtime import cupy_backend as cb  # noqa: E402
from spattern.runtime import hopper_backend as hb  # noqa: E402
from spattern.runtime.problem import describe  # noqa: E402

NVCC = shutil.which("nvcc")
# (bf16, head dim, block_k, stages, ping-pong, overlap): the defaults of every (dtype, D, block_k), plus
# ping-pong off, v1's GEMM order (overlap off) and the deepest ring that fits, in bf16 (the dtype only
# changes the wgmma / cvt type names)
_DTYPES_SHAPES = list(itertools.product((0, 1), hb.SUPPORTED_HEAD_DIMS, hb.SUPPORTED_BLOCK_K))
_SHAPES = list(itertools.product(hb.SUPPORTED_HEAD_DIMS, hb.SUPPORTED_BLOCK_K))
INSTANTIATIONS = sorted(
    {(bf16, hd, bk, hb.DEFAULT_STAGES[(hd, bk)], 1, 1) for bf16, hd, bk in _DTYPES_SHAPES}
    | {(1, hd, bk, hb.DEFAULT_STAGES[(hd, bk)], 0, 1) for hd, bk in _SHAPES}
    | {(1, hd, bk, hb.DEFAULT_STAGES[(hd, bk)], 1, 0) for hd, bk in _SHAPES}
    | {(1, hd, bk, max(n for n in (2, 3, 4) if hb.smem_bytes(hd, bk, n) <= hb.SMEM_LIMIT), 1, 1)
       for hd, bk in _SHAPES})


def _nvcc(tmp_path: Path, defines: list[str]) -> subprocess.CompletedProcess:
    src = tmp_path / "hopper.cu"
    src.write_text(cb.kernel_source(hb.KERNEL_FILE)[0])
    cmd = [NVCC, "-gencode=arch=compute_90a,code=sm_90a", "-std=c++17", "-cubin", "-Xptxas", "-v",
           *defines, "-o", str(tmp_path / "h.cubin"), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("bf16,hd,bk,ns,pp,ov", INSTANTIATIONS)
def test_hopper_kernel_compiles_sm90a(tmp_path: Path, bf16, hd, bk, ns, pp, ov):
    r = _nvcc(tmp_path, hb.kernel_defines(bf16, hd, bk, ns, pp, ov))
    assert r.returncode == 0, r.stderr[-3000:]
    spills = [int(m) for m in re.findall(r"(\d+) bytes spill stores", r.stderr)]
    assert spills == [0], r.stderr
    # ptxas serializes wgmma (C7510-C7515) or ignores setmaxnreg (C7508) when the code breaks its rules
    assert not re.search(r"C75(0[89]|1\d)", r.stderr), r.stderr
    # the only local memory is the mask evaluator's stack (MAX_STACK u64 entries), as in the mma.sync kernel
    frame = int(re.search(r"(\d+) bytes stack frame", r.stderr).group(1))
    assert frame <= 8 * 32, r.stderr


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_kernel_rejects_a_ring_that_does_not_fit(tmp_path: Path):
    """The kernel's static_assert and smem_bytes agree: 4 stages of 128 x 128 tiles at D=128 do not fit."""
    assert hb.smem_bytes(128, 128, 4) > hb.SMEM_LIMIT
    r = _nvcc(tmp_path, hb.kernel_defines(1, 128, 128, 4))
    assert r.returncode != 0 and "shared memory over 227 KB" in r.stderr


def test_source_is_self_contained():
    src, h = cb.kernel_source(hb.KERNEL_FILE)
    assert '#include "' not in src and "eval_program_row" in src and "wgmma.mma_async" in src and len(h) == 16
    assert "extern \"C\" __global__" in src and hb.KERNEL_NAME in src


def test_default_stages_fit():
    for (hd, bk), ns in hb.DEFAULT_STAGES.items():
        assert hb.smem_bytes(hd, bk, ns) <= hb.SMEM_LIMIT
    assert hb.smem_bytes(128, 128, 2) == 1024 + 128 * 128 * 2 + 2 * 2 * 128 * 128 * 2 + 8 * 14 + 32 + 64 * 16


def test_stages_env(monkeypatch):
    monkeypatch.setenv("SPATTERN_HOPPER_STAGES", "4")
    assert hb.stages(64, 64) == 4
    with pytest.raises(ValueError, match=r"SPATTERN_HOPPER_STAGES: expected 2..4 stages that fit"):
        hb.stages(128, 128)
    monkeypatch.delenv("SPATTERN_HOPPER_STAGES")
    assert hb.stages(128, 128) == 2


def test_kernel_defines():
    assert hb.kernel_defines(True, 128, 64, 3, False, False) == [
        "-DSP_BF16=1", "-DSP_HD=128", "-DSP_LK=64", "-DSP_LQ=128", "-DSP_NSTAGE=3", "-DSP_PINGPONG=0",
        "-DSP_OVERLAP=0"]


@pytest.mark.parametrize("name,fn", [("SPATTERN_HOPPER_PERSISTENT", hb.persistent),
                                     ("SPATTERN_HOPPER_OVERLAP", hb.overlap),
                                     ("SPATTERN_HOPPER_PINGPONG", hb.pingpong),
                                     ("SPATTERN_HOPPER_BITMASK", hb.bitmask)])
def test_variant_flags(monkeypatch, name, fn):
    monkeypatch.delenv(name, raising=False)
    assert fn() is True  # v2 by default
    monkeypatch.setenv(name, "0")
    assert fn() is False
    monkeypatch.setenv(name, "1")
    assert fn() is True
    monkeypatch.setenv(name, "off")
    with pytest.raises(ValueError, match=rf"{name}: expected 0 or 1, got 'off'"):
        fn()


def test_grid_size():
    """Persistent: at most one CTA per SM (the kernel's 384 threads and ~160-230 KB of shared memory fit
    once per SM); otherwise one CTA per work item. Never more CTAs than items."""
    assert hb.grid_size(512, 132, True) == 132
    assert hb.grid_size(100, 132, True) == 100
    assert hb.grid_size(512, 132, False) == 512


def _schedule(n_work: int, G: int, speed) -> list[list[int]]:
    """The kernel's scheduler (hopper_fwd.cu, producer loop): CTA c takes slot c first, then G +
    atomicAdd(counter, 1) whenever it is free; `speed(c)` is how long CTA c needs per item (CTAs that start
    late or run slow take fewer)."""
    import heapq

    taken = [[c] if c < n_work else [] for c in range(G)]
    counter = 0
    free = [(speed(c), c) for c in range(G) if c < n_work]
    heapq.heapify(free)
    while free:
        t, c = heapq.heappop(free)
        slot = G + counter
        counter += 1
        if slot >= n_work:
            continue
        taken[c].append(slot)
        heapq.heappush(free, (t + speed(c), c))
    return taken


@pytest.mark.parametrize("n_work,G", [(512, 132), (7, 7), (1, 1), (300, 132), (133, 132)])
def test_schedule_covers_every_item_once(n_work, G):
    """Every work item is computed exactly once whatever the CTAs' speeds, so a persistent grid computes
    what one CTA per item computes."""
    for speed in (lambda c: 1.0, lambda c: 1.0 + (c % 7), lambda c: 50.0 if c == 3 else 1.0):
        taken = _schedule(n_work, G, speed)
        assert sorted(s for t in taken for s in t) == list(range(n_work))
    if G > 3 and n_work > 2 * G:  # a slow CTA takes fewer than its static share
        assert len(_schedule(n_work, G, lambda c: 50.0 if c == 3 else 1.0)[3]) < n_work // G


def test_schedule_matches_the_kernel_source():
    src = hb.KERNEL_FILE.read_text()
    assert "int slot = cta;" in src and "slot = G + atomicAdd(next_slot, 1);" in src


# ----------------------------------------------------------------------------- selection
@pytest.mark.parametrize("value,want", [(None, False), ("", False), ("auto", False), ("mma_sync", False),
                                        ("hopper", True)])
def test_kernel_choice(monkeypatch, value, want):
    if value is None:
        monkeypatch.delenv(hb.ENV_KERNEL, raising=False)
    else:
        monkeypatch.setenv(hb.ENV_KERNEL, value)
    assert (hb.kernel_choice() == "hopper") is want


def test_kernel_choice_rejects_unknown(monkeypatch):
    monkeypatch.setenv(hb.ENV_KERNEL, "hoper")
    with pytest.raises(ValueError, match=r"SPATTERN_KERNEL: expected one of .*got 'hoper'"):
        hb.kernel_choice()


def test_auto_order_is_unchanged():
    """The Hopper kernel is a kernel of the `cupy` backend, not a backend of its own."""
    from spattern.runtime import backends

    assert backends.AUTO_ORDER == ("cupy", "flex", "reference")
    assert "hopper" not in backends.BACKENDS


def _fake_kernels(monkeypatch):
    """Record which kernel `forward` calls (no GPU here)."""
    calls = []
    monkeypatch.setattr(hb, "attention_hopper", lambda *a, **kw: calls.append("hopper") or ("h", None))
    monkeypatch.setattr(hb._cb, "attention_cupy", lambda *a, **kw: calls.append("mma_sync") or ("m", None))
    return calls


@pytest.mark.parametrize("choice,auto,sm90,want", [
    ("mma_sync", True, True, "mma_sync"),
    ("auto", False, True, "mma_sync"),
    ("auto", True, False, "mma_sync"),
    ("auto", True, True, "hopper"),
    ("hopper", False, False, "hopper"),
])
def test_forward_dispatch(monkeypatch, choice, auto, sm90, want):
    calls = _fake_kernels(monkeypatch)
    monkeypatch.setenv(hb.ENV_KERNEL, choice)
    monkeypatch.setattr(hb, "AUTO_CONFIGS", frozenset({(128, 128)} if auto else ()))
    monkeypatch.setattr(hb, "_is_sm90", lambda dev: sm90)
    monkeypatch.setattr(hb, "supports", lambda prob: None)  # pretend the problem is on a CUDA device
    prob = _prob(_t(1, 2, 256, 128))
    hb.forward(None, None, None, None, prob, None, False)
    assert calls == [want]


def test_forward_auto_falls_back_where_the_kernel_declines(monkeypatch):
    calls = _fake_kernels(monkeypatch)
    monkeypatch.setenv(hb.ENV_KERNEL, "auto")
    monkeypatch.setattr(hb, "_is_sm90", lambda dev: True)
    hb.forward(None, None, None, None, _prob(_t(1, 2, 256, 96)), None, False)  # head dim 96: declined
    monkeypatch.setattr(hb, "supports", lambda prob: None)
    lay = band_landmark_layout(256, (128, 64), W=16, L=8)
    hb.forward(None, None, None, None, _prob(_t(1, 2, 256, 64), lay=lay), None, False)  # block_k 64: not in AUTO_CONFIGS
    assert calls == ["mma_sync", "mma_sync"]


def test_forced_block_overrides_the_variable(monkeypatch):
    calls = _fake_kernels(monkeypatch)
    monkeypatch.setenv(hb.ENV_KERNEL, "hopper")
    monkeypatch.setattr(hb, "supports", lambda prob: None)
    prob = _prob(_t(1, 2, 256, 128))
    with hb.forced("mma_sync"):
        assert hb.kernel_choice() == "mma_sync"
        hb.forward(None, None, None, None, prob, None, False)
    hb.forward(None, None, None, None, prob, None, False)  # the variable again after the block
    assert calls == ["mma_sync", "hopper"]
    with pytest.raises(ValueError, match=r"kernel: expected one of .*got 'hoper'"):
        with hb.forced("hoper"):
            pass


def test_forced_hopper_raises_the_reason(monkeypatch):
    _fake_kernels(monkeypatch)
    monkeypatch.setenv(hb.ENV_KERNEL, "hopper")
    with pytest.raises(ValueError, match=r"SPATTERN_KERNEL=hopper cannot run this call: .*head_dim in \(64, 128\), got 96"):
        hb.forward(None, None, None, None, _prob(_t(1, 2, 256, 96)), None, False)


# ----------------------------------------------------------------------------- declaration
def _t(*shape, dtype=torch.bfloat16, grad=False):
    return torch.zeros(*shape, dtype=dtype, requires_grad=grad)  # CPU: reasons found before any CUDA call


def _prob(q, k=None, lay=None, cu=None):
    k = q if k is None else k
    lay = band_landmark_layout(256, (128, 128), W=16, L=8) if lay is None else lay
    return describe(q, k, k, lay, None, False, cu)


def test_supports_reaches_the_device_check_last():
    assert hb.supports(_prob(_t(1, 2, 256, 128))) == "q, k, v: expected tensors on a CUDA device, got cpu"
    lay = band_landmark_layout(256, (128, 64), W=16, L=8)
    assert "CUDA device" in hb.supports(_prob(_t(1, 2, 256, 64, dtype=torch.float16), lay=lay))


def test_supports_packed_and_gqa():
    lay = band_landmark_layout(256, (128, 128), W=16, L=8)
    cu = torch.tensor([0, 100, 300], dtype=torch.int32)
    assert "CUDA device" in hb.supports(_prob(_t(300, 4, 128), _t(300, 2, 128), lay, cu))


@pytest.mark.parametrize("case,msg", [
    ("dtype", r"q: expected dtype float16 or bfloat16, got float32"),
    ("head_dim", r"head_dim in \(64, 128\), got 96"),
    ("block_q", r"block_q = 128, got 64"),
    ("block_k", r"block_k in \(64, 128\), got 32"),
])
def test_supports_declines(case, msg):
    q, lay = _t(1, 2, 256, 128), None
    if case == "dtype":
        q = _t(1, 2, 256, 128, dtype=torch.float32)
    elif case == "head_dim":
        q = _t(1, 2, 256, 96)
    elif case == "block_q":
        lay = band_landmark_layout(256, (64, 64), W=16, L=8)
    elif case == "block_k":
        lay = band_landmark_layout(256, (128, 32), W=16, L=8)
    reason = hb.supports(_prob(q, lay=lay))
    assert reason is not None and re.search(msg, reason), reason


def test_check_raises_the_reason():
    with pytest.raises(TypeError, match="q: expected dtype"):
        hb.check(_t(1, 2, 256, 128, dtype=torch.float32), _t(1, 2, 256, 128, dtype=torch.float32),
                 _t(1, 2, 256, 128, dtype=torch.float32), band_landmark_layout(256, (128, 128), W=16, L=8), None)
    with pytest.raises(ValueError, match="block_q = 128, got 64"):
        hb.attention_hopper(_t(1, 2, 256, 64), _t(1, 2, 256, 64), _t(1, 2, 256, 64),
                            band_landmark_layout(256, (64, 64), W=16, L=8), 0.125)


# ----------------------------------------------------------------------------- tensor maps
def test_tensor_map_geometry_unpacked():
    dims, strides, box = hb.tensor_map_geometry((2, 4, 300, 128), False, 128)
    assert dims == (128, 300, 4, 2) and box == (64, 128, 1, 1)
    assert strides == (256, 300 * 256, 4 * 300 * 256)


def test_tensor_map_geometry_packed():
    dims, strides, box = hb.tensor_map_geometry((1000, 2, 64), True, 64)
    assert dims == (64, 2, 1000, 1) and box == (64, 1, 64, 1)
    assert strides == (128, 2 * 128, 1000 * 2 * 128)


@pytest.mark.parametrize("shape,packed", [((3, 5, 77, 64), False), ((1, 1, 1, 128), False), ((513, 3, 128), True)])
def test_tensor_map_geometry_meets_driver_rules(shape, packed):
    """cuTensorMapEncodeTiled: strides multiples of 16 below 2^40 and non-decreasing, dims in [1, 2^32],
    box entries in [1, 256], box inner dimension 128 bytes (= the 128-byte swizzle span)."""
    for rows in (64, 128):
        dims, strides, box = hb.tensor_map_geometry(shape, packed, rows)
        assert all(s % 16 == 0 and s < 2 ** 40 for s in strides)
        assert list(strides) == sorted(strides) and strides[0] >= dims[0] * 2
        assert all(1 <= d <= 2 ** 32 for d in dims) and all(1 <= b <= 256 for b in box)
        assert box[0] * 2 == 128


def test_tensor_map_encode_call(monkeypatch):
    """The driver call gets a 64-byte aligned 128-byte map, rank 4, the geometry above, unit element
    strides, the 128-byte swizzle and the tensor's dtype; the map is cached per (pointer, shape, dtype, box)."""
    calls = []

    def fake(tmap, dtype, rank, addr, dims, strides, box, estr, interleave, swizzle, l2, oob):
        calls.append(dict(tmap=tmap, dtype=dtype, rank=rank, addr=addr.value, dims=tuple(dims), strides=tuple(strides),
                          box=tuple(box), estr=tuple(estr), interleave=interleave, swizzle=swizzle, oob=oob))
        return 0

    monkeypatch.setattr(hb, "_encode_fn", lambda: fake)
    monkeypatch.setattr(hb, "_tmaps", hb.OrderedDict())
    t = torch.zeros(1, 2, 300, 128, dtype=torch.bfloat16)
    m = hb.tensor_map(t, False, 128)
    assert m.shape == (1,) and m.itemsize == hb.TMAP_BYTES and m.ctypes.data % 64 == 0
    c = calls[0]
    assert c["tmap"] == m.ctypes.data and c["addr"] == t.data_ptr() and c["rank"] == 4
    assert (c["dims"], c["strides"], c["box"]) == hb.tensor_map_geometry((1, 2, 300, 128), False, 128)
    assert c["estr"] == (1, 1, 1, 1) and c["swizzle"] == 3 and c["interleave"] == 0 and c["oob"] == 0
    assert c["dtype"] == 9  # CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
    assert hb.tensor_map(t, False, 128) is m and len(calls) == 1  # cached
    hb.tensor_map(t.to(torch.float16), False, 64)
    assert calls[1]["dtype"] == 6 and calls[1]["box"] == (64, 64, 1, 1)


def test_tensor_map_encode_failure_names_the_geometry(monkeypatch):
    monkeypatch.setattr(hb, "_encode_fn", lambda: (lambda *a: 1))
    monkeypatch.setattr(hb, "_tmaps", hb.OrderedDict())
    with pytest.raises(RuntimeError, match=r"cuTensorMapEncodeTiled failed \(CUresult 1\) for shape \(5, 2, 64\)"):
        hb.tensor_map(torch.zeros(5, 2, 64, dtype=torch.float16), True, 64)


def test_bench_forces_each_kernel_per_call(monkeypatch):
    from spattern.evaluation.bench_attention import _forced

    monkeypatch.delenv(hb.ENV_KERNEL, raising=False)
    assert _forced("hopper", hb.kernel_choice)() == "hopper"
    assert _forced("mma_sync", hb.kernel_choice)() == "mma_sync"
    assert hb.kernel_choice() == "auto"


def test_params_pack_matches_the_kernel_struct():
    """hopper_backend.PARAMS is the kernel's Params: 28 members of 8 bytes (the kernel static_asserts the
    size), in the order of the struct's declaration."""
    import struct

    src = hb.KERNEL_FILE.read_text()
    assert "static_assert(sizeof(Params) == 29 * 8" in src
    assert hb.PARAMS.size == 29 * 8
    body = src[src.index("struct Params {"):src.index("};", src.index("struct Params {"))]
    body = re.sub(r"//[^\n]*", "", body)  # the members, not their comments
    names = re.findall(r"\b(O|LSE|o_sb|cu_seqlens|row_ptr|col_idx|block_kind|mask_idx|bitmasks|programs|"
                       r"program_len|work|next_slot|H|write_lse|scale_log2)\b[,;]", body)
    assert names == ["O", "LSE", "o_sb", "cu_seqlens", "row_ptr", "col_idx", "block_kind", "mask_idx", "bitmasks",
                     "programs", "program_len", "work", "next_slot", "H", "write_lse", "scale_log2"]
    assert hb._LAYOUT_ARRAYS == ("row_ptr", "col_idx", "block_kind", "mask_idx", "bitmasks", "programs",
                                 "program_len", "work")
    a = hb.pack_params(1, 2, (3, 4, 5), (6, 7), 8, tuple(range(9, 17)), 17, tuple(range(18, 29)), 0.5)
    assert a.shape == (1,) and a.dtype.itemsize == 232
    vals = struct.unpack("<2Q5q10Q11qd", a.tobytes())
    assert vals[:28] == tuple(range(1, 29)) and vals[28] == 0.5


def test_supports_declines_a_non_positive_scale():
    q = _t(1, 2, 256, 128)
    prob = describe(q, q, q, band_landmark_layout(256, (128, 128), W=16, L=8), -0.1, False, None)
    assert hb.supports(prob) == ("scale: the Hopper kernel expects a positive scale (it folds the scale into "
                                 "exp2), got -0.1")
