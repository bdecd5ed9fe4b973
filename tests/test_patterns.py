"""The pattern DSL: golden masks written out literally, printing and parsing (round trip for every
registered family, errors that point at the column), constructor checks, equality and hashing,
per-head stacks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.patterns import REGISTRY, Heads, PatternSyntaxError, parse
from spattern.testing import assert_causal, assert_roundtrip
from spattern.testing import strategies as sst


def M(text: str) -> np.ndarray:
    """A 0/1 matrix written as rows of digits."""
    rows = [r.strip() for r in text.strip().splitlines()]
    return np.array([[c == "1" for c in r] for r in rows], dtype=bool)


# ------------------------------------------------------------------------------------------
# golden masks
# ------------------------------------------------------------------------------------------
GOLDEN = [
    (sp.local(2), 5, 5, """
        11000
        11100
        01110
        00111
        00011"""),
    (sp.local(2, causal=True), 5, 5, """
        10000
        11000
        01100
        00110
        00011"""),
    (sp.local(2) & sp.causal, 5, 5, """
        10000
        11000
        01100
        00110
        00011"""),
    (sp.strided(2), 5, 5, """
        10101
        01010
        10101
        01010
        10101"""),
    (sp.strided(3) & sp.causal, 7, 7, """
        1000000
        0100000
        0010000
        1001000
        0100100
        0010010
        1001001"""),
    (sp.blockstrided(2, block=2), 6, 6, """
        110011
        110011
        001100
        001100
        110011
        110011"""),
    (sp.dilated(2, dilation=2), 6, 6, """
        101000
        010100
        101010
        010101
        001010
        000101"""),
    (sp.landmark(every=3), 6, 6, """
        111111
        100100
        100100
        111111
        100100
        100100"""),
    (sp.landmark(positions=[1]) & sp.causal, 4, 4, """
        0000
        1100
        0100
        0100"""),
    (sp.landmark(every=4, positions=[2]), 5, 5, """
        11111
        10101
        11111
        10101
        11111"""),
    (sp.sink(2), 4, 4, """
        1100
        1100
        1100
        1100"""),
    (sp.sink(2) & sp.causal, 5, 5, """
        10000
        11000
        11000
        11000
        11000"""),
    (sp.document([0, 2, 5]), 6, 6, """
        110000
        110000
        001110
        001110
        001110
        000000"""),
    (sp.document([0, 2, 5]) & sp.causal, 6, 6, """
        100000
        110000
        001000
        001100
        001110
        000000"""),
    ((sp.local(2) | sp.sink(1)) & sp.causal, 5, 5, """
        10000
        11000
        11100
        10110
        10011"""),
    (sp.local(3) - sp.local(2), 5, 5, """
        00100
        00010
        10001
        01000
        00100"""),
    (sp.causal, 3, 5, """
        10000
        11000
        11100"""),
    (sp.local(2), 2, 4, """
        1100
        1110"""),
    (sp.full() - sp.causal, 3, 3, """
        011
        001
        000"""),
    (sp.causal(sp.strided(2) | sp.sink(1)), 4, 4, """
        1000
        1100
        1010
        1101"""),
]


@pytest.mark.parametrize("p,q_len,kv_len,text", GOLDEN, ids=[str(g[0]) for g in GOLDEN])
def test_golden_mask(p, q_len, kv_len, text):
    want = M(text)
    assert want.shape == (q_len, kv_len)
    got = p.dense_mask(q_len, kv_len)
    assert got.dtype == bool
    np.testing.assert_array_equal(got.astype(int), want.astype(int))
    # and through the compiler, at a block size that makes every block partial
    layout = sp.compile(p, q_len, kv_len, block=16)
    np.testing.assert_array_equal(layout.to_dense()[0].astype(int), want.astype(int))


def test_golden_heads():
    h = sp.heads(sp.local(1), sp.sink(1))
    masks = h.dense_mask(3)
    assert masks.shape == (2, 3, 3)
    np.testing.assert_array_equal(masks[0], np.eye(3, dtype=bool))
    np.testing.assert_array_equal(masks[1], M("100\n100\n100"))
    with pytest.raises(TypeError, match="one mask per head"):
        h.allowed(np.arange(3)[:, None], np.arange(3)[None], None)


def test_random_blocks_are_deterministic_full_and_k_per_row():
    p = sp.random(2, seed=7, block=4)
    m = p.dense_mask(24, 32)
    blocks = m.reshape(6, 4, 8, 4)
    per_block = blocks.sum(axis=(1, 3))
    assert set(np.unique(per_block).tolist()) <= {0, 16}  # whole 4 x 4 blocks or nothing
    np.testing.assert_array_equal((per_block > 0).sum(axis=1), np.full(6, 2))  # k key blocks per query block
    np.testing.assert_array_equal(m, sp.random(2, seed=7, block=4).dense_mask(24, 32))
    assert not np.array_equal(m, sp.random(2, seed=8, block=4).dense_mask(24, 32))
    # a query block's choice does not depend on how many query blocks follow
    np.testing.assert_array_equal(sp.random(2, seed=7, block=4).dense_mask(8, 32), m[:8])
    # k beyond the number of key blocks: every key block
    assert sp.random(9, seed=1, block=4).dense_mask(8, 12).all()
    assert not sp.random(0, block=4).dense_mask(8, 12).any()


def test_document_tokens_past_the_end_attend_nothing_and_context_binding():
    d = sp.document()
    assert not d.is_static
    with pytest.raises(ValueError, match="cu_seqlens"):
        d.dense_mask(4)
    bound = d.bind({"cu_seqlens": [0, 2, 5]})
    assert bound == sp.document([0, 2, 5]) and bound.is_static
    np.testing.assert_array_equal(bound.dense_mask(6), M(GOLDEN[12][3]))
    assert sp.document([0, 3]).bind({"cu_seqlens": [0, 1]}) == sp.document([0, 3])  # already bound


def test_causality_claims():
    assert sp.causal.is_causal and sp.local(3, causal=True).is_causal
    assert (sp.local(3) & sp.causal).is_causal and sp.causal(sp.full()).is_causal
    assert not sp.local(3).is_causal and not (sp.local(2, causal=True) | sp.sink(2)).is_causal
    assert (sp.local(2, causal=True) | sp.causal(sp.sink(2))).is_causal
    assert (sp.causal - sp.sink(1)).is_causal and not (sp.full() - sp.causal).is_causal
    assert sp.heads(sp.causal, sp.local(2, causal=True)).is_causal
    assert not sp.heads(sp.causal, sp.local(2)).is_causal


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(sst.patterns(max_depth=3, heads_stacks=True), sst.lengths(1, 70), sst.lengths(1, 70))
def test_causal_claims_hold(p, n, kv):
    assert_causal(p, n, kv)


# ------------------------------------------------------------------------------------------
# printing and parsing
# ------------------------------------------------------------------------------------------
EXAMPLE_INSTANCES = {
    "local": [sp.local(3), sp.local(64, causal=True)],
    "strided": [sp.strided(7)],
    "blockstrided": [sp.blockstrided(3), sp.blockstrided(2, block=16)],
    "dilated": [sp.dilated(4), sp.dilated(4, dilation=3)],
    "landmark": [sp.landmark(every=8), sp.landmark(positions=[5, 1]), sp.landmark(every=16, positions=[3])],
    "sink": [sp.sink(4)],
    "random": [sp.random(2), sp.random(3, seed=5, block=16), sp.random(0)],
    "document": [sp.document(), sp.document([0, 3, 9])],
    "full": [sp.full()],
    "causal": [sp.causal],
    "heads": [sp.heads(sp.local(2), sp.strided(4) & sp.causal)],
}


def _registered_example(name):
    if name == "custom":
        fn = sp.register_predicate("tp_checker", lambda q, k: (q // 4) % 2 == (k // 4) % 2)
        return [sp.custom("tp_checker"), sp.custom(fn, name="tp_checker")]
    if name in EXAMPLE_INSTANCES:
        return EXAMPLE_INSTANCES[name]
    for args in ((), (4,), (2,)):  # families registered elsewhere: default or one small int argument
        try:
            return [REGISTRY[name](*args)]
        except (TypeError, ValueError):
            continue
    pytest.skip(f"no example instance for registered family {name!r}: add one to EXAMPLE_INSTANCES")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_family_prints_and_parses_back(name):
    for p in _registered_example(name):
        s = str(p)
        assert s.startswith(name), (name, s)
        assert_roundtrip(p)
        assert_roundtrip(p | sp.sink(1))
        assert_roundtrip(sp.local(2) - p if not isinstance(p, Heads) else p - sp.local(2))


def test_builtin_examples_parse_and_round_trip():
    assert set(sst.FAMILY_NAMES) <= set(REGISTRY)
    for text in sp.EXAMPLES.values():
        p = parse(text)
        assert_roundtrip(p)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(sst.patterns(max_depth=3, heads_stacks=True))
def test_roundtrip_random_compositions(p):
    assert_roundtrip(p)


@pytest.mark.parametrize("text,expected", [
    ("local(2) | strided(4) & causal", sp.local(2) | (sp.strided(4) & sp.causal)),
    ("(local(2) | strided(4)) & causal", (sp.local(2) | sp.strided(4)) & sp.causal),
    ("local(4) - sink(1) & causal", (sp.local(4) - sp.sink(1)) & sp.causal),
    ("local(4) - sink(1) - strided(2)", (sp.local(4) - sp.sink(1)) - sp.strided(2)),
    ("local(4) - (sink(1) - strided(2))", sp.local(4) - (sp.sink(1) - sp.strided(2))),
    ("causal(local(3))", sp.local(3) & sp.causal),
    ("local(window=3, causal=true)", sp.local(3, causal=True)),
    ("landmark(positions=[7, 2], every=4)", sp.landmark(every=4, positions=(2, 7))),
    ("  document( [0,4 , 9] )&causal ", sp.document([0, 4, 9]) & sp.causal),
    ("heads(local(2), sink(1)) & causal", sp.heads(sp.local(2) & sp.causal, sp.sink(1) & sp.causal)),
    ("full", sp.full()),
    ("causal", sp.causal),
])
def test_parse_precedence_and_syntax(text, expected):
    assert parse(text) == expected
    np.testing.assert_array_equal(np.asarray(parse(text).dense_mask(9)), np.asarray(expected.dense_mask(9)))


@pytest.mark.parametrize("text,col,expected", [
    ("local(2", 8, "expected ',' or ')'"),
    ("local(2))", 9, "expected an operator"),
    ("local(2) |", 11, "expected a pattern"),
    ("lokal(2)", 1, "unknown pattern 'lokal'; expected one of"),
    ("local(2) $ sink(1)", 10, "unexpected character '$'"),
    ("local(window=2, 3)", 17, "expected a keyword argument"),
    ("(local(2) | sink(1)", 20, "expected ')' to close the '(' at column 1"),
    ("landmark(every=2, every=3)", 19, "argument 'every' given twice"),
    ("", 1, "expected a pattern"),
    ("local", 6, "expected '(' and arguments after 'local'"),
    ("local(2) sink(1)", 10, "expected an operator"),
    ("local(2,)", 9, "expected a value"),
    ("landmark(positions=[1, 2)", 25, "expected ',' or ']'"),
    ("sink(1) | local(0)", 11, "bad arguments to local(...): local(window): expected an int >= 1, got 0"),
    ("local(2.5)", 1, "expected an int, got float 2.5"),
    ("causal(local(2), sink(1))", 1, "causal(...) takes exactly one pattern"),
])
def test_parse_errors_point_at_the_column(text, col, expected):
    with pytest.raises(PatternSyntaxError) as info:
        parse(text)
    e = info.value
    assert e.col + 1 == col, (e.col + 1, str(e))
    assert expected in str(e)
    lines = str(e).splitlines()
    assert f"at column {col}" in lines[0]
    assert lines[-2] == "  " + text and lines[-1] == "  " + " " * (col - 1) + "^"  # caret under the column


def test_parse_rejects_non_strings_and_never_evals():
    with pytest.raises(TypeError, match="expected a str"):
        parse(3)
    with pytest.raises(PatternSyntaxError, match="unexpected character"):
        parse("__import__('os').system('true')")
    assert parse(sp.local(2)) == sp.local(2)  # a pattern passes through


# ------------------------------------------------------------------------------------------
# constructors check their arguments
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,exc,pattern", [
    (lambda: sp.local(0), ValueError, r"local\(window\): expected an int >= 1, got 0"),
    (lambda: sp.local(-3), ValueError, "expected an int >= 1"),
    (lambda: sp.local(2.5), TypeError, r"local\(window\): expected an int, got float"),
    (lambda: sp.local(True), TypeError, "expected an int, got bool"),
    (lambda: sp.local(3, causal=1), TypeError, r"local\(causal=...\): expected a bool"),
    (lambda: sp.strided(0), ValueError, r"strided\(stride\)"),
    (lambda: sp.blockstrided(2, block=0), ValueError, r"blockstrided\(block\)"),
    (lambda: sp.dilated(3, dilation=0), ValueError, r"dilated\(dilation\)"),
    (lambda: sp.landmark(), ValueError, "expected every=<int> and/or positions"),
    (lambda: sp.landmark(every=0), ValueError, r"landmark\(every\)"),
    (lambda: sp.landmark(positions=[-1]), ValueError, r"positions >= 0"),
    (lambda: sp.sink(0), ValueError, r"sink\(n\)"),
    (lambda: sp.random(-1), ValueError, r"random\(k\)"),
    (lambda: sp.random(1, seed=-2), ValueError, r"random\(seed\)"),
    (lambda: sp.document([1, 4]), ValueError, "starting at 0"),
    (lambda: sp.document([0, 5, 3]), ValueError, "non-decreasing"),
    (lambda: sp.document([0]), ValueError, "at least two entries"),
    (lambda: sp.heads(), ValueError, "at least one pattern"),
    (lambda: sp.heads(sp.local(2), 3), TypeError, "argument 1 must be a Pattern"),
    (lambda: sp.heads(sp.heads(sp.local(2))), TypeError, "do not nest"),
    (lambda: sp.local(2) | 3, TypeError, "expected a Pattern on the right, got int"),
    (lambda: sp.local(2) & "causal", TypeError, "expected a Pattern on the right, got str"),
    (lambda: sp.causal(5), TypeError, r"causal\(...\): expected a Pattern"),
    (lambda: sp.heads(sp.local(1), sp.local(2)) | sp.heads(sp.sink(1)), ValueError,
     "expected 2 heads, got 1"),
    (lambda: sp.custom("tp_never_registered"), KeyError, "no predicate registered"),
    (lambda: sp.custom(42), TypeError, "callable predicate"),
])
def test_bad_constructor_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


# ------------------------------------------------------------------------------------------
# values: equality, hashing, immutability, heads distribution
# ------------------------------------------------------------------------------------------
def test_equality_and_hash():
    assert sp.local(3) == sp.local(3) and hash(sp.local(3)) == hash(sp.local(3))
    assert sp.local(3) != sp.local(4) and sp.local(3) != sp.local(3, causal=True)
    assert sp.local(3) != sp.dilated(3, dilation=1)  # same mask, different family
    assert sp.local(3) & sp.causal == sp.causal(sp.local(3))
    assert hash(sp.local(3) | sp.sink(2)) == hash(parse("local(3) | sink(2)"))
    assert sp.landmark(positions=[3, 1, 1]) == sp.landmark(positions=(1, 3))
    assert sp.document([0, 2, 5]) == sp.document((0, 2, 5)) == sp.document(np.array([0, 2, 5]))
    assert len({sp.local(3), sp.local(3), parse("local(3)"), sp.local(4)}) == 2
    assert sp.random(2, seed=1) != sp.random(2, seed=2)
    assert (sp.local(2) | sp.sink(1)) | sp.strided(3) == sp.local(2) | (sp.sink(1) | sp.strided(3))  # flattened
    d = {sp.local(3) & sp.causal: "a"}
    assert d[parse("local(3) & causal")] == "a"


def test_patterns_are_frozen():
    p = sp.local(3)
    with pytest.raises(Exception):
        p.window = 4
    assert p.window == 3


def test_heads_distribution():
    a, b, c = sp.local(2), sp.strided(3), sp.sink(1)
    assert sp.heads(a, b) & c == sp.heads(a & c, b & c)
    assert c | sp.heads(a, b) == sp.heads(c | a, c | b)
    assert sp.heads(a, b) - c == sp.heads(a - c, b - c)
    assert sp.causal(sp.heads(a, b)) == sp.heads(sp.causal(a), sp.causal(b))
    assert sp.heads(a, b) | sp.heads(c, a) == sp.heads(a | c, b | a)
    assert sp.heads([a, b]) == sp.heads(a, b)
    m = (sp.heads(a, b) & sp.causal).dense_mask(6)
    np.testing.assert_array_equal(m[1], (b & sp.causal).dense_mask(6))
    assert str(sp.heads(a, b)) == "heads(local(2), strided(3))"


# ------------------------------------------------------------------------------------------
# the parser on arbitrary token soup: a pattern that round-trips, or a PatternSyntaxError
# ------------------------------------------------------------------------------------------
SOUP = st.sampled_from([
    "local", "sink", "strided", "landmark", "document", "heads", "causal", "full", "random", "dilated",
    "(", ")", "[", "]", ",", "=", "|", "&", "-", "1", "0", "3", "2.5", "every", "positions", "seed", "true",
    "none", "'x'", " ", "window", "$",
])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(SOUP, max_size=12).map("".join))
def test_parse_token_soup(text):
    try:
        p = parse(text)
    except PatternSyntaxError as e:
        assert 0 <= e.col <= len(text), (text, e.col)
        return
    assert_roundtrip(p)


@pytest.mark.parametrize("text", ["local(", "heads(", "local(2, "])
def test_parse_truncated_argument_list_is_a_syntax_error(text):
    with pytest.raises(PatternSyntaxError, match="expected"):
        parse(text)


def test_parse_bare_name_needing_arguments_is_a_syntax_error():
    try:
        parse("landmark")
    except PatternSyntaxError as e:
        assert "landmark" in str(e) and "column" in str(e)
        return
    except ValueError as e:
        raise AssertionError(f"a ValueError without a column: {e}") from None
