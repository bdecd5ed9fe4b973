"""The statement tree of Python source cut anywhere (``python_fragment_tree``), against the whole
file's statement tree (``python_tree``) clipped to the window; outline on it (``structure='python'``)
and the structure context that builds it from token ids."""

import pickle
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.data.structure import StructureContext, structure_context
from spattern.data.tokenizer import BPETokenizer, ByteTokenizer
from spattern.patterns.fragment import FragmentStats, python_fragment_tree
from spattern.patterns.outline import Outline, key_ends, pair_overlap
from spattern.patterns.tree import Tree, python_tree, without_empty

SRC = textwrap.dedent('''
    import os


    def f(x, y):
        """Add them.

        A docstring of several lines.
        """
        z = x + y
        if z > 0:
            return z
        return -z


    class C:
        def g(self):
            try:
                for i in range(3):
                    print(i,
                          i * 2)
            except ValueError:
                pass
            return None

        def h(self):
            return 1


    X = [1, 2,
         3]
''').lstrip()


def clipped(src: str, a: int, b: int) -> Tree:
    """The whole source's statement tree restricted to characters [a, b) (one token per character):
    statements outside dropped, those that cross an edge cut at it."""
    return without_empty(python_tree(src, np.arange(a, b), n_tokens=b - a))


def spans(t: Tree, text: str) -> list[tuple]:
    """Each node as (start, end, its parent's span), ends before trailing whitespace (a window that ends
    after a block's last statement cannot tell whether the blank lines there are the block's): the tree
    up to node numbering and kinds."""
    end = [min(e, s + len(text[s:e].rstrip())) if v else e for v, (s, e) in enumerate(zip(t.start, t.end))]
    return sorted((t.start[v], end[v], (t.start[t.parent[v]], end[t.parent[v]]) if v else (-1, -1))
                  for v in range(t.n_nodes))


def test_source_that_parses_gives_python_tree():
    got, ref = python_fragment_tree(SRC), python_tree(SRC, range(len(SRC)))
    assert (got.parent, got.start, got.end, got.kind[1:]) == (ref.parent, ref.start, ref.end, ref.kind[1:])


@pytest.mark.parametrize("start, stop, exact", [
    ("    z = x + y", "class C", True),        # inside a function body, to the start of a class
    ("        try:", "X = [", True),           # two levels deep, ending at a top-level statement
    # three levels deep, where the except dedents to a try: no line of the window is at def g's
    # indentation, so class C and def g are one enclosing node (the same span and header: the same mask)
    ("            for i", "    def h", False),
])
def test_window_inside_blocks_gives_the_clipped_whole_file_tree(start, stop, exact):
    a, b = SRC.index("\n" + start) + 1, SRC.index("\n" + stop) + 1  # at line starts
    got, ref = python_fragment_tree(SRC[a:b]), clipped(SRC, a, b)
    assert "Enclosing" in got.kind  # the def/class that began before the window, as a node from its start
    if exact:
        assert spans(got, SRC[a:b]) == spans(ref, SRC[a:b])
    for window, header, recent in [(4, 4, 0), (8, 6, 1), (2, 12, 2)]:
        o = Outline(window=window, header=header, recent=recent)
        assert np.array_equal(o.bind({"tree": got}).dense_mask(b - a), o.bind({"tree": ref}).dense_mask(b - a))


def test_window_that_stops_mid_statement_keeps_what_parses():
    a, b = 0, SRC.index("i * 2)")  # the print call is cut: its lines fall to the text tree
    st_ = FragmentStats()
    got = python_fragment_tree(SRC[a:b], stats=st_)
    assert got.laminar and st_.dropped_lines >= 1 and st_.parsed_lines > 10
    owner = got.arrays["owner"]
    assert got.kind[owner[SRC.index("def g")]] == "FunctionDef"
    assert got.kind[owner[SRC.index("class C")]] == "ClassDef"


def test_window_that_starts_or_stops_inside_a_docstring():
    a = SRC.index("A docstring")
    got = python_fragment_tree(SRC[a:])  # starts inside f's docstring: the code after it still parses
    w = SRC[a:]
    assert got.kind[got.arrays["owner"][w.index("return -z")]] == "Return"
    assert got.kind[got.arrays["owner"][w.index("def h")]] == "FunctionDef"
    b = SRC.index("A docstring") + 5
    cut = python_fragment_tree(SRC[:b])  # stops inside it: the string is closed, f stays a FunctionDef
    assert cut.kind[cut.arrays["owner"][SRC.index("def f")]] == "FunctionDef"
    assert cut.kind[cut.arrays["owner"][b - 2]] == "Expr"


