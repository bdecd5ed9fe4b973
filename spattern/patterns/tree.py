"""Tree-structured attention: relations of a tree over token spans (code ASTs, JSON, HTML).

A ``Tree`` is given by parent pointers and token spans: node n covers tokens
[start[n], end[n]), node 0 is the root and covers everything, children lie inside their parent.
Each token is *owned* by the deepest node whose span holds it (tokens past the tree, such as the
padding of a shorter sequence in a batch, belong to the root). Relations between a query token i
and a key token j go through their owners oi = owner(i), oj = owner(j):

- ``same_node()``:  oi == oj
- ``parent()``:     oj is the parent of oi
- ``children()``:   oi is the parent of oj
- ``siblings()``:   oi != oj and both have the same parent
- ``ancestors()``:  oj is a proper ancestor of oi (the path to the root)

Each is a composable, content-dependent pattern: it takes its tree from the compile context
(``compile(ancestors() & causal, N, context={"tree": t})``, or a list of contexts for a batch,
one layout group per sequence), or is bound to one with ``.bind({"tree": t})``.
``python_tree(source, token_offsets)`` builds the tree of Python source with the ``ast`` module,
mapped onto a tokenizer's character offsets; ``Tree.graph()`` gives the networkx tree.

``ast_scope(window, header)`` is the default pattern for code; see its docstring.

Run ``python -m spattern.patterns.tree`` to draw ast_scope on a piece of this file.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from spattern.patterns.base import Pattern, check_int
from spattern.patterns.document import context_value
from spattern.patterns.registry import register


@dataclass(frozen=True, eq=False)
class Tree:
    """Parent pointers and token spans of a tree; node 0 is the root. Hash/eq by identity."""

    parent: tuple[int, ...]
    start: tuple[int, ...]
    end: tuple[int, ...]
    n_tokens: int
    kind: tuple[str, ...] = ()

    def __post_init__(self):
        n = len(self.parent)
        if not (len(self.start) == len(self.end) == n) or n == 0:
            raise ValueError(f"Tree: expected parent, start and end of one length >= 1, got "
                             f"{len(self.parent)}, {len(self.start)}, {len(self.end)}")
        if self.parent[0] != -1:
            raise ValueError(f"Tree: node 0 is the root and must have parent -1, got {self.parent[0]}")
        for v in range(1, n):
            p = self.parent[v]
            if not 0 <= p < v:
                raise ValueError(f"Tree: node {v} must have a parent in [0, {v}) (parents before children), got {p}")
            if not (self.start[p] <= self.start[v] <= self.end[v] <= self.end[p]):
                raise ValueError(f"Tree: node {v} span [{self.start[v]}, {self.end[v]}) is not inside its parent "
                                 f"{p} span [{self.start[p]}, {self.end[p]})")

    def __getstate__(self) -> dict:
        """Its fields only: what is derived from them (``arrays``, ``laminar``) is recomputed where it is
        read, so a tree sent to another process (a context worker's result) carries about a third of
        the bytes (the owner array alone is 8 bytes per token)."""
        return {f: self.__dict__[f] for f in ("parent", "start", "end", "n_tokens", "kind")}

    @classmethod
    def from_parents(cls, parent, start, end, n_tokens=None, kind=()):
        parent, start, end = (tuple(int(x) for x in a) for a in (parent, start, end))
        return cls(parent, start, end, int(n_tokens if n_tokens is not None else max(end)), tuple(kind))

    @property
    def n_nodes(self) -> int:
        return len(self.parent)

    @cached_property
    def arrays(self):
        """owner [n_tokens], parent [n], depth [n], tin/tout [n] (Euler tour), children count."""
        n = self.n_nodes
        parent = np.asarray(self.parent, dtype=np.int64)
        depth_list = [0] * n
        for v, p in enumerate(self.parent[1:], start=1):  # parents come before children
            depth_list[v] = depth_list[p] + 1
        depth = np.asarray(depth_list, dtype=np.int64)
        # owner: deepest node covering the token; nodes in order of depth overwrite their parents
        owner = np.zeros(self.n_tokens, dtype=np.int64)
        for v in np.argsort(depth, kind="stable").tolist():
            owner[self.start[v] : min(self.end[v], self.n_tokens)] = v
        # Euler tour by DFS in child order
        children: list[list[int]] = [[] for _ in range(n)]
        for v, p in enumerate(self.parent[1:], start=1):
            children[p].append(v)
        tin, tout = [0] * n, [0] * n
        clock, stack = 0, [(0, False)]
        while stack:
            v, done = stack.pop()
            if done:
                tout[v] = clock
                continue
            tin[v] = clock
            clock += 1
            stack.append((v, True))
            stack.extend((c, False) for c in reversed(children[v]))
        tin, tout = np.asarray(tin, dtype=np.int64), np.asarray(tout, dtype=np.int64)
        n_children = np.array([len(c) for c in children], dtype=np.int64)
        return {"owner": owner, "parent": parent, "depth": depth, "tin": tin, "tout": tout,
                "n_children": n_children}

    @cached_property
    def laminar(self) -> bool:
        """Whether every two nodes' spans are nested or disjoint (an empty span is disjoint from all).
        Children lie inside their parents (checked on construction), so it suffices that the non-empty
        children of each node do not overlap. Then the nodes covering a token form one root path, and
        a node is an ancestor-or-self of a token's owner exactly when the token lies in its span: what
        lets a pattern replace the per-pair ancestor test by an interval (``outline``'s ``key_ends``)."""
        par = np.asarray(self.parent, dtype=np.int64)
        st, en = np.asarray(self.start, dtype=np.int64), np.asarray(self.end, dtype=np.int64)
        v = np.flatnonzero(en > st)
        v = v[v > 0]
        v = v[np.lexsort((st[v], par[v]))]  # non-empty non-root nodes by (parent, start)
        same = par[v][1:] == par[v][:-1]
        return bool((en[v][:-1][same] <= st[v][1:][same]).all())

    def is_ancestor_or_self(self, a, b):
        """Vectorized: node a is b or an ancestor of b (a = -1 gives False)."""
        A = self.arrays
        ok = a >= 0
        a_ = np.where(ok, a, 0)
        return ok & (A["tin"][a_] <= A["tin"][b]) & (A["tout"][b] <= A["tout"][a_])

    def graph(self):
        """networkx DiGraph parent -> child with node attributes start, end, kind, depth."""
        import networkx as nx

        g = nx.DiGraph()
        A = self.arrays
        for v in range(self.n_nodes):
            g.add_node(v, start=self.start[v], end=self.end[v], depth=int(A["depth"][v]),
                       kind=self.kind[v] if self.kind else "")
            if v:
                g.add_edge(self.parent[v], v)
        return g

    @property
    def max_depth(self) -> int:
        return int(self.arrays["depth"].max())


def _token_tree(tree, q_len: int, kv_len: int) -> Tree:
    if not isinstance(tree, Tree):
        raise TypeError(f"tree pattern: expected a spattern.patterns.tree.Tree in the context, got {type(tree).__name__}")
    return tree


def _pad(arr: np.ndarray, n: int, fill: int) -> np.ndarray:
    """Tokens past the tree (padding of a shorter sequence in a batch) get ``fill``."""
    return arr if arr.size >= n else np.concatenate([arr, np.full(n - arr.size, fill, dtype=arr.dtype)])


class TreeRelation(Pattern):
    """Base of the tree relations: unbound until a context provides the tree (field ``tree``)."""

    positional = ()

    def __str__(self):
        return f"{self.name}()"

    @property
    def is_static(self):
        return self.tree is not None

    context_key = "tree"  # where the tree is in a compile context

    def bind(self, context):
        if self.tree is not None:
            return self
        key = self.context_key
        tree = context_value(context, key)
        if tree is None:
            raise ValueError(f"{self.name}() needs a tree: compile with context={{{key!r}: Tree(...)}}")
        return type(self)(**{**self.__dict__, "tree": tree})

    def _bound_tree(self, geom) -> Tree:
        if self.tree is None:
            raise ValueError(f"{self.name}() is unbound: compile it with context={{'tree': ...}}")
        return _token_tree(self.tree, geom.q_len, geom.kv_len)

    def _nodes(self, q_idx, kv_idx, geom):
        t = self._bound_tree(geom)
        owner = _pad(t.arrays["owner"], max(geom.q_len, geom.kv_len), 0)  # past the tree: the root
        return t, owner[q_idx], owner[kv_idx]

    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted((k, id(v) if isinstance(v, Tree) else v)
                                                        for k, v in self.__dict__.items()))))


