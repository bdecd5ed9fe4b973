"""Costs of a pattern: sympy closed forms, exact counts, FLOPs, bytes, metadata memory.

Closed forms live with each family (``pairs_expr(N, causal)``, ``blocks_expr(N, b, causal)``);
this module composes them:

- a family alone, or ``family & causal``: the family's own (causal) form, exact under the
  conditions its docstring states (e.g. blocks of ``local`` when b divides N);
- ``a | b | ...``: the sum of the parts' forms, an upper bound (overlaps are counted twice);
- ``a & b`` (other than with causal): the minimum of the parts' forms, an upper bound;
- ``(a | b) & causal``: the sum of the parts' causal forms, an upper bound;
- ``a - b``: the form of ``a``, an upper bound;
- ``heads(p0, p1, ...)``: the sum over heads (exact when every head's is).

Exact counts come from the compiled layout (full blocks by area, partial blocks by popcount).

FLOPs (per batch element and head): the forward pass computes S = Q K^T and O = P V on every
computed block, 2 * block_q * block_k * D multiply-adds each, so 4 * block_q * block_k * D FLOPs
per block (the convention of FlashAttention's benchmarks, FLOPs = 4 * N^2 * D for dense).
The backward pass of FlashAttention-2 does five such products (recompute S, dV = P^T dO,
dP = dO V^T, dQ = dS K, dK = dS^T Q: Dao 2023, Alg. 2), 2.5x the forward's two, so forward plus
backward = 3.5x forward.

Bytes (forward, per batch element and head, element size e): Q and O once each (2 * N * D * e),
the LSE (4 * N), and K and V once per computed block (2 * nnz * block_k * D * e: no reuse across
query blocks assumed, an upper bound that L2 reuse lowers), plus the layout metadata.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import sympy as sp

from spattern.compiler.compile import compile as compile_pattern
from spattern.patterns.base import Difference, Heads, Intersection, Pattern, Union
from spattern.patterns.full import Causal

N = sp.Symbol("N", positive=True, integer=True)

# the general (parameter-symbolic) forms: constructor field -> (keyword of the family's
# pairs_expr/blocks_expr, printed symbol). landmark's spacing prints as `every`, never `e`,
# which reads like Euler's number in a growth class (O(N**2/every), not O(N**2/e)).
_PARAM_SYMBOLS = {"window": ("w", "w"), "stride": ("s", "s"), "dilation": ("d", "d"), "n": ("n", "n"),
                  "block": ("B", "B"), "every": ("e", "every")}


def _family_exact(p: Pattern, kind: str, n_val, b) -> bool:
    """Whether a family's closed form is exact at N = n_val (None: symbolically, in general)."""
    name = p.name
    divides = lambda m: n_val is None or (int(n_val) % int(m) == 0)  # noqa: E731
    if kind == "pairs":
        if name in ("full", "causal", "local", "strided", "dilated", "sink", "landmark"):
            return True
        if name == "document":  # exact once N covers the packed sequence (later tokens attend nothing)
            return n_val is None or int(n_val) >= p.cu_seqlens[-1]
        if name in ("random", "blockstrided"):
            return divides(p.block) and (name != "random" or n_val is None or p.k <= int(n_val) // p.block)
        return False
    # blocks
    if name in ("full", "causal", "sink"):
        return True
    if name in ("local", "strided"):
        return divides(b)
    if name == "landmark":
        return divides(b)
    if name == "random":
        return b == p.block and divides(b) and (n_val is None or p.k <= int(n_val) // b)
    if name == "blockstrided":
        return b == p.block and divides(b)
    return False  # dilated: bound


def closed_form(pattern: Pattern, kind: str = "pairs", b: int | None = None, causal: bool = False,
                symbolic: bool = False):
    """(expr in the symbol N, exact) for the number of pairs or blocks, or None if unknown.

    ``symbolic=True`` keeps the family parameters as symbols (w, s, d, n, B, every) where it can.
    """
    if kind not in ("pairs", "blocks"):
        raise ValueError(f"kind: expected 'pairs' or 'blocks', got {kind!r}")
    if kind == "blocks" and b is None:
        raise ValueError("kind='blocks' needs the block size b")
    p = pattern
    if isinstance(p, Heads):
        forms = [closed_form(h, kind, b, causal, symbolic) for h in p.patterns]
        if any(f is None for f in forms):
            return None
        return sp.Add(*[f[0] for f in forms]), all(f[1] for f in forms)
    if isinstance(p, Intersection):
        causal_parts = [q for q in p.parts if isinstance(q, Causal)]
        rest = [q for q in p.parts if not isinstance(q, Causal)]
        if causal_parts and len(rest) == 1:
            return closed_form(rest[0], kind, b, True, symbolic)
        if causal_parts and not rest:
            return closed_form(causal_parts[0], kind, b, False, symbolic)
        forms = [closed_form(q, kind, b, causal, symbolic) for q in p.parts]
        forms = [f for f in forms if f is not None]
        if not forms:
            return None
        return (forms[0][0] if len(forms) == 1 else sp.Min(*[f[0] for f in forms])), False
    if isinstance(p, Union):
        forms = [closed_form(q, kind, b, causal, symbolic) for q in p.parts]
        if any(f is None for f in forms):
            return None
        return sp.Add(*[f[0] for f in forms]), False
    if isinstance(p, Difference):
        f = closed_form(p.left, kind, b, causal, symbolic)
        return None if f is None else (f[0], False)
    # a family
    fn = p.pairs_expr if kind == "pairs" else p.blocks_expr
    kwargs: dict[str, Any] = {}
    if symbolic:
        params = inspect.signature(fn).parameters
        for field, (keyword, sym) in _PARAM_SYMBOLS.items():
            if keyword in params and getattr(p, field, None) is not None:
                kwargs[keyword] = sp.Symbol(sym, positive=True, integer=True)
    args = (N, causal) if kind == "pairs" else (N, b, causal)
    expr = fn(*args, **kwargs)
    if expr is None:
        return None
    return sp.sympify(expr), _family_exact(p, kind, None, b)


def evaluate_form(expr, n_val: int) -> int:
    val = sp.sympify(expr).subs(N, int(n_val))
    val = sp.nsimplify(val) if not val.is_Integer else val
    return int(sp.floor(val + sp.Rational(1, 2))) if not val.is_Integer else int(val)


def asymptotic(expr, **subs) -> str:
    """The growth class of a closed form as N -> oo, e.g. 'O(N*w)', 'O(N**(3/2))'.

    ``subs`` ties parameters to N first (``asymptotic(e, s=sympy.sqrt(N))``). Parameters left
    free are treated as growing, but slower than N.
    """
    e = sp.sympify(expr)
    e = e.subs({sp.Symbol(k, positive=True, integer=True): v for k, v in subs.items()})
    e = e.replace(lambda x: isinstance(x, sp.Piecewise), lambda x: x.args[-1][0])
    e = e.replace(sp.floor, lambda x: x).replace(sp.ceiling, lambda x: x)
    if e.has(sp.Min):
        # Min(a, b) as N -> oo: the branch that does not grow with N
        e = e.replace(lambda x: isinstance(x, sp.Min),
                      lambda x: min(x.args, key=lambda a: sp.degree(sp.expand(a), N) if a.is_polynomial(N) else 99))
    e = sp.expand(e)
    lead = sp.O(e, (N, sp.oo)).expr
    if lead == 0:
        return "O(1)"
    coeff = sp.simplify(sp.limit(e / lead, N, sp.oo))
    others = sorted(coeff.free_symbols - {N}, key=str)
    for sym in others:
        c = sp.O(coeff, (sym, sp.oo)).expr
        coeff = c if c != 0 else coeff
    if coeff.is_number:
        coeff = 1
    return f"O({sp.sstr(sp.simplify(lead * coeff))})"


@dataclass
class Cost:
    pattern: str
    N: int
    block: tuple[int, int]
    head_dim: int
    groups: int
    pairs: int  # exact attended (query, key) pairs, summed over layout groups
    blocks: int  # exact computed blocks
    density: float  # pairs / (groups * N^2)
    block_density: float
    pairs_closed: Any  # sympy expr in N (parameters substituted) or None
    pairs_closed_value: int | None
    pairs_exact: bool  # the closed form is claimed exact (else an upper bound)
    pairs_general: Any  # with parameters as symbols, where the family allows
    blocks_closed: Any
    blocks_closed_value: int | None
    blocks_exact: bool
    asymptotic: str  # growth class of pairs in N, "no closed form" or "unknown (no limit)"
    flops_fwd: int  # on computed blocks, per batch element and head group
    flops_fwd_bwd: int
    flops_useful: int  # 4 * pairs * D: what the mask really needs
    bytes_fwd: int
    bytes_min: int  # Q, K, V, O each once
    metadata_bytes: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("pairs_closed", "pairs_general", "blocks_closed"):
            d[k] = None if d[k] is None else sp.sstr(d[k])
        return d


def cost(pattern: Pattern | str, N_val: int, block=(64, 64), head_dim: int = 64,
         dtype_bytes: int = 2, context=None) -> Cost:
    """Exact counts and closed forms of ``pattern`` at N tokens (q_len = kv_len = N)."""
    from spattern.patterns.parse import parse

    p = parse(pattern) if isinstance(pattern, str) else pattern
    layout = compile_pattern(p, N_val, N_val, block, context=context)
    bq, bk = layout.block_q, layout.block_k
    st = layout.stats()
    G = layout.n_groups
    D = int(head_dim)
    pf = closed_form(p, "pairs")
    bf = closed_form(p, "blocks", b=bq) if bq == bk else None
    gen = closed_form(p, "pairs", symbolic=True)
    pairs_exact = bool(pf and pf[1] and _exact_here(p, "pairs", N_val, bq))
    blocks_exact = bool(bf and bf[1] and _exact_here(p, "blocks", N_val, bq))
    asym = "no closed form"  # e.g. random(): its count depends on the draw
    if gen is not None:
        try:
            asym = asymptotic(gen[0])
        except Exception:  # sympy cannot always take the limit; the class is then unknown
            asym = "unknown (no limit)"
    flops_fwd = 4 * bq * bk * D * st["blocks"]
    return Cost(
        pattern=str(p), N=N_val, block=(bq, bk), head_dim=D, groups=G,
        pairs=st["pairs"], blocks=st["blocks"], density=st["density"], block_density=st["block_density"],
        pairs_closed=None if pf is None else pf[0].subs(N, N_val),
        pairs_closed_value=None if pf is None else evaluate_form(pf[0], N_val),
        pairs_exact=pairs_exact,
        pairs_general=None if gen is None else gen[0],
        blocks_closed=None if bf is None else bf[0].subs(N, N_val),
        blocks_closed_value=None if bf is None else evaluate_form(bf[0], N_val),
        blocks_exact=blocks_exact,
        asymptotic=asym,
        flops_fwd=flops_fwd,
        flops_fwd_bwd=int(3.5 * flops_fwd),
        flops_useful=4 * st["pairs"] * D,
        bytes_fwd=G * (2 * N_val * D * dtype_bytes + 4 * N_val) + 2 * st["blocks"] * bk * D * dtype_bytes
        + st["metadata_bytes"],
        bytes_min=G * 4 * N_val * D * dtype_bytes,
        metadata_bytes=st["metadata_bytes"],
    )


def _exact_here(p: Pattern, kind: str, n_val: int, b: int) -> bool:
    """Exactness of a composed form at this N: every family involved must be exact here."""
    if isinstance(p, Heads):
        return all(_exact_here(h, kind, n_val, b) for h in p.patterns)
    if isinstance(p, Intersection):
        rest = [q for q in p.parts if not isinstance(q, Causal)]
        return all(_exact_here(q, kind, n_val, b) for q in (rest or p.parts))
    if isinstance(p, (Union, Difference)):
        return False
    return _family_exact(p, kind, n_val, b)


def densities(layout) -> np.ndarray:
    """Per-group token density of a layout."""
    return layout.pair_counts() / (layout.q_len * layout.kv_len)
