"""Key intervals (``Pattern.key_intervals``): the compiler's path for patterns whose every key is
seen by one interval of queries, against the predicate and the generic path; the block helpers
against brute force; outline's interval form against its per-pair reference on laminar and
non-laminar trees."""

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.compiler.compile import _generic_blocks
from spattern.ir.blocks import FULL, PARTIAL, Grid, interval_blocks, interval_segments, interval_state
from spattern.patterns.base import Geometry, Pattern
from spattern.patterns.outline import Outline, key_ends, text_tree
from spattern.patterns.tree import Tree, python_tree
from spattern.testing import assert_paths_agree


@dataclass(frozen=True, eq=False)
class Intervals(Pattern):
    """A test pattern given by its intervals: key j is seen by queries lo[j] <= i < hi[j]."""

    lo: tuple
    hi: tuple
    name = "test_intervals"

    def allowed(self, q_idx, kv_idx, geom):
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        return (q_idx >= lo[kv_idx]) & (q_idx < hi[kv_idx])

    def key_intervals(self, geom):
        return np.asarray(self.lo, dtype=np.int64), np.asarray(self.hi, dtype=np.int64)

    def __hash__(self):
        return hash((self.lo, self.hi))


@st.composite
def intervals(draw, max_len=90):
    """Random lengths and per-key intervals: runs of keys whose ends are constant or follow the key
    (as in causal, windows and headers, so that full blocks occur), with some keys set to any value
    (empty, reversed, past the ends)."""
    q_len, kv_len = draw(st.integers(1, max_len)), draw(st.integers(1, max_len))
    ends = st.integers(-5, q_len + 5)
    lo, hi = [], []
    while len(lo) < kv_len:
        run = draw(st.integers(1, kv_len))
        a, b = draw(ends), draw(ends)
        rel_a, rel_b = draw(st.booleans()), draw(st.booleans())
        for j in range(len(lo), min(kv_len, len(lo) + run)):
            lo.append(j + a if rel_a else a)
            hi.append(j + b if rel_b else b)
    for j in draw(st.lists(st.integers(0, kv_len - 1), max_size=3)):
        lo[j], hi[j] = draw(ends), draw(ends)
    return q_len, kv_len, tuple(lo), tuple(hi)


BLOCKS = st.sampled_from([(16, 16), (16, 32), (32, 16), (48, 16)])


@settings(max_examples=80, deadline=None)
@given(intervals(), BLOCKS)
def test_interval_blocks_and_states_equal_brute_force(iv, block):
    """Blocks and states from the intervals equal the reduction of the token mask, columns with
    gaps between their row runs included; ``interval_state`` answers for absent blocks too."""
    q_len, kv_len, lo, hi = iv
    p = Intervals(lo, hi)
    grid = Grid(q_len, kv_len, *block)
    rows, cols, full = _generic_blocks(p, grid)
    got = interval_blocks(grid, np.array(lo), np.array(hi))
    assert np.array_equal(got.rows, rows) and np.array_equal(got.cols, cols)
    assert np.array_equal(got.state, np.where(full, FULL, PARTIAL))
    R, C = np.meshgrid(np.arange(grid.n_rows), np.arange(grid.n_cols), indexing="ij")
    want = np.full(R.shape, -1)
    want[rows, cols] = np.where(full, FULL, PARTIAL)
    assert np.array_equal(interval_state(grid, R.ravel(), C.ravel(), np.array(lo), np.array(hi)), want.ravel())


@settings(max_examples=80, deadline=None)
@given(intervals(), BLOCKS)
def test_compiling_by_intervals_equals_the_generic_path(iv, block):
    """The whole layout (blocks, kinds, the distinct bitmasks of the partial blocks) equals the one
    the predicate gives block row by block row."""
    q_len, kv_len, lo, hi = iv
    assert assert_paths_agree(Intervals(lo, hi), q_len, kv_len, block)


def test_segments_merge_touching_runs_and_keep_gaps():
    grid = Grid(64, 32, 16, 16)
    lo = np.array([0] * 8 + [40] * 8 + [16] * 16)   # column 0: rows 0 and 2 (a gap); column 1: row 1 only
    hi = np.array([16] * 8 + [48] * 8 + [32] * 16)
    c, r0, r1 = interval_segments(grid, lo, hi)
    assert list(zip(c.tolist(), r0.tolist(), r1.tolist())) == [(0, 0, 0), (0, 2, 2), (1, 1, 1)]
    with pytest.raises(ValueError, match=r"shape \(32,\)"):
        interval_segments(grid, lo[:5], hi)


