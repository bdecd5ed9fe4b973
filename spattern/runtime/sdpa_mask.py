"""The ``sdpa_mask`` backend: torch's ``scaled_dot_product_attention`` under the layout's token mask.

For short sequences on any device: the mask is Nq x Nk booleans per layout group, built once from
``layout.to_dense()`` and kept with the layout's device arrays; SDPA's fused kernels then run forward
and backward (on a CPU, for study scenario 3's MQAR model at 256 tokens, about 7x faster than the
reference's float32 softmax: 32 ms against 218 ms per layer for B 64, 2 heads of 32). It is the
reference's semantics wherever it runs: a query with no allowed key gets zeros (torch 2.13's CPU
kernel gives zeros there by itself; the mask is widened on such rows and their output zeroed for the
versions and kernels that give NaN), and inputs with a NaN or an Inf go to the reference itself,
which keeps them local to the queries that attend them (SDPA's product of probabilities and values would spread them to every
query). It returns no LSE and takes no packed input (``supports`` says so), and refuses masks above
the reference's dense limit. Opt-in (``backend="sdpa_mask"``), never chosen by ``auto``: the
reference stays the oracle, and this backend is tested against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spattern.compiler.layout import BlockLayout
from spattern.runtime.problem import Problem
from spattern.runtime.reference import DENSE_LIMIT, _expand_kv, attention_reference

MASK_LIMIT = 4 * DENSE_LIMIT  # booleans of the token masks of all layout groups together


def supports(prob: Problem) -> str | None:
    if prob.packed:
        return "cu_seqlens: the sdpa_mask backend does not take packed input (compile document() into the layout)"
    if prob.return_lse:
        return "return_lse: the sdpa_mask backend returns no LSE (use 'reference')"
    if prob.Nq * prob.Nk > DENSE_LIMIT or prob.Bg * prob.Hg * prob.Nq * prob.Nk > MASK_LIMIT:
        return (f"the sdpa_mask backend keeps a dense token mask: expected Nq * Nk <= {DENSE_LIMIT} and groups * "
                f"Nq * Nk <= {MASK_LIMIT}, got {prob.Nq} x {prob.Nk} x {prob.Bg * prob.Hg} groups")
    return None


def _masks(layout: BlockLayout, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mask (Bg, Hg, q_len, kv_len) bool for SDPA, empty (Bg, Hg, q_len, 1) bool or None) on ``device``,
    built once per layout and device: ``empty`` marks the rows with no allowed key (None when there is
    none), whose mask is widened to every key so that no kernel divides by an empty sum."""
    key = (str(device), "sdpa_mask")
    if key not in layout._device_cache:
        Bg, Hg = layout.group_shape
        m = torch.from_numpy(layout.to_dense()).reshape(Bg, Hg, layout.q_len, layout.kv_len)
        empty = ~m.any(-1, keepdim=True)  # on the host: no device sync per call
        has_empty = bool(empty.any())
        layout._device_cache[key] = ((m | empty).to(device), empty.to(device)) if has_empty else (m.to(device), None)
    return layout._device_cache[key]


def attention_sdpa_mask(q, k, v, layout: BlockLayout, scale: float) -> tuple[torch.Tensor, None]:
    """q (B, H, Nq, D), k/v (B, Hkv, Nk, D) -> (out (B, H, Nq, D), None); the layout's groups broadcast
    over the batch and heads as in the reference."""
    finite = torch.isfinite(q).all() & torch.isfinite(k).all() & torch.isfinite(v).all()
    if not bool(finite):  # one device sync per call, not one per input
        return attention_reference(q, k, v, layout, scale)
    mask, empty = _masks(layout, q.device)  # the API checked that the lengths are the layout's
    H = q.shape[1]
    out = F.scaled_dot_product_attention(q, _expand_kv(k, H), _expand_kv(v, H), attn_mask=mask, scale=scale)
    if empty is not None:
        out = torch.where(empty, torch.zeros((), dtype=out.dtype, device=out.device), out)
    return out, None
