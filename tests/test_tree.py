"""Tree/AST patterns: relations against networkx, causality, layouts == masks, per-sequence groups."""

import ast
import textwrap

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.patterns.tree import AstScope, Tree, ancestors, char_tree, children, parent, python_tree, same_node, siblings

SRC = textwrap.dedent('''
    import os

    def f(x, y):
        z = x + y
        if z > 0:
            return z
        return -z

    class C:
        def g(self):
            for i in range(3):
                print(i)
''').lstrip()


@st.composite
def trees(draw, max_nodes=12, max_tokens=80):
    """Random trees over token spans: children split their parent's span into pieces."""
    n_tokens = draw(st.integers(8, max_tokens))
    parent, start, end = [-1], [0], [n_tokens]
    frontier = [0]
    while frontier and len(parent) < max_nodes:
        v = frontier.pop(0)
        s, e = start[v], end[v]
        if e - s < 2:
            continue
        cuts = sorted(set(draw(st.lists(st.integers(s, e), min_size=1, max_size=3))))
        pts = [s] + cuts + [e]
        for a, b in zip(pts, pts[1:]):
            if b > a and len(parent) < max_nodes and draw(st.booleans()):
                parent.append(v)
                start.append(a)
                end.append(b)
                frontier.append(len(parent) - 1)
    return Tree(tuple(parent), tuple(start), tuple(end), n_tokens)


RELATIONS = [same_node, parent, children, siblings, ancestors, lambda: AstScope(window=4, header=2)]


@settings(max_examples=40, deadline=None)
@given(trees(), st.sampled_from(RELATIONS), st.sampled_from([(16, 16), (32, 16)]))
def test_relation_layouts_equal_masks_and_stay_causal(tree, rel, block):
    p = rel() & sp.causal
    n = tree.n_tokens
    layout = sp.compile(p, n, block=block, context={"tree": tree}).validate()
    mask = p.bind({"tree": tree}).dense_mask(n)
    assert np.array_equal(layout.to_dense(0), mask)
    assert not np.triu(mask, 1).any()


@settings(max_examples=40, deadline=None)
@given(trees())
def test_ancestors_are_networkx_ancestors(tree):
    g = tree.graph()
    mask = ancestors().bind({"tree": tree}).dense_mask(tree.n_tokens)
    owner = tree.arrays["owner"]
    for i in range(0, tree.n_tokens, 3):
        want = np.isin(owner, list(nx.ancestors(g, owner[i])))
        assert np.array_equal(mask[i], want), i


@settings(max_examples=30, deadline=None)
@given(trees())
def test_parent_children_siblings_against_networkx(tree):
    g = tree.graph()
    owner = tree.arrays["owner"]
    bind = {"tree": tree}
    mp, mc, ms = (r().bind(bind).dense_mask(tree.n_tokens) for r in (parent, children, siblings))
    for i in range(0, tree.n_tokens, 5):
        o = owner[i]
        par = list(g.predecessors(o))
        assert np.array_equal(mp[i], np.isin(owner, par))
        assert np.array_equal(mc[i], np.isin(owner, list(g.successors(o))))
        sib = [v for v in g.successors(par[0]) if v != o] if par else []
        assert np.array_equal(ms[i], np.isin(owner, sib))


def test_python_tree_maps_statements_onto_tokens():
    t = char_tree(SRC)
    kinds = list(t.kind)
    assert kinds.count("FunctionDef") == 2 and "ClassDef" in kinds and "For" in kinds
    fdef = kinds.index("FunctionDef")
    assert SRC[t.start[fdef]: t.start[fdef] + 5] == "def f"
    # the return inside the if is nested: Module > FunctionDef > If > Return
    ret = kinds.index("Return")
    chain = []
    v = ret
    while v != -1:
        chain.append(kinds[v])
        v = t.parent[v]
    assert chain == ["Return", "If", "FunctionDef", "Module"]


def test_python_tree_with_tokenizer_offsets():
    # word-level tokens: offsets of whitespace-separated words
    offs = [i for i, ch in enumerate(SRC) if not ch.isspace() and (i == 0 or SRC[i - 1].isspace())]
    t = python_tree(SRC, offs)
    assert t.n_tokens == len(offs)
    i_class = t.kind.index("ClassDef")
    assert offs[t.start[i_class]] == SRC.index("class C")


