"""Closed forms (sympy) against exact counts; bounds for compositions; growth classes; FLOPs."""

import pytest
import sympy

import spattern as sp
from spattern.compiler.complexity import N, asymptotic, closed_form, cost, evaluate_form

# (pattern, sizes where the closed forms are claimed exact: block 64 divides N)
EXACT = [
    "full()", "causal", "local(100)", "local(100) & causal", "local(7, causal=true)", "strided(40)",
    "strided(40) & causal", "dilated(9, dilation=3)", "dilated(9, dilation=3) & causal", "sink(70)",
    "sink(70) & causal", "landmark(every=128)", "landmark(every=128) & causal", "random(3, seed=2)",
    "blockstrided(3)", "blockstrided(3) & causal", "heads(local(64), strided(8))",
]


@pytest.mark.parametrize("text", EXACT)
@pytest.mark.parametrize("n", [512, 1024, 1536])
def test_pairs_closed_form_equals_exact_count(text, n):
    c = cost(text, n)
    assert c.pairs_exact, f"{text}: closed form not claimed exact at N={n}"
    assert c.pairs_closed_value == c.pairs


@pytest.mark.parametrize("text", [t for t in EXACT if not t.startswith("dilated")])
@pytest.mark.parametrize("n", [512, 1024])
def test_blocks_closed_form_equals_exact_count(text, n):
    c = cost(text, n)
    assert c.blocks_exact and c.blocks_closed_value == c.blocks, (text, c.blocks_closed_value, c.blocks)


@pytest.mark.parametrize("text", [
    "(local(512) | landmark(every=2048) | sink(64)) & causal", "local(64) | strided(16)",
    "local(200) & strided(3)", "local(300) - sink(10)",
])
@pytest.mark.parametrize("n", [1024, 4096])
def test_compositions_give_upper_bounds(text, n):
    c = cost(text, n)
    assert not c.pairs_exact
    assert c.pairs_closed_value >= c.pairs
    if c.blocks_closed_value is not None:
        assert c.blocks_closed_value >= c.blocks


def test_dilated_block_form_is_a_bound():
    c = cost("dilated(9, dilation=3)", 1024)
    assert c.pairs_exact and not c.blocks_exact and c.blocks_closed_value >= c.blocks


def test_closed_form_at_a_size_that_is_not_a_block_multiple():
    c = cost("local(37) & causal", 1000)  # pairs are exact for any N
    assert c.pairs_exact and c.pairs_closed_value == c.pairs
    assert not c.blocks_exact  # block counts are claimed only when 64 divides N


def test_general_forms_and_growth_classes():
    assert asymptotic(closed_form(sp.local(8), symbolic=True)[0]) == "O(N*w)"
    s_form = closed_form(sp.strided(8), symbolic=True)[0]
    assert asymptotic(s_form, s=sympy.sqrt(N)) == "O(N**(3/2))"
    assert asymptotic(closed_form(sp.full())[0]) == "O(N**2)"
    assert asymptotic(closed_form(sp.landmark(positions=[0, 9]))[0]) == "O(N)"
    w = sympy.Symbol("w", positive=True, integer=True)
    general = closed_form(sp.local(8) & sp.causal, symbolic=True)[0]
    assert sympy.simplify(general.args[-1][0] - (N * w - w * (w - 1) / 2)) == 0
    assert evaluate_form(general.subs(w, 8), 100) == cost("local(8) & causal", 100).pairs


def test_flops_and_bytes_follow_the_documented_formulas():
    c = cost("local(128) & causal", 2048, block=(64, 64), head_dim=128)
    assert c.flops_fwd == 4 * 64 * 64 * 128 * c.blocks
    assert c.flops_fwd_bwd == int(3.5 * c.flops_fwd)
    assert c.flops_useful == 4 * c.pairs * 128
    assert c.bytes_fwd == 2 * 2048 * 128 * 2 + 4 * 2048 + 2 * c.blocks * 64 * 128 * 2 + c.metadata_bytes
    dense = cost("full()", 2048, head_dim=128)
    assert dense.flops_fwd == 4 * 2048 * 2048 * 128


def test_custom_patterns_have_exact_counts_but_no_closed_form():
    p = sp.custom(lambda q, k: (q - k) % 5 == 0, name="mod5_for_cost")
    c = cost(p, 256)
    assert c.pairs_closed is None and c.pairs > 0
    with pytest.raises(ValueError, match="kind"):
        closed_form(sp.local(4), kind="area")
