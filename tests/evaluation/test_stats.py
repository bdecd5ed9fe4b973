"""stats.py against scipy/statsmodels called directly, and on cases with known answers."""

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from spattern.evaluation import stats
from spattern.utils.errors import UserError

RNG = np.random.default_rng(1234)
X = RNG.normal(1.0, 1.0, 40)
Y = X - 0.3 + RNG.normal(0, 0.5, 40)


def test_paired_diff_ci_matches_scipy_bootstrap():
    ci = stats.paired_diff_ci(X, Y, n_resamples=2000, seed=7)
    ref = scipy.stats.bootstrap((X, Y), lambda a, b, axis: a.mean(axis) - b.mean(axis), paired=True,
                                vectorized=True, method="BCa", n_resamples=2000, rng=np.random.default_rng(7))
    assert ci.low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert ci.high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert ci.estimate == pytest.approx((X - Y).mean())
    assert ci.low < ci.estimate < ci.high
    assert stats.paired_diff_ci(X, Y, n_resamples=2000, seed=7) == ci  # seeded: reproducible


def test_mean_ci_matches_scipy_bootstrap():
    ci = stats.mean_ci(X, level=0.9, n_resamples=1500, seed=3)
    ref = scipy.stats.bootstrap((X,), np.mean, method="BCa", confidence_level=0.9, n_resamples=1500,
                                rng=np.random.default_rng(3))
    assert (ci.low, ci.high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-12)


def test_tests_match_scipy():
    w = stats.paired_test(X, Y, "wilcoxon")
    assert w.p == pytest.approx(scipy.stats.wilcoxon(X, Y).pvalue, rel=1e-12)
    p = stats.paired_test(X, Y, "permutation", n_resamples=3000, seed=5)
    ref = scipy.stats.permutation_test((X, Y), lambda a, b, axis: np.mean(a - b, axis=axis), vectorized=True,
                                       permutation_type="samples", n_resamples=3000, rng=np.random.default_rng(5))
    assert p.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert p.statistic == pytest.approx((X - Y).mean())


def test_small_n_permutation_is_exact():
    x, y = np.array([3.0, 2.0, 5.0, 4.0]), np.zeros(4)  # all positive: 1 of 16 sign patterns each side
    assert stats.paired_test(x, y, "permutation").p == pytest.approx(2 / 16)
    assert stats.paired_test(x, y, "wilcoxon").p == pytest.approx(2 / 16)


def test_wilcoxon_with_zeros_is_exact_on_the_nonzero_differences():
    """scipy picks exact vs normal approximation from n counting the zeros it drops; the test here drops
    them first. 10 zeros and 5 of +1 (15 pairs): the exact p of 5 equal signs, 2/2^5, not the normal
    approximation's 0.025; one nonzero difference: p = 1; 8 zeros and 7 ties: 2/2^7."""
    x, y = np.array([1.0] * 5 + [0.0] * 10), np.zeros(15)
    assert scipy.stats.wilcoxon(x, y).pvalue < 0.03  # what scipy gives when it sees the zeros
    r = stats.paired_test(x, y, "wilcoxon")
    assert r.p == pytest.approx(2 / 2 ** 5) and r.n == 15 and "10 zero" in r.note
    assert stats.paired_test(np.array([1.0] + [0.0] * 14), np.zeros(15), "wilcoxon").p == 1.0
    assert stats.paired_test(np.array([-1.0] * 7 + [0.0] * 8), np.zeros(15), "wilcoxon").p == pytest.approx(2 / 2 ** 7)
    # continuous differences without zeros: scipy's exact test as before
    assert stats.paired_test(X[:20], Y[:20], "wilcoxon").p == pytest.approx(scipy.stats.wilcoxon(X[:20], Y[:20]).pvalue)


def test_wilcoxon_with_many_ties_flips_signs_instead_of_a_normal_approximation():
    """15 nonzero differences, all equal (a passkey trial retrieved by one run and not the other):
    every one of the 2^15 sign assignments, so p is the sign test's 2/2^15; 20 tied differences: seeded
    random flips, reproducible, at least the exact value (the observed assignment counts)."""
    r = stats.paired_test(np.zeros(15), np.ones(15), "wilcoxon")
    assert r.p == pytest.approx(scipy.stats.binomtest(0, 15).pvalue)
    d = np.array([1.0, -1.0, 2.0, 2.0] * 5)
    a, b = (stats.paired_test(d, np.zeros(20), "wilcoxon", seed=3).p for _ in range(2))
    assert a == b and 0 < a <= 1


