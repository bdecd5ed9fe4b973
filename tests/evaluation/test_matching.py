"""Equal-cost matching against brute force over every parameter value."""

import numpy as np
import pytest

import spattern
from spattern.evaluation.matching import is_per_run, match, matched_patterns, measure_cost, with_seed
from spattern.utils.errors import UserError

N = 4096


def brute(fam, target, lo, hi, measure="block_density", block=64):
    text = fam.replace("{w}", "{}").replace("{s}", "{}")
    costs = np.array([measure_cost(text.format(k), N, block, measure) for k in range(lo, hi + 1)])
    gaps = np.abs(costs - target)
    best = np.flatnonzero(gaps == gaps.min()) + lo
    return best, costs[best[0] - lo]


def test_local_window_at_25_percent_matches_brute_force():
    fam = "local({w}) & causal"
    m = match(fam, 0.25, N, block=64)
    best, cost = brute(fam, 0.25, 1, N)
    assert m.method == "bisection" and m.evaluations < 40
    assert m.param == best[0] and m.achieved == cost  # the smallest of the equally close windows
    assert abs(m.param - best[0]) <= 64 and m.rel_gap == pytest.approx(abs(cost - 0.25) / 0.25)
    assert spattern.parse(m.pattern) == spattern.parse("local(%d) & causal" % m.param)


def test_decreasing_family_and_token_density():
    fam = "(local(64) | strided({s})) & causal"  # fewer blocks as the stride grows
    m = match(fam, 0.2, N, block=64, lo=16, hi=600)
    best, cost = brute(fam, 0.2, 16, 600)
    assert m.method == "bisection" and m.param == best[0] and m.achieved == cost
    md = match("local({w}) & causal", 0.1, N, block=64, measure="density")
    c = spattern.cost(md.pattern, N, block=(64, 64))
    assert md.achieved == pytest.approx(c.density)
    assert measure_cost(md.pattern, N, 64, "flops") == c.flops_fwd
    assert measure_cost(md.pattern, N, 64) == pytest.approx(c.block_density)


def test_non_monotone_family_falls_back_to_scan():
    def vee(k):  # window shrinks then grows again: not monotone in k
        return spattern.local(abs(k - 300) * 4 + 1) & spattern.causal

    m = match(vee, 0.15, N, block=64, lo=1, hi=600)
    costs = np.array([measure_cost(vee(k), N, 64) for k in range(1, 601)])
    gaps = np.abs(costs - 0.15)
    assert m.method == "scan" and m.param == int(np.flatnonzero(gaps == gaps.min())[0]) + 1
    big = match(vee, 0.15, N, block=64, lo=1, hi=600, max_scan=50)  # grid + refinement
    assert abs(big.achieved - 0.15) <= abs(costs[::12] - 0.15).min() + 1e-12


def test_unreachable_target_reports_gap_or_raises():
    m = match("local({w}) & causal", 0.9, N, block=64)
    full = measure_cost("causal", N, 64)
    assert m.achieved == full and m.rel_gap == pytest.approx((0.9 - full) / 0.9)
    assert "outside the reachable range" in m.note
    with pytest.raises(UserError, match=r"nearest is k = \d+ with .*relative gap"):
        match("local({w}) & causal", 0.9, N, block=64, tolerance=0.05)


def test_families_and_errors():
    fams = {"local": "local({w}) & causal", "sink": "(local({w}) | sink(64)) & causal",
            "strided": "(local(128) | strided({s})) & causal"}
    pats = matched_patterns(fams, 0.125, 2048, block=64)
    assert set(pats) == set(fams)
    for p in pats.values():
        assert abs(measure_cost(p, 2048, 64) - 0.125) / 0.125 < 0.05
    with pytest.raises(UserError, match="exactly one field"):
        match("local({a}) | strided({b})", 0.1, N)
    with pytest.raises(UserError, match="measure: expected one of"):
        match("local({w})", 0.1, N, measure="time")
    with pytest.raises(UserError, match="at parameter 0"):
        match("local({w}) & causal", 0.1, 256, lo=0, hi=10)


