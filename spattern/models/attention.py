"""The one attention call every model makes: dense causal SDPA, or a sparse pattern through
`spattern.compile` + `spattern.attention`.

`pattern=None` (or "dense") is causal attention through torch's SDPA. Any other string is parsed
with `spattern.parse` and compiled once per (pattern, q_len, kv_len, block) into a BlockLayout
(cached); the pattern must include causality itself (e.g. "local(128) & causal"). A `Pattern`
object works the same way; a content-dependent one must be bound to its sequence first
(`parse("outline() & causal").bind(spattern.data.structure.structure_context(tok, ids))`).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from spattern.data.batch_contexts import SequenceContexts, contexts_layout  # noqa: F401 (SequenceContexts: re-exported)

DENSE = (None, "", "dense")


def is_dense(pattern) -> bool:
    return pattern is None or (isinstance(pattern, str) and pattern in DENSE)


def needs_context(pattern) -> bool:
    """True for a content-dependent pattern (e.g. outline): it compiles per sequence, from a context.
    False for a self-scored one (``oracle``, ``indexed``): the attention layer computes its scores."""
    if is_dense(pattern) or self_scored(pattern):
        return False
    return _string_needs_context(pattern) if isinstance(pattern, str) else not pattern.is_static


def self_scored(pattern) -> bool:
    """True for a top-k pattern whose block scores each attention layer computes at every call:
    ``oracle(...)`` from its own queries and keys (``oracle_contexts``), ``indexed(...)`` from its
    input through the layer's lightning indexer (``indexer_contexts``)."""
    from spattern.patterns.topk import Indexed, Oracle  # noqa: PLC0415

    return _is_a(pattern, (Oracle, Indexed))


def indexer_scored(pattern) -> bool:
    """True for ``indexed(...)``: the layer's indexer scores it (``SelfAttention.indexer``)."""
    from spattern.patterns.topk import Indexed  # noqa: PLC0415

    return _is_a(pattern, Indexed)


def _is_a(pattern, kinds) -> bool:
    """Whether a pattern (a Pattern, or DSL text parsed once per text) is an instance of ``kinds``."""
    if is_dense(pattern):
        return False
    return issubclass(_string_type(pattern) if isinstance(pattern, str) else type(pattern), kinds)


@functools.lru_cache(maxsize=256)
def _string_type(text: str) -> type:
    from spattern.patterns import parse  # noqa: PLC0415

    return type(parse(text))


