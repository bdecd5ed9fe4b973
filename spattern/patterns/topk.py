"""topk(k, sink, local, block): learned top-k block selection (DeepSeek-V3.2-style sparse attention).

A content-dependent pattern: which key blocks a query block attends is decided by indexer scores
(``spattern.indexer``). Unbound, ``topk(32)`` is a value in the string syntax; compiled with a
context that holds the block scores of one sequence (``{"block_scores": (R, C) tensor}``, or a list
of such contexts for a batch) it binds to a ``BlockSelection``: query block r attends the chosen
key blocks of row r, intersected with causal when ``causal`` (the default).

Every row holds exactly min(k, available) blocks, the forced ones (the first ``sink`` key blocks
and the ``local`` blocks ending at the diagonal) included; see ``spattern.indexer.select``.
On the GPU, ``spattern.indexer.topk_block_layout`` builds the same layout directly from the
scores with torch operations and no host synchronization; this pattern is its host-side twin.
Pairs: at most N * k * block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spattern.ir.blocks import Grid, rect_blocks
from spattern.patterns.base import Pattern, check_int
from spattern.patterns.document import context_value
from spattern.patterns.full import causal as _causal
from spattern.patterns.registry import register


@dataclass(frozen=True, repr=False)
class BlockSelection(Pattern):
    """Query block r (of ``block_q`` tokens) attends the key blocks (of ``block_k``) in rows[r]."""

    rows: tuple[tuple[int, ...], ...]
    block_q: int = 64
    block_k: int = 64

    name = "blockselection"

    def __str__(self):
        return f"blockselection(<{len(self.rows)} rows>, block_q={self.block_q}, block_k={self.block_k})"

    def _table(self):
        n = max((len(r) for r in self.rows), default=0)
        t = np.full((len(self.rows), max(n, 1)), -1, dtype=np.int64)
        for i, r in enumerate(self.rows):
            t[i, : len(r)] = r
        return t

    def allowed(self, q_idx, kv_idx, geom):
        t = self._table()
        q_idx, kv_idx = np.broadcast_arrays(q_idx, kv_idx)
        r = np.clip(q_idx // self.block_q, 0, len(self.rows) - 1)
        return (t[r] == (kv_idx // self.block_k)[..., None]).any(axis=-1)

    def blocks(self, geom, block_q, block_k):
        counts = [len(r) for r in self.rows]
        rr = np.repeat(np.arange(len(self.rows)), counts)
        cc = np.array([c for r in self.rows for c in r], dtype=np.int64)
        return rect_blocks(Grid(geom.q_len, geom.kv_len, block_q, block_k), rr, cc, self.block_q, self.block_k)


@register("topk")
@dataclass(frozen=True, repr=False)
class TopK(Pattern):
    k: int
    sink: int = 1
    local: int = 1
    block: int = 64
    causal: bool = True

    name = "topk"
    positional = ("k",)

    def __post_init__(self):
        check_int(self.k, "topk(k)", minimum=1)
        check_int(self.sink, "topk(sink)", minimum=0)
        check_int(self.local, "topk(local)", minimum=0)
        check_int(self.block, "topk(block)", minimum=16)
        if self.k < self.sink + self.local:
            raise ValueError(f"topk: expected k >= sink + local = {self.sink + self.local}, got k={self.k}")

    @property
    def is_static(self):
        return False

    @property
    def is_causal(self):
        return self.causal

    def allowed(self, q_idx, kv_idx, geom):
        raise ValueError("topk(...) is content-dependent: compile it with context={'block_scores': ...}")

    def bind(self, context):
        bs = context_value(context, "block_scores")
        if bs is None:
            raise ValueError("topk(...) needs context={'block_scores': (R, C) tensor} (from spattern.indexer)")
        bs = np.asarray(bs.detach().cpu() if hasattr(bs, "detach") else bs, dtype=np.float32)
        if bs.ndim == 3 and bs.shape[0] == 1:
            bs = bs[0]
        if bs.ndim != 2:
            raise ValueError(f"block_scores: expected (R, C) or (1, R, C) scores, got shape {bs.shape}")
        q_len = context_value(context, "q_len") or bs.shape[0] * self.block
        kv_len = context_value(context, "kv_len") or bs.shape[1] * self.block
        table = select_blocks(bs, self.k, int(q_len), int(kv_len), self.block, self.block,
                              self.causal, self.sink, self.local)
        sel = BlockSelection(tuple(table), self.block, self.block)
        return sel & _causal if self.causal else sel

    def pairs_expr(self, N, causal=False):
        return N * self.k * self.block


@register("oracle")
@dataclass(frozen=True, repr=False)
class Oracle(TopK):
    """oracle(k, sink, local, block): ``topk`` with the exact block scores of the layer it runs in.

    The model computes the scores at every forward from the layer's own queries and keys
    (``spattern.models.attention.oracle_contexts``): the causal softmax attention mass of each
    (query block, key block), averaged over the heads, one selection shared by all heads (as a
    DeepSeek-style indexer makes one selection per query for every head). No indexer and no context
    are needed; the scores cost a dense QK^T per layer, so this is a reference, not a fast path: the
    best a block indexer with this selection rule can do at k blocks per row. Bound like ``topk``
    (``bind({"block_scores": ...})``); every row holds exactly min(k, available) blocks, so its cost
    does not depend on the scores."""

    name = "oracle"


@register("indexed")
@dataclass(frozen=True, repr=False)
class Indexed(TopK):
    """indexed(k, sink, local, block, seed): ``topk`` with the block scores of a trained lightning indexer.

    Each attention layer that runs it holds a ``spattern.indexer.LightningIndexer`` (``layer.attn.indexer``)
    and scores its own input x at every forward (``spattern.models.attention.indexer_contexts``): the
    indexer's distribution over keys, pooled per (query block, key block) as the oracle's exact mass is,
    one selection shared by all heads. ``seed`` names the indexers' training run (their warm-up, e.g.
    ``spattern.experiments.indexers``), so two warm-ups are two patterns. As ``oracle``: no context,
    every row holds exactly min(k, available) blocks, so its cost does not depend on the scores; unlike
    it, the scores cost O(N^2 * H_I * d_I) of a small indexer, not the layer's dense QK^T."""

    seed: int = 0

    name = "indexed"

    def __post_init__(self):
        super().__post_init__()
        check_int(self.seed, "indexed(seed)", minimum=0)