@register("same_node")
@dataclass(frozen=True, repr=False, eq=False)
class SameNode(TreeRelation):
    tree: Tree | None = None
    name = "same_node"

    def allowed(self, q_idx, kv_idx, geom):
        _, oi, oj = self._nodes(q_idx, kv_idx, geom)
        return oi == oj


@register("parent")
@dataclass(frozen=True, repr=False, eq=False)
class Parent(TreeRelation):
    tree: Tree | None = None
    name = "parent"

    def allowed(self, q_idx, kv_idx, geom):
        t, oi, oj = self._nodes(q_idx, kv_idx, geom)
        return t.arrays["parent"][oi] == oj


@register("children")
@dataclass(frozen=True, repr=False, eq=False)
class Children(TreeRelation):
    tree: Tree | None = None
    name = "children"

    def allowed(self, q_idx, kv_idx, geom):
        t, oi, oj = self._nodes(q_idx, kv_idx, geom)
        return t.arrays["parent"][oj] == oi


@register("siblings")
@dataclass(frozen=True, repr=False, eq=False)
class Siblings(TreeRelation):
    tree: Tree | None = None
    name = "siblings"

    def allowed(self, q_idx, kv_idx, geom):
        t, oi, oj = self._nodes(q_idx, kv_idx, geom)
        par = t.arrays["parent"]
        return (oi != oj) & (par[oi] == par[oj]) & (par[oi] >= 0)