def cost_contexts(pattern, n: int) -> list[dict] | None:
    """None, or for ``oracle`` and ``indexed`` one context of zero scores at n tokens: each of its rows holds
    min(k, available) blocks whatever the scores, so its cost compiles exactly without a model."""
    if not self_scored(pattern):
        return None
    R = -(-int(n) // _parse(pattern).block)
    return [{"block_scores": np.zeros((R, R), np.float32), "q_len": int(n), "kv_len": int(n)}]


def oracle_contexts(q: torch.Tensor, k: torch.Tensor, block: int, chunk: int = 1024) -> list[dict]:
    """The contexts ``oracle`` binds to, one per sequence: {"block_scores": (R, C) float32 on the host,
    "q_len", "kv_len"}, the causal softmax attention mass of q (B, H, Nq, D) over k (B, Hkv, Nk, D)
    (scale 1/sqrt(D), the queries aligned to the end of the keys) per (block x block) cell
    (``indexer.block_scores``, pooling "mass": the mean over the block's query rows of the mass its keys
    take), averaged over the heads. Query rows go ``chunk`` at a time (multiples of ``block``)."""
    from spattern.indexer.select import block_scores  # noqa: PLC0415

    B, H, Nq, D = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    rows = max(block, chunk // block * block)
    kk = k.repeat_interleave(H // Hkv, dim=1).float()
    out = []
    for b in range(B):
        parts = []
        for r0 in range(0, Nq, rows):
            qs = q[b, :, r0:r0 + rows].float()                                     # (H, n, D)
            s = qs @ kk[b].transpose(-1, -2) / math.sqrt(D)                       # (H, n, Nk)
            qpos = torch.arange(r0, r0 + qs.shape[1], device=q.device)[:, None] + (Nk - Nq)
            s = s.masked_fill(torch.arange(Nk, device=q.device)[None] > qpos, float("-inf"))
            parts.append(block_scores(s, block, block).mean(0))                   # (n / block, C)
        out.append({"block_scores": torch.cat(parts).cpu().numpy(), "q_len": Nq, "kv_len": Nk})
    return out


def indexer_contexts(indexer, x: torch.Tensor, block: int) -> list[dict]:
    """The contexts ``indexed`` binds to, one per sequence, as ``oracle_contexts`` gives them: the
    softmax of a lightning indexer's causal scores of x (B, N, C) (``indexer(x)``: (B, N, N), -inf in the
    future), its mass per (block x block) cell averaged over the block's query rows (pooling "mass")."""
    from spattern.indexer.select import block_scores  # noqa: PLC0415

    if x.dim() != 3:
        raise ValueError(f"x: expected (batch, seq, d_model), got {tuple(x.shape)}")
    with torch.no_grad():  # the selection is not differentiable: the indexer learns from its own loss
        bs = block_scores(indexer(x), block, block)                               # (B, R, R)
    N = x.shape[1]
    return [{"block_scores": b, "q_len": N, "kv_len": N} for b in bs.cpu().numpy()]


def pattern_block(pattern) -> int:
    """The block of a self-scored pattern's selection (its scores are pooled at it)."""
    return _parse(pattern).block


def oracle_layout(pattern, q: torch.Tensor, k: torch.Tensor, block: tuple[int, int]):
    """The layout ``oracle(...)`` chooses for this call's q and k: one layout group per sequence."""
    p = _parse(pattern)
    return compiled_layout(p, q.shape[2], k.shape[2], block, context=oracle_contexts(q, k, p.block))


def _parse(pattern):
    from spattern.patterns import parse  # noqa: PLC0415

    return parse(pattern) if isinstance(pattern, str) else pattern


@functools.lru_cache(maxsize=256)
def _string_needs_context(text: str) -> bool:  # every forward of every layer asks: parse each string once
    from spattern.patterns import parse  # noqa: PLC0415

    return not parse(text).is_static


def compiled_layout(pattern, q_len: int, kv_len: int | None = None, block: tuple[int, int] = (64, 64),
                    context=None):
    """The BlockLayout of a pattern (string or static/bound Pattern) at these lengths (compiled
    once, then cached). ``context``: one per sequence of the batch for a content-dependent pattern
    (a layout group each; compiled on every call, since the sequences change)."""
    from spattern.compiler.compile import compile as compile_pattern  # noqa: PLC0415

    if context is not None:
        return contexts_layout(pattern, q_len, kv_len if kv_len is not None else q_len, block, context)

    # the compiler's own cache returns the same (validated) layout for a static pattern string
    layout = compile_pattern(pattern, int(q_len), int(kv_len if kv_len is not None else q_len), block=tuple(block))
    if not getattr(layout, "_validated", False):
        layout.validate()  # once here; every call after passes trusted=True
        layout.mark_validated()
    return layout


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: str | None = None,
           backend: str = "auto", block: tuple[int, int] = (64, 64), context=None) -> torch.Tensor:
    """Causal (or patterned) attention. q (B, H, N, D), k/v (B, Hkv, N, D), H % Hkv == 0 -> (B, H, N, D).
    ``context``: B contexts (one per sequence) for a content-dependent pattern."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v: expected 4-D (B, H, N, D), got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    H, Hkv = q.shape[1], k.shape[1]
    if H % Hkv:
        raise ValueError(f"heads: expected q heads divisible by kv heads, got {H} and {Hkv}")
    if is_dense(pattern):
        if Hkv != H:  # (B, Hkv, N, D) -> (B, H, N, D)
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    from spattern.runtime.api import attention  # noqa: PLC0415

    if context is not None and len(context) != q.shape[0]:
        raise ValueError(f"context: expected one per sequence ({q.shape[0]}), got {len(context)}")
    if indexer_scored(pattern):
        if context is None:
            raise ValueError(f"pattern {str(pattern)!r} is scored by the layer's lightning indexer: expected the "
                             "contexts of spattern.models.attention.indexer_contexts (a SelfAttention with "
                             ".indexer set computes them), got none")
        layout = compiled_layout(pattern, q.shape[2], k.shape[2], block, context=context)
    elif self_scored(pattern):
        layout = oracle_layout(pattern, q, k, block)
    elif not needs_context(pattern):
        layout = compiled_layout(pattern, q.shape[2], k.shape[2], block)
    elif context is None:
        raise ValueError(f"pattern {str(pattern)!r} is content-dependent: set one context per sequence first "
                         "(model.set_contexts, e.g. from spattern.data.structure.structure_context)")
    elif isinstance(context, SequenceContexts):
        layout = context.layout(pattern, q.shape[2], k.shape[2], block)
    else:
        layout = compiled_layout(pattern, q.shape[2], k.shape[2], block, context=context)
    return attention(q, k, v, layout, backend=backend, trusted=True)


def per_layer_patterns(pattern: str | None | Sequence[str | None], n_layers: int) -> list[str | None]:
    """One pattern for all layers, or a list with one entry per layer."""
    from spattern.patterns import Pattern  # noqa: PLC0415

    if pattern is None or isinstance(pattern, (str, Pattern)):
        return [None if is_dense(pattern) else pattern] * n_layers
    pats = list(pattern)
    if len(pats) != n_layers:
        raise ValueError(f"pattern: expected a string or a list of {n_layers} (one per layer), got {len(pats)}")
    return [None if is_dense(p) else p for p in pats]
