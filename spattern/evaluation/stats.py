"""Paired statistics for comparing two runs on the same examples, thin over scipy/statsmodels.

Notation: ``x`` (a run) and ``y`` (its baseline) are per-example values paired by position,
``d = x - y``, ``n = len(d)``.

- Mean difference ``mean(d)`` with a paired BCa bootstrap CI (``scipy.stats.bootstrap`` on
  ``(x, y)`` with ``paired=True``, statistic ``mean(x) - mean(y)``; Efron's bias-corrected and
  accelerated interval; resampling from a seeded ``numpy.random.Generator`` so it is reproducible).
- One-sample mean CI: the same BCa bootstrap of ``mean(x)``.
- Tests of ``H0: the distribution of d is symmetric about 0`` (two-sided by default):
  Wilcoxon signed-rank (``scipy.stats.wilcoxon`` on the nonzero d_i: zero differences are dropped
  first, so the method follows their number, not n; exact null distribution up to 50 without ties;
  with ties, the signs flipped over every assignment up to 2^15 of them, else seeded random flips
  (what ``scipy.stats.PermutationMethod`` computes, with T+ vectorized over the flips: ``_wilcoxon_flips``),
  never scipy's normal approximation below 51 nonzero pairs with ties; one nonzero difference: p = 1) and the paired
  permutation test (``scipy.stats.permutation_test`` with ``permutation_type="samples"``: the signs of
  the d_i are flipped at random, statistic ``mean(d)``; exact when 2^n <= n_resamples); and the
  paired t-test (``scipy.stats.ttest_rel``, ``H0: mean(d) = 0`` under normal d), the one that can
  reach small p with few pairs (3 seeds: the exact tests cannot go below p = 0.25).
- Holm's step-down correction over a family of p-values (what
  ``statsmodels.stats.multitest.multipletests(method="holm")`` computes, without its ``gc.collect()``):
  ``p_(i) -> max_{j<=i} min(1, (m - j + 1) p_(j))`` for sorted p-values.
- Effect sizes: Cohen's ``d_z = mean(d) / sd(d)`` (sd with ddof = 1) and the matched-pairs
  rank-biserial correlation ``r = (T+ - T-) / (T+ + T-)`` (T+/T-: sums of the ranks of |d_i| over
  positive/negative d_i, zeros dropped as in the Wilcoxon test).
- Seeds as the unit: ``per_seed_means`` turns values keyed by (seed, example) into one mean per
  seed, to be paired across runs by seed.

Degenerate cases, each explicit (never a scipy warning or a NaN):

- all ``d_i`` equal (e.g. identical inputs, or a constant shift): the bootstrap CI is the zero-width
  interval ``[d_0, d_0]``; if moreover ``d = 0``, both tests give ``p = 1``; ``d_z`` is ``None``
  (sd(d) = 0) with the reason in ``note``.
- ``n < 2``: no CI (``None``) and no ``d_z``, with the reason; both tests give p = 1 at n = 1.
- a BCa interval scipy cannot compute (too few distinct values): ``None`` with the reason.
- NaN/inf in an input: ``StatsInputError`` naming the argument.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats

from spattern.utils.errors import UserError

TESTS = ("wilcoxon", "permutation", "t")
N_RESAMPLES = 9999
MAX_RESAMPLE_ELEMENTS = 20_000_000  # resamples are drawn in batches of at most this many values (160 MB)


def _batch(n: int) -> int:
    return max(1, MAX_RESAMPLE_ELEMENTS // max(n, 1))


class StatsInputError(UserError, ValueError):
    """Values that cannot be tested (NaN, wrong shape, unequal lengths): names the argument."""


def as_values(x, name: str) -> np.ndarray:
    """float64 [n] from a sequence of numbers; NaN/inf or a non-1-D input is a ``StatsInputError``."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise StatsInputError(f"{name}: expected a sequence of numbers, got {type(x).__name__} ({e})") from None
    if a.ndim != 1:
        raise StatsInputError(f"{name}: expected a 1-D sequence of numbers, got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StatsInputError(f"{name}: expected finite numbers, got {int(bad.sum())} non-finite "
                              f"value(s) (first at index {i}: {a[i]})")
    return a


