"""document(cu_seqlens): block-diagonal attention within documents of a packed sequence.

``cu_seqlens`` are the cumulative boundaries [0, l0, l0 + l1, ..., T]: token t belongs to the
document d with cu[d] <= t < cu[d + 1]; tokens at or past cu[-1] belong to none and attend
nothing. Query i attends key j when both are in the same document. Pairs: sum_d l_d^2; causal
sum_d l_d*(l_d + 1)/2.

``document()`` with no boundaries is content-dependent: it takes them from the compile context
(``compile(document() & causal, T, context={"cu_seqlens": [...]})``, or a list of such contexts
for a batch, one layout group per sequence).

A short list is allowed and means a short sequence: the layout's length T is an upper bound
(packed batches compile one layout at the longest sequence), and with ``cu[-1] < T`` the
positions ``cu[-1] .. T-1`` are padding that attends nothing and is attended by nothing (their
outputs are zeros). E.g. ``context={"cu_seqlens": [0, 50, 100]}`` at T = 128: rows 100-127 have
no keys, by design. To cover every position, end the list at T. A list that ends past T is
cut at T (the last document keeps its first tokens).

Run ``python -m spattern.patterns.document`` to draw it.
"""

from __future__ import annotations

from collections.abc import Mapping

from dataclasses import dataclass

import numpy as np

from spattern.ir.blocks import Grid, _finish, ranges_to_pairs
from spattern.patterns.base import Pattern, as_int_tuple
from spattern.patterns.registry import register


def context_value(context, key):
    if context is None:
        return None
    if isinstance(context, Mapping):
        return context.get(key)
    return getattr(context, key, None)


@register("document")
@dataclass(frozen=True, repr=False)
class Document(Pattern):
    cu_seqlens: tuple[int, ...] | None = None

    name = "document"
    positional = ("cu_seqlens",)

    def __post_init__(self):
        if self.cu_seqlens is None:
            return
        cu = as_int_tuple(self.cu_seqlens, "cu_seqlens")
        if len(cu) < 2 or cu[0] != 0 or any(b < a for a, b in zip(cu, cu[1:])):
            raise ValueError(
                f"document(cu_seqlens): expected non-decreasing boundaries starting at 0 with at "
                f"least two entries, e.g. [0, 5, 12], got {list(cu)}"
            )
        object.__setattr__(self, "cu_seqlens", cu)

    def __str__(self):
        return "document()" if self.cu_seqlens is None else super().__str__()

    @property
    def is_static(self):
        return self.cu_seqlens is not None

    def bind(self, context):
        if self.cu_seqlens is not None:
            return self
        cu = context_value(context, "cu_seqlens")
        if cu is None:
            raise ValueError(
                "document() needs boundaries: pass context={'cu_seqlens': [0, ...]} to compile, "
                "or write document([0, ...])"
            )
        return Document(tuple(int(x) for x in np.asarray(cu).reshape(-1)))

    def _require(self):
        if self.cu_seqlens is None:
            raise ValueError("document() is unbound: compile it with context={'cu_seqlens': [...]}")
        return np.asarray(self.cu_seqlens, dtype=np.int64)

    def segment(self, t):
        """Document id of each position; len(cu) - 1 (no document) at or past cu[-1]."""
        cu = self._require()
        return np.searchsorted(cu, t, side="right") - 1

    def allowed(self, q_idx, kv_idx, geom):
        cu = self._require()
        sq, sk = self.segment(q_idx), self.segment(kv_idx)
        return (sq == sk) & (sq < len(cu) - 1)

    def blocks(self, geom, block_q, block_k):
        cu = self._require()
        nd = len(cu) - 1
        g = Grid(geom.q_len, geom.kv_len, block_q, block_k)
        r = np.arange(g.n_rows, dtype=np.int64)
        q0, q1 = g.row_extent(r)
        sa, sb = self.segment(q0), np.minimum(self.segment(q1), nd - 1)
        # keys of documents sa..sb: [cu[sa], cu[sb + 1])
        live = (sa <= sb) & (sa < nd)
        k_first = cu[np.minimum(sa, nd)]
        k_last = np.minimum(cu[np.minimum(sb, nd - 1) + 1], geom.kv_len) - 1
        c_lo = k_first // block_k
        c_hi = np.where(live & (k_last >= k_first), k_last // block_k, -1)
        rows, cols = ranges_to_pairs(c_lo, c_hi)
        k0, k1 = g.col_extent(cols)
        ta, tb = self.segment(k0), np.minimum(self.segment(k1), nd - 1)
        present = (np.maximum(sa[rows], ta) <= np.minimum(sb[rows], tb))
        rq0, rq1 = g.row_extent(rows)
        full = (self.segment(rq0) == self.segment(rq1)) & (self.segment(k0) == self.segment(k1)) & (
            self.segment(rq0) == self.segment(k0)
        ) & (self.segment(rq0) < nd)
        return _finish(g, rows, cols, present, full)

    def pairs_expr(self, N, causal=False):
        if self.cu_seqlens is None:
            return None
        lens = np.diff(self._require())
        return int((lens * (lens + 1) // 2).sum()) if causal else int((lens**2).sum())


document = Document

if __name__ == "__main__":
    from spattern.patterns.base import demo_main

    demo_main("document", [(Document((0, 30, 50, 100, 128)), 'document.png')])
