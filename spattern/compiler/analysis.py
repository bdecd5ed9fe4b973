"""Reachability over layers: how a sparse layout's receptive field grows with depth (networkx).

Model. In one attention layer, query position ``i`` receives information from every key position
``j`` it attends. Stacking layers of self-attention (queries and keys are the same positions),
position ``i`` after ``L`` layers has seen key ``j`` when there is a path ``j -> ... -> i`` of at
most ``L`` edges. "At most": the residual stream carries a position's own state to the next layer,
so every position keeps what it had (a self-loop on every node, attended or not; ``(i, i)`` is
reached at depth 0).

The graph (``layout_graph``) has an edge ``key -> query`` for every attended pair. The
*receptive field* at depth ``L`` is the fraction of (query, key) pairs reachable within ``L`` layers
out of those reachable under dense attention with the same causality: all ``n^2`` pairs, or the
``n (n + 1) / 2`` pairs with key <= query when the layout is causal. Causality is read from the
layout itself (``layout_is_causal``: no attended pair has key > query, checked exactly, token masks
of the blocks that straddle the diagonal included), not from the pattern's claims.

Two levels:

- ``level="block"`` (any N): nodes are blocks (query block ``r`` = key block ``r``; needs
  ``q_len == kv_len`` and ``block_q == block_k``) and there is an edge ``c -> r`` for every stored
  block ``(r, c)``, FULL or partial. This is an **approximation**: a PARTIAL block (PROGRAM or
  BITMASK) is treated as if every query of block ``r`` saw every key of block ``c``, and the tokens
  of one block are merged into one node. Block-level reach is therefore an upper bound of token
  reach (fractions of block pairs, not token pairs; ``layers_to_full_reach`` may be smaller than at
  token level; e.g. a block straddling two documents joins them). Exact when every block is FULL and
  lengths are multiples of the block.
- ``level="token"`` (small N, ``to_dense``): nodes are tokens; exact. Limited to
  ``n <= max_tokens`` (4096 by default) because it materializes the N x N mask.

Two methods that must agree (tests check it on random layouts):

- ``method="matrix"`` (default, fast): boolean matrix powers. The reach set ``R_L`` (n x n, rows
  are queries, bit-packed) follows ``R_L = (A + I) R_{L-1}`` over the boolean semiring, with the
  sparse adjacency ``A`` (CSR, queries x keys) applied as a gather of rows and an OR-reduction per
  query (``numpy.bitwise_or.reduceat``): O(nnz * n / 8) bytes per layer. 1024 blocks with a local
  window of a few blocks take well under a second for hundreds of layers.
- ``method="networkx"``: breadth-first search from every key on the ``layout_graph`` DiGraph
  (``single_source_shortest_path_length``), then a histogram of path lengths. O(n * edges) in
  Python: the slow twin, and the graph object for path queries (``information_path``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import networkx as nx
import numpy as np
import scipy.sparse as sps

from spattern.compiler.layout import KIND_NAMES, BlockLayout

LEVELS = ("block", "token")
METHODS = ("matrix", "networkx")
MAX_TOKENS = 4096
_GATHER_BYTES = 1 << 25  # rows gathered at once by the matrix method (32 MiB)


# ------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------
def _check_layout(layout) -> BlockLayout:
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout: expected a BlockLayout (spattern.compile(...)), got {type(layout).__name__}")
    return layout


def _groups(layout: BlockLayout, group) -> list[int]:
    """Group indices: an int, or None for the union of all groups (a layer's heads together)."""
    G = layout.n_groups
    if group is None:
        return list(range(G))
    if isinstance(group, bool) or not isinstance(group, (int, np.integer)):
        raise TypeError(f"group: expected an int in [0, {G}) or None (union of all groups), got {group!r}")
    if not 0 <= group < G:
        raise ValueError(f"group: expected an int in [0, {G}) or None, got {group}")
    return [int(group)]


def _check_level(layout: BlockLayout, level: str, max_tokens: int) -> None:
    if level not in LEVELS:
        raise ValueError(f"level: expected one of {LEVELS}, got {level!r}")
    if layout.q_len != layout.kv_len:
        raise ValueError(
            "layout: reachability over layers needs self-attention (q_len == kv_len), got "
            f"q_len={layout.q_len}, kv_len={layout.kv_len}"
        )
    if level == "block" and layout.block_q != layout.block_k:
        raise ValueError(
            "layout: level='block' needs square blocks (block_q == block_k) so that query block r "
            f"and key block r are the same tokens, got ({layout.block_q}, {layout.block_k}); "
            "use level='token' for small N"
        )
    if level == "token" and layout.q_len > max_tokens:
        raise ValueError(
            f"level='token' materializes the {layout.q_len} x {layout.q_len} token mask; expected "
            f"q_len <= max_tokens={max_tokens}: use level='block' (an approximation) or raise max_tokens"
        )


def _check_max_layers(max_layers) -> int | None:
    if max_layers is None:
        return None
    if isinstance(max_layers, bool) or not isinstance(max_layers, (int, np.integer)) or max_layers < 1:
        raise ValueError(f"max_layers: expected a positive int or None, got {max_layers!r}")
    return int(max_layers)


# ------------------------------------------------------------------------------------------
# causality and adjacency
# ------------------------------------------------------------------------------------------
def layout_is_causal(layout: BlockLayout, group: int | None = 0) -> bool:
    """True when no attended pair of the group(s) has key > query (exact, O(nnz) + the token masks
    of the blocks that straddle the diagonal)."""
    layout = _check_layout(layout)
    bq, bk = layout.block_q, layout.block_k
    for g in _groups(layout, group):
        sl = layout.group_slice(g)
        rows = layout.block_rows()[sl]
        cols = layout.col_idx[sl].astype(np.int64)
        q0 = rows * bq
        q1 = np.minimum(q0 + bq, layout.q_len) - 1
        k0 = cols * bk
        if np.any(k0 > q1):  # a block wholly above the diagonal
            return False
        k1 = np.minimum(k0 + bk, layout.kv_len) - 1
        straddle = np.flatnonzero(k1 > q0) + sl.start
        step = max(1, (1 << 22) // (bq * bk))
        for s in range(0, straddle.size, step):
            idx = straddle[s : s + step]
            masks = layout.block_masks(idx)
            # key > query  <=>  k0 + c > q0 + r  <=>  c - r > q0 - k0
            off = (rows[idx - sl.start] * bq - cols[idx - sl.start] * bk)[:, None, None]
            rr = np.arange(bq)[None, :, None]
            cc = np.arange(bk)[None, None, :]
            if np.any(masks & (cc - rr > off)):
                return False
    return True


def _adjacency(layout: BlockLayout, groups: list[int], level: str) -> sps.csr_matrix:
    """Boolean CSR (queries x keys) of the union of the groups, without self-loops."""
    if level == "token":
        dense = np.zeros((layout.q_len, layout.kv_len), dtype=bool)
        for g in groups:
            dense |= layout.to_dense(g)
        return sps.csr_matrix(dense)
    R, C = layout.n_rows, layout.n_cols
    out = None
    for g in groups:
        rp = layout.row_ptr[g].astype(np.int64)
        sl = layout.group_slice(g)
        m = sps.csr_matrix(
            (np.ones(sl.stop - sl.start, dtype=bool), layout.col_idx[sl].astype(np.int64), rp - rp[0]),
            shape=(R, C),
        )
        out = m if out is None else (out + m)
    return out.tocsr()


def _with_self_loops(adj: sps.csr_matrix) -> sps.csr_matrix:
    n = adj.shape[0]
    m = (adj.astype(np.int8) + sps.identity(n, dtype=np.int8, format="csr")).tocsr()
    m.sum_duplicates()
    m.sort_indices()
    return m


# ------------------------------------------------------------------------------------------
# the graph
# ------------------------------------------------------------------------------------------
def layout_graph(layout: BlockLayout, group: int | None = 0, level: str = "block",
                 max_tokens: int = MAX_TOKENS) -> nx.DiGraph:
    """The layout as a networkx DiGraph: an edge ``key -> query`` for every attended pair (block
    pairs at ``level="block"``, token pairs at ``level="token"``), meaning information flows from
    that key position to that query position in one attention layer.

    Nodes are ``0..n-1`` with attributes ``start``, ``stop`` (token range). At block level edges
    carry ``kind`` ("full", "program", "bitmask"; for a union of groups the kind of the first
    group holding the block). Graph attributes: ``level``, ``causal``, ``pattern``, ``n_tokens``,
    ``block``. ``group=None`` takes the union of all groups (a layer's heads together).
    The residual connection is not an edge: path lengths count layers, and a node reaches itself
    at length 0. See the module docstring for the block-level approximation.
    """
    layout = _check_layout(layout)
    groups = _groups(layout, group)
    _check_level(layout, level, max_tokens)
    n = layout.n_rows if level == "block" else layout.q_len
    b = layout.block_q if level == "block" else 1
    G = nx.DiGraph(level=level, causal=layout_is_causal(layout, group), pattern=layout.pattern,
                   n_tokens=layout.q_len, block=b)
    starts = np.arange(n) * b
    stops = np.minimum(starts + b, layout.q_len)
    G.add_nodes_from((i, {"start": int(s), "stop": int(e)}) for i, s, e in zip(range(n), starts, stops))
    if level == "token":
        adj = _adjacency(layout, groups, level).tocoo()
        G.add_edges_from(zip(adj.col.tolist(), adj.row.tolist()))
        return G
    rows_all = layout.block_rows()
    for g in reversed(groups):  # the first group's kind wins
        sl = layout.group_slice(g)
        kinds = [KIND_NAMES[int(k)] for k in layout.block_kind[sl]]
        G.add_edges_from(
            (int(c), int(r), {"kind": k})
            for r, c, k in zip(rows_all[sl].tolist(), layout.col_idx[sl].tolist(), kinds)
        )
    return G


def information_path(layout: BlockLayout, query: int, key: int, group: int | None = 0,
                     level: str = "block", graph: nx.DiGraph | None = None) -> list[int] | None:
    """A shortest path of positions ``key -> ... -> query`` (block or token indices, as ``level``):
    the fewest layers that carry key's information to query; None when none exists.
    ``len(path) - 1`` layers are needed (0 when query == key). Pass ``graph`` to reuse one."""
    G = graph if graph is not None else layout_graph(layout, group, level)
    n = G.number_of_nodes()
    for name, v in (("query", query), ("key", key)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < n:
            raise ValueError(f"{name}: expected a {G.graph['level']} index in [0, {n}), got {v!r}")
    try:
        return [int(x) for x in nx.shortest_path(G, int(key), int(query))]
    except nx.NetworkXNoPath:
        return None


# ------------------------------------------------------------------------------------------
# receptive field
# ------------------------------------------------------------------------------------------
@dataclass
class ReceptiveField:
    """Reach per depth. ``reached[L - 1]``: (query, key) pairs reachable within L layers (L = 1, 2,
    ...); ``total``: pairs reachable under dense attention with the same causality."""

    pattern: str
    level: str
    causal: bool
    n_nodes: int
    total: int
    reached: list[int] = field(default_factory=list)
    #: True when the reach stops growing within the computed depths (full, or a fixpoint below full)
    saturated: bool = False

    @property
    def depths(self) -> list[int]:
        return list(range(1, len(self.reached) + 1))

    @property
    def fractions(self) -> list[float]:
        return [r / self.total for r in self.reached]

    def fraction(self, depth: int) -> float:
        """Fraction at ``depth`` (beyond the computed depths only when saturated)."""
        if depth < 1:
            raise ValueError(f"depth: expected an int >= 1, got {depth}")
        if depth <= len(self.reached):
            return self.reached[depth - 1] / self.total
        if self.saturated:
            return self.reached[-1] / self.total
        raise ValueError(f"depth {depth} was not computed (max_layers={len(self.reached)}) and the reach "
                         "had not saturated; compute with a larger max_layers")

    @property
    def layers_to_full_reach(self) -> int | None:
        """Smallest L with fraction 1; None when the reach never gets there (or not within the
        computed depths, when they were capped by max_layers and the reach had not saturated)."""
        for L, r in enumerate(self.reached, start=1):
            if r == self.total:
                return L
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "level": self.level, "causal": self.causal,
                "n_nodes": self.n_nodes, "total": self.total, "reached": list(self.reached),
                "fractions": self.fractions, "saturated": self.saturated,
                "layers_to_full_reach": self.layers_to_full_reach}


_POP8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def _popcount(a: np.ndarray) -> np.ndarray:
    """Set bits per uint8 element (numpy.bitwise_count where numpy >= 2 has it)."""
    f = getattr(np, "bitwise_count", None)
    return f(a) if f is not None else _POP8[a]


def _reference_mask_packed(n: int, causal: bool) -> np.ndarray:
    """uint8 [n, ceil(n/8)]: the pairs reachable under dense attention (little bit order)."""
    if not causal:
        m = np.ones((n, n), dtype=bool)
    else:
        m = np.arange(n)[None, :] <= np.arange(n)[:, None]
    return np.packbits(m, axis=1, bitorder="little")


def _reach_matrix(adj: sps.csr_matrix, causal: bool, max_layers: int | None) -> tuple[list[int], bool]:
    """Boolean matrix powers R_L = (A + I) R_{L-1}, R_0 = I, bit-packed rows. Returns the reached
    counts per depth (restricted to the reference pairs) and whether the reach saturated."""
    n = adj.shape[0]
    m = _with_self_loops(adj)
    indptr, indices = m.indptr.astype(np.int64), m.indices.astype(np.int64)
    ref = _reference_mask_packed(n, causal)
    total = int(_popcount(ref).sum(dtype=np.int64))
    reach = np.packbits(np.eye(n, dtype=bool), axis=1, bitorder="little")  # R_0
    W = reach.shape[1]
    # row chunks such that the gathered rows stay under _GATHER_BYTES
    per_row = np.diff(indptr) * W
    cum = np.cumsum(per_row)
    bounds = [0]
    while bounds[-1] < n:
        base = cum[bounds[-1] - 1] if bounds[-1] else 0
        nxt = int(np.searchsorted(cum, base + _GATHER_BYTES, side="right"))
        bounds.append(min(n, max(nxt, bounds[-1] + 1)))
    reached: list[int] = []
    saturated = False
    L = 0
    while max_layers is None or L < max_layers:
        L += 1
        new = np.empty_like(reach)
        for a, b in zip(bounds[:-1], bounds[1:]):
            lo, hi = indptr[a], indptr[b]
            gathered = reach[indices[lo:hi]]  # (nnz_chunk, W)
            new[a:b] = np.bitwise_or.reduceat(gathered, indptr[a:b] - lo, axis=0)
        if L > 1 and np.array_equal(new, reach):
            saturated = True  # fixpoint: R_{L} == R_{L-1}; depth L adds nothing
            break
        reach = new
        reached.append(int(_popcount(reach & ref).sum(dtype=np.int64)))
        if reached[-1] == total:
            saturated = True
            break
        if L == 1 and np.array_equal(reach, np.packbits(np.eye(n, dtype=bool), axis=1, bitorder="little")):
            saturated = True  # no edges but self-loops: nothing ever grows
            break
    if max_layers is not None and saturated and len(reached) < max_layers:
        reached += [reached[-1]] * (max_layers - len(reached))
    return reached, saturated


def _reach_networkx(G: nx.DiGraph, causal: bool, max_layers: int | None) -> tuple[list[int], bool]:
    """BFS from every key over the key -> query graph; histogram of path lengths of the pairs in
    the reference set."""
    n = G.number_of_nodes()
    hist = np.zeros(n + 1, dtype=np.int64)
    for j in range(n):
        lengths = nx.single_source_shortest_path_length(G, j, cutoff=max_layers)
        for i, d in lengths.items():
            if not causal or j <= i:
                hist[d] += 1
    total = n * (n + 1) // 2 if causal else n * n
    max_d = int(np.flatnonzero(hist).max()) if hist.any() else 0
    cum = np.cumsum(hist)
    depth = max(1, max_d)
    full_at = next((L for L in range(1, depth + 1) if cum[L] == total), None)
    if full_at is not None:
        depth = full_at
    if max_layers is not None:
        depth = max_layers
    reached = [int(cum[min(L, n)]) for L in range(1, depth + 1)]
    # saturated: within the cutoff, the reach stopped growing (lengths beyond the cutoff are unseen)
    saturated = max_layers is None or max_d < max_layers or (full_at is not None and full_at <= max_layers)
    return reached, bool(saturated)


def receptive_field(layout: BlockLayout, max_layers: int | None = None, group: int | None = 0,
                    level: str = "block", method: str = "matrix",
                    max_tokens: int = MAX_TOKENS) -> ReceptiveField:
    """Per depth L = 1, 2, ...: the fraction of (query, key) pairs reachable within L layers out of
    those reachable under dense attention with the same causality (detected from the layout).

    ``max_layers=None``: depths until the reach is full or stops growing (then ``saturated``);
    an int: exactly that many depths. ``group=None``: the union of all groups (heads together).
    ``level="block"`` is an approximation (partial blocks count as full, see the module
    docstring); ``level="token"`` is exact for small N. ``method``: "matrix" (fast) or
    "networkx" (BFS; the slow twin, same answer).
    """
    layout = _check_layout(layout)
    groups = _groups(layout, group)
    _check_level(layout, level, max_tokens)
    max_layers = _check_max_layers(max_layers)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    causal = layout_is_causal(layout, group)
    if method == "matrix":
        adj = _adjacency(layout, groups, level)
        n = adj.shape[0]
        reached, saturated = _reach_matrix(adj, causal, max_layers)
    else:
        G = layout_graph(layout, group, level, max_tokens=max_tokens)
        n = G.number_of_nodes()
        reached, saturated = _reach_networkx(G, causal, max_layers)
    total = n * (n + 1) // 2 if causal else n * n
    return ReceptiveField(layout.pattern, level, causal, n, total, reached, saturated)


def layers_to_full_reach(layout: BlockLayout, group: int | None = 0, level: str = "block",
                         max_layers: int | None = None, method: str = "matrix") -> int | None:
    """Smallest L at which every pair reachable under dense attention (same causality) is reachable
    within L layers; None if never (or not within ``max_layers`` when given). E.g. a local window
    of w tokens needs ceil((N - 1)/(w - 1)) layers at token level, a window plus global tokens 2,
    a block diagonal (documents) never."""
    return receptive_field(layout, max_layers=max_layers, group=group, level=level,
                           method=method).layers_to_full_reach


def reach_matrix(layout: BlockLayout | Sequence[BlockLayout], layers: int | None, group: int | None = 0,
                 max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """(N, N) bool ``[query, key]``: whether a stack of ``layers`` layers connects key to query at the
    token level, by a path of at most ``layers`` attended edges (the residual a self-loop, as in
    ``receptive_field``). ``reach_matrix(layout, 1)`` is the layout's own mask with the diagonal set.
    A task's own (query, key) positions index it directly, e.g. MQAR's queries and the values they
    must return (``scripts/mqar_reach.py``). ``layout`` may be one layout per layer, the first layer's
    first (a per-layer pattern); ``layers`` is then their number or None."""
    # [query, key], 0/1 in float32: the products go through BLAS and count at most n paths (exact below 2^24)
    steps = _token_steps(layout, layers, group, max_tokens)
    reach = steps[0]
    for step in steps[1:]:
        reach = ((step @ reach) > 0).astype(np.float32)
    return reach > 0


def _token_steps(layout, layers, group, max_tokens: int) -> list[np.ndarray]:
    """Per layer, the first first: (N, N) float32 0/1 ``[query, key]``, that layer's token edges with the
    residual's self-loops, after checking the arguments that ``walk_counts`` and ``reach_matrix`` share.
    One layout serves every layer (one array, repeated)."""
    if isinstance(layout, BlockLayout):
        if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
            raise ValueError(f"layers: expected an int >= 1, got {layers!r}")
        return [_token_step(layout, group, max_tokens)] * layers
    per_layer = list(layout)
    if not per_layer or not all(isinstance(x, BlockLayout) for x in per_layer):
        raise ValueError(f"layout: expected a BlockLayout or a non-empty sequence of them (one per layer), got {layout!r}")
    if layers is not None and layers != len(per_layer):
        raise ValueError(f"layers: expected None or {len(per_layer)} (the layouts given, one per layer), got {layers!r}")
    if len({(x.q_len, x.kv_len) for x in per_layer}) != 1:
        raise ValueError("layout: expected one (q_len, kv_len) for every layer, got "
                         f"{[(x.q_len, x.kv_len) for x in per_layer]}")
    return [_token_step(x, group, max_tokens) for x in per_layer]


def _token_step(layout: BlockLayout, group, max_tokens: int) -> np.ndarray:
    layout = _check_layout(layout)
    groups = _groups(layout, group)
    _check_level(layout, "token", max_tokens)
    # (the self-loop adds 1 where the layout attends the diagonal already: 0/1 again before counting walks)
    return (_with_self_loops(_adjacency(layout, groups, "token")).toarray() > 0).astype(np.float32)


def walk_counts(layout: BlockLayout | Sequence[BlockLayout], layers: int | None, group: int | None = 0,
                max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """(N, N) float64 ``[query, key]``: the number of walks of exactly ``layers`` attended edges from
    key to query (the residual a self-loop, so shorter paths count too, padded by staying put). How
    many routes information has, not only whether it has one (``reach_matrix`` is ``walk_counts > 0``):
    at 2 layers the count is the number of positions j with query -> j -> key, the query and the key
    themselves among them where the query attends the key directly. A route through one position (a
    single global token) must carry everything that crosses there. ``layout`` may be one layout per
    layer, the first layer's first (walk edge i in layer i's layout). Exact while counts stay below
    2^53."""
    steps = _token_steps(layout, layers, group, max_tokens)
    walks = steps[0].astype(np.float64)
    for step in steps[1:]:
        walks = step @ walks
    return walks


def reach_by_distance(layout: BlockLayout, layers: int, edges: Sequence[int], group: int | None = 0,
                      max_tokens: int = MAX_TOKENS) -> list[dict[str, Any]]:
    """Exact token-level reach by query-key distance: for each interval ``[edges[i], edges[i+1])`` of
    ``d = query - key``, the fraction of (query, key) pairs at that distance (key <= query, both < N)
    that a stack of ``layers`` layers connects (``reach_matrix``). Rows ``{lo, hi, pairs, reached,
    fraction}``; an interval holding no pair has fraction None. Every pair at a distance counts
    alike: a task whose pairs are not spread evenly over the positions (MQAR's keys all sit at the
    start) needs ``reach_matrix`` at its own positions instead."""
    edges = [int(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0:
        raise ValueError(f"edges: expected >= 2 increasing distances >= 0, got {list(edges)}")
    reach = reach_matrix(layout, layers, group, max_tokens)
    n = reach.shape[0]
    q, k = np.nonzero(np.tril(np.ones((n, n), dtype=bool)))
    d = q - k
    rows = []
    for lo, hi in zip(edges, edges[1:]):
        sel = (d >= lo) & (d < hi)
        pairs, got = int(sel.sum()), int(reach[q[sel], k[sel]].sum())
        rows.append({"lo": lo, "hi": hi, "pairs": pairs, "reached": got, "fraction": got / pairs if pairs else None})
    return rows


def reach_table(patterns: Mapping[str, str], N: int, block: int | tuple[int, int] = 64,
                level: str = "block", group: int | None = None) -> list[dict[str, Any]]:
    """Rows for a report table, one per pattern (``{name: pattern string}``), compiled at N with
    ``block``: ``name``, ``pattern``, ``causal``, ``layers_to_full_reach`` (None: never),
    ``frac_1``, ``frac_2``, ``frac_4`` (reach fraction at depths 1, 2, 4). Per-head stacks count
    their heads together (``group=None``)."""
    from spattern.compiler.compile import compile as compile_pattern

    if not isinstance(patterns, Mapping):
        raise TypeError(f"patterns: expected a dict {{name: pattern string}}, got {type(patterns).__name__}")
    rows = []
    for name, text in patterns.items():
        layout = compile_pattern(text, N, block=block)
        rf = receptive_field(layout, max_layers=None, group=group, level=level)
        rows.append({
            "name": name, "pattern": str(text), "causal": rf.causal,
            "layers_to_full_reach": rf.layers_to_full_reach,
            "frac_1": rf.fraction(1), "frac_2": rf.fraction(2), "frac_4": rf.fraction(4),
        })
    return rows


__all__ = ["layout_graph", "layout_is_causal", "information_path", "receptive_field",
           "layers_to_full_reach", "reach_by_distance", "reach_matrix", "reach_table", "walk_counts", "ReceptiveField"]