def test_ast_scope_sees_enclosing_headers_not_other_bodies():
    t = char_tree(SRC)
    p = AstScope(window=8, header=6).bind({"tree": t})
    m = p.dense_mask(len(SRC))
    i = SRC.index("print(i)")
    assert m[i, SRC.index("for i")]  # enclosing for header
    assert m[i, SRC.index("def g")]  # enclosing def header
    assert m[i, SRC.index("class C")]  # enclosing class header
    assert m[i, SRC.index("def f")]  # earlier top-level sibling's header
    assert not m[i, SRC.index("z = x + y")]  # body of another function
    assert not m[SRC.index("def f"), SRC.index("print")]  # causal


def test_ast_scope_cost_is_measured_and_bounded():
    t = char_tree(SRC)
    p = AstScope(window=8, header=6)
    layout = sp.compile(p, len(SRC), block=(16, 16), context={"tree": t})
    pairs = int(layout.pair_counts().sum())
    b = p.bound(t)
    assert 0 < pairs <= b["pairs_bound_tree"] <= b["pairs_bound_N"]


def test_per_sequence_layouts_for_a_batch():
    t1 = char_tree(SRC)
    t2 = char_tree("x = 1\n" * 40)
    n = 200
    layout = sp.compile(AstScope(window=8) & sp.causal, n, block=(16, 16), context=[{"tree": t1}, {"tree": t2}])
    assert layout.group_shape == (2, 1)
    assert not np.array_equal(layout.to_dense(0), layout.to_dense(1))


def test_unbound_tree_pattern_says_what_it_needs():
    with pytest.raises(ValueError, match="tree"):
        sp.compile(ancestors(), 32)


def test_string_round_trip_of_tree_patterns():
    for s in ["ancestors() & causal", "parent() | children()", "ast_scope(window=32, header=4)", "siblings() - same_node()"]:
        p = sp.parse(s)
        assert sp.parse(str(p)) == p


def test_python_tree_rejects_invalid_source():
    with pytest.raises(SyntaxError):
        char_tree("def (:\n")
    assert isinstance(ast.parse(SRC), ast.Module)


def _arrays_by_definition(t: Tree) -> dict:
    """Tree.arrays from the definitions: depth by walking up, owner = the deepest covering node (the
    later one among equals), the Euler tour by recursion in child order."""
    depth = [0] * t.n_nodes
    for v in range(t.n_nodes):
        p = v
        while t.parent[p] >= 0:
            depth[v], p = depth[v] + 1, t.parent[p]
    owner = []
    for i in range(t.n_tokens):
        cover = [v for v in range(t.n_nodes) if t.start[v] <= i < t.end[v]] or [0]
        owner.append(max(cover, key=lambda v: (depth[v], v)))
    tin, tout, clock = [0] * t.n_nodes, [0] * t.n_nodes, [0]

    def visit(v):
        tin[v] = clock[0]
        clock[0] += 1
        for c in range(1, t.n_nodes):
            if t.parent[c] == v:
                visit(c)
        tout[v] = clock[0]

    visit(0)
    return {"depth": depth, "owner": owner, "tin": tin, "tout": tout,
            "n_children": [sum(p == v for p in t.parent) for v in range(t.n_nodes)]}


@settings(max_examples=60, deadline=None)
@given(trees())
def test_tree_arrays_equal_their_definitions(tree):
    got, want = tree.arrays, _arrays_by_definition(tree)
    for name, values in want.items():
        assert got[name].tolist() == values, name


def test_a_tree_pickles_its_fields_and_recomputes_the_rest():
    import pickle

    t = char_tree(SRC)
    before = {k: v.copy() for k, v in t.arrays.items()}  # cached on the instance
    assert t.laminar
    blob = pickle.dumps(t)
    assert len(blob) < 8 * t.n_tokens  # the owner array (8 bytes per token) is not in it
    u = pickle.loads(blob)
    assert (u.parent, u.start, u.end, u.n_tokens, u.kind) == (t.parent, t.start, t.end, t.n_tokens, t.kind)
    assert "arrays" not in u.__dict__
    assert all(np.array_equal(u.arrays[k], v) for k, v in before.items()) and u.laminar
