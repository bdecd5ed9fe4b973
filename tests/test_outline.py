"""Outline attention: the text tree, the mask against a literal twin of its definition, the
property suite every built-in passes, the cost bound, and structure from token ids."""

import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.data.structure import structure_context, text_and_offsets
from spattern.data.tokenizer import BPETokenizer, ByteTokenizer
from spattern.patterns.outline import Outline, pair_overlap, text_tree
from spattern.patterns.tree import Tree, python_tree
from spattern.testing import check_pattern

CODE = textwrap.dedent('''
    import os
    import sys

    def f(x, y):
        z = x + y
        if z > 0:
            return z
        return -z

    class C:
        def g(self):
            for i in range(3):
                print(i)

        def h(self):
            return 1
''').lstrip()

PROSE = ("The Title\n\nFirst paragraph opens here and goes on\nover a second line.\n\n"
         "Second paragraph says more.\n\nThird one ends it.\n")


def _line_node(t: Tree, text: str, needle: str) -> int:
    return int(t.arrays["owner"][text.index(needle)])


def test_text_tree_follows_indentation_and_paragraphs():
    t = text_tree(CODE)
    node = lambda s: _line_node(t, CODE, s)  # noqa: E731
    assert t.parent[node("print(i)")] == node("for i in")
    assert t.parent[node("for i in")] == node("def g")
    assert t.parent[node("def g")] == node("class C")
    assert t.parent[node("def h")] == node("class C")          # after a blank line: a sibling of def g
    assert t.parent[node("class C")] == 0
    assert t.parent[node("import sys")] == node("import os")   # no blank line: a continuation
    assert t.kind[node("import sys")] == "Continuation"
    assert t.parent[node("return -z")] == node("z = x + y")    # the body's paragraph
    p = text_tree(PROSE)
    first = _line_node(p, PROSE, "First")
    assert p.parent[first] == 0 and p.parent[_line_node(p, PROSE, "over a second")] == first
    assert p.parent[_line_node(p, PROSE, "Second")] == 0


def _text_tree_by_lines(text: str, token_offsets, n_tokens: int, tab: int = 8) -> Tree:
    """text_tree's rule one line at a time, with a search per line: the twin of its batched form."""
    offs = np.asarray(token_offsets, np.int64)[:n_tokens]
    parent, start, end, kind = [-1], [0], [n_tokens], ["Document"]
    stack, last_blank, pos = [], -1, 0
    for li, line in enumerate(text.splitlines(keepends=True)):
        c0, pos = pos, pos + len(line)
        body = line.expandtabs(tab).rstrip("\r\n")
        if not body.strip():
            last_blank = li
            continue
        t0 = int(np.searchsorted(offs, c0 + len(line) - len(line.lstrip()), side="left"))
        if t0 >= n_tokens:
            break
        t1 = int(np.searchsorted(offs, pos, side="left"))
        ind = len(body) - len(body.lstrip())
        v = len(parent)
        while stack and stack[-1][0] > ind:
            stack.pop()
        if stack and stack[-1][0] == ind and last_blank < stack[-1][3]:
            p = head = stack.pop()[2]
            k = "Continuation"
        else:
            if stack and stack[-1][0] == ind:
                stack.pop()
            p, head, k = (stack[-1][1] if stack else 0), v, "Line"
        stack.append((ind, v, head, li))
        parent.append(p)
        start.append(t0)
        end.append(max(t0, t1))
        kind.append(k)
    for v in range(len(parent) - 1, 0, -1):
        end[parent[v]] = max(end[parent[v]], end[v])
    return Tree(tuple(parent), tuple(start), tuple(end), n_tokens, tuple(kind))


TEXTS = st.lists(st.tuples(st.sampled_from(["", " ", "  ", "\t", "    ", " \t "]),
                           st.sampled_from(["x = 1", "if a:", "w w", "", " ", "\x0c", "\xa0y"]),
                           st.sampled_from(["\n", "\r\n", "\r", "\x85", ""])), max_size=20)


@settings(max_examples=80, deadline=None)
@given(TEXTS, st.integers(1, 4), st.integers(-8, 8))
def test_text_tree_equals_its_line_by_line_twin(parts, step, cut):
    """Tabs, CRLF and other line breaks, whitespace-only lines, tokens of several characters and a
    token count cut short or past the text."""
    text = "".join(a + b + c for a, b, c in parts)
    offs = np.arange(0, len(text), step)
    n = max(0, offs.size + cut) if cut < 0 else offs.size
    got, want = text_tree(text, offs, n), _text_tree_by_lines(text, offs, n)
    assert (got.parent, got.start, got.end, got.kind, got.n_tokens) == \
        (want.parent, want.start, want.end, want.kind, want.n_tokens)


