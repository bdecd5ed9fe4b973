"""Autograd through the CUDA kernels: two ``torch.library`` custom ops paired by ``register_autograd``.

    out, lse = attention_cupy_autograd(q, k, v, layout, prob, cu_seqlens)

``spattern::bs_attn_fwd(q, k, v, layout_id, scale, cu_seqlens) -> (out, lse)`` runs the forward
kernel (``hopper_backend.forward``: the Hopper or the mma.sync kernel) and always returns the LSE (the backward needs it);
``spattern::bs_attn_bwd(dout, q, k, v, out, lse, layout_id, scale, cu_seqlens) -> (dq, dk, dv)``
runs the backward kernels (``cupy_bwd``). Both have fake (meta) implementations, so they trace
under ``torch.compile`` (the ops stay opaque: Inductor does not look inside).

The layout cannot be a custom-op argument: it is passed as a small int id. The id is given to a
layout once (kept in its device cache, ``BlockLayout.cached``) and maps back to the layout through a
registry of weak references here, so the registry never keeps a layout alive; the autograd context
of a forward holds its layout until the backward has run. Under
``torch.compile`` the id is a constant of the graph (a new layout is a new graph, like any other
Python constant). The LSE output is not differentiable (its gradient is taken to be zero).
"""
from __future__ import annotations

import itertools
import weakref
from typing import Optional

import torch

from spattern.runtime import cupy_backend, cupy_bwd, hopper_backend

_ids = itertools.count(1)
_registry: dict[int, "weakref.ref"] = {}


def layout_id(layout) -> int:
    """The layout's registry id (assigned on first use, kept on the layout)."""
    def build():
        i = next(_ids)
        _registry[i] = weakref.ref(layout, lambda _r, i=i: _registry.pop(i, None))
        return i

    return layout.cached("any", "autograd_id", build)


def _layout(i: int):
    ref = _registry.get(int(i))
    lay = ref() if ref is not None else None
    if lay is None:
        raise RuntimeError(f"spattern: layout id {i} is no longer alive (the BlockLayout was freed)")
    return lay


def _lse_shape(q, cu_seqlens):
    return (q.shape[1], q.shape[0]) if cu_seqlens is not None else tuple(q.shape[:3])


@torch.library.custom_op("spattern::bs_attn_fwd", mutates_args=(), device_types="cuda")
def bs_attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout_id: int, scale: float,
                cu_seqlens: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lay = _layout(layout_id)
    prob = cupy_backend.check(q, k, v, lay, scale, True, cu_seqlens, trusted=True)
    return hopper_backend.forward(q, k, v, lay, prob, cu_seqlens, True)  # Hopper or mma.sync kernel


@bs_attn_fwd.register_fake
def _(q, k, v, layout_id, scale, cu_seqlens):
    return torch.empty_like(q), q.new_empty(_lse_shape(q, cu_seqlens), dtype=torch.float32)


@torch.library.custom_op("spattern::bs_attn_bwd", mutates_args=(), device_types="cuda")
def bs_attn_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                lse: torch.Tensor, layout_id: int, scale: float,
                cu_seqlens: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return cupy_bwd.attention_backward_cupy(dout, q, k, v, out, lse, _layout(layout_id), scale, cu_seqlens)


@bs_attn_bwd.register_fake
def _(dout, q, k, v, out, lse, layout_id, scale, cu_seqlens):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, lid, scale, cu = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu)
    ctx.layout_id, ctx.scale = lid, scale
    ctx.layout = _layout(lid)  # held until the backward: a layout built per step (top-k) may be dropped by then
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse, cu = ctx.saved_tensors
    dq, dk, dv = bs_attn_bwd(dout, q, k, v, out, lse, ctx.layout_id, ctx.scale, cu)
    return dq, dk, dv, None, None, None


bs_attn_fwd.register_autograd(_backward, setup_context=_setup_context)


def attention_cupy_autograd(q, k, v, layout, prob, cu_seqlens):
    """Differentiable block-sparse attention through the CUDA kernels; (out, lse if prob.return_lse)."""
    reason = cupy_bwd.supports(prob)
    if reason is not None:
        raise ValueError(reason)
    if cu_seqlens is not None and cu_seqlens.dtype != torch.int32:
        cu_seqlens = cu_seqlens.to(torch.int32)
    out, lse = bs_attn_fwd(q, k, v, layout_id(layout), float(prob.scale), cu_seqlens)
    return out, (lse if prob.return_lse else None)
