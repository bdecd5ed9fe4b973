"""CuPy launcher for the block-sparse flash-attention forward kernel.

Thin layer: checks inputs (before any CUDA call), moves the layout arrays to the device once
(cached on the layout), orders the work items (long rows first, on the GPU, no host sync),
compiles the kernel once per key (in memory + CuPy's on-disk cache, or an nvcc cubin cache)
and launches it on torch's current stream with tensors shared through DLPack.

Kernel: ``kernels/block_sparse_fwd.cu``; contract: docs/design.md, "Concrete contract".
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from spattern.utils.io import atomic_save

from spattern.compiler.layout import PROGRAM, programs_as_bitmasks
from spattern.ir import program as _program

try:  # torch is a hard dependency of the runtime, but keep import errors readable
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
KERNEL_FILE = KERNEL_DIR / "block_sparse_fwd.cu"
KERNEL_NAME = "sp_block_sparse_fwd"

SUPPORTED_HEAD_DIMS = (64, 128)
SUPPORTED_BLOCKS = ((64, 64), (64, 128), (128, 64), (128, 128))
MAX_PROGRAM = _program.MAX_PROGRAM
TILE_K = 64  # keys per kernel tile (kernel constant BK)

# How the mma.sync kernels (this forward and cupy_bwd's backward) read PROGRAM blocks (``kernel_layout``):
# "auto" reads a layout's PROGRAM blocks as bits when some mask program does more than intersect bands
# (a sink's key range, a landmark's or a stride's modulo), "1" whenever it has PROGRAM blocks, "0" never.
ENV_BITMASK = "SPATTERN_MMA_BITMASK"
BITMASK_MODES = ("auto", "0", "1")
# mask-program ops the kernels evaluate in a compare or two per element: layouts whose programs use only
# these keep them (a causal window reads no faster as bits: results/study_device_logs/call85_h100, call86_91_h100)
CHEAP_OPS = frozenset({_program.TRUE, _program.FALSE, _program.BAND, _program.AND})

# Which compile route produced the last module ("nvrtc" or "nvcc"), for logs and tests.
last_compile_route: str | None = None


# --------------------------------------------------------------------------- availability
def is_available() -> bool:
    """True when CuPy imports and a CUDA device exists."""
    try:
        import cupy  # noqa: F401

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
    except Exception:
        return False
    return torch is not None and torch.cuda.is_available()


# --------------------------------------------------------------------------- what it runs
def _dtype_name(dt) -> str:
    return str(dt).replace("torch.", "")


def supports(prob) -> str | None:
    """This backend's declaration: None when it runs ``prob`` (a ``runtime.problem.Problem``),
    else the reason it cannot (the API's ``auto`` reads it; an explicit request raises it)."""
    if prob.dtype not in (torch.float16, torch.bfloat16):
        return f"q: expected dtype float16 or bfloat16, got {_dtype_name(prob.dtype)}"
    if prob.D not in SUPPORTED_HEAD_DIMS:
        return f"q: expected head_dim in {SUPPORTED_HEAD_DIMS}, got {prob.D}"
    if (prob.block_q, prob.block_k) not in SUPPORTED_BLOCKS:
        return f"layout: expected (block_q, block_k) in {SUPPORTED_BLOCKS}, got {(prob.block_q, prob.block_k)}"
    if prob.max_program > MAX_PROGRAM:
        return f"layout.program_len: expected at most {MAX_PROGRAM}, got {prob.max_program}"
    if prob.device.type != "cuda":  # last: every other reason can be found without a GPU
        return f"q, k, v: expected tensors on a CUDA device, got {prob.device}"
    return None


def check(q, k, v, layout, scale, return_lse=False, cu_seqlens=None, trusted=False):
    """The runtime's one input check (``describe``) plus this backend's declaration; raises
    ValueError/TypeError naming the argument. Returns the Problem."""
    from spattern.runtime.problem import describe

    prob = describe(q, k, v, layout, scale, return_lse, cu_seqlens, trusted)
    reason = supports(prob)
    if reason is not None:
        raise (TypeError if "dtype" in reason else ValueError)(reason)
    return prob


# --------------------------------------------------------------------------- what the kernels read
def bitmask_mode() -> str:
    """``SPATTERN_MMA_BITMASK`` (default "auto"); one of ``BITMASK_MODES``."""
    mode = os.environ.get(ENV_BITMASK, "auto").strip().lower() or "auto"
    if mode not in BITMASK_MODES:
        raise ValueError(f"{ENV_BITMASK}: expected one of {BITMASK_MODES}, got {mode!r}")
    return mode


def reads_as_bits(layout, mode: str = "auto") -> bool:
    """Whether the mma.sync kernels read ``layout``'s PROGRAM blocks as bits under ``mode``: it has
    PROGRAM blocks, and mode "1", or "auto" with some group's program using an op outside ``CHEAP_OPS``.

    Why: the kernels run a block's mask program per element, for every tile and head. Forward + backward
    on an H100 (results/study_device_logs/call85_h100 and call86_91_h100), the same blocks read as bits
    against run as programs:
    - with a modulo, 0.51-0.69x the time: one layer of the study's training model at 4K (64 x 64
      blocks, D 64) with landmarks every 2048; at 16K (128 x 128 blocks, D 128) window + landmarks + sink,
      window + stride, and a dilation;
    - with a key range (window + sink, D 64) 0.89x per layer, and about 2-5% more training tokens/s;
      with landmark positions (ranges, D 128) 0.93-1.07x, faster in 4 of 5 benchmark cells;
    - a causal window (bands only) 0.97-1.03x: no gain, so its programs stay."""
    if mode == "0" or not (np.asarray(layout.block_kind) == PROGRAM).any():
        return False
    if mode == "1":
        return True
    plen = np.asarray(layout.program_len)
    ops = {int(op) for g in range(plen.size) for op in np.asarray(layout.programs)[g, : plen[g], 0]}
    return not ops <= CHEAP_OPS


def bitmask_twin(layout, device, max_blocks: int | None = None):
    """The layout with every PROGRAM block stored as a BITMASK block (``programs_as_bitmasks``: the same
    token mask, the same CSR), built once per layout and kept in its cache, so that every kernel reading
    bits (the mma.sync forward and backward here, the Hopper forward) shares one twin and its uploads."""
    return layout.cached(device, "bitmask_twin", lambda: programs_as_bitmasks(layout, max_blocks), max_blocks)


def kernel_layout(layout, device):
    """The layout the mma.sync kernels read on ``device``: with ``reads_as_bits``, its ``bitmask_twin``;
    else the layout itself. The forward and the backward both go through here, so they read the same."""
    mode = bitmask_mode()
    bits = layout.cached(device, "mma_reads_as_bits", lambda: reads_as_bits(layout, mode), mode)
    return bitmask_twin(layout, device) if bits else layout


# --------------------------------------------------------------------------- compilation
_modules: dict[tuple, Any] = {}


_sources: dict[str, tuple[str, str, tuple]] = {}
_checked: dict[str, float] = {}  # when each cached source's files were last stat-ed (time.monotonic)
SOURCE_RECHECK_S = 1.0


def kernel_source(path: Path = KERNEL_FILE) -> tuple[str, str]:
    """Source of a kernel file with its local ``#include "x.cuh"`` lines replaced by the header text
    (so NVRTC needs no include path and nvcc compiles the same text); returns (text, sha256[:16]).
    Kept per process and re-read when the file or one of its headers changes (size or mtime, looked at
    most once per SOURCE_RECHECK_S): every launch asks for the hash; reading and hashing the text took
    ~0.3 ms, more than a small kernel, and stat-ing the files on every launch ~15 us."""
    key = str(path)
    hit = _sources.get(key)
    now = time.monotonic()
    if hit is not None and now - _checked.get(key, -1e9) < SOURCE_RECHECK_S:
        return hit[0], hit[1]
    path = Path(path)
    if hit is not None and all(_stamp(p) == st for p, st in hit[2]):
        _checked[key] = now
        return hit[0], hit[1]
    lines, deps = [], [(path, _stamp(path))]
    for line in path.read_text().splitlines():
        st = line.strip()
        if st.startswith('#include "') and st.endswith('.cuh"'):
            inc = path.parent / st[len('#include "'):-1]
            lines.append(kernel_source(inc)[0])
            deps += _sources[str(inc)][2]
        else:
            lines.append(line)
    src = "\n".join(lines) + "\n"
    h = hashlib.sha256(src.encode()).hexdigest()[:16]
    _sources[key] = (src, h, tuple(deps))
    _checked[key] = now
    return src, h


def _stamp(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_mtime_ns, st.st_size


def kernel_defines(bf16: bool, head_dim: int, block_q: int, block_k: int, warp_rows: int = 16,
                   cta_rows: int | None = None, nstage: int = 3) -> list[str]:
    """-D defines of one instantiation; block_q/block_k are the layout's, cta_rows the CTA's query rows."""
    cta_rows = block_q if cta_rows is None else cta_rows
    kk_unroll = 8 if warp_rows == 16 else 2  # wm32: a partly rolled QK^T loop frees address registers
    return [f"-DSP_BF16={int(bool(bf16))}", f"-DSP_BQ={cta_rows}", f"-DSP_LQ={block_q}", f"-DSP_HD={head_dim}",
            f"-DSP_LK={block_k}", f"-DSP_WM={warp_rows}", f"-DSP_NSTAGE={nstage}", f"-DSP_KK_UNROLL={kk_unroll}"]


# Selectable kernel configurations: (cta_rows, warp_rows, nstage) by name (SPATTERN_KERNEL_CONFIG).
KERNEL_CONFIGS = {
    "cta128_wm16_s3": (128, 16, 3),  # 8 warps x 16 rows, 1 CTA/SM (registers), 3-stage K/V
    "cta128_wm16_s2": (128, 16, 2),
    "cta128_wm32_s2": (128, 32, 2),  # 4 warps x 32 rows (FA2-like), 2 CTAs/SM
    "cta64_wm16_s3": (64, 16, 3),    # 4 warps x 16 rows; a 128-row layout row is split over 2 CTAs
}
# Defaults per head dim, measured on the H100 (notes/kernel.md): D=128 wm16 (wm32 spills and is slow on
# partial blocks), D=64 wm32 (20-25% faster than wm16 there).
DEFAULT_CONFIG = {128: "cta128_wm16_s2", 64: "cta128_wm32_s2"}


def kernel_config(block_q: int, head_dim: int = 128) -> tuple[int, int, int]:
    """(cta_rows, warp_rows, nstage) for a layout block_q and head dim (64-row layouts: always (64, 16, 3)).

    SPATTERN_KERNEL_CONFIG=<name in KERNEL_CONFIGS> overrides the default."""
    name = os.environ.get("SPATTERN_KERNEL_CONFIG") or DEFAULT_CONFIG.get(head_dim, "cta128_wm16_s2")
    cta, wm, ns = KERNEL_CONFIGS.get(name, KERNEL_CONFIGS["cta128_wm16_s2"])
    if block_q == 64 or cta > block_q:
        return 64, 16, 3
    return cta, wm, ns


def smem_bytes(head_dim: int, cta_rows: int, nstage: int = 3) -> int:
    return MAX_PROGRAM * 16 + (cta_rows * head_dim + 2 * nstage * TILE_K * head_dim) * 2


def _cache_dir() -> Path:
    d = Path(os.environ.get("SPATTERN_KERNEL_CACHE", Path.home() / ".cache" / "spattern" / "kernels"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def compile_functions(device_index: int, path: Path, names: tuple[str, ...], defines: list[str], tag: str,
                      smem: int) -> dict:
    """Compile ``path`` (headers inlined) with ``defines`` for the device's arch; return {name: function}
    with the dynamic shared-memory limit set to ``smem``. NVRTC first (CuPy caches on disk), then an nvcc
    cubin cached under SPATTERN_KERNEL_CACHE (``SPATTERN_COMPILE=nvcc`` forces it)."""
    global last_compile_route
    import cupy

    cc = cupy.cuda.Device(device_index).compute_capability  # e.g. "90"
    arch = f"sm_{cc}a" if cc == "90" else f"sm_{cc}"
    src, h = kernel_source(path)
    errors = []
    mod = None
    with cupy.cuda.Device(device_index):
        if os.environ.get("SPATTERN_COMPILE", "nvrtc") == "nvrtc":
            for opts in ((f"--gpu-architecture={arch}", "-std=c++17", *defines), ("-std=c++17", *defines)):
                try:
                    mod = cupy.RawModule(code=src, options=tuple(opts))
                    fns = {n: mod.get_function(n) for n in names}
                    last_compile_route = "nvrtc " + " ".join(opts[:1])
                    break
                except Exception as e:  # try the next option set / route
                    mod = None
                    errors.append(f"nvrtc {opts[0]}: {e}")
        if mod is None and shutil.which("nvcc"):
            cubin = _cache_dir() / f"{tag}_{arch}_{h}.cubin"
            if not cubin.exists():
                tmp_src = cubin.with_suffix(f".{os.getpid()}.cu")
                tmp_src.write_text(src)
                gencode = f"-gencode=arch=compute_{arch[3:]},code={arch}"

                def nvcc(tmp: Path) -> None:
                    cmd = ["nvcc", gencode, "-std=c++17", "-O3", "-cubin", *defines, "-o", str(tmp), str(tmp_src)]
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        raise RuntimeError("nvcc: " + r.stderr[-2000:])

                try:
                    atomic_save(cubin, nvcc)
                except RuntimeError as e:
                    errors.append(str(e))
                finally:
                    tmp_src.unlink(missing_ok=True)
            if cubin.exists():
                mod = cupy.RawModule(path=str(cubin))
                fns = {n: mod.get_function(n) for n in names}
                last_compile_route = "nvcc"
        if mod is None:
            raise RuntimeError(f"spattern: could not compile {path.name}:\n" + "\n".join(errors))
        for fn in fns.values():
            if hasattr(fn, "max_dynamic_shared_size_bytes"):
                fn.max_dynamic_shared_size_bytes = smem  # RawKernel
                try:
                    fn.preferred_shared_memory_carveout = 100  # all of L1/smem as smem: 2 CTAs/SM fit
                except Exception:
                    pass
            else:
                drv = cupy.cuda.driver
                drv.funcSetAttribute(fn.ptr, drv.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem)
    return fns


def get_kernel(device_index: int, bf16: bool, head_dim: int, block_q: int, block_k: int,
               warp_rows: int = 16, cta_rows: int | None = None, nstage: int = 3):
    """Compiled forward kernel, once per (device, dtype, head dim, blocks, variant, source hash)."""
    cta_rows = block_q if cta_rows is None else cta_rows
    variant = f"cta{cta_rows}_wm{warp_rows}_s{nstage}"
    key = (device_index, bool(bf16), head_dim, block_q, block_k, variant, kernel_source()[1])
    fn = _modules.get(key)
    if fn is None:
        defines = kernel_defines(bf16, head_dim, block_q, block_k, warp_rows, cta_rows, nstage)
        tag = f"bsfwd_{'bf16' if bf16 else 'fp16'}_d{head_dim}_q{block_q}_k{block_k}_{variant}"
        fn = _modules[key] = compile_functions(device_index, KERNEL_FILE, (KERNEL_NAME,), defines, tag,
                                               smem_bytes(head_dim, cta_rows, nstage))[KERNEL_NAME]
    return fn


# --------------------------------------------------------------------------- layout on device
def _layout_tensors(layout, device) -> dict:
    """int32/uint8 flat torch tensors of the layout on `device`, built once per device
    (kept in the layout's one device cache, ``BlockLayout.cached``)."""
    return layout.cached(device, "cupy_tensors", lambda: _build_layout_tensors(layout, device))


def _build_layout_tensors(layout, device) -> dict:
    src = layout.to_device(device)

    def get(name, dtype):
        t = src[name].to(device=device, dtype=dtype).contiguous().reshape(-1)
        if t.numel() == 0:
            t = torch.zeros(1, dtype=dtype, device=device)
        return t

    G = int(np.prod(layout.group_shape))
    programs = np.asarray(layout.programs)
    P = int(programs.shape[1]) if programs.ndim == 3 else 0
    d = dict(
        row_ptr=get("row_ptr", torch.int32),
        col_idx=get("col_idx", torch.int32),
        block_kind=get("block_kind", torch.uint8),
        mask_idx=get("mask_idx", torch.int32),
        programs=get("programs", torch.int32),
        program_len=get("program_len", torch.int32),
        bitmasks=get("bitmasks", torch.int32),  # uint32 words, bit-preserving int32 view (to_device)
        P=P,
        G=G,
    )
    return d


def _work_order(layout, lt: dict, Bv: int, H: int, R: int, Bg: int, Hg: int, device, split: int = 1):
    """Work items w = ((b*H + h)*R + r)*split + part sorted by row length, longest first (GPU ops, no sync)."""
    return layout.cached(device, "cupy_work", lambda: _build_work_order(lt, Bv, H, R, Bg, Hg, device, split),
                         Bv, H, split)


def _build_work_order(lt: dict, Bv: int, H: int, R: int, Bg: int, Hg: int, device, split: int):
    G = Bg * Hg
    rp = lt["row_ptr"][: G * (R + 1)].view(G, R + 1)
    lens = (rp[:, 1:] - rp[:, :-1])  # (G, R)
    gb = torch.arange(Bv, device=device) if Bg > 1 else torch.zeros(Bv, dtype=torch.long, device=device)
    gh = torch.arange(H, device=device) if Hg > 1 else torch.zeros(H, dtype=torch.long, device=device)
    g = gb[:, None] * Hg + gh[None, :]  # (Bv, H)
    per = lens[g.reshape(-1)].reshape(-1)  # (Bv*H*R,)
    if split > 1:
        per = per.repeat_interleave(split)
    return torch.argsort(per, descending=True, stable=True).to(torch.int32)


# --------------------------------------------------------------------------- entry point
_streams: dict[int, Any] = {}
_fast_kernels: dict[tuple, Any] = {}
# How per-call tensors reach the kernel: "dlpack" (cupy.from_dlpack views) or "ptr" (data_ptr()).
# Measured on the H100 (notes/kernel.md): dlpack ~260 us of host time per call, ptr ~80 us.
ARG_MODE = os.environ.get("SPATTERN_CUPY_ARGS", "ptr")


class _StreamHandle:
    """A raw ``cudaStream_t`` in the CUDA stream protocol (``__cuda_stream__`` -> (version 0, handle)),
    what CuPy 14's ``Stream.from_external`` takes (its ``ExternalStream`` is deprecated)."""

    __slots__ = ("ptr",)

    def __init__(self, ptr: int):
        self.ptr = int(ptr)

    def __cuda_stream__(self):
        return (0, self.ptr)


def external_stream(sptr: int, dev_index: int):
    """CuPy stream object for the existing CUDA stream ``sptr`` on device ``dev_index`` (not owned:
    CuPy never destroys it). ``Stream.from_external`` where CuPy has it, else ``ExternalStream``."""
    import cupy

    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None:
        with cupy.cuda.Device(dev_index):
            return from_external(_StreamHandle(sptr))
    return cupy.cuda.ExternalStream(sptr, dev_index)


def cupy_stream(dev):
    """CuPy view of torch's current stream on ``dev`` (kernels launch on it, ordered with torch's work)."""
    sptr = torch.cuda.current_stream(dev).cuda_stream
    stream = _streams.get(sptr)
    if stream is None:
        dev_index = dev.index if dev.index is not None else torch.cuda.current_device()
        stream = _streams[sptr] = external_stream(sptr, dev_index)
    return stream


def _layout_cupy(layout, lt: dict, dev, B: int, H: int, R: int, Bg: int, Hg: int, split: int) -> dict:
    """CuPy views (DLPack, zero-copy) of the cached device layout arrays and work order."""
    import cupy

    def build():
        work = _work_order(layout, lt, B, H, R, Bg, Hg, dev, split)
        dummy = torch.empty(1, dtype=torch.float32, device=dev)
        d = {n: cupy.from_dlpack(lt[n]) for n in
             ("row_ptr", "col_idx", "block_kind", "mask_idx", "bitmasks", "programs", "program_len")}
        d["work"] = cupy.from_dlpack(work)
        d["dummy_f32"] = cupy.from_dlpack(dummy)
        d["_keep"] = (work, dummy)
        return d

    return layout.cached(dev, "cupy_views", build, B, H, split)


def prepare_io(q, k, v, out, lse_out, return_lse: bool, packed: bool, B: int, H: int):
    """What a forward kernel reads and writes: q, k, v contiguous and 16-byte aligned (copied
    only if not); ``out`` checked (contiguous, q's shape, dtype and device) or allocated like q; the
    LSE, fp32 (B, H, Nq) or (H, T) packed: ``lse_out`` checked, or allocated, or None without
    ``return_lse``. Returns (q, k, v, out, lse)."""
    q = q if q.is_contiguous() and q.data_ptr() % 16 == 0 else q.contiguous()
    k = k if k.is_contiguous() and k.data_ptr() % 16 == 0 else k.contiguous()
    v = v if v.is_contiguous() and v.data_ptr() % 16 == 0 else v.contiguous()
    dev = q.device
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous() or out.device != dev:
        raise ValueError(f"out: expected a contiguous {tuple(q.shape)} {_dtype_name(q.dtype)} tensor on {dev}, "
                         f"got {tuple(out.shape)} {_dtype_name(out.dtype)} on {out.device}")
    lse = None
    if return_lse:
        shape = (H, q.shape[0]) if packed else (B, H, q.shape[2])
        if lse_out is None:
            lse = torch.empty(shape, dtype=torch.float32, device=dev)
        elif tuple(lse_out.shape) != shape or lse_out.dtype != torch.float32 or not lse_out.is_contiguous():
            raise ValueError(f"lse_out: expected a contiguous {shape} float32 tensor, "
                             f"got {tuple(lse_out.shape)} {_dtype_name(lse_out.dtype)}")
        else:
            lse = lse_out
    return q, k, v, out, lse


def attention_cupy(q, k, v, layout, scale, return_lse=False, cu_seqlens=None, *, out=None, lse_out=None,
                   problem=None):
    """Block-sparse attention forward. q (B,H,Nq,D) or packed (T,H,D) + cu_seqlens.

    Returns (out, lse_or_None); lse fp32 (B,H,Nq), or (H,T) for packed input.
    ``out`` / ``lse_out`` (optional, contiguous, right shape and dtype) are written in place.
    ``problem``: the API's already-checked description (then nothing is checked again).
    """
    prob = problem if problem is not None else check(q, k, v, layout, scale, return_lse, cu_seqlens)
    if prob.packed and cu_seqlens.dtype != torch.int32:
        cu_seqlens = cu_seqlens.to(torch.int32)
    layout = kernel_layout(layout, q.device)
    info = dict(packed=prob.packed, B=prob.B, H=prob.H, Hkv=prob.Hkv, D=prob.D, Nq=prob.Nq, Nk=prob.Nk,
                R=prob.R, Bg=prob.Bg, Hg=prob.Hg, block_q=prob.block_q, block_k=prob.block_k,
                bf16=prob.dtype == torch.bfloat16)
    import cupy

    packed, B, H, Hkv, D, R = info["packed"], info["B"], info["H"], info["Hkv"], info["D"], info["R"]
    q, k, v, out, lse = prepare_io(q, k, v, out, lse_out, return_lse, packed, B, H)
    dev = q.device
    if packed:
        T = q.shape[0]
        qs = (0, D, H * D)
        ks = (0, D, Hkv * D)
        ls = (0, T)
    else:
        Nq, Nk = q.shape[2], k.shape[2]
        qs = (H * Nq * D, Nq * D, D)
        ks = (Hkv * Nk * D, Nk * D, D)
        ls = (H * Nq, Nq)
    n_work = B * H * R
    if n_work == 0 or q.numel() == 0:
        if return_lse and lse is not None:
            lse.fill_(-math.inf)
        return out.zero_(), lse

    lt = _layout_tensors(layout, dev)
    dev_index = dev.index if dev.index is not None else torch.cuda.current_device()
    cta, wm, ns = kernel_config(info["block_q"], D)
    split = info["block_q"] // cta
    kkey = (dev_index, info["bf16"], D, info["block_q"], info["block_k"], wm, cta, ns)
    fn = _fast_kernels.get(kkey)
    if fn is None:
        fn = _fast_kernels[kkey] = get_kernel(dev_index, info["bf16"], D, info["block_q"], info["block_k"], wm, cta,
                                              ns)
    threads = cta // wm * 32
    smem = smem_bytes(D, cta, ns)

    stream = cupy_stream(dev)
    i64, i32, f32 = np.int64, np.int32, np.float32
    with stream:
        lcp = _layout_cupy(layout, lt, dev, B, H, R, info["Bg"], info["Hg"], split)
        if ARG_MODE == "ptr":  # raw device pointers: same zero-copy sharing, less host work
            tens = [np.uint64(t.data_ptr()) for t in (q, k, v, out)]
            lse_a = np.uint64(lse.data_ptr()) if lse is not None else lcp["dummy_f32"]
            cu_a = np.uint64(cu_seqlens.data_ptr()) if packed else lcp["program_len"]
        else:  # DLPack views (int16 views: CuPy has no bfloat16 dtype)
            as_cp = cupy.from_dlpack
            tens = [as_cp(t.view(torch.int16)) for t in (q, k, v, out)]
            lse_a = as_cp(lse) if lse is not None else lcp["dummy_f32"]
            cu_a = as_cp(cu_seqlens) if packed else lcp["program_len"]
        args = (
            *tens, lse_a,
            i64(qs[0]), i64(qs[1]), i64(qs[2]),
            i64(ks[0]), i64(ks[1]), i64(ks[2]),
            i64(ks[0]), i64(ks[1]), i64(ks[2]),
            i64(qs[0]), i64(qs[1]), i64(qs[2]),
            i64(ls[0]), i64(ls[1]),
            i32(H), i32(Hkv), i32(info["Nq"]), i32(info["Nk"]),
            cu_a, i32(1 if packed else 0),
            lcp["row_ptr"], lcp["col_idx"], lcp["block_kind"], lcp["mask_idx"],
            lcp["bitmasks"], lcp["programs"], lcp["program_len"],
            i32(info["Bg"]), i32(info["Hg"]), i32(R), i32(lt["P"]),
            lcp["work"], f32(float(scale) * math.log2(math.e)), i32(1 if return_lse else 0),
        )
        fn((n_work * split, 1, 1), (threads, 1, 1), args, shared_mem=smem)  # on `stream` (context)
    return out, lse