@register("ancestors")
@dataclass(frozen=True, repr=False, eq=False)
class Ancestors(TreeRelation):
    tree: Tree | None = None
    name = "ancestors"

    def allowed(self, q_idx, kv_idx, geom):
        t, oi, oj = self._nodes(q_idx, kv_idx, geom)
        return (oi != oj) & t.is_ancestor_or_self(oj, oi)


@register("ast_scope")
@dataclass(frozen=True, repr=False, eq=False)
class AstScope(TreeRelation):
    """Scope-aware attention for code.

    Token i (owned by statement o(i)) attends key j <= i when
      1. j is in its local window (i - window < j), for the syntax of the line at hand, or
      2. j is a *header* token (the first ``header`` tokens) of a statement whose parent encloses
         i: the headers of every enclosing compound statement (``def f(x):``, ``class C:``,
         ``for ...:``) and the first tokens of the sibling statements before it at every level
         (the outline of the code so far: earlier function signatures, imports, assignments).

    Why: the names in scope at i are declared in those headers (parameters, loop variables,
    earlier definitions at module level), while the bodies of other functions rarely matter to
    the next token; the window handles local syntax. The pattern is causal.

    Cost: token i attends at most window + header * S(i) keys, S(i) = number of children of the
    nodes enclosing i. Pairs <= N * (window + header * depth * branching); ``bound(tree)``
    evaluates it for a given tree and the compiler reports the measured count per document.
    """

    window: int = 64
    header: int = 8
    tree: Tree | None = None
    name = "ast_scope"
    claims_causal = True

    def __post_init__(self):
        check_int(self.window, "ast_scope(window)", minimum=1)
        check_int(self.header, "ast_scope(header)", minimum=1)

    def __str__(self):
        args = []
        if self.window != 64:
            args.append(f"window={self.window}")
        if self.header != 8:
            args.append(f"header={self.header}")
        return f"ast_scope({', '.join(args)})"

    def header_node(self, t: Tree) -> np.ndarray:
        """[n_tokens]: the deepest non-root node whose header holds the token, or -1."""
        A = t.arrays
        out = np.full(t.n_tokens, -1, dtype=np.int64)
        for v in np.argsort(A["depth"], kind="stable"):
            if v == 0:
                continue
            s = t.start[v]
            out[s : min(s + self.header, t.end[v], t.n_tokens)] = v
        return out

    def allowed(self, q_idx, kv_idx, geom):
        t, oi, _ = self._nodes(q_idx, kv_idx, geom)
        hn = _pad(self.header_node(t), max(geom.q_len, geom.kv_len), -1)[kv_idx]
        par = np.where(hn >= 0, t.arrays["parent"][np.maximum(hn, 0)], -1)
        d = q_idx - kv_idx
        scoped = (hn >= 0) & t.is_ancestor_or_self(par, oi)
        return (d >= 0) & ((d < self.window) | scoped)

    def bound(self, tree: Tree) -> dict:
        """Upper bounds on attended pairs for a tree: per token window + header * S(i)."""
        A = tree.arrays
        n = tree.n_tokens
        # S(node) = sum of children counts over the node and its ancestors
        S = np.zeros(tree.n_nodes, dtype=np.int64)
        for v in range(tree.n_nodes):
            p = A["parent"][v]
            S[v] = A["n_children"][v] + (S[p] if p >= 0 else 0)
        per_token = self.window + self.header * S[A["owner"]]
        branching = int(A["n_children"].max())
        return {"pairs_bound_tree": int(np.minimum(per_token, np.arange(1, n + 1)).sum()),
                "pairs_bound_N": n * (self.window + self.header * (tree.max_depth + 1) * branching),
                "depth": tree.max_depth, "branching": branching}


