"""Equal-cost matching: the parameter of a pattern family whose compiled layout costs what a target does.

A family is one free integer parameter ``k`` -> Pattern: a callable (``lambda w: local(w) & causal``)
or a template with one field (``"local({w}) & causal"``). A per-layer family adds the field ``{layer}``
(``"(local({w}) | random(2, seed={layer})) & causal"``): with ``layers = L`` a member is a tuple of L
patterns, layer l's with ``{layer}`` = l, and its cost is their mean (one parameter for every layer,
matched on what the whole model computes). An experiment's family may also have the field ``{seed}``
(``random(2, seed={seed})``: a random draw per run); the experiment puts each run's seed in it before
matching (``with_seed``), so matching itself never sees it. Cost measures at N tokens with blocks
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
    pattern: str | tuple[str, ...]  # one per layer for a per-layer family
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


LAYER = "layer"  # a per-layer family template's field for the layer's index
SEED = "seed"    # an experiment family's field for the run's seed (a draw per run)


def _fields(family: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(family) if f is not None}


def is_per_layer(family) -> bool:
    """True for a template with a ``{layer}`` field (its members are one pattern per layer)."""
    return isinstance(family, str) and LAYER in _fields(family)


def is_per_run(family) -> bool:
    """True for a template with a ``{seed}`` field (each run of an experiment draws its own member)."""
    return isinstance(family, str) and SEED in _fields(family)


def with_seed(family: str, seed: int) -> str:
    """``family`` with its ``{seed}`` field replaced by ``seed`` (the other fields stay, to be matched)."""
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise UserError(f"seed: expected an integer >= 0 for family {family!r}, got {seed!r}")
    odd = [f"{{{f}{'!' + c if c else ''}{':' + s if s else ''}}}" for _, f, s, c in string.Formatter().parse(family)
           if f == SEED and (s or c)]
    if odd:
        raise UserError(f"family {family!r}: expected the field {{{SEED}}} as it is, with no format, got {odd[0]}")
    return family.replace("{" + SEED + "}", str(seed))


def family_fn(family: Callable[[int], Pattern] | str,
              layers: int | None = None) -> tuple[Callable[[int], Pattern | tuple[Pattern, ...]], str]:
    """(param -> Pattern, a printable name) from a callable or a one-field template; for a per-layer
    template (a ``{layer}`` field and one more) and ``layers``, param -> one Pattern per layer."""
    if callable(family):
        return family, getattr(family, "__name__", repr(family))
    if not isinstance(family, str):
        raise UserError(f"family: expected a callable int -> Pattern or a template string, got {type(family).__name__}")
    fields = _fields(family)
    if LAYER in fields:
        if not (isinstance(layers, int) and not isinstance(layers, bool) and layers >= 1):
            raise UserError(f"family {family!r} has a {{{LAYER}}} field: expected layers = the model's layer count "
                            f"(an integer >= 1; in an experiment, [match] layers), got {layers!r}")
        free = fields - {LAYER}
        if len(free) != 1 or "" in free or any(f.isdigit() for f in free):
            raise UserError(f"family: expected a per-layer template with one named field besides {{{LAYER}}}, like "
                            f"'(local({{w}}) | random(2, seed={{{LAYER}}})) & causal', got {family!r}")
        (name,) = free
        return (lambda k: tuple(parse(family.format(**{name: k, LAYER: i})) for i in range(layers))), family
    if layers is not None:
        raise UserError(f"layers: given ({layers!r}) for family {family!r}, which has no {{{LAYER}}} field")
    if len(fields) != 1:
        raise UserError(f"family: expected a template with exactly one field like 'local({{w}}) & causal', "
                        f"got {family!r} ({len(fields)} fields)")
    (name,) = fields
    return (lambda k: parse(family.format(k) if name in ("", "0") else family.format(**{name: k}))), family


def measure_cost(pattern: Pattern | str | tuple, N: int, block=(64, 64), measure: str = "block_density",
                 head_dim: int = 64, contexts=None) -> float:
    """One cost measure (see the module docstring) of ``pattern`` compiled at N; for a
    content-dependent pattern, the mean over ``contexts`` (one compile per context, e.g. the
    structure of each evaluation document); for a tuple (one pattern per layer), the mean over its
    patterns."""
    if measure not in MEASURES:
        raise UserError(f"measure: expected one of {MEASURES}, got {measure!r}")
    if isinstance(pattern, tuple):
        if not pattern:
            raise UserError("pattern: expected one pattern per layer, got an empty tuple")
        return float(np.mean([measure_cost(p, N, block, measure, head_dim, contexts) for p in pattern]))
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


def smallest_param(fn, lo: int = 1, hi: int | None = None, reach: int = 64) -> int:
    """The first k >= ``lo`` (within ``reach`` of it, at most ``hi``) at which the family builds a pattern:
    most families start at 1, a top-k one at its forced blocks (``indexed(k, sink=1, local=3)``: k >= 4)."""
    last = lo + reach if hi is None else min(hi, lo + reach)
    err = None
    for k in range(lo, last + 1):
        try:
            fn(k)
            return k
        except ValueError as e:  # a PatternSyntaxError says which argument was refused
            err = e
    raise UserError(f"family: no parameter in [{lo}, {last}] builds a pattern (at {last}: {err})")


def match(family, target: float, N: int, block=(64, 64), measure: str = "block_density", lo: int | None = None,
          hi: int | None = None, head_dim: int = 64, tolerance: float | None = None, max_scan: int = 4096,
          contexts=None, layers: int | None = None) -> Match:
    """The k in ``[lo, hi]`` (default: from the family's first member, ``smallest_param``, to N) whose
    compiled cost is closest to ``target`` (for a content-dependent family, its mean cost over
    ``contexts``; for a per-layer family and ``layers``, the mean over the layers, and the pattern is
    one string per layer)."""
    fn, name = family_fn(family, layers)
    hi = N if hi is None else hi
    if lo is None:
        lo = smallest_param(fn, 1, hi)
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
    member = fn(best)
    pattern = tuple(str(p) for p in member) if isinstance(member, tuple) else str(member)
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
