"""Launcher of the Hopper (sm_90a) block-sparse forward kernel, ``kernels/hopper_fwd.cu`` (issue 13).

``forward`` is the CUDA backend's one forward entry (with and without gradient: under autograd the
backward kernels take this kernel's out and LSE). ``SPATTERN_KERNEL=hopper`` forces this kernel,
``mma_sync`` the other; ``auto`` takes it on sm_90 for the (head dim, block_k) in AUTO_CONFIGS (those
the H200 benchmark measured faster, notes/hopper_kernel.md). The mma.sync kernel (``cupy_backend``) is its slow twin and
the fallback for everything it declines.

Thin layer over ``cupy_backend``: the same input check, device layout arrays, work order (long rows
first), compile route (NVRTC with ``-arch=sm_90a``, nvcc cubin fallback) and stream. What is new here:
three TMA tensor maps (q, k, v) encoded on the host with the driver's ``cuTensorMapEncodeTiled``
(ctypes), cached per (pointer, shape, dtype, box), and passed by value as 128-byte kernel parameters.
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import math
import os
import struct
from collections import OrderedDict
from typing import Any

import numpy as np

from spattern.runtime import cupy_backend as _cb

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore

KERNEL_FILE = _cb.KERNEL_DIR / "hopper_fwd.cu"
KERNEL_NAME = "sp_hopper_fwd"
THREADS = 384  # producer warpgroup + two consumer warpgroups
BLOCK_Q = 128
SUPPORTED_HEAD_DIMS = (64, 128)
SUPPORTED_BLOCK_K = (64, 128)
MAX_PROGRAM = _cb.MAX_PROGRAM
SMEM_LIMIT = 227 * 1024  # opt-in dynamic shared memory per block on sm_90
# Default K/V ring depth per (head dim, block_k): as deep as fits, capped at 3 (2 for 128 x 128,
# where 3 stages would leave under 1 KB of the 227 KB). SPATTERN_HOPPER_STAGES overrides.
DEFAULT_STAGES = {(128, 128): 2, (128, 64): 3, (64, 128): 3, (64, 64): 3}
# v2 (persistent grid, intra-warpgroup overlap, PROGRAM blocks as host-made bitmasks): on by default;
# SPATTERN_HOPPER_PERSISTENT=0 / _OVERLAP=0 / _BITMASK=0 give back v1's launch, GEMM order and in-kernel
# mask programs, for comparisons.
DEFAULT_PERSISTENT = True
DEFAULT_OVERLAP = True
DEFAULT_BITMASK = True
# at most this many PROGRAM blocks are turned into bitmasks (None: every layout's); layouts with more keep
# their programs. The cap of 2,048 dated from evaluating every block on the host (~1 ms per 128 x 128 block);
# ``programs_as_bitmasks`` now evaluates one block per class of equal masks and stores each distinct mask
# once. Lifted after call 90 (results/study_device_logs/call86_91_h100): dilated(2048, 4) & causal at 16K
# (6,240 PROGRAM blocks, over the cap) took 5.68 ms through its programs and 1.85 ms as bits.
MAX_BITMASK_BLOCKS: int | None = None
ENV_KERNEL = "SPATTERN_KERNEL"
KERNEL_CHOICES = ("auto", "mma_sync", "hopper")


# --------------------------------------------------------------------------- selection
# (head dim, block_k) for which `auto` runs the forward on this kernel (on sm_90, where supports() takes
# the problem): those where the H200 benchmark measured it faster than the mma.sync kernel at every
# cell, bf16, 128 x 128 blocks: D 128 1.9-2.1x (results/hopper/bench_h200_d128.json), D 64 1.3-1.9x
# (bench_h200_d64.json). block_k 64 is correct (the GPU tests) but not timed: mma.sync there.
AUTO_CONFIGS = frozenset({(128, 128), (64, 128)})


_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("spattern_forced_kernel", default=None)
_variant: contextvars.ContextVar[dict] = contextvars.ContextVar("spattern_hopper_variant", default={})
VARIANT_FLAGS = ("persistent", "overlap", "pingpong", "bitmask")


def kernel_choice() -> str:
    """The kernel inside ``forced(...)``, else ``SPATTERN_KERNEL``: ``auto`` (unset or empty),
    ``mma_sync`` or ``hopper``. Any other value raises (a typo must not silently time the wrong kernel)."""
    v = _forced.get() or os.environ.get(ENV_KERNEL, "auto").strip() or "auto"
    if v not in KERNEL_CHOICES:
        raise ValueError(f"{ENV_KERNEL}: expected one of {KERNEL_CHOICES}, got {v!r}")
    return v


@contextlib.contextmanager
def forced(kernel: str, **variant: bool):
    """Within the block, ``kernel`` (one of KERNEL_CHOICES) as if ``SPATTERN_KERNEL`` said so, and the Hopper
    kernel's variant flags (VARIANT_FLAGS: ``persistent``, ``overlap``, ``pingpong``, ``bitmask``) as if
    their variables said so
    (benchmarks that time several kernels or variants in one process)."""
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel: expected one of {KERNEL_CHOICES}, got {kernel!r}")
    bad = sorted(set(variant) - set(VARIANT_FLAGS))
    if bad:
        raise ValueError(f"variant: expected flags among {VARIANT_FLAGS}, got {bad}")
    token, vtoken = _forced.set(kernel), _variant.set({k: bool(v) for k, v in variant.items()})
    try:
        yield
    finally:
        _variant.reset(vtoken)
        _forced.reset(token)


def use_for(prob) -> bool:
    """Whether the forward of ``prob`` runs on this kernel: ``SPATTERN_KERNEL=hopper`` always (raises
    with the reason when the kernel cannot take ``prob``), ``mma_sync`` never, ``auto`` when
    (head dim, block_k) is in AUTO_CONFIGS, the device is compute capability 9.0 and ``supports(prob)``
    is None."""
    choice = kernel_choice()
    if choice == "mma_sync":
        return False
    if choice == "hopper":
        reason = supports(prob)
        if reason is not None:
            raise ValueError(f"SPATTERN_KERNEL=hopper cannot run this call: {reason}")
        return True
    return (prob.D, prob.block_k) in AUTO_CONFIGS and supports(prob) is None and _is_sm90(prob.device)


def forward(q, k, v, layout, prob, cu_seqlens, return_lse):
    """The block-sparse forward on the kernel ``use_for(prob)`` picks (this one or the mma.sync
    kernel, its twin); (out, lse if return_lse)."""
    if use_for(prob):
        return attention_hopper(q, k, v, layout, prob.scale, return_lse, cu_seqlens, problem=prob)
    return _cb.attention_cupy(q, k, v, layout, prob.scale, return_lse, cu_seqlens, problem=prob)


_SM90: dict = {}


def _is_sm90(device) -> bool:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM90:
        _SM90[idx] = tuple(torch.cuda.get_device_capability(idx)) == (9, 0)
    return _SM90[idx]


def is_available() -> bool:
    """CuPy, a CUDA device, and compute capability 9.0 (wgmma / setmaxnreg need sm_90a)."""
    if not _cb.is_available():
        return False
    try:
        return tuple(torch.cuda.get_device_capability()) == (9, 0)
    except Exception:
        return False


def supports(prob) -> str | None:
    """None when this kernel runs ``prob`` (a ``runtime.problem.Problem``), else the reason."""
    if prob.dtype not in (torch.float16, torch.bfloat16):
        return f"q: expected dtype float16 or bfloat16, got {_cb._dtype_name(prob.dtype)}"
    if prob.D not in SUPPORTED_HEAD_DIMS:
        return f"q: the Hopper kernel expects head_dim in {SUPPORTED_HEAD_DIMS}, got {prob.D}"
    if prob.block_q != BLOCK_Q:
        return f"layout: the Hopper kernel expects block_q = {BLOCK_Q}, got {prob.block_q}"
    if prob.block_k not in SUPPORTED_BLOCK_K:
        return f"layout: the Hopper kernel expects block_k in {SUPPORTED_BLOCK_K}, got {prob.block_k}"
    if not prob.scale > 0:
        return f"scale: the Hopper kernel expects a positive scale (it folds the scale into exp2), got {prob.scale}"
    if prob.max_program > MAX_PROGRAM:
        return f"layout.program_len: expected at most {MAX_PROGRAM}, got {prob.max_program}"
    if prob.device.type != "cuda":  # last: every other reason can be found without a GPU
        return f"q, k, v: expected tensors on a CUDA device, got {prob.device}"
    return None


def check(q, k, v, layout, scale, return_lse=False, cu_seqlens=None, trusted=False):
    """The runtime's one input check plus this kernel's declaration; raises naming the argument."""
    from spattern.runtime.problem import describe

    prob = describe(q, k, v, layout, scale, return_lse, cu_seqlens, trusted)
    reason = supports(prob)
    if reason is not None:
        raise (TypeError if "dtype" in reason else ValueError)(reason)
    return prob


# --------------------------------------------------------------------------- instantiation
def stages(head_dim: int, block_k: int) -> int:
    """K/V pipeline depth: SPATTERN_HOPPER_STAGES (2..4, must fit in shared memory) or the default."""
    env = os.environ.get("SPATTERN_HOPPER_STAGES")
    if not env:
        return DEFAULT_STAGES[(head_dim, block_k)]
    ns = int(env)
    if ns not in (2, 3, 4) or smem_bytes(head_dim, block_k, ns) > SMEM_LIMIT:
        raise ValueError(f"SPATTERN_HOPPER_STAGES: expected 2..4 stages that fit in {SMEM_LIMIT} B of shared "
                         f"memory for head_dim={head_dim}, block_k={block_k}, got {env!r}")
    return ns


def _flag(name: str, default: bool) -> bool:
    """A variant flag: inside ``forced(..., flag=...)`` that value, else the variable (0 / 1), else ``default``."""
    over = _variant.get().get(name.rsplit("_", 1)[-1].lower())
    if over is not None:
        return over
    v = os.environ.get(name, "").strip()
    if v not in ("", "0", "1"):
        raise ValueError(f"{name}: expected 0 or 1, got {v!r}")
    return default if v == "" else v == "1"


def pingpong() -> bool:
    """Consumer warpgroups take turns at the tensor cores (SPATTERN_HOPPER_PINGPONG=0 turns it off)."""
    return _flag("SPATTERN_HOPPER_PINGPONG", True)


def overlap() -> bool:
    """Intra-warpgroup overlap: QK(t+1) issued before PV(t) and waited alone, so the exponentials of the
    next tile run while PV(t) is on the tensor cores (SPATTERN_HOPPER_OVERLAP=0: v1's single group)."""
    return _flag("SPATTERN_HOPPER_OVERLAP", DEFAULT_OVERLAP)


def bitmask() -> bool:
    """PROGRAM blocks evaluated once on the host into BITMASK blocks (``programs_as_bitmasks``, cached on
    the layout), so the kernel reads bits instead of running the program per tile and head
    (SPATTERN_HOPPER_BITMASK=0: the kernel runs the programs)."""
    return _flag("SPATTERN_HOPPER_BITMASK", DEFAULT_BITMASK)


def kernel_layout(layout, device, max_program: int):
    """The layout the kernel reads on ``device``: with ``bitmask()`` on and PROGRAM blocks present
    (``max_program`` > 0), their host-evaluated BITMASK twin, cached on the layout; else the layout."""
    if bitmask() and max_program > 0:
        return _cb.bitmask_twin(layout, device, MAX_BITMASK_BLOCKS)  # the mma.sync kernels' twin too
    return layout


def persistent() -> bool:
    """One CTA per SM looping over the work items (SPATTERN_HOPPER_PERSISTENT=0: one CTA per item, v1)."""
    return _flag("SPATTERN_HOPPER_PERSISTENT", DEFAULT_PERSISTENT)


def kernel_defines(bf16: bool, head_dim: int, block_k: int, nstage: int, pingpong: bool = True,
                   overlap: bool = True) -> list[str]:
    """-D defines of one instantiation (block_q is always 128)."""
    return [f"-DSP_BF16={int(bool(bf16))}", f"-DSP_HD={head_dim}", f"-DSP_LK={block_k}", f"-DSP_LQ={BLOCK_Q}",
            f"-DSP_NSTAGE={nstage}", f"-DSP_PINGPONG={int(bool(pingpong))}", f"-DSP_OVERLAP={int(bool(overlap))}"]


def grid_size(n_work: int, sm_count: int, persistent: bool, max_ctas: int | None = None) -> int:
    """CTAs launched: one per work item, or (persistent) at most one per SM (1 CTA fits per SM);
    ``max_ctas`` (SPATTERN_HOPPER_MAX_CTAS, for tests) caps it further, so that small problems run several
    work items per CTA."""
    g = min(n_work, sm_count) if persistent else n_work
    return max(1, min(g, max_ctas)) if max_ctas else g


def max_ctas() -> int | None:
    """SPATTERN_HOPPER_MAX_CTAS: a cap on the grid (a positive integer), for tests of the persistent loop."""
    v = os.environ.get("SPATTERN_HOPPER_MAX_CTAS", "").strip()
    if not v:
        return None
    if not v.isdigit() or int(v) < 1:
        raise ValueError(f"SPATTERN_HOPPER_MAX_CTAS: expected a positive integer, got {v!r}")
    return int(v)


_SMS: dict = {}


def _sm_count(idx: int) -> int:
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SMS[idx]


def smem_bytes(head_dim: int, block_k: int, nstage: int) -> int:
    """Dynamic shared memory: 1 KB alignment slack, Q tile, NSTAGE K and V tiles, 2 + 4 NSTAGE mbarriers
    (8 B) and 4 more for the work-slot mailboxes, the program (16 B per instruction, 16-byte aligned),
    its group and length and the two mailboxes (16 B). Mirrors the kernel's static_assert."""
    tiles = BLOCK_Q * head_dim * 2 + 2 * nstage * block_k * head_dim * 2
    return 1024 + tiles + 8 * (6 + 4 * nstage) + 32 + MAX_PROGRAM * 16


_modules: dict[tuple, Any] = {}


def get_kernel(device_index: int, bf16: bool, head_dim: int, block_k: int, nstage: int, pp: bool, ov: bool = True):
    """Compiled kernel, once per (device, dtype, head dim, block_k, stages, ping-pong, overlap, source hash)."""
    key = (device_index, bool(bf16), head_dim, block_k, nstage, bool(pp), bool(ov),
           _cb.kernel_source(KERNEL_FILE)[1])
    fn = _modules.get(key)
    if fn is None:
        tag = (f"hopper_{'bf16' if bf16 else 'fp16'}_d{head_dim}_k{block_k}_s{nstage}_pp{int(bool(pp))}"
               f"_ov{int(bool(ov))}")
        fn = _modules[key] = _cb.compile_functions(
            device_index, KERNEL_FILE, (KERNEL_NAME,), kernel_defines(bf16, head_dim, block_k, nstage, pp, ov),
            tag, smem_bytes(head_dim, block_k, nstage))[KERNEL_NAME]
    return fn


# --------------------------------------------------------------------------- TMA tensor maps
def tensor_map_geometry(shape: tuple[int, ...], packed: bool, rows: int) -> tuple[tuple, tuple, tuple]:
    """(global dims, global byte strides of dims 1..3, box) of the 4-D tensor map over a contiguous
    16-bit tensor, dims innermost first, strides increasing (as the driver requires):
      unpacked (B, heads, N, D): dims (D, N, heads, B), box (64, rows, 1, 1);
      packed (T, heads, D):      dims (D, heads, T, 1), box (64, 1, rows, 1).
    The kernel's coordinates follow the same orders (hopper_fwd.cu, tma_rows). Rows past N (or T) are
    zero-filled by the hardware; a box is 64 elements (128 bytes, the swizzle width) wide."""
    if packed:
        T, Hx, D = shape
        dims = (D, Hx, max(T, 1), 1)
        box = (64, 1, rows, 1)
    else:
        B, Hx, N, D = shape
        dims = (D, N, Hx, B)
        box = (64, rows, 1, 1)
    strides = (dims[0] * 2, dims[0] * dims[1] * 2, dims[0] * dims[1] * dims[2] * 2)
    return dims, strides, box


_CU_TENSOR_MAP_DATA_TYPE_FLOAT16 = 6
_CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9
_CU_TENSOR_MAP_INTERLEAVE_NONE = 0
_CU_TENSOR_MAP_SWIZZLE_128B = 3
_CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3
_CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0
TMAP_BYTES = 128
_TMAP_DTYPE = np.dtype((np.void, TMAP_BYTES))
_libcuda = None
_tmaps: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_TMAP_CACHE = 64


def _encode_fn():
    global _libcuda
    if _libcuda is None:
        lib = ctypes.CDLL("libcuda.so.1")
        fn = lib.cuTensorMapEncodeTiled
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p,
                       ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
                       ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32),
                       ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        _libcuda = fn
    return _libcuda