@pytest.mark.parametrize("pattern", ["causal", "full", "causal & full"])
def test_builtins_with_intervals_match_their_predicate(pattern):
    p = sp.parse(pattern)
    for q_len, kv_len in [(1, 1), (17, 40), (40, 17)]:
        lo, hi = p.key_intervals(Geometry(q_len, kv_len))
        q = np.arange(q_len)[:, None]
        assert np.array_equal((q >= lo) & (q < hi), p.dense_mask(q_len, kv_len))
    assert sp.parse("local(3) & causal").key_intervals(Geometry(8, 8)) is None  # a part without them


LINES = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["x = 1", "if a:", "word word", "", "# c", "\tt"])),
                 min_size=1, max_size=16)


@settings(max_examples=60, deadline=None)
@given(LINES, st.integers(1, 30), st.integers(1, 6), st.integers(0, 3), st.integers(-10, 20))
def test_outline_intervals_equal_the_per_pair_reference(lines, window, header, recent, extra):
    text = "".join(" " * (4 * ind) + body + "\n" for ind, body in lines)
    t = text_tree(text)
    assert t.laminar  # every text tree is
    p = Outline(window=window, header=header, recent=recent).bind({"tree": t})
    n = max(1, len(text) + extra)
    q, k = np.arange(n)[:, None], np.arange(n)[None, :]
    geom = Geometry(n, n)
    assert np.array_equal(p.allowed(q, k, geom), p.allowed_reference(q, k, geom))


@st.composite
def overlapping_trees(draw, max_nodes=10):
    """Random trees whose children are any sub-spans of their parent: siblings may overlap."""
    n_tokens = draw(st.integers(8, 60))
    parent, start, end = [-1], [0], [n_tokens]
    for v in range(1, draw(st.integers(2, max_nodes))):
        p = draw(st.integers(0, v - 1))
        a = draw(st.integers(start[p], end[p]))
        b = draw(st.integers(a, end[p]))
        parent.append(p)
        start.append(a)
        end.append(b)
    return Tree(tuple(parent), tuple(start), tuple(end), n_tokens)


def _laminar_by_pairs(t: Tree) -> bool:
    spans = [(s, e) for s, e in zip(t.start, t.end)]
    anc = lambda a, b: a == b or (b > 0 and anc(a, t.parent[b]))  # noqa: E731
    for a in range(t.n_nodes):
        for b in range(t.n_nodes):
            (sa, ea), (sb, eb) = spans[a], spans[b]
            if sa < ea and sb < eb and max(sa, sb) < min(ea, eb) and not (anc(a, b) or anc(b, a)):
                return False
    return True


@settings(max_examples=80, deadline=None)
@given(overlapping_trees(), st.integers(1, 8), st.integers(1, 4), st.integers(0, 2), BLOCKS)
def test_outline_on_any_tree_compiles_to_its_predicate(t, window, header, recent, block):
    """Laminar or not (the test says which by pairs), outline's layout equals the generic path's, and
    the interval form exists exactly for laminar trees."""
    assert t.laminar == _laminar_by_pairs(t)
    assert (key_ends(t, window, header, recent) is None) == (not t.laminar)
    p = Outline(window=window, header=header, recent=recent) & sp.causal
    ctx = {"tree": t}
    bound = p.bind(ctx)
    n = t.n_tokens
    q, k = np.arange(n)[:, None], np.arange(n)[None, :]
    assert np.array_equal(bound.dense_mask(n), bound.parts[0].allowed_reference(q, k, Geometry(n, n)) & (k <= q))
    fast = sp.compile(p, n, block=block, context=ctx)
    assert fast.equals(sp.compile(p, n, block=block, context=ctx, path="generic"))


def test_an_ast_tree_is_laminar_and_overlapping_siblings_are_not():
    src = "def f(x):\n    return x\n\nclass C:\n    y = 1\n"
    assert python_tree(src, range(len(src))).laminar
    assert not Tree((-1, 0, 0), (0, 2, 4), (10, 6, 8), 10).laminar
    assert Tree((-1, 0, 0), (0, 2, 4), (10, 4, 4), 10).laminar  # touching, and an empty span