def test_content_dependent_family_is_matched_on_the_mean_over_contexts():
    from spattern.compiler import compile as compile_pattern
    from spattern.patterns.outline import text_tree

    texts = ["def f(x):\n    return x\n" * 12, "A paragraph of prose.\n\nAnother one here.\n" * 8]
    contexts = [{"tree": text_tree(t[:256])} for t in texts]
    m = match("outline(window={w}) & causal", 0.3, 256, block=(16, 16), contexts=contexts)
    per = [compile_pattern(m.pattern, 256, block=(16, 16), context=c) for c in contexts]
    mean = np.mean([L.nnz / (L.n_rows * L.n_cols) for L in per])
    assert m.achieved == pytest.approx(mean) and m.rel_gap < 0.1
    with pytest.raises(UserError, match="tree"):
        match("outline(window={w}) & causal", 0.3, 256, block=(16, 16))


def test_per_layer_family_is_one_pattern_per_layer_matched_on_their_mean():
    """A ``{layer}`` field: layer l's member has l in it, the parameter is shared by every layer, and the
    cost matched is the mean over the layers (brute force over the window)."""
    fam = "(local({w}) | random(2, seed={layer})) & causal"
    n, layers, target = 2048, 4, 0.125
    m = match(fam, target, n, block=64, layers=layers)
    assert isinstance(m.pattern, tuple) and len(m.pattern) == layers
    for i, p in enumerate(m.pattern):
        assert spattern.parse(p) == spattern.parse(f"(local({m.param}) | random(2, seed={i})) & causal")
    mean = lambda w: float(np.mean([measure_cost(fam.format(w=w, layer=i), n, 64) for i in range(layers)]))  # noqa: E731
    assert m.achieved == pytest.approx(mean(m.param))
    costs = np.array([mean(w) for w in range(1, 640)])
    assert abs(m.achieved - target) <= np.abs(costs - target).min() + 1e-12      # as close as any window
    assert measure_cost(m.pattern, n, 64) == pytest.approx(m.achieved)            # a tuple's cost: the mean
    draws = {measure_cost(p, n, 64) for p in m.pattern}
    assert len(draws) > 1                                                         # the layers' draws differ
    with pytest.raises(UserError, match=r"has a \{layer\} field: expected layers"):
        match(fam, target, n)
    with pytest.raises(UserError, match="one named field besides"):
        match("random(2, seed={layer}) & causal", target, n, layers=2)
    with pytest.raises(UserError, match=r"which has no \{layer\} field"):
        match("local({w}) & causal", target, n, layers=2)


def test_with_seed_puts_a_runs_seed_in_the_seed_field_and_leaves_the_rest():
    """``{seed}`` (a draw per run) is filled before matching; the other fields stay for ``match``;
    a ``{seed}`` with a format or a conversion, or a seed that is not an integer >= 0, is refused."""
    fam = "(local({w}) | random(2, block=16, seed={seed})) & causal"
    assert is_per_run(fam) and not is_per_run("local({w}) & causal") and not is_per_run(lambda w: w)
    assert with_seed(fam, 7) == "(local({w}) | random(2, block=16, seed=7)) & causal"
    both = with_seed("(local({w}) | random(1, seed={seed}{layer})) & causal", 3)
    assert both == "(local({w}) | random(1, seed=3{layer})) & causal"
    m = match(with_seed(fam, 7), 0.3, 256, block=16)
    assert spattern.parse(m.pattern) == spattern.parse(f"(local({m.param}) | random(2, block=16, seed=7)) & causal")
    with pytest.raises(UserError, match=r"expected the field \{seed\} as it is, with no format, got \{seed:03d\}"):
        with_seed("random(2, seed={seed:03d})", 1)
    with pytest.raises(UserError, match=r"seed: expected an integer >= 0 .*got -1"):
        with_seed(fam, -1)