def tensor_map(t, packed: bool, rows: int) -> np.ndarray:
    """The 128-byte CUtensorMap of a contiguous fp16/bf16 tensor as a (1,) numpy array (CuPy passes a
    size-1 numpy array by value). Cached per (pointer, shape, dtype, packed, rows): the map holds no
    other state, so a hit is exact."""
    key = (t.data_ptr(), tuple(t.shape), t.dtype, packed, rows)
    m = _tmaps.get(key)
    if m is not None:
        _tmaps.move_to_end(key)
        return m
    dims, strides, box = tensor_map_geometry(tuple(t.shape), packed, rows)
    raw = np.zeros(2 * TMAP_BYTES, dtype=np.uint8)  # the driver writes the map at a 64-byte aligned address
    off = -raw.ctypes.data % TMAP_BYTES
    buf = raw[off:off + TMAP_BYTES].view(_TMAP_DTYPE)  # shape (1,), keeps `raw` alive
    u64x4, u64x3, u32x4 = ctypes.c_uint64 * 4, ctypes.c_uint64 * 3, ctypes.c_uint32 * 4
    dt = _CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 if t.dtype == torch.bfloat16 else _CU_TENSOR_MAP_DATA_TYPE_FLOAT16
    rc = _encode_fn()(buf.ctypes.data, dt, 4, ctypes.c_void_p(t.data_ptr()), u64x4(*dims), u64x3(*strides),
                      u32x4(*box), u32x4(1, 1, 1, 1), _CU_TENSOR_MAP_INTERLEAVE_NONE, _CU_TENSOR_MAP_SWIZZLE_128B,
                      _CU_TENSOR_MAP_L2_PROMOTION_L2_256B, _CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
    if rc != 0:
        raise RuntimeError(f"cuTensorMapEncodeTiled failed (CUresult {rc}) for shape {tuple(t.shape)}, "
                           f"dims {dims}, strides {strides}, box {box}")
    _tmaps[key] = buf
    if len(_tmaps) > _TMAP_CACHE:
        _tmaps.popitem(last=False)
    return buf


# --------------------------------------------------------------------------- kernel parameters
# The kernel's `Params` (hopper_fwd.cu), every member 8 bytes, in its order: O, LSE, 5 strides, 10 pointers
# (cu_seqlens, then _LAYOUT_ARRAYS, then the scheduler's counter), 11 integers (H, Hkv, Nq, Nk, varlen, Bg,
# Hg, R, P, n_work, write_lse), scale * log2(e) as a double. Passed by value as one (1,) numpy array: one
# kernel argument instead of 29
# (CuPy's per-argument cost made the launch the larger part of a small call's host time).
PARAMS = struct.Struct("<2Q5q10Q11qd")
_PARAMS_DTYPE = np.dtype((np.void, PARAMS.size))
_LAYOUT_ARRAYS = ("row_ptr", "col_idx", "block_kind", "mask_idx", "bitmasks", "programs", "program_len", "work")


_counters: dict = {}  # (device, stream) -> the scheduler's int32 counter (kept alive here)


def _zeroed_counter(dev_index: int, stream_ptr: int) -> int:
    """Address of the scheduler's counter for this device and stream, zeroed on the stream (ahead of the
    launch that follows on it)."""
    import cupy

    buf = _counters.get((dev_index, stream_ptr))
    if buf is None:
        with cupy.cuda.Device(dev_index):  # on the tensors' device, whatever CuPy's current one is
            buf = _counters[(dev_index, stream_ptr)] = cupy.zeros(1, dtype=cupy.int32)
    cupy.cuda.runtime.memsetAsync(buf.data.ptr, 0, 4, stream_ptr)
    return buf.data.ptr


def pack_params(out_ptr: int, lse_ptr: int, o_strides, l_strides, cu_ptr: int, layout_ptrs, counter_ptr: int, ints,
                scale_log2: float):
    """The kernel's Params as a (1,) numpy array (CuPy passes a size-1 array by value)."""
    raw = PARAMS.pack(out_ptr, lse_ptr, *o_strides, *l_strides, cu_ptr, *layout_ptrs, counter_ptr, *ints, scale_log2)
    return np.frombuffer(bytearray(raw), dtype=_PARAMS_DTYPE)


# --------------------------------------------------------------------------- entry point
def attention_hopper(q, k, v, layout, scale, return_lse=False, cu_seqlens=None, *, out=None, lse_out=None,
                     problem=None):
    """Block-sparse attention forward on the Hopper kernel; same arguments and results as
    ``cupy_backend.attention_cupy``. Raises the kernel's reason for a problem it does not take."""
    prob = problem if problem is not None else check(q, k, v, layout, scale, return_lse, cu_seqlens)
    reason = supports(prob) if problem is not None else None
    if reason is not None:
        raise ValueError(f"SPATTERN_KERNEL=hopper cannot run this call: {reason}")
    if prob.packed and cu_seqlens.dtype != torch.int32:
        cu_seqlens = cu_seqlens.to(torch.int32)
    packed, B, H, Hkv, D, R = prob.packed, prob.B, prob.H, prob.Hkv, prob.D, prob.R
    bf16 = prob.dtype == torch.bfloat16
    q, k, v, out, lse = _cb.prepare_io(q, k, v, out, lse_out, return_lse, packed, B, H)
    dev = q.device
    if packed:
        T = q.shape[0]
        os_, ls = (0, D, H * D), (0, T)
    else:
        Nq = q.shape[2]
        os_, ls = (H * Nq * D, Nq * D, D), (H * Nq, Nq)
    n_work = B * H * R
    if n_work == 0 or q.numel() == 0:
        if lse is not None:
            lse.fill_(-math.inf)
        return out.zero_(), lse

    layout = kernel_layout(layout, dev, prob.max_program)
    lt = _cb._layout_tensors(layout, dev)
    dev_index = dev.index if dev.index is not None else torch.cuda.current_device()
    ns, pp = stages(D, prob.block_k), pingpong()
    fn = get_kernel(dev_index, bf16, D, prob.block_k, ns, pp, overlap())
    grid = grid_size(n_work, _sm_count(dev_index), persistent(), max_ctas())
    tq = tensor_map(q, packed, BLOCK_Q)
    tk = tensor_map(k, packed, prob.block_k)
    tv = tensor_map(v, packed, prob.block_k)
    stream = _cb.cupy_stream(dev)
    with stream:
        lcp = _cb._layout_cupy(layout, lt, dev, B, H, R, prob.Bg, prob.Hg, 1)
        ptrs = lcp.get("_hopper_ptrs")
        if ptrs is None:  # the layout arrays' addresses, once per cached layout view
            ptrs = lcp["_hopper_ptrs"] = tuple(lcp[n].data.ptr for n in _LAYOUT_ARRAYS)
        counter = _zeroed_counter(dev_index, stream.ptr)
        params = pack_params(
            out.data_ptr(), lse.data_ptr() if lse is not None else 0, os_, ls,
            cu_seqlens.data_ptr() if packed else 0, ptrs, counter,
            (H, Hkv, prob.Nq, prob.Nk, 1 if packed else 0, prob.Bg, prob.Hg, R, lt["P"], n_work,
             1 if return_lse else 0),
            float(scale) * math.log2(math.e))
        fn((grid, 1, 1), (THREADS, 1, 1), (tq, tk, tv, params), shared_mem=smem_bytes(D, prob.block_k, ns))
    return out, lse