def test_text_the_parser_refuses_still_gets_a_tree():
    """A NUL byte (the parser refuses the whole source) counts as a space; nesting deeper than the parser
    goes falls to the text tree; prose gets the text tree."""
    nul = SRC.replace("z = x + y", "z = x +\0y")
    t = python_fragment_tree(nul)
    assert t.kind[t.arrays["owner"][nul.index("def f")]] == "FunctionDef"
    for deep in ("x = " + "(" * 300 + ")" * 300 + "\ny = 1\n",  # SyntaxError: too many nested parentheses
                 "x = " + "-" * 200_000 + "1\ny = 1\n"):         # MemoryError in the parser
        t = python_fragment_tree(deep)
        assert t.laminar and t.n_tokens == len(deep)
    prose = "A title\n\nThe first paragraph is here.\nIt wraps.\n"
    assert set(python_fragment_tree(prose).kind) <= {"Module", "Line", "Continuation"}


def test_documents_split_at_breaks():
    text = SRC + SRC
    got = python_fragment_tree(text, breaks=[len(SRC)])
    mods = [v for v in range(1, got.n_nodes) if got.kind[v] == "Module"]
    assert [(got.start[v], got.end[v], got.parent[v]) for v in mods] == [(0, len(SRC), 0), (len(SRC), len(text), 0)]
    one = python_fragment_tree(SRC)
    assert got.n_nodes == 1 + 2 * one.n_nodes  # the root and each document's whole tree


def _stdlib_sources(k: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.glob("*.py")):
        s = p.read_text(encoding="utf-8", errors="replace")
        if 20_000 < len(s) < 200_000:
            out.append(s)
        if len(out) == k:
            break
    return out


SOURCES = _stdlib_sources(6)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(SOURCES) - 1), st.floats(0, 1), st.integers(200, 5000), st.integers(1, 6),
       st.integers(0, 2**31))
def test_any_window_gives_a_laminar_tree_over_its_tokens(k, where, chars, tok_len, seed):
    """Windows cut anywhere in real files, with tokens of 1..tok_len characters: a valid, laminar tree
    over exactly the tokens given, that agrees with the clipped whole-file tree on most pairs."""
    src = SOURCES[k]
    a = int(where * (len(src) - chars))
    text = src[a:a + chars]
    rng = np.random.default_rng(seed)
    offs = np.unique(np.concatenate([[0], np.cumsum(rng.integers(1, tok_len + 1, size=len(text)))]))
    offs = offs[offs < len(text)]
    t = python_fragment_tree(text, offs)
    assert t.n_tokens == offs.size and t.laminar
    if tok_len == 1:  # one token per character: against the clipped whole-file tree
        e1 = key_ends(t, 64, 8, 2)
        e2 = key_ends(clipped(src, a, a + len(text)), 64, 8, 2)
        # (the study's measure: median 0.99, scripts/fragment_agreement.py)
        assert pair_overlap(e1, e2, 64)["jaccard"] > 0.6


def test_outline_reads_the_python_tree_and_says_which_key_it_needs():
    t = python_fragment_tree(SRC)
    p = sp.parse("outline(window=6, header=4, structure='python') & causal")
    assert str(p) == "outline(window=6, header=4, structure='python') & causal"
    a = sp.compile(p, len(SRC), block=(16, 16), context={"python_tree": t})
    b = sp.compile(Outline(window=6, header=4) & sp.causal, len(SRC), block=(16, 16), context={"tree": t})
    assert a.equals(b)
    with pytest.raises(ValueError, match="python_tree"):
        sp.compile(p, len(SRC), block=(16, 16), context={"tree": t})
    with pytest.raises(ValueError, match="structure"):
        Outline(structure="ast")


@pytest.mark.parametrize("tok", [ByteTokenizer(), BPETokenizer.train([SRC, "héllo ✓ " * 5], vocab_size=300)],
                         ids=["byte", "bpe"])
def test_structure_context_builds_trees_when_read_and_pickles_what_it_built(tok):
    ids = tok.encode(SRC) + [tok.eos_id] + tok.encode(SRC)
    ctx = structure_context(tok, ids)
    assert isinstance(ctx, StructureContext) and not ctx.built
    t = ctx["python_tree"]
    assert set(ctx.built) == {"python_tree"} and t.n_tokens == len(ids) and t.laminar
    mods = [v for v in range(1, t.n_nodes) if t.kind[v] == "Module"]
    assert len(mods) == 2  # the end-of-document token splits the documents
    back = pickle.loads(pickle.dumps(ctx))
    assert back["python_tree"].parent == t.parent
    with pytest.raises(KeyError, match="pickled"):
        back["tree"]
    layout = sp.compile(sp.parse("outline(window=8, structure='python') & causal"), len(ids), block=(16, 16),
                        context=[ctx])
    assert layout.group_shape == (1, 1)