def test_identical_inputs_give_p1_and_zero_ci():
    r = stats.paired_compare(X, X.copy())
    assert r.test.p == 1.0 and r.diff.estimate == 0.0
    assert (r.diff.low, r.diff.high) == (0.0, 0.0)
    assert r.cohen_dz is None and r.rank_biserial is None
    assert any("zero" in n for n in r.notes)
    assert stats.paired_test(X, X, "permutation").p == 1.0


def test_constant_shift_tiny_p_ci_contains_shift():
    y = RNG.normal(0, 1, 60)
    r = stats.paired_compare(y + 2.5, y)
    assert r.test.p < 1e-8
    assert r.diff.low <= 2.5 <= r.diff.high and r.diff.high - r.diff.low < 1e-9
    noisy = stats.paired_compare(y + 2.5 + RNG.normal(0, 0.1, 60), y, test="permutation", n_resamples=2000)
    assert noisy.test.p <= 1 / 2000 * 2 and noisy.diff.low < 2.5 < noisy.diff.high
    assert noisy.cohen_dz > 10


def test_holm_hand_checked_and_against_statsmodels():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, max(0.06, 1*0.04)=0.06
    adj, rej = stats.holm(p, alpha=0.05)
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rej == [True, False, False, True]
    assert adj == pytest.approx(multipletests(p, method="holm")[1].tolist())
    assert stats.holm([]) == ([], [])
    with pytest.raises(stats.StatsInputError, match="pvalues"):
        stats.holm([0.5, 1.5])