def _pair(x, y, xname: str = "x", yname: str = "y") -> tuple[np.ndarray, np.ndarray]:
    x, y = as_values(x, xname), as_values(y, yname)
    if x.size != y.size:
        raise StatsInputError(f"{xname}, {yname}: expected paired values of equal length, got {x.size} and {y.size}")
    if x.size == 0:
        raise StatsInputError(f"{xname}, {yname}: expected at least one pair, got none")
    return x, y


@dataclass(frozen=True)
class Interval:
    """A confidence interval of ``estimate``; ``low``/``high`` are None when it cannot be computed
    (``reason`` says why); ``reason`` also notes a zero-width interval from constant data."""

    estimate: float
    low: float | None
    high: float | None
    level: float
    n: int
    reason: str | None = None


def _bootstrap(data: tuple, statistic, level: float, n_resamples: int, seed: int, paired: bool,
               estimate: float, spread: np.ndarray, n: int | None = None) -> Interval:
    """BCa interval of ``statistic`` over ``data``; ``spread``: values whose constancy makes every resample
    the same; ``n``: the count the interval reports (default: the first sample's size)."""
    n = int(data[0].size) if n is None else n
    if n < 2:
        return Interval(estimate, None, None, level, n, f"n = {n} < 2: no confidence interval")
    if np.ptp(spread) == 0:  # constant: every resample gives the same statistic
        return Interval(estimate, estimate, estimate, level, n, "constant values: zero-width interval")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = scipy.stats.bootstrap(data, statistic, paired=paired, vectorized=True, method="BCa",
                                    confidence_level=level, n_resamples=n_resamples, batch=_batch(n),
                                    rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        why = "; ".join(sorted({str(w.message).split(".")[0] for w in caught})) or "non-finite bounds"
        return Interval(estimate, None, None, level, n, f"BCa interval undefined at n = {n} ({why})")
    return Interval(estimate, lo, hi, level, n)


def mean_ci(x, level: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0, name: str = "x") -> Interval:
    """BCa bootstrap CI of ``mean(x)`` (``scipy.stats.bootstrap``, ``method="BCa"``, seeded)."""
    x = as_values(x, name)
    if x.size == 0:
        raise StatsInputError(f"{name}: expected at least one value, got none")
    return _bootstrap((x,), np.mean, level, n_resamples, seed, False, float(x.mean()), x)


def _mean_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def paired_diff_ci(x, y, level: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """Paired BCa bootstrap CI of ``mean(x) - mean(y)`` (pairs resampled together)."""
    x, y = _pair(x, y)
    d = x - y
    return _bootstrap((x, y), _mean_diff, level, n_resamples, seed, True, float(d.mean()), d)


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p: float
    n: int
    note: str | None = None


def paired_test(x, y, test: str = "wilcoxon", alternative: str = "two-sided",
                n_resamples: int = N_RESAMPLES, seed: int = 0) -> TestResult:
    """p-value of ``H0: d = x - y is symmetric about 0``.

    ``"wilcoxon"``: ``scipy.stats.wilcoxon`` on the nonzero differences (see the module docstring for
    the method), statistic as scipy reports it (two-sided: min(T+, T-)).
    ``"permutation"``: ``scipy.stats.permutation_test`` on
    ``(x, y)`` with ``permutation_type="samples"`` (sign flips of d), statistic ``mean(d)``.
    ``"t"``: ``scipy.stats.ttest_rel(x, y)``, statistic t; all ``d_i`` equal and nonzero (sd 0):
    ``p = 0`` with the reason in ``note``.
    All ``d_i = 0``: ``p = 1`` (no evidence either way) without calling scipy."""
    if test not in TESTS:
        raise StatsInputError(f"test: expected one of {TESTS}, got {test!r}")
    x, y = _pair(x, y)
    d = x - y
    n = int(d.size)
    if not d.any():
        return TestResult(test, 0.0, 1.0, n, "all differences are zero: p = 1")
    if n == 1:  # both sign assignments of the one difference are equally extreme
        return TestResult(test, float(d[0]), 1.0, n, "n = 1: p = 1")
    if test == "t":
        if np.all(d == d[0]):
            return TestResult(test, math.copysign(math.inf, float(d[0])), 0.0, n,
                              "all differences equal and nonzero: sd(d) = 0, t infinite, p = 0")
        res = scipy.stats.ttest_rel(x, y, alternative=alternative)
        return TestResult(test, float(res.statistic), float(res.pvalue), n)
    if test == "wilcoxon":  # on the nonzero differences, so that scipy picks its method from their number
        nz = d[d != 0]
        zeros = n - int(nz.size)
        note = f"{zeros} zero difference(s) dropped" if zeros else None
        if nz.size == 1:
            return TestResult(test, 0.0, 1.0, n, f"{note}; one nonzero difference: p = 1")
        if nz.size <= 50 and np.unique(np.abs(nz)).size < nz.size:  # ties: sign flips, not the normal approx.
            flips = 2 ** int(nz.size)  # up to 13 differences every flip, as scipy's own method="auto" does
            exact = flips <= max(n_resamples, 2 ** 15)
            return _wilcoxon_flips(nz, alternative, flips if exact else n_resamples, seed, n, note)
        # exact without ties (n <= 50)
        res = scipy.stats.wilcoxon(nz, zero_method="wilcox", alternative=alternative, method="auto")
        return TestResult(test, float(res.statistic), float(res.pvalue), n, note)
    res = scipy.stats.permutation_test((x, y), lambda a, b, axis: np.mean(a - b, axis=axis),
                                       permutation_type="samples", vectorized=True, alternative=alternative,
                                       n_resamples=n_resamples, batch=_batch(n), rng=np.random.default_rng(seed))
    return TestResult(test, float(res.statistic), float(res.pvalue), n)


def _wilcoxon_flips(nz: np.ndarray, alternative: str, n_resamples: int, seed: int, n: int,
                    note: str | None) -> TestResult:
    """The Wilcoxon signed-rank test of the nonzero differences ``nz`` by sign flips: what
    ``scipy.stats.wilcoxon(nz, method=scipy.stats.PermutationMethod(n_resamples, rng=seed))`` computes (the
    same ``permutation_test`` of T+, the same draws, the same p), with T+ vectorized over the flips: scipy
    evaluates it one flip at a time (2^15 calls of its rank statistic, about 4 s a comparison). |d|, and so
    its ranks, are the same under every flip, so T+ of a flip is the sum of the ranks where it is positive.
    The reported statistic is scipy's: min(T+, T-) two-sided, else T+."""
    ranks = scipy.stats.rankdata(np.abs(nz))  # average ranks of the ties, as scipy's

    def t_plus(d, axis=-1):
        return np.sum((d > 0) * ranks, axis=axis)

    res = scipy.stats.permutation_test((nz,), t_plus, permutation_type="samples", vectorized=True,
                                       alternative=alternative, n_resamples=n_resamples,
                                       rng=np.random.default_rng(seed))
    t = float(t_plus(nz))
    stat = min(t, float(ranks.sum()) - t) if alternative == "two-sided" else t
    return TestResult("wilcoxon", stat, float(res.pvalue), n, note)


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm-adjusted p-values and rejections at ``alpha``: what
    ``statsmodels.stats.multitest.multipletests(p, alpha, method="holm")`` returns, step for step (its slow
    twin in the tests). Not a call of it: its Holm branch runs ``gc.collect()`` every time, 0.07 s in a
    small process and several times that in a large one (a test session), for each family of every table."""
    p = as_values(pvalues, "pvalues")
    if ((p < 0) | (p > 1)).any():
        raise StatsInputError(f"pvalues: expected values in [0, 1], got {p[(p < 0) | (p > 1)].tolist()}")
    if p.size == 0:
        return [], []
    order = np.argsort(p)
    ps, left = p[order], np.arange(p.size, 0, -1)  # sorted p; m - i + 1 hypotheses left at step i
    above = np.nonzero(ps > alpha / left)[0]  # step down: reject until the first p above alpha / (m - i + 1)
    reject_sorted = np.arange(p.size) < (above[0] if above.size else p.size)
    adj_sorted = np.minimum(np.maximum.accumulate(ps * left), 1.0)
    reject, p_adj = np.empty(p.size, bool), np.empty(p.size)
    reject[order], p_adj[order] = reject_sorted, adj_sorted
    return [float(v) for v in p_adj], [bool(r) for r in reject]


def cohen_dz(x, y) -> tuple[float | None, str | None]:
    """``d_z = mean(d) / sd(d)`` (ddof = 1); ``(None, reason)`` when n < 2 or sd(d) = 0."""
    x, y = _pair(x, y)
    d = x - y
    if d.size < 2:
        return None, f"n = {d.size} < 2: d_z undefined"
    sd = float(d.std(ddof=1))
    if sd == 0:
        return None, "sd of differences is 0: d_z undefined"
    return float(d.mean()) / sd, None


def rank_biserial(x, y) -> float | None:
    """Matched-pairs rank-biserial ``(T+ - T-) / (T+ + T-)`` over the nonzero ``d_i``
    (ranks of |d_i| by ``scipy.stats.rankdata``, ties averaged); None when every d_i is 0."""
    x, y = _pair(x, y)
    d = x - y
    d = d[d != 0]
    if d.size == 0:
        return None
    r = scipy.stats.rankdata(np.abs(d))
    t_plus, t_minus = float(r[d > 0].sum()), float(r[d < 0].sum())
    return (t_plus - t_minus) / (t_plus + t_minus)


@dataclass(frozen=True)
class PairedComparison:
    """Everything one paired comparison of ``x`` against ``y`` reports."""

    n: int
    mean_x: float
    mean_y: float
    diff: Interval
    test: TestResult
    cohen_dz: float | None
    rank_biserial: float | None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


def paired_compare(x, y, test: str = "wilcoxon", level: float = 0.95, n_resamples: int = N_RESAMPLES,
                   seed: int = 0, alternative: str = "two-sided") -> PairedComparison:
    """Mean difference with its BCa CI, the paired test, ``d_z`` and the rank-biserial r."""
    x, y = _pair(x, y)
    ci = paired_diff_ci(x, y, level, n_resamples, seed)
    t = paired_test(x, y, test, alternative, n_resamples, seed)
    dz, dz_note = cohen_dz(x, y)
    notes = tuple(s for s in (ci.reason, t.note, dz_note) if s)
    return PairedComparison(int(x.size), float(x.mean()), float(y.mean()), ci, t, dz, rank_biserial(x, y),
                            tuple(dict.fromkeys(notes)))


def per_seed_means(values: Mapping[tuple, float], require_same_examples: bool = True) -> dict:
    """``{(seed, example): value}`` -> ``{seed: mean over that seed's examples}`` (seeds sorted).

    Where training is involved the seed is the unit of replication: two runs are compared on their
    per-seed means, paired by seed. ``require_same_examples``: every seed must cover the same
    example ids (otherwise the means are not comparable), else a ``StatsInputError``."""
    groups: dict = {}
    for key, v in values.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise StatsInputError(f"values: expected keys (seed, example), got {key!r}")
        if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v)):
            raise StatsInputError(f"values[{key!r}]: expected a finite number, got {v!r}")
        groups.setdefault(key[0], {})[key[1]] = float(v)
    if require_same_examples and groups:
        sets = {s: frozenset(ex) for s, ex in groups.items()}
        first = next(iter(sets))
        for s, ex in sets.items():
            if ex != sets[first]:
                raise StatsInputError(f"values: seed {s!r} covers {len(ex)} examples, seed {first!r} "
                                      f"{len(sets[first])}; {len(ex ^ sets[first])} ids differ")
    return {s: float(np.mean(list(groups[s].values()))) for s in sorted(groups)}


@dataclass(frozen=True)
class StratifiedComparison:
    """A paired difference pooled over strata (e.g. corpora), each stratum weighted equally."""

    n: int
    mean_x: float          # the strata's mean of x, each stratum weighted equally
    mean_y: float
    diff: Interval         # mean over strata of mean(d) in the stratum, with its stratified BCa CI
    test: TestResult
    strata: dict           # name -> {"n", "mean_x", "mean_y", "diff"}
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


def stratified_compare(strata: Mapping[str, tuple], level: float = 0.95, n_resamples: int = N_RESAMPLES,
                       seed: int = 0, alternative: str = "two-sided") -> StratifiedComparison:
    """``strata``: name -> ``(x, y)``, values paired by position within the stratum (documents of one corpus);
    values of different strata are never paired. The pooled effect is ``mean_s mean(d_s)``: every stratum
    weighs the same whatever its size (a corpus with more documents does not dominate).

    CI: stratified BCa bootstrap, ``scipy.stats.bootstrap`` with one sample per stratum (``paired=False``:
    each stratum's differences resampled within it, its size kept). Test: the sign-flip permutation test
    of the pooled statistic (``scipy.stats.permutation_test`` on the differences, one sample,
    ``permutation_type="samples"``: each d_i's sign flipped at random, exact when 2^n <= n_resamples),
    ``H0: every stratum's d is symmetric about 0``. Every stratum needs two pairs or more."""
    if len(strata) < 2:
        raise StatsInputError(f"strata: expected two or more, got {len(strata)} ({', '.join(map(str, strata))})")
    ds, per = [], {}
    for name, xy in strata.items():
        if not (isinstance(xy, tuple) and len(xy) == 2):
            raise StatsInputError(f"strata[{name!r}]: expected a pair (x, y), got {type(xy).__name__}")
        x, y = _pair(*xy, xname=f"{name}/x", yname=f"{name}/y")
        if x.size < 2:
            raise StatsInputError(f"strata[{name!r}]: expected at least 2 pairs, got {x.size}")
        ds.append(x - y)
        per[str(name)] = {"n": int(x.size), "mean_x": float(x.mean()), "mean_y": float(y.mean()),
                          "diff": float((x - y).mean())}
    k = len(ds)
    estimate = float(np.mean([d.mean() for d in ds]))
    d_all = np.concatenate(ds)
    weights = np.concatenate([np.full(d.size, 1.0 / (k * d.size)) for d in ds])

    def pooled(*samples, axis=-1):
        return np.mean([np.mean(s, axis=axis) for s in samples], axis=0)

    # within-stratum deviations: constant in every stratum, every resample gives the same statistic
    spread = np.concatenate([d - d.mean() for d in ds])
    ci = _bootstrap(tuple(ds), pooled, level, n_resamples, seed, False, estimate, spread, n=int(d_all.size))
    if not d_all.any():
        test = TestResult("stratified_permutation", 0.0, 1.0, int(d_all.size), "all differences are zero: p = 1")
    else:
        perm = scipy.stats.permutation_test((d_all,), lambda d, axis: np.sum(d * weights, axis=axis),
                                            permutation_type="samples", vectorized=True, alternative=alternative,
                                            n_resamples=n_resamples, batch=_batch(int(d_all.size)),
                                            rng=np.random.default_rng(seed))
        test = TestResult("stratified_permutation", float(perm.statistic), float(perm.pvalue), int(d_all.size))
    notes = tuple(s for s in (ci.reason, test.note) if s)
    return StratifiedComparison(int(d_all.size), float(np.mean([p["mean_x"] for p in per.values()])),
                                float(np.mean([p["mean_y"] for p in per.values()])), ci, test, per, notes)