def _slow_outline(t: Tree, window: int, header: int, recent: int, n: int) -> np.ndarray:
    """The definition read literally: loops over queries, enclosing nodes and their children."""
    owner = t.arrays["owner"]
    kids = {v: sorted((c for c in range(1, t.n_nodes) if t.parent[c] == v), key=lambda c: (t.start[c], c))
            for v in range(t.n_nodes)}

    def header_of(v):
        return {j for j in range(t.start[v], min(t.start[v] + header, t.n_tokens)) if owner[j] == v}

    m = np.zeros((n, n), dtype=bool)
    for i in range(n):
        keys = set(range(max(0, i - window + 1), i + 1)) | set(range(min(header, i + 1)))
        p = int(owner[i]) if i < t.n_tokens else 0
        while p >= 0:
            started = [c for c in kids[p] if t.start[c] <= i]
            for c in started[max(0, len(started) - 1 - recent):]:
                keys |= {j for j in header_of(c) if j <= i}
            p = t.parent[p]
        m[i, sorted(keys)] = True
    return m


LINES = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["x = 1", "if a:", "word word", "", "# c"])),
                 min_size=1, max_size=14)


@settings(max_examples=60, deadline=None)
@given(LINES, st.integers(1, 12), st.integers(1, 5), st.integers(0, 3))
def test_mask_equals_the_literal_definition(lines, window, header, recent):
    text = "".join(" " * (4 * ind) + body + "\n" for ind, body in lines)
    t = text_tree(text)
    n = len(text)
    got = Outline(window=window, header=header, recent=recent).bind({"tree": t}).dense_mask(n)
    assert np.array_equal(got, _slow_outline(t, window, header, recent, n))


@settings(max_examples=60, deadline=None)
@given(LINES, st.integers(1, 40), st.integers(1, 20), st.integers(0, 3), st.sampled_from([(16, 16), (16, 32), (32, 16)]),
       st.integers(-20, 40), st.booleans())
def test_block_enumeration_equals_the_generic_path(lines, window, header, recent, block, extra, causal):
    """Outline.blocks (candidates from the tree) gives the layout that evaluating the predicate on
    every block gives, for lengths shorter and longer than the tree, with and without ``& causal``."""
    text = "".join(" " * (4 * ind) + body + "\n" for ind, body in lines) * 3
    pat = Outline(window=window, header=header, recent=recent) & sp.causal if causal else \
        Outline(window=window, header=header, recent=recent)
    n = max(1, len(text) + extra)
    fast = sp.compile(pat, n, block=block, context={"tree": text_tree(text)})
    slow = sp.compile(pat, n, block=block, context={"tree": text_tree(text)}, path="generic")
    assert fast.equals(slow)


def test_mask_on_an_ast_tree_too():
    t = python_tree(CODE, range(len(CODE)))
    got = Outline(window=6, header=4, recent=1).bind({"tree": t}).dense_mask(len(CODE))
    assert np.array_equal(got, _slow_outline(t, 6, 4, 1, len(CODE)))


def test_queries_see_enclosing_and_recent_openings_not_old_bodies():
    n = len(CODE)
    m = Outline(window=4, header=5, recent=1).bind({"tree": text_tree(CODE)}).dense_mask(n)
    i = CODE.index("print(i)") + 3
    for seen in ("for i", "def g", "class C", "def f", "impor"):  # enclosing; class C's previous sibling; start
        assert m[i, CODE.index(seen)], seen
    assert not m[i, CODE.index("z = x")] and not m[i, CODE.index("return z")]
    j = CODE.index("return 1")
    assert m[j, CODE.index("def h")] and m[j, CODE.index("def g")]  # recent=1: the method before
    assert not m[CODE.index("def f"), CODE.index("class C")]        # causal


@pytest.mark.parametrize("text", [CODE, PROSE])
def test_property_suite_and_cost_bound(text):
    t = text_tree(text)
    bound = (Outline(window=5, header=3, recent=1) & sp.causal).bind({"tree": t})
    ran = check_pattern(bound, sizes=(len(text), 17), roundtrip=False)
    assert any(r.startswith("closed_form") for r in ran)
    c = sp.cost(bound, len(text), block=(16, 16))
    assert 0 < c.pairs <= c.pairs_closed_value
    check_pattern(Outline(window=5, header=3) & sp.causal, sizes=(len(text),), context={"tree": t},
                  closed_forms=False)