@pytest.mark.parametrize("seed", range(40))
def test_holm_equals_statsmodels_exactly(seed):
    """stats.holm is statsmodels' Holm without its gc.collect(): the same adjusted p (bit for bit) and the
    same rejections, with ties, ones, zeros and p-values on the step-down's boundaries alpha / k."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 30))
    alpha = float(rng.choice([0.05, 0.01, 0.1]))
    pool = np.concatenate([rng.uniform(0, 0.2, 20), rng.uniform(0, 1, 5), [0.0, 1.0],
                           alpha / np.arange(1, m + 1)])  # boundaries: rejected or not by a hair
    p = rng.choice(pool, m)  # drawn with replacement: ties
    adj, rej = stats.holm(p, alpha=alpha)
    want_rej, want_adj, _, _ = multipletests(p, alpha=alpha, method="holm")
    assert adj == want_adj.tolist() and rej == want_rej.tolist()


def test_effect_sizes_known_values():
    x, y = np.array([2.0, 4.0, 3.0, 1.0]), np.array([1.0, 1.0, 1.0, 2.0])  # d = 1, 3, 2, -1
    dz, _ = stats.cohen_dz(x, y)
    assert dz == pytest.approx(1.25 / np.std([1, 3, 2, -1], ddof=1))
    # |d| ranks: 1 -> 1.5, 3 -> 4, 2 -> 3, 1 -> 1.5; T+ = 8.5, T- = 1.5
    assert stats.rank_biserial(x, y) == pytest.approx((8.5 - 1.5) / 10)


def test_degenerate_small_n_and_bad_inputs():
    r = stats.paired_compare([1.0], [0.0])
    assert r.n == 1 and r.diff.low is None and r.diff.high is None and "n = 1" in r.diff.reason
    assert r.cohen_dz is None and r.test.p == 1.0
    assert stats.mean_ci([3.0]).low is None
    assert stats.paired_test([1.0], [0.0], "permutation").p == 1.0
    with pytest.raises(stats.StatsInputError, match="baseline_values"):
        stats.as_values([1.0, float("nan")], "baseline_values")
    with pytest.raises(UserError, match="x, y: expected paired values of equal length"):
        stats.paired_compare([1.0, 2.0], [1.0])
    with pytest.raises(stats.StatsInputError, match="y: expected finite"):
        stats.paired_test([1.0, 2.0], [1.0, float("inf")])
    with pytest.raises(stats.StatsInputError, match="test: expected one of"):
        stats.paired_test([1.0, 2.0], [1.0, 3.0], test="ttest")


def test_per_seed_means():
    vals = {(0, "a"): 1.0, (0, "b"): 3.0, (1, "a"): 2.0, (1, "b"): 2.0}
    assert stats.per_seed_means(vals) == {0: 2.0, 1: 2.0}
    with pytest.raises(stats.StatsInputError, match="seed 1"):
        stats.per_seed_means({(0, "a"): 1.0, (0, "b"): 2.0, (1, "a"): 2.0})
    assert stats.per_seed_means({(0, "a"): 1.0, (1, "b"): 2.0}, require_same_examples=False) == {0: 1.0, 1: 2.0}
    with pytest.raises(stats.StatsInputError, match="finite"):
        stats.per_seed_means({(0, "a"): float("nan")})


def test_paired_t_test_is_scipy_ttest_rel_with_explicit_degenerate_cases():
    import scipy.stats as ss

    from spattern.evaluation.stats import paired_test

    x, y = np.array([3.1, 3.3, 3.2]), np.array([3.0, 3.05, 3.12])
    r = paired_test(x, y, test="t")
    assert r.p == pytest.approx(ss.ttest_rel(x, y).pvalue) and r.statistic == pytest.approx(ss.ttest_rel(x, y).statistic)
    assert paired_test(x, y, test="wilcoxon").p == 0.25          # what three seeds allow an exact test
    shift = paired_test(y + 0.1, y, test="t")
    assert shift.p == 0.0 and "sd(d) = 0" in shift.note
    assert paired_test(y, y, test="t").p == 1.0


def test_stratified_compare_weighs_each_stratum_equally_and_pairs_only_within_one():
    """Two pairs shifted by 1 and twenty unshifted: the pooled difference is 0.5, not 1/11; the CI holds
    it; a clear shift in every stratum gets a small p, none at all p = 1."""
    from spattern.evaluation.stats import stratified_compare

    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 2)
    b = rng.normal(0, 1, 20)
    c = stratified_compare({"a": (a + 1.0, a), "b": (b, b.copy())})
    assert c.diff.estimate == pytest.approx(0.5) and c.n == 22
    assert c.strata == {"a": {"n": 2, "mean_x": pytest.approx(a.mean() + 1), "mean_y": pytest.approx(a.mean()),
                              "diff": pytest.approx(1.0)},
                        "b": {"n": 20, "mean_x": pytest.approx(b.mean()), "mean_y": pytest.approx(b.mean()),
                              "diff": 0.0}}
    x1, x2 = rng.normal(1, 0.1, 10), rng.normal(2, 0.1, 16)
    shifted = stratified_compare({"p": (x1 + 0.2 + rng.normal(0, 0.05, 10), x1),
                                  "q": (x2 + 0.1 + rng.normal(0, 0.05, 16), x2)})
    assert shifted.test.test == "stratified_permutation" and shifted.test.p < 0.001
    assert shifted.diff.low < shifted.diff.estimate < shifted.diff.high and shifted.diff.low > 0.1
    null = stratified_compare({"p": (x1, x1.copy()), "q": (x2, x2.copy())})
    assert null.test.p == 1.0 and (null.diff.low, null.diff.high) == (0.0, 0.0) and null.notes


def test_stratified_compare_refuses_what_it_cannot_pool():
    from spattern.evaluation.stats import StatsInputError, stratified_compare

    with pytest.raises(StatsInputError, match="two or more"):
        stratified_compare({"only": ([1.0, 2.0], [1.0, 1.0])})
    with pytest.raises(StatsInputError, match=r"strata\['b'\]: expected at least 2 pairs, got 1"):
        stratified_compare({"a": ([1.0, 2.0], [1.0, 1.0]), "b": ([1.0], [0.0])})
    with pytest.raises(StatsInputError, match="expected a pair"):
        stratified_compare({"a": ([1.0, 2.0], [1.0, 1.0]), "b": [1.0, 0.0]})


@pytest.mark.parametrize("n, alternative", [(8, "two-sided"), (10, "greater"), (13, "two-sided"), (15, "two-sided"),
                                            (16, "greater"), (20, "less"), (30, "two-sided")])
def test_the_vectorized_wilcoxon_sign_flips_equal_scipys_permutation_method(n, alternative):
    """With ties and up to 50 nonzero differences the Wilcoxon p comes from sign flips; stats evaluates T+
    over all flips at once. Its slow twin, scipy.stats.wilcoxon with a PermutationMethod (the same flips,
    exhaustive up to 2^15, else the same seeded draws; up to 13 what its method="auto" does), gives the same
    p and statistic."""
    rng = np.random.default_rng(n)
    x = np.round(rng.normal(0.3, 1.0, n), 1)  # one decimal: ties
    y = np.zeros(n)
    nz = x[x != 0]
    assert nz.size >= 2 and np.unique(np.abs(nz)).size < nz.size
    got = stats.paired_test(x, y, "wilcoxon", alternative=alternative, seed=7)
    if nz.size <= 13:
        auto = scipy.stats.wilcoxon(nz, zero_method="wilcox", alternative=alternative, method="auto")
        assert got.p == float(auto.pvalue) and got.statistic == float(auto.statistic)
    flips = 2 ** nz.size
    method = scipy.stats.PermutationMethod(n_resamples=flips if flips <= 2 ** 15 else stats.N_RESAMPLES,
                                           rng=np.random.default_rng(7))
    want = scipy.stats.wilcoxon(nz, zero_method="wilcox", alternative=alternative, method=method)
    assert got.p == float(want.pvalue) and got.statistic == float(want.statistic)
