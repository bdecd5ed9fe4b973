"""The runtime's backends and what each declares it can run.

A backend is a name, an ``available()`` probe, a ``supports(problem) -> reason | None``
declaration over the normalized ``Problem`` (``runtime/problem.py``), and a ``run`` function
``run(q, k, v, layout, problem, cu_seqlens) -> (out, lse_or_None)`` that trusts its inputs.
``choose`` implements ``backend="auto"``: the first backend in ``AUTO_ORDER`` that is available,
supports the problem and is meant for it (``for_grad``: flex is chosen by ``auto`` only when a
gradient is needed, as before: cupy on CUDA fp16/bf16, flex on CUDA when a gradient is needed and
cupy cannot give one, otherwise reference). ``sdpa_mask`` (torch SDPA under the layout's dense token
mask, for short sequences) runs only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

from spattern.runtime.problem import Problem


@dataclass(frozen=True)
class Backend:
    name: str
    available: Callable[[], bool]
    supports: Callable[[Problem], "str | None"]
    run: Callable
    auto_only_for_grad: bool = False


# ---------------------------------------------------------------- reference (torch, the oracle)
def _reference_run(q, k, v, layout, prob, cu_seqlens):
    from spattern.runtime.reference import attention_reference

    return attention_reference(q, k, v, layout, prob.scale, prob.return_lse, cu_seqlens)


# ---------------------------------------------------------------- cupy (CUDA kernels)
@lru_cache(maxsize=1)
def _cupy_available() -> bool:
    try:
        from spattern.runtime.cupy_backend import is_available
    except ImportError:
        return False
    return is_available()


def _cupy_supports(prob: Problem) -> str | None:
    from spattern.runtime import cupy_backend

    if prob.needs_grad:
        if not _cupy_has_backward():
            return "the CUDA kernels are forward-only here: inputs that require grad need 'flex' or 'reference'"
        from spattern.runtime import cupy_bwd

        reason = cupy_bwd.supports(prob)
        if reason is not None:
            return reason
    return cupy_backend.supports(prob)


def _cupy_has_backward() -> bool:
    try:
        from spattern.runtime import cupy_autograd  # noqa: F401  (the backward kernels' autograd)
    except ImportError:
        return False
    return True


def _cupy_run(q, k, v, layout, prob, cu_seqlens):
    if prob.needs_grad:
        from spattern.runtime.cupy_autograd import attention_cupy_autograd

        return attention_cupy_autograd(q, k, v, layout, prob, cu_seqlens)
    from spattern.runtime import hopper_backend  # the forward kernel: Hopper or mma.sync (SPATTERN_KERNEL)

    return hopper_backend.forward(q, k, v, layout, prob, cu_seqlens, prob.return_lse)


# ---------------------------------------------------------------- flex (FlexAttention interop)
@lru_cache(maxsize=1)
def _flex_available() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def _flex_supports(prob: Problem) -> str | None:
    if prob.packed:
        return "cu_seqlens: the flex backend does not take packed input (compile document() into the layout)"
    if prob.device.type != "cuda":
        return f"q: the flex backend runs on CUDA here, got {prob.device}"
    return None


def _flex_run(q, k, v, layout, prob, cu_seqlens):
    from spattern.runtime.flex import attention_flex

    return attention_flex(q, k, v, layout, prob.scale, prob.return_lse, cu_seqlens)


# ---------------------------------------------------------------- sdpa_mask (torch SDPA under the token mask)
def _sdpa_mask_supports(prob: Problem) -> str | None:
    from spattern.runtime.sdpa_mask import supports

    return supports(prob)


def _sdpa_mask_run(q, k, v, layout, prob, cu_seqlens):
    from spattern.runtime.sdpa_mask import attention_sdpa_mask

    return attention_sdpa_mask(q, k, v, layout, prob.scale)


BACKENDS: dict[str, Backend] = {
    "reference": Backend("reference", lambda: True, lambda prob: None, _reference_run),
    "cupy": Backend("cupy", _cupy_available, _cupy_supports, _cupy_run),
    "flex": Backend("flex", _flex_available, _flex_supports, _flex_run, auto_only_for_grad=True),
    "sdpa_mask": Backend("sdpa_mask", lambda: True, _sdpa_mask_supports, _sdpa_mask_run),  # opt-in: not in AUTO_ORDER
}
AUTO_ORDER = ("cupy", "flex", "reference")


def choose(prob: Problem) -> Backend:
    """``auto``: the first backend of AUTO_ORDER that is available and supports the problem."""
    for name in AUTO_ORDER:
        b = BACKENDS[name]
        if b.auto_only_for_grad and not prob.needs_grad:
            continue
        if b.available() and b.supports(prob) is None:
            return b
    return BACKENDS["reference"]


def get(name: str, prob: Problem) -> Backend:
    """An explicitly requested backend; raises when it is unknown, missing or cannot run ``prob``."""
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {('auto', *BACKENDS)}, got {name!r}")
    b = BACKENDS[name]
    reason = b.supports(prob)
    if reason is not None:
        raise ValueError(f"backend={name!r} cannot run this call: {reason}")
    if not b.available():
        raise RuntimeError(f"backend={name!r} is not available on this machine "
                           f"({'CuPy and a CUDA device' if name == 'cupy' else 'torch FlexAttention'} needed)")
    return b


def is_cuda_fast(prob: Problem) -> bool:  # pragma: no cover - convenience for callers/tests
    return prob.device.type == "cuda" and prob.dtype in (torch.float16, torch.bfloat16)
