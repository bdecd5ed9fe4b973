"""Hypothesis strategies for patterns, lengths, block sizes, geometries and compiled layouts.

    from hypothesis import given
    from spattern.testing import strategies as sst, check_pattern

    @given(sst.patterns(), sst.geometries())
    def test_my_compiler_change(p, g):
        assert_layout_matches_mask(p, g.q_len, g.kv_len, (g.block_q, g.block_k))

Parameters are drawn to be interesting at small lengths (tens to a few hundred tokens): windows,
strides and sink sizes around the block sizes, so that blocks come out full, partial and absent.
Every strategy shrinks toward small, simple values.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

from spattern.patterns import (
    BlockStrided,
    Dilated,
    Document,
    Full,
    Landmark,
    Local,
    Random,
    Sink,
    Strided,
    causal,
    heads,
)

#: block sizes the strategies draw from (multiples of 16, as the layout contract requires)
BLOCK_SIZES = (16, 32, 48, 64)
#: the families ``families()`` draws from, by name
FAMILY_NAMES = ("local", "strided", "blockstrided", "dilated", "landmark", "sink", "random", "document",
                "full", "causal")


class CompileGeometry(NamedTuple):
    """Token lengths and block sizes for one ``compile`` call."""

    q_len: int
    kv_len: int
    block_q: int
    block_k: int

    @property
    def block(self) -> tuple[int, int]:
        return (self.block_q, self.block_k)


def lengths(min_len: int = 1, max_len: int = 160) -> st.SearchStrategy[int]:
    """Token lengths, weighted toward block edges (multiples of 16 and their neighbours)."""
    edges = sorted({v for m in range(16, max_len + 1, 16) for v in (m - 1, m, m + 1)
                    if min_len <= v <= max_len})
    plain = st.integers(min_len, max_len)
    return st.one_of(plain, st.sampled_from(edges)) if edges else plain


def blocks(sizes=BLOCK_SIZES, square: bool | None = None) -> st.SearchStrategy[tuple[int, int]]:
    """(block_q, block_k) pairs from ``sizes``; ``square=True`` only equal pairs, False only unequal."""
    sizes = tuple(sizes)
    pairs = [(a, b) for a in sizes for b in sizes
             if square is None or (a == b) == bool(square)]
    if not pairs:
        raise ValueError(f"blocks: no pair of {sizes} with square={square}")
    return st.sampled_from(pairs)


@st.composite
def geometries(draw, min_len: int = 1, max_len: int = 160, sizes=BLOCK_SIZES,
               same_len: bool | None = None) -> CompileGeometry:
    """(q_len, kv_len, block_q, block_k): lengths need not be multiples of the blocks, and
    q_len != kv_len about half the time (``same_len`` forces one or the other)."""
    q_len = draw(lengths(min_len, max_len))
    same = draw(st.booleans()) if same_len is None else same_len
    kv_len = q_len if same else draw(lengths(min_len, max_len))
    bq, bk = draw(blocks(sizes))
    return CompileGeometry(q_len, kv_len, bq, bk)


def _cu_seqlens(max_len: int, max_docs: int = 5) -> st.SearchStrategy[tuple[int, ...]]:
    doc = st.integers(0, max(1, max_len // 2))
    return st.lists(doc, min_size=1, max_size=max_docs).map(lambda ls: tuple(np.cumsum([0, *ls]).tolist()))


def cu_seqlens(max_len: int = 160, max_docs: int = 5) -> st.SearchStrategy[tuple[int, ...]]:
    """Document boundaries [0, l0, l0 + l1, ...] (empty documents included)."""
    return _cu_seqlens(max_len, max_docs)


def family(name: str, max_len: int = 160) -> st.SearchStrategy:
    """One built-in family with random parameters suited to lengths up to ``max_len``."""
    small = max(2, max_len // 3)
    if name == "local":
        return st.builds(Local, st.integers(1, small), causal=st.booleans())
    if name == "strided":
        return st.builds(Strided, st.integers(1, small))
    if name == "blockstrided":
        return st.builds(BlockStrided, st.integers(1, 5), block=st.sampled_from((4, 8, 16, 24, 32, 64)))
    if name == "dilated":
        return st.builds(Dilated, st.integers(1, 8), dilation=st.integers(1, 12))
    if name == "landmark":
        every = st.none() | st.integers(1, max_len)
        positions = st.lists(st.integers(0, max_len + 8), max_size=4).map(tuple)
        return st.tuples(every, positions).filter(lambda t: t[0] is not None or t[1]).map(
            lambda t: Landmark(every=t[0], positions=t[1]))
    if name == "sink":
        return st.builds(Sink, st.integers(1, small))
    if name == "random":
        return st.builds(Random, st.integers(0, 4), seed=st.integers(0, 2**16),
                         block=st.sampled_from((8, 16, 32, 48, 64)))
    if name == "document":
        return st.builds(Document, cu_seqlens(max_len))
    if name == "full":
        return st.just(Full())
    if name == "causal":
        return st.just(causal)
    raise ValueError(f"family: unknown name {name!r}; expected one of {FAMILY_NAMES}")


def families(names=FAMILY_NAMES, max_len: int = 160) -> st.SearchStrategy:
    """Every built-in static family (``custom`` excluded) with random parameters."""
    return st.one_of(*(family(n, max_len) for n in names))


def _combine(op: str, a, b):
    if op == "|":
        return a | b
    if op == "&":
        return a & b
    if op == "-":
        return a - b
    return causal(a)


def patterns(max_depth: int = 3, heads_stacks: bool = False, max_heads: int = 3,
             names=FAMILY_NAMES, max_len: int = 160) -> st.SearchStrategy:
    """Random compositions of built-in families with ``|``, ``&``, ``-`` and ``causal(...)``,
    up to ``max_depth`` operators deep; with ``heads_stacks=True`` sometimes a ``heads(...)``
    stack of such compositions (and, rarely, a stack combined with another pattern)."""
    leaf = families(names, max_len)
    ops = st.sampled_from(("|", "&", "-", "causal"))
    binops = st.sampled_from(("|", "&", "-"))
    branch = st.integers(0, 2)

    @st.composite
    def build(draw):
        def tree(depth):
            if depth <= 0 or draw(branch) == 0:
                return draw(leaf)
            op = draw(ops)
            a = tree(depth - 1)
            b = tree(depth - 1) if op != "causal" else None
            return _combine(op, a, b)

        if heads_stacks and draw(st.booleans()):
            n = draw(st.integers(1, max_heads))
            stack = heads(*(tree(max(0, max_depth - 1)) for _ in range(n)))
            if draw(st.integers(0, 3)) == 0:
                op, other = draw(binops), draw(leaf)
                return _combine(op, stack, other) if draw(st.booleans()) else _combine(op, other, stack)
            return stack
        return tree(max_depth)

    return build()


def layouts(pattern_strategy=None, geometry_strategy=None, batched: bool = True,
            with_pattern: bool = False) -> st.SearchStrategy:
    """Compiled layouts of random patterns over random geometries: shared, per-head
    (``heads(...)``) and, with ``batched=True``, per-batch groups from ``document()`` with a list of
    contexts. ``with_pattern=True`` draws ``(pattern, context, layout)`` instead, where the pattern
    is the one compiled (``context`` is what ``compile`` got)."""
    pat = pattern_strategy if pattern_strategy is not None else patterns(max_depth=2, heads_stacks=True)
    geo = geometry_strategy if geometry_strategy is not None else geometries(max_len=130)

    @st.composite
    def build(draw):
        from spattern.compiler import compile as compile_pattern
        from spattern.patterns import document

        g = draw(geo)
        context = None
        if batched and draw(st.integers(0, 3)) == 0:
            n = draw(st.integers(1, 3))
            context = [{"cu_seqlens": draw(cu_seqlens(g.q_len, 3))} for _ in range(n)]
            p = _combine(draw(st.sampled_from(("&", "|", "-"))), document(), draw(pat))
        else:
            p = draw(pat)
        layout = compile_pattern(p, g.q_len, g.kv_len, g.block, context=context)
        return (p, context, layout) if with_pattern else layout

    return build()