same_node, parent, children, siblings, ancestors, ast_scope = (
    SameNode, Parent, Children, Siblings, Ancestors, AstScope)


# ------------------------------------------------------------------------------------------
# Python source -> Tree over tokens
# ------------------------------------------------------------------------------------------
def _line_starts(source: str) -> list[int]:
    starts, pos = [0], 0
    for line in source.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def _char_offset(source_lines: list[str], line_starts: list[int], lineno: int, col_bytes: int) -> int:
    """ast positions are (1-based line, UTF-8 byte column): convert to a character offset."""
    line = source_lines[lineno - 1] if lineno - 1 < len(source_lines) else ""
    col = len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))
    return line_starts[lineno - 1] + col


def python_tree(source: str, token_offsets, n_tokens: int | None = None) -> Tree:
    """The statement tree of Python ``source`` over tokens.

    ``token_offsets``: the character offset where each token starts (ascending), e.g. from a
    tokenizer's offset mapping (``[s for s, _ in encoding.offsets]``) or ``range(len(text))`` for
    a character/byte-level model on ASCII text. A statement covers the tokens that start inside
    its source span. The root is the module. Raises SyntaxError for invalid source.
    """
    tree = ast.parse(source)
    offs = np.asarray(list(token_offsets), dtype=np.int64)
    n_tok = int(n_tokens if n_tokens is not None else offs.size)
    lines = source.splitlines(keepends=True)
    ls = _line_starts(source)
    parent, start, end, kind = [-1], [0], [n_tok], ["Module"]

    def visit(node, pid):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                c0 = _char_offset(lines, ls, child.lineno, child.col_offset)
                c1 = _char_offset(lines, ls, child.end_lineno, child.end_col_offset)
                t0 = int(np.searchsorted(offs, c0, side="left"))
                t1 = int(np.searchsorted(offs, c1, side="left"))
                t0, t1 = min(t0, n_tok), max(min(t1, n_tok), min(t0, n_tok))
                # keep spans inside the parent (decorators can start before a def's line)
                t0, t1 = max(t0, start[pid]), min(t1, end[pid])
                parent.append(pid)
                start.append(t0)
                end.append(max(t0, t1))
                kind.append(type(child).__name__)
                visit(child, len(parent) - 1)
            else:
                visit(child, pid)  # statements nested in expressions' containers (rare)

    visit(tree, 0)
    return Tree(tuple(parent), tuple(start), tuple(end), n_tok, tuple(kind))


def without_empty(t: Tree) -> Tree:
    """``t`` without its empty nodes (e.g. the statements outside a window, when ``python_tree`` maps a whole
    file onto that window's tokens), each kept node under its nearest kept ancestor."""
    keep = [v for v in range(t.n_nodes) if v == 0 or t.end[v] > t.start[v]]
    new = {v: i for i, v in enumerate(keep)}

    def up(v):
        p = t.parent[v]
        while p not in new:
            p = t.parent[p]
        return new[p]

    return Tree.from_parents([-1] + [up(v) for v in keep[1:]], [t.start[v] for v in keep],
                             [t.end[v] for v in keep], t.n_tokens, [t.kind[v] for v in keep] if t.kind else ())


def char_tree(source: str) -> Tree:
    """``python_tree`` for a character-level view (one token per character)."""
    return python_tree(source, range(len(source)))


if __name__ == "__main__":
    import inspect

    src = inspect.getsource(_char_offset) + inspect.getsource(_line_starts)
    t = char_tree(src)
    AstScope(window=16, header=6).bind({"tree": t}).draw(len(src), path="ast_scope.png")