def test_string_form_and_argument_checks():
    for s in ["outline()", "outline(window=128, recent=0)", "outline(header=16) & causal"]:
        assert sp.parse(str(sp.parse(s))) == sp.parse(s)
    with pytest.raises(ValueError, match="recent"):
        Outline(recent=-1)
    with pytest.raises(ValueError, match="tree"):
        sp.compile(sp.parse("outline() & causal"), 32)


def test_one_layout_per_sequence_of_a_batch():
    a, b = text_tree(CODE[:200]), text_tree(PROSE * 3)
    layout = sp.compile(sp.parse("outline(window=8) & causal"), 150, block=(16, 16),
                        context=[{"tree": a}, {"tree": b}])
    assert layout.group_shape == (2, 1)
    assert not np.array_equal(layout.to_dense(0), layout.to_dense(1))


def _bpe() -> BPETokenizer:
    return BPETokenizer.train([CODE, PROSE, "héllo ünïcode ✓ " * 5], vocab_size=300)


@pytest.mark.parametrize("tok", [ByteTokenizer(), _bpe()], ids=["byte", "bpe"])
def test_structure_from_ids_matches_structure_from_text(tok):
    text = CODE + "s = 'héllo ✓'\n" + PROSE
    ids = tok.encode(text) + [tok.eos_id]
    joined, offsets = text_and_offsets(tok, ids)
    assert joined.encode("latin-1").decode("utf-8") == text
    t = structure_context(tok, ids)["tree"]
    assert t.n_tokens == len(ids)
    # the same lines and parents as the character-level tree of the same text (bytes, one per char here)
    lines = lambda tree: [(tree.kind[v], tree.parent[v]) for v in range(tree.n_nodes)]  # noqa: E731
    assert lines(t) == lines(text_tree(joined))


def test_pair_overlap_by_hand():
    """Four keys, window 2: a's key ends (5, 9, 9, 10) clipped at 4 give 4+3+2+1 = 10 pairs; b's (2, 3, 9,
    4) give 2+2+2+1 = 7, all of them a's: Jaccard 0.7. Beyond the window (band 2, 2, 2, 1) a has 2+1 = 3
    pairs, b none."""
    a, b = np.array([5, 9, 9, 10]), np.array([2, 3, 9, 4])
    assert pair_overlap(a, b, 2) == {"jaccard": 0.7, "a_beyond_in_b": 0.0, "b_beyond_in_a": 1.0,
                                     "pairs_a": 10, "pairs_b": 7}
    assert pair_overlap(a, a, 2)["jaccard"] == 1.0
    with pytest.raises(ValueError, match="one length"):
        pair_overlap(a, b[:3], 2)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 24), st.integers(1, 6), st.integers(0, 8), st.data())
def test_pair_overlap_matches_the_pair_sets(n, window, cut, data):
    """The slow twin: the two patterns' (query, key) pairs as boolean masks over the keys j < k of a
    sequence of n queries."""
    k = max(1, n - cut)
    ends = st.lists(st.integers(0, 2 * n), min_size=k, max_size=k)
    ea = np.maximum(np.array(data.draw(ends)), np.minimum(np.arange(k) + window, n))  # each holds its window
    eb = np.maximum(np.array(data.draw(ends)), np.minimum(np.arange(k) + window, n))
    q, j = np.arange(n)[:, None], np.arange(k)[None, :]
    ma, mb = (j <= q) & (q < ea[None, :]), (j <= q) & (q < eb[None, :])
    band = (j <= q) & (q < j + window)
    got = pair_overlap(ea, eb, window, n)
    assert got["jaccard"] == pytest.approx((ma & mb).sum() / (ma | mb).sum())
    assert (got["pairs_a"], got["pairs_b"]) == (ma.sum(), mb.sum())
    extra_a, extra_b = ma & ~band, mb & ~band
    assert got["a_beyond_in_b"] == pytest.approx((extra_a & mb).sum() / extra_a.sum() if extra_a.any() else 1.0)
    assert got["b_beyond_in_a"] == pytest.approx((extra_b & ma).sum() / extra_b.sum() if extra_b.any() else 1.0)
