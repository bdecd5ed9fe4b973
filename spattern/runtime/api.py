"""``spattern.attention``: the one entry point of the runtime.

    out = spattern.attention(q, k, v, layout)                       # (B, H, N, D)
    out, lse = spattern.attention(q, k, v, layout, return_lse=True)
    out = spattern.attention(q, k, v, layout, cu_seqlens=cu)        # packed (T, H, D)

Semantics: softmax over the keys the layout allows, scaled by ``scale`` (default 1/sqrt(D)).
A query with no allowed key gives zeros and LSE = -inf. The LSE is natural-log, fp32, shaped
(B, H, Nq) (packed: (H, T)). k/v may have fewer heads than q (grouped-query attention: query
head h reads kv head h // (H / Hkv)). Inputs are checked once (``runtime/problem.py``); the
backends (``runtime/backends.py``: reference, cupy, flex) declare what they support and ``auto``
chooses from those declarations.
"""

from __future__ import annotations

from spattern.compiler.layout import BlockLayout
from spattern.runtime import backends as _backends
from spattern.runtime.backends import BACKENDS
from spattern.runtime.problem import describe


def attention(q, k, v, layout: BlockLayout, *, scale: float | None = None, backend: str = "auto",
              return_lse: bool = False, cu_seqlens=None, trusted: bool = False):
    """Sparse attention of q over (k, v) restricted to ``layout``; see the module docstring.

    ``trusted=True`` skips the checks that need the host (layout validation, the values of
    ``cu_seqlens``), so the call does not synchronize; shapes, dtypes and devices are always checked."""
    if not isinstance(backend, str) or backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend: expected one of {('auto', *BACKENDS)}, got {backend!r}")
    prob = describe(q, k, v, layout, scale, return_lse, cu_seqlens, trusted)
    b = _backends.choose(prob) if backend == "auto" else _backends.get(backend, prob)
    out, lse = b.run(q, k, v, layout, prob, cu_seqlens)
    return (out, lse) if return_lse else out


def backend_for(q, k, v, layout: BlockLayout, *, cu_seqlens=None) -> str:
    """The backend ``auto`` would pick for these inputs (for logs and tests)."""
    return _backends.choose(describe(q, k, v, layout, None, False, cu_seqlens, True)).name
