"""Launcher of the fused top-k selection kernel (``kernels/topk_select.cu``) through CuPy.

One launch builds ``col_idx`` and ``block_kind`` of a top-k layout from block scores, on torch's
current stream (so it can be captured in a CUDA graph), with no host synchronization. The module
is compiled once per (device, source hash) and cached in memory (CuPy keeps compiled kernels on
disk too). ``spattern.indexer.select`` is its torch twin; ``tests/gpu/test_topk_gpu.py`` checks
that both agree.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

SOURCE = Path(__file__).with_name("kernels") / "topk_select.cu"
MAX_C, MAX_K = 2048, 1024


def available() -> bool:
    try:
        import cupy  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@lru_cache(maxsize=8)
def _kernel(device_index: int, digest: str):
    import cupy

    with cupy.cuda.Device(device_index):
        cc = cupy.cuda.Device(device_index).compute_capability
        mod = cupy.RawModule(code=SOURCE.read_text(), options=("-std=c++17", f"-arch=sm_{cc}"))
        return mod.get_function("topk_select")


@lru_cache(maxsize=1)
def _digest() -> str:
    return hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:16]


_STREAMS: dict = {}


def select_into(bscores, row_ptr, col_idx, kind, q_len: int, block_q: int, block_k: int,
                causal: bool, sink: int, local: int) -> None:
    """Fill ``col_idx`` (int32) and ``kind`` (uint8) from ``bscores`` (B, R, C) float32 on CUDA.

    ``row_ptr`` (B, R + 1) int32 on the same device holds each row's offset and count
    (min(k, available)); all tensors are torch tensors.
    """
    import cupy
    import numpy as np
    import torch

    B, R, C = bscores.shape
    if C > MAX_C:
        raise ValueError(f"bscores: the fused kernel takes at most {MAX_C} key blocks, got {C}")
    dev = bscores.device.index if bscores.device.index is not None else torch.cuda.current_device()
    fn = _kernel(dev, _digest())
    sptr = torch.cuda.current_stream(bscores.device).cuda_stream
    stream = _STREAMS.get(sptr)
    if stream is None:
        from spattern.runtime.cupy_backend import external_stream

        stream = _STREAMS[sptr] = external_stream(sptr, dev)
    P = 1 << max(0, (C - 1).bit_length())
    threads = min(1024, max(64, P // 2))
    s = bscores.contiguous().float()
    for name, t, dt in (("row_ptr", row_ptr, torch.int32), ("col_idx", col_idx, torch.int32),
                        ("kind", kind, torch.uint8)):
        if t.dtype != dt or not t.is_contiguous() or t.device != bscores.device:
            raise ValueError(f"{name}: expected a contiguous {dt} tensor on {bscores.device}, got "
                             f"{t.dtype} on {t.device}")
    # raw device pointers (np.uint64): DLPack views cost ~100 us of host time per call
    with cupy.cuda.Device(dev), stream:
        fn((R, B), (threads,), (
            np.uint64(s.data_ptr()), np.uint64(row_ptr.data_ptr()), np.uint64(col_idx.data_ptr()),
            np.uint64(kind.data_ptr()), np.int32(R), np.int32(C), np.int32(q_len), np.int32(block_q),
            np.int32(block_k), np.int32(int(causal)), np.int32(sink), np.int32(local)))
