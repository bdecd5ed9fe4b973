"""The one GPU timing helper of every benchmark.

    t = median_ms(fn, inputs=[(q, k, v), ...], warmup=5, iters=30)

``fn(*inputs[i % len(inputs)])`` is timed ``iters`` times after ``warmup`` calls, each call between
two CUDA events on the current stream (rotating inputs keep one buffer from staying in L2); the
result is the median in milliseconds. ``method="auto"`` (the default) uses
``triton.testing.do_bench`` in median mode where Triton is installed (it also flushes L2 between
calls; its time budget is set so that at least ``iters`` calls are timed), CUDA events otherwise;
``method="events"`` forces the events. ``timing_method()`` names what ran, for the benchmark JSON.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _have_triton() -> bool:
    try:
        import triton.testing  # noqa: F401
    except Exception:
        return False
    return True


def timing_method(method: str = "auto") -> str:
    return "triton.testing.do_bench(median)" if method == "auto" and _have_triton() else "cuda_events(median)"


def median_ms(fn: Callable, inputs: Sequence[tuple] | None = None, warmup: int = 5, iters: int = 30,
              method: str = "auto") -> float:
    """Median milliseconds of ``fn(*args)`` over ``iters`` timed calls (see module doc)."""
    import torch

    inputs = list(inputs) if inputs else [()]
    if method == "auto" and _have_triton():
        from triton.testing import do_bench

        n = [0]

        def call():
            fn(*inputs[n[0] % len(inputs)])
            n[0] += 1
        for _ in range(warmup):
            call()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        call()
        e.record()
        torch.cuda.synchronize()
        rep = max(50.0, 1.2 * iters * s.elapsed_time(e))  # ms: at least `iters` timed calls
        return float(do_bench(call, warmup=1, rep=rep, return_mode="median"))
    for i in range(warmup):
        fn(*inputs[i % len(inputs)])
    torch.cuda.synchronize()
    events = []
    for i in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        args = inputs[i % len(inputs)]
        s.record()
        fn(*args)
        e.record()
        events.append((s, e))
    torch.cuda.synchronize()
    return float(np.median([s.elapsed_time(e) for s, e in events]))