topk = TopK
oracle = Oracle
indexed = Indexed

NEG = -3.0e38  # a finite floor for valid blocks, so that invalid ones always sort last


def select_blocks(scores: np.ndarray, k: int, q_len: int, kv_len: int, block_q: int, block_k: int,
                  causal: bool = True, sink: int = 1, local: int = 1) -> list[tuple[int, ...]]:
    """The top-k selection rule, on the host in numpy (the twin of ``spattern.indexer``'s device
    builders, which are tested equal to it). scores (R, C) -> per query-block row, the ascending
    key blocks kept: the forced blocks (the first ``sink`` key blocks and the ``local`` blocks
    ending at the diagonal), then the highest-scoring valid blocks (ties: the lower index first;
    NaN and -inf count as the lowest valid score), min(k, valid blocks) in all."""
    R, C = scores.shape
    out = []
    for r in range(R):
        last_q = min((r + 1) * block_q, q_len) - 1
        n_valid = min(C, last_q // block_k + 1) if causal else C
        diag = min(last_q // block_k, C - 1)
        c = np.arange(n_valid)
        s = np.nan_to_num(scores[r, :n_valid].astype(np.float64), nan=NEG, neginf=NEG, posinf=-NEG)
        forced = (c < sink) | ((c > diag - local) & (c <= diag))
        s = np.where(forced, np.inf, s)
        keep = np.argsort(-s, kind="stable")[: min(k, n_valid)]
        out.append(tuple(int(x) for x in np.sort(keep)))
    return out
