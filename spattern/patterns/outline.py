"""Outline attention: spattern's own structure-aware pattern for code and long prose.

Motivation. A causal language model at position i mostly needs (a) the last few dozen tokens,
for local syntax and phrasing, and (b) a few *openings* further back: the signature of the
function it is in, the ``class``/``for``/``with`` lines around it, the imports and earlier
definitions at module level; in prose, the title and the opening words of the recent
paragraphs. Windows (StreamingLLM, Longformer) keep (a) and a fixed set of positions; strided and
random patterns keep positions that do not depend on the text. Outline attention keeps (a) and the
openings that the *layout of the text itself* marks: indentation and blank lines, which code and
prose share, so one rule serves both, with no parser and no failure on truncated windows (an AST
needs valid source; a 4K-token window of a file rarely is).

Structure. ``text_tree(text, offsets)`` builds a ``Tree`` (spattern.patterns.tree) over tokens:
every non-blank line is a node; a line's parent is the nearest earlier line with smaller
indentation (the line that opens its block), except that a line whose nearest earlier line of the
same indentation in the same block has no blank line between them continues that line's
paragraph and becomes a child of the paragraph's first line. The root is the document. A node's span runs from its line to the end of
its last descendant. Indented code gives its block structure; prose (indentation 0) gives one
node per paragraph with its continuation lines below it.

Definition. With o(j) the line (node) owning token j, the *header* of node v is
H(v) = {j : o(j) = v, j < start(v) + header}, the first ``header`` tokens of its line from its first non-blank character. For a query
i, call p *enclosing* when p is o(i) or an ancestor of it, and let c_1, ..., c_k(p, i) be the
children of p that start at or before i, in order. Token i attends key j <= i iff

    i - j < window                                                        (local)
    or j < header                                                         (the document's start)
    or j in H(c_r) for an enclosing p and r > k(p, i) - 1 - recent        (outline)

i.e. the header of every enclosing line (r = k(p, i) is the child of p that holds i) and of the
``recent`` latest siblings before it, at every level: the signature of this function, of the
``recent`` functions before it, of the enclosing class and of the ``recent`` top-level
statements before that class; in prose, the opening words of the ``recent`` paragraphs before
this one. The pattern is causal and content-dependent: it compiles with
``context={"tree": text_tree(...)}`` (or ``.bind``), one layout per sequence.

Structure. ``structure='text'`` (the default) reads the text tree above from the compile context's
``"tree"``; ``structure='python'`` reads ``"python_tree"``, the Python statement tree of the window
(``spattern.patterns.fragment.python_fragment_tree``: ``ast`` on source cut anywhere), where a node is a
statement, so a multi-line call is one node and each statement of a block is a sibling. The definition
is the same on either tree.

Compiled form. On a laminar tree (spans nested or disjoint: every text tree, and the AST trees of
``python_tree``) each clause lets key j be seen by an interval of queries starting at j, so their
union is one interval: query i sees key j iff j <= i < E[j] (``key_ends``, O(N + n log n) for N
tokens and n nodes). The
compiler builds the blocks, their states and the distinct bitmasks from E alone
(``Pattern.key_intervals``); the per-pair form of the definition (``allowed_reference``) serves
other trees and is the twin the interval form is tested against.

Cost. Query i attends at most window + header + header * (d(i) + 1) * (recent + 1) keys, d(i) =
depth of o(i); with D the tree's depth, pairs <= N * (window + header * (1 + (D + 1)(recent + 1)))
= O(N) for bounded depth (``pairs_expr``, a bound; the compiler counts the exact pairs and
blocks of each document). A header spans at most ceil(header / b) + 1 key blocks, so at block
size b the blocks per block row do not grow with N either.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from spattern.ir.blocks import (UNKNOWN, BlockSet, Grid, band_blocks, interval_blocks, interval_state,
                                rectangles_to_pairs)
from spattern.patterns.base import Geometry, check_int
from spattern.patterns.registry import register
from spattern.patterns.tree import Tree, TreeRelation, _pad


def text_tree(text: str, token_offsets=None, n_tokens: int | None = None, tab: int = 8) -> Tree:
    """The outline tree of ``text`` (lines, indentation, paragraphs) over tokens.

    ``token_offsets``: the character offset where each token starts (ascending; default one token
    per character). Tokens past ``n_tokens`` are dropped; lines starting past the last token are
    left out. Node kinds: "Document", "Line" (opens a paragraph or a block), "Continuation"."""
    offs = np.arange(len(text), dtype=np.int64) if token_offsets is None else np.asarray(token_offsets, np.int64)
    n_tok = int(offs.size if n_tokens is None else n_tokens)
    offs = offs[:n_tok]
    if offs.size > 1 and (np.diff(offs) < 0).any():
        raise ValueError("token_offsets: expected ascending character offsets")
    # per line: where it starts, its first non-blank character, its indentation (blank lines: None)
    c0, first, indent, pos = [], [], [], 0
    for line in text.splitlines(keepends=True):
        body = line.expandtabs(tab).rstrip("\r\n")
        stripped = body.lstrip()
        c0.append(pos)
        first.append(pos + len(line) - len(line.lstrip()) if stripped else -1)
        indent.append(len(body) - len(stripped) if stripped else None)
        pos += len(line)
    ends = c0[1:] + [pos]
    t0s = np.searchsorted(offs, first, side="left").tolist()   # each line's first word (token)
    t1s = np.searchsorted(offs, ends, side="left").tolist()    # the first token of the next line
    parent, start, end, kind = [-1], [0], [n_tok], ["Document"]
    stack: list[tuple[int, int, int, int]] = []  # open lines: (indent, node, paragraph head, line number)
    last_blank = -1
    for li, ind in enumerate(indent):
        if ind is None:
            last_blank = li
            continue
        t0 = t0s[li]
        if t0 >= n_tok:
            break
        v = len(parent)
        while stack and stack[-1][0] > ind:
            stack.pop()
        if stack and stack[-1][0] == ind and last_blank < stack[-1][3]:  # same block, no blank line between
            p = head = stack.pop()[2]
            k = "Continuation"
        else:
            if stack and stack[-1][0] == ind:
                stack.pop()
            p, head, k = (stack[-1][1] if stack else 0), v, "Line"
        stack.append((ind, v, head, li))
        parent.append(p)
        start.append(t0)
        end.append(max(t0, t1s[li]))
        kind.append(k)
    for v in range(len(parent) - 1, 0, -1):     # a node's span covers its descendants
        end[parent[v]] = max(end[parent[v]], end[v])
    return Tree(tuple(parent), tuple(start), tuple(end), n_tok, tuple(kind))


@lru_cache(maxsize=16)
def outline_tables(t: Tree, header: int) -> dict:
    """Per token: hn = the node whose header holds it (or -1); per node: its parent, its rank
    among its parent's children; keys = parent * (n + 1) + start of every non-root node, sorted,
    and first[p] = where p's children begin in keys (so k(p, i) is one searchsorted). Cached per
    tree (trees hash by identity)."""
    A = t.arrays
    owner = A["owner"]
    st = np.asarray(t.start, dtype=np.int64)
    n = t.n_tokens
    tok = np.arange(n, dtype=np.int64)
    hn = np.where((owner > 0) & (tok < st[owner] + header), owner, -1)
    par = A["parent"]
    order = np.lexsort((np.arange(t.n_nodes), st, par))[1:]   # non-root nodes by (parent, start)
    keys = par[order] * (n + 1) + st[order]
    first = np.searchsorted(keys, np.arange(t.n_nodes) * (n + 1), side="left")
    rank = np.zeros(t.n_nodes, dtype=np.int64)
    rank[order] = np.arange(order.size) - first[par[order]]
    return {"hn": hn, "parent": par, "rank": rank, "keys": keys, "first": first}


NEVER = np.iinfo(np.int64).max  # hidden_from of a header no later sibling hides


@lru_cache(maxsize=16)
def hidden_from(t: Tree, header: int, recent: int) -> np.ndarray:
    """Per node v: the first query position at which v's header is hidden by v's later siblings, i.e. the
    start of the child of parent(v) at rank rank(v) + 1 + recent (the recent + 1-th sibling after v), or
    NEVER when parent(v) has no such child (and for the root). A query q in parent(v)'s span sees v's
    header iff q < hidden_from[v]: the rank test of the definition as one comparison per pair."""
    T = outline_tables(t, header)
    n, par = t.n_tokens, np.maximum(T["parent"], 0)
    m = T["rank"] + 1 + recent
    later = (np.arange(t.n_nodes) > 0) & (m < t.arrays["n_children"][par])
    if not later.any():  # (a tree of one node has no keys at all)
        return np.full(t.n_nodes, NEVER, dtype=np.int64)
    nxt = T["keys"][np.minimum(T["first"][par] + m, T["keys"].size - 1)] - par * (n + 1)
    return np.where(later, nxt, NEVER)


@lru_cache(maxsize=16)
def key_ends(t: Tree, window: int, header: int, recent: int) -> np.ndarray | None:
    """Per key j < n_tokens: E[j], the end of the queries that see it (query q sees key j iff
    j <= q < E[j]; NEVER for no end), or None when ``t`` is not laminar (``Tree.laminar``).

    For a fixed key j every clause of the definition admits an interval of queries that starts at j:
    the window [j, j + window); the document's start [j, inf) when j < header; and, for the header of
    v = hn(j) with parent p, the queries that p encloses and that come before hidden_from[v]. In a
    laminar tree p encloses exactly the queries of its span [start(p), end(p)) (every query, past the
    tree too, for the root), which holds j. A union of intervals that all start at j is one interval,
    so the mask is one comparison pair per (query, key) and a key block's rows are one range
    (``Outline.blocks``). Cached per tree (trees hash by identity); read-only."""
    if not t.laminar:
        return None
    n = t.n_tokens
    j = np.arange(n, dtype=np.int64)
    ends = np.where(j < header, NEVER, j + window)
    hn = outline_tables(t, header)["hn"]
    v = np.maximum(hn, 0)
    p = np.maximum(t.arrays["parent"][v], 0)  # hn > 0 below: v is not the root, p >= 0
    enclosed = np.where(p > 0, np.minimum(np.asarray(t.end, dtype=np.int64)[p], n), NEVER)
    seen = np.minimum(enclosed, hidden_from(t, header, recent)[v])
    ends = np.where(hn > 0, np.maximum(ends, seen), ends)
    ends.setflags(write=False)
    return ends


def pair_overlap(ends_a: np.ndarray, ends_b: np.ndarray, window: int, n: int | None = None) -> dict:
    """How far two outline patterns over one sequence of ``n`` queries agree, exactly, from their key ends
    (``key_ends``) over the keys j < len(ends_a) (a prefix of the sequence, or all of it; ``n`` defaults to
    its length). Key j's pairs are the queries j <= q < min(E[j], n), so two patterns share
    min(E_a, E_b) - j of them and either has max(E_a, E_b) - j; beyond the local window [j, j + window),
    which both hold, the same minima less the window's pairs. Returns ``jaccard`` (shared pairs over
    either's), ``a_beyond_in_b`` (the share of a's pairs beyond the window that b has; 1.0 when a has
    none), ``b_beyond_in_a`` and the pair counts ``pairs_a``, ``pairs_b``."""
    ends_a, ends_b = np.asarray(ends_a, dtype=np.int64), np.asarray(ends_b, dtype=np.int64)
    if ends_a.shape != ends_b.shape or ends_a.ndim != 1:
        raise ValueError(f"pair_overlap: expected two key-end vectors of one length, got shapes "
                         f"{ends_a.shape} and {ends_b.shape}")
    n = ends_a.size if n is None else n
    j = np.arange(ends_a.size)
    a, b = np.minimum(ends_a, n), np.minimum(ends_b, n)
    both = np.minimum(a, b)
    band = np.minimum(j + window, n) - j
    beyond_a, beyond_b, beyond_both = ((e - j - band).clip(0).sum() for e in (a, b, both))
    return {"jaccard": float((both - j).sum() / (np.maximum(a, b) - j).sum()),
            "a_beyond_in_b": float(beyond_both / beyond_a) if beyond_a else 1.0,
            "b_beyond_in_a": float(beyond_both / beyond_b) if beyond_b else 1.0,
            "pairs_a": int((a - j).sum()), "pairs_b": int((b - j).sum())}


# the trees outline can read, and their keys in a compile context (``spattern.data.structure`` builds them
# from token ids): the text tree (lines and indentation, any text) or the Python statement tree of the
# window (``spattern.patterns.fragment.python_fragment_tree``: ``ast`` on source cut anywhere)
STRUCTURES = {"text": "tree", "python": "python_tree"}


@register("outline")
@dataclass(frozen=True, repr=False, eq=False)
class Outline(TreeRelation):
    """Outline attention (see the module docstring): local window, the document's first
    ``header`` tokens, and the headers of every enclosing line and of its ``recent`` latest
    earlier siblings at every level of the text's outline tree."""

    window: int = 64
    header: int = 8
    recent: int = 2
    structure: str = "text"
    tree: Tree | None = None
    name = "outline"
    claims_causal = True

    def __post_init__(self):
        check_int(self.window, "outline(window)", minimum=1)
        check_int(self.header, "outline(header)", minimum=1)
        check_int(self.recent, "outline(recent)", minimum=0)
        if self.structure not in STRUCTURES:
            raise ValueError(f"outline(structure): expected one of {', '.join(map(repr, STRUCTURES))}, "
                             f"got {self.structure!r}")

    @property
    def context_key(self) -> str:
        return STRUCTURES[self.structure]

    def __str__(self):
        args = [f"{f}={getattr(self, f)}" for f, d in (("window", 64), ("header", 8), ("recent", 2))
                if getattr(self, f) != d]
        if self.structure != "text":
            args.append(f"structure={self.structure!r}")
        return f"outline({', '.join(args)})"

    def tables(self, t: Tree) -> dict:
        """The per-token and per-node arrays of ``outline_tables`` for this header length."""
        return outline_tables(t, self.header)

    def ends(self, geom) -> np.ndarray | None:
        """``key_ends`` of the bound tree over max(q_len, kv_len) keys (keys past the tree: the window
        and the document's start only), or None when the tree is not laminar."""
        n = max(geom.q_len, geom.kv_len)
        E = key_ends(self._bound_tree(geom), self.window, self.header, self.recent)
        if E is None or E.size >= n:
            return E
        j = np.arange(E.size, n, dtype=np.int64)
        return np.concatenate([E, np.where(j < self.header, NEVER, j + self.window)])

    def allowed(self, q_idx, kv_idx, geom):
        """j <= i < E[j] (``key_ends``) on a laminar tree, else ``allowed_reference``."""
        E = self.ends(geom)
        if E is None:
            return self.allowed_reference(q_idx, kv_idx, geom)
        return (q_idx >= kv_idx) & (q_idx < E[kv_idx])

    def allowed_reference(self, q_idx, kv_idx, geom):
        """The definition on any tree, with the ancestor test per pair: the twin ``allowed``'s interval
        form is tested against, and the predicate for trees that are not laminar."""
        t, oi, _ = self._nodes(q_idx, kv_idx, geom)
        T = self.tables(t)
        d = q_idx - kv_idx
        hn = _pad(T["hn"], max(geom.q_len, geom.kv_len), -1)[kv_idx]
        v = np.maximum(hn, 0)
        p = np.where(hn > 0, T["parent"][v], -1)
        out = (d >= 0) & ((d < self.window) | (kv_idx < self.header))
        # the key's header node v is visible from q if parent(v) encloses q and fewer than recent + 1 later
        # siblings of v start at or before q (q < hidden_from[v]; past the tree only the root encloses)
        seen = (hn > 0) & (q_idx < hidden_from(t, self.header, self.recent)[v])
        return out | ((d >= 0) & seen & t.is_ancestor_or_self(p, oi))

    def blocks(self, geom, block_q, block_k):
        """On a laminar tree (every tree ``text_tree`` builds) the exact blocks and states from the
        keys' query intervals (``key_ends``, ``spattern.ir.blocks.interval_blocks``): nothing is
        evaluated per pair. On any other tree, candidate blocks, without evaluating the predicate on
        the N x N grid: the window's band (classified exactly), the document's first ``header`` keys,
        and per node v the rectangle of its header's keys [start(v), start(v) + header) against the queries that
        can see them: p = parent(v) must enclose the query (so it lies in p's span; past the tree,
        only the root encloses) and no child of p at rank rank(v) + 1 + recent may start at or
        before it. Every block but the band's is UNKNOWN: the compiler evaluates the predicate
        on those (a superset), so the layout is exact."""
        if self.tree is None:
            return None
        grid = Grid(geom.q_len, geom.kv_len, block_q, block_k)
        iv = self.key_intervals(geom)
        if iv is not None:
            return interval_blocks(grid, *iv)
        t = self.tree
        n, A = t.n_tokens, t.arrays
        st, en = np.asarray(t.start, dtype=np.int64), np.asarray(t.end, dtype=np.int64)
        v = np.arange(1, t.n_nodes, dtype=np.int64)
        p = A["parent"][v]
        k_hi = np.minimum.reduce([st[v] + self.header, en[v], np.full(v.size, min(n, geom.kv_len))])
        hide = hidden_from(t, self.header, self.recent)[v]   # where p's later children hide v's header
        q_hi = np.minimum(np.where(hide < NEVER, hide, np.where(p > 0, en[p], geom.q_len)), geom.q_len)
        ok = (k_hi > st[v]) & (q_hi > st[v])
        s0, k1, q1 = st[v][ok], k_hi[ok], q_hi[ok]
        h = min(self.header, geom.kv_len)
        rows, cols = rectangles_to_pairs(np.append(s0 // block_q, 0), np.append((q1 - 1) // block_q, grid.n_rows - 1),
                                         np.append(s0 // block_k, 0), np.append((k1 - 1) // block_k, (h - 1) // block_k))
        keys = np.unique(rows * grid.n_cols + cols)
        cand = BlockSet(grid, keys // grid.n_cols, keys % grid.n_cols, np.full(keys.size, UNKNOWN, dtype=np.int8))
        return band_blocks(grid, 0, self.window - 1).union(cand)

    def key_intervals(self, geom):
        """(j, ``key_ends``) over the kv_len keys on a laminar bound tree, else None."""
        if self.tree is None:
            return None
        E = self.ends(geom)
        return None if E is None else (np.arange(geom.kv_len, dtype=np.int64), E[: geom.kv_len])

    def classify(self, grid, rows, cols):
        """Exact states from the keys' query intervals on a laminar bound tree, else None."""
        iv = self.key_intervals(Geometry(grid.q_len, grid.kv_len))
        return None if iv is None else interval_state(grid, rows, cols, *iv)

    def pairs_expr(self, N, causal: bool = False):
        """An upper bound, N * (window + header * (1 + (D + 1)(recent + 1))), for the bound tree."""
        if self.tree is None:
            return None
        D = self.tree.max_depth
        return N * (self.window + self.header * (1 + (D + 1) * (self.recent + 1)))


outline = Outline
