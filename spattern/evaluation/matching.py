"""Equal-cost matching: the parameter of a pattern family whose compiled layout costs what a target does.

A family is one free integer parameter ``k`` -> Pattern: a callable (``lambda w: local(w) & causal``)
or a template with one field (``"local({w}) & causal"``). Cost measures at N tokens with blocks
``(bq, bk)``, from the compiled layout's exact counts (``spattern.compile``; no closed form):

- ``block_density = nnz / (G * R * C)`` (computed blocks over all blocks; R, C = blocks per
  row/column, G = layout groups) -- what a block-sparse kernel pays;
- ``density = pairs / (G * N^2)`` (attended token pairs; ``layout.stats()["density"]``);
- ``flops = 4 * bq * bk * D * nnz`` (forward FLOPs on computed blocks, per batch element; equals
  ``spattern.cost(...).flops_fwd``).

Search: when the cost is monotone in k over ``[lo, hi]`` (checked on 17 spread points), bisection
finds the smallest k with ``g(k) >= target`` (g = cost, or -cost for decreasing families); the answer
is the closer of k and k - 1, and among parameters of equal cost the smallest (a second
bisection). Otherwise a scan (every k, or a grid of ``max_scan`` points refined between grid
neighbours). The result reports the achieved cost, the target and the relative gap
``|achieved - target| / target``; a target out of reach returns the nearest with its gap, or a
``UserError`` when ``tolerance`` is given and exceeded.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np

from spattern.compiler import compile as compile_pattern
from spattern.patterns import Pattern, parse
from spattern.utils.errors import UserError

MEASURES = ("block_density", "density", "flops")


@dataclass(frozen=True)
class Match:
    family: str
    param: int
    pattern: str
    achieved: float
    target: float
    rel_gap: float
    measure: str
    N: int
    block: tuple[int, int]
    method: str  # "bisection" or "scan"
    evaluations: int
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def family_fn(family: Callable[[int], Pattern] | str) -> tuple[Callable[[int], Pattern], str]:
    """(param -> Pattern, a printable name) from a callable or a one-field template."""
    if callable(family):
        return family, getattr(family, "__name__", repr(family))
    if not isinstance(family, str):
        raise UserError(f"family: expected a callable int -> Pattern or a template string, got {type(family).__name__}")
    fields = {f for _, f, _, _ in string.Formatter().parse(family) if f is not None}
    if len(fields) != 1:
        raise UserError(f"family: expected a template with exactly one field like 'local({{w}}) & causal', "
                        f"got {family!r} ({len(fields)} fields)")
    (name,) = fields
    return (lambda k: parse(family.format(k) if name in ("", "0") else family.format(**{name: k}))), family


def measure_cost(pattern: Pattern | str, N: int, block=(64, 64), measure: str = "block_density",
                 head_dim: int = 64, contexts=None) -> float:
    """One cost measure (see the module docstring) of ``pattern`` compiled at N; for a
    content-dependent pattern, the mean over ``contexts`` (one compile per context, e.g. the
    structure of each evaluation document)."""
    if measure not in MEASURES:
        raise UserError(f"measure: expected one of {MEASURES}, got {measure!r}")
    if contexts is not None:
        if not contexts:
            raise UserError("contexts: expected at least one context, got none")
        return float(np.mean([_cost_of(compile_pattern(pattern, N, block=block, context=c), measure, head_dim)
                              for c in contexts]))
    return _cost_of(compile_pattern(pattern, N, block=block), measure, head_dim)


def _cost_of(layout, measure: str, head_dim: int) -> float:
    if measure == "density":
        return float(layout.stats()["density"])
    if measure == "flops":
        return float(4 * layout.block_q * layout.block_k * head_dim * layout.nnz)
    return layout.nnz / (layout.n_groups * layout.n_rows * layout.n_cols)


def _monotone(values: list[float]) -> int:
    """+1 nondecreasing, -1 nonincreasing, 0 neither (or constant)."""
    d = np.diff(values)
    if (d >= 0).all() and (d > 0).any():
        return 1
    if (d <= 0).all() and (d < 0).any():
        return -1
    return 0


def match(family, target: float, N: int, block=(64, 64), measure: str = "block_density", lo: int = 1,
          hi: int | None = None, head_dim: int = 64, tolerance: float | None = None, max_scan: int = 4096,
          contexts=None) -> Match:
    """The k in ``[lo, hi]`` (default ``[1, N]``) whose compiled cost is closest to ``target``
    (for a content-dependent family, its mean cost over ``contexts``)."""
    fn, name = family_fn(family)
    hi = N if hi is None else hi
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
        raise UserError(f"lo, hi: expected integers 0 <= lo <= hi, got {lo!r}, {hi!r}")
    if not (isinstance(target, (int, float)) and target > 0):
        raise UserError(f"target: expected a positive number, got {target!r}")
    cache: dict[int, float] = {}

    def f(k: int) -> float:
        if k not in cache:
            try:
                cache[k] = measure_cost(fn(k), N, block, measure, head_dim, contexts)
            except UserError:
                raise
            except Exception as e:
                raise UserError(f"family {name!r} at parameter {k}: {type(e).__name__}: {e}") from None
        return cache[k]

    probes = sorted({int(round(v)) for v in np.linspace(lo, hi, 17)})
    sign = _monotone([f(k) for k in probes]) if len(probes) > 1 else 0
    if sign:
        best, method = _bisect(lambda k: sign * f(k), sign * target, lo, hi), "bisection"
        # the probes only sample; a violation next to the answer means it is not monotone there
        if any(sign * (f(b) - f(a)) < 0 for a, b in ((best - 1, best), (best, best + 1)) if lo <= a and b <= hi):
            sign = 0
    if not sign:
        best, method = _scan(f, target, lo, hi, max_scan), "scan"
    achieved = f(best)
    gap = abs(achieved - target) / target
    lo_c, hi_c = min(cache.values()), max(cache.values())
    note = None
    if not lo_c <= target <= hi_c:
        note = (f"target {target:.6g} is outside the reachable range [{lo_c:.6g}, {hi_c:.6g}] (seen) "
                f"over k in [{lo}, {hi}]")
    if tolerance is not None and gap > tolerance:
        raise UserError(f"family {name!r}: no parameter in [{lo}, {hi}] reaches {measure} = {target:.6g} at N = {N} "
                        f"within {tolerance:.3g}; nearest is k = {best} with {achieved:.6g} (relative gap {gap:.3g})")
    pattern = str(fn(best))
    bq, bk = (block, block) if isinstance(block, int) else tuple(block)
    return Match(name, best, pattern, achieved, float(target), gap, measure, N, (bq, bk), method, len(cache), note)


def _bisect(g: Callable[[int], float], t: float, lo: int, hi: int) -> int:
    """For nondecreasing g: the k closest to t (ties: smallest k, also among equal g)."""

    def first_at_least(v: float) -> int:  # smallest k with g(k) >= v, or hi + 1
        a, b = lo, hi + 1
        while a < b:
            m = (a + b) // 2
            a, b = (m + 1, b) if g(m) < v else (a, m)
        return a

    k = first_at_least(t)
    cands = [c for c in (k - 1, k) if lo <= c <= hi]
    best = min(cands, key=lambda c: (abs(g(c) - t), c))
    return first_at_least(g(best))  # the smallest k with the same cost


def _scan(f: Callable[[int], float], t: float, lo: int, hi: int, max_scan: int) -> int:
    ks = range(lo, hi + 1) if hi - lo + 1 <= max_scan else sorted({int(v) for v in np.linspace(lo, hi, max_scan)})
    ks = list(ks)
    i = min(range(len(ks)), key=lambda j: (abs(f(ks[j]) - t), ks[j]))
    if len(ks) == hi - lo + 1:
        return ks[i]
    a, b = ks[max(i - 1, 0)], ks[min(i + 1, len(ks) - 1)]  # refine between the grid neighbours
    return min(range(a, b + 1), key=lambda k: (abs(f(k) - t), k))


def match_families(families: Mapping[str, object], target: float, N: int, block=(64, 64),
                   measure: str = "block_density", **kw) -> dict[str, Match]:
    """``{name: family}`` -> ``{name: Match}`` at one target (``m.pattern`` is the pattern string)."""
    return {name: match(fam, target, N, block, measure, **kw) for name, fam in families.items()}


def matched_patterns(families: Mapping[str, object], target: float, N: int, block=(64, 64),
                     measure: str = "block_density", **kw) -> dict[str, str]:
    """``{name: pattern string}`` at equal cost (the convenience for experiment configs)."""
    return {name: m.pattern for name, m in match_families(families, target, N, block, measure, **kw).items()}
