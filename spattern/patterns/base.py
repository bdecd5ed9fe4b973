"""The Pattern protocol and its combinators.

A pattern answers one question: may query token ``i`` attend to key token ``j``?

Every pattern is a frozen, hashable value with

- ``allowed(q_idx, kv_idx, geom) -> bool array``: the semantic truth, vectorized over
  broadcastable integer numpy arrays of token positions (like a FlexAttention ``mask_mod``);
- optionally ``blocks(geom) -> BlockSet``: an O(nnz) analytic enumerator of the blocks it touches
  (the compiler's fast path; ``None`` means "no fast path, use the generic path");
- optionally ``key_intervals(geom) -> (lo, hi)``: when each key's queries are one interval
  ``lo[j] <= i < hi[j]`` (causal, full, outline on a laminar tree, and their intersections), the
  compiler's fastest path: blocks, states and bitmasks from two arrays;
- optionally ``program() -> list[(op, a, b, c)]``: a mask program a GPU kernel evaluates per
  element (``spattern.ir.program``); ``None`` means partial blocks carry bitmasks;
- optionally ``pairs_expr(N, causal)`` / ``blocks_expr(N, b, causal)``: sympy closed forms;
- ``bind(context) -> Pattern``: content-dependent patterns (documents, trees, top-k) resolve
  themselves against a context; static patterns return ``self``.

Combinators: ``a | b`` (union), ``a & b`` (intersection), ``a - b`` (difference), ``causal(a)``
(= ``a & causal``), and per-head stacks ``heads(p0, p1, ...)``. ``str(p)`` prints the string syntax
that ``spattern.parse`` reads back: ``parse(str(p)) == p``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

# program opcodes used by combinators (the full table lives in spattern.ir.program)
from spattern.ir.program import AND as OP_AND, ANDNOT as OP_ANDNOT, OR as OP_OR  # the one declaration

# Operator precedence of the string syntax (as in Python): '|' < '&' < '-' < atom.
PREC_OR, PREC_AND, PREC_SUB, PREC_ATOM = 1, 2, 3, 4


@dataclass(frozen=True)
class Geometry:
    """Token lengths a pattern is evaluated over (absolute positions 0..len-1)."""

    q_len: int
    kv_len: int


class Pattern:
    """Base class of every pattern. Subclasses are frozen dataclasses."""

    #: name in the string syntax and the registry
    name: ClassVar[str] = "pattern"
    #: fields printed positionally (the rest print as keywords when not at their default)
    positional: ClassVar[tuple[str, ...]] = ()
    #: True when every allowed pair has kv_idx <= q_idx by construction
    claims_causal: ClassVar[bool] = False

    # --- semantics -------------------------------------------------------------------------
    def allowed(self, q_idx: np.ndarray, kv_idx: np.ndarray, geom: Geometry) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define allowed()")

    def blocks(self, geom: Geometry, block_q: int, block_k: int):  # -> BlockSet | None
        """Analytic block enumeration (fast path); None when the pattern has none."""
        return None

    def classify(self, grid, rows: np.ndarray, cols: np.ndarray):  # -> int8 array | None
        """Exact per-block state for given blocks (-1 absent, 0 partial, 1 full, 2 unknown), in
        O(1) per block; None when the pattern cannot. Intersections filter by it."""
        return None

    def key_intervals(self, geom: Geometry):  # -> (lo, hi) | None
        """When every key's queries form one interval: int64 arrays lo, hi of shape (kv_len,) with
        ``allowed(i, j)`` iff ``lo[j] <= i < hi[j]`` (any values; the compiler clips them to
        [0, q_len]). The compiler then builds the blocks, their states and the partial blocks'
        distinct bitmasks from these arrays alone (``spattern.ir.blocks.interval_blocks``), with no
        predicate evaluated per pair. None when the pattern's columns are not single intervals or it
        does not say; intersections of patterns that have them have them too."""
        return None

    #: in an intersection, prefer filtering by this pattern over enumerating it (causal, full)
    filter_first: ClassVar[bool] = False

    def program(self) -> list[tuple[int, int, int, int]] | None:
        """Mask program (see spattern.ir.program); None: partial blocks use bitmasks."""
        return None

    def bind(self, context: Any) -> "Pattern":
        """Resolve content-dependent parts against a context; static patterns return self."""
        return self

    @property
    def is_static(self) -> bool:
        """False when the pattern needs a context to compile (e.g. document() without bounds)."""
        return True

    @property
    def is_causal(self) -> bool:
        return self.claims_causal

    # --- closed forms (sympy); None when the family has none --------------------------------
    def pairs_expr(self, N, causal: bool = False):
        return None

    def blocks_expr(self, N, b, causal: bool = False):
        return None

    # --- conveniences ----------------------------------------------------------------------
    def dense_mask(self, q_len: int, kv_len: int | None = None) -> np.ndarray:
        """The (q_len, kv_len) boolean token mask. Allocates N x N: for small N and tests."""
        kv_len = q_len if kv_len is None else kv_len
        geom = Geometry(int(q_len), int(kv_len))
        q = np.arange(q_len, dtype=np.int64)[:, None]
        k = np.arange(kv_len, dtype=np.int64)[None, :]
        return np.broadcast_to(np.asarray(self.allowed(q, k, geom), dtype=bool), (q_len, kv_len)).copy()

    def draw(self, q_len: int = 256, path: str | None = None, **kwargs):
        """Draw the token mask (and block grid) with matplotlib; returns the figure."""
        from spattern.viz import draw_pattern

        return draw_pattern(self, q_len, path=path, **kwargs)

    def __or__(self, other: "Pattern") -> "Pattern":
        return union(self, _check_pattern(other, "|"))

    def __and__(self, other: "Pattern") -> "Pattern":
        return intersection(self, _check_pattern(other, "&"))

    def __sub__(self, other: "Pattern") -> "Pattern":
        return difference(self, _check_pattern(other, "-"))

    # --- printing --------------------------------------------------------------------------
    @property
    def precedence(self) -> int:
        return PREC_ATOM

    def __str__(self) -> str:
        args = [format_arg(getattr(self, f)) for f in self.positional]
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in self.positional or not f.repr:
                continue
            value = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            if value != default:
                args.append(f"{f.name}={format_arg(value)}")
        return f"{self.name}({', '.join(args)})"

    def __repr__(self) -> str:
        return f"Pattern({str(self)!r})"


def _check_pattern(other: Any, op: str) -> Pattern:
    if not isinstance(other, Pattern):
        raise TypeError(f"operator {op!r}: expected a Pattern on the right, got {type(other).__name__}: {other!r}")
    return other


def format_arg(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_arg(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Pattern):
        return str(value)
    return str(value)


MAX_PARAM = 2**31 - 1  # every integer parameter fits int32 (programs and kernels store them so)


def as_int_tuple(values: Iterable[int] | None, what: str) -> tuple[int, ...]:
    if values is None:
        return ()
    out = tuple(int(v) for v in np.asarray(values, dtype=object).reshape(-1).tolist())
    bad = [v for v in out if abs(v) > MAX_PARAM]
    if bad:
        raise ValueError(f"{what}: expected ints with |value| <= {MAX_PARAM}, got {bad[0]}")
    return out


def check_int(value: Any, what: str, minimum: int | None = None, maximum: int | None = MAX_PARAM) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}: expected an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what}: expected an int >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{what}: expected an int <= {maximum}, got {value}")
    return int(value)


# ------------------------------------------------------------------------------------------
# Combinators
# ------------------------------------------------------------------------------------------
class _NAry(Pattern):
    """What unions and intersections share: n parts folded with one boolean operator, one block
    state rule and one program opcode. Subclasses set the class attributes below and ``blocks``."""

    parts: tuple[Pattern, ...]
    _fold: ClassVar[Any]  # numpy operator on masks
    _fold_state: ClassVar[Any]  # rule on per-block states
    _op: ClassVar[int]  # mask-program opcode
    _prec: ClassVar[int]
    _symbol: ClassVar[str]

    def allowed(self, q_idx, kv_idx, geom):
        out = np.asarray(self.parts[0].allowed(q_idx, kv_idx, geom), dtype=bool)
        for p in self.parts[1:]:
            out = type(self)._fold(out, p.allowed(q_idx, kv_idx, geom))
        return out

    def classify(self, grid, rows, cols):
        states = [p.classify(grid, rows, cols) for p in self.parts]
        if any(st is None for st in states):
            return None
        out = states[0]
        for st in states[1:]:
            out = type(self)._fold_state(out, st)
        return out

    def program(self):
        return _combine_programs(self.parts, self._op)

    def bind(self, context):
        return (union if isinstance(self, Union) else intersection)(*(p.bind(context) for p in self.parts))

    @property
    def is_static(self):
        return all(p.is_static for p in self.parts)

    @property
    def precedence(self):
        return self._prec

    def __str__(self):
        return f" {self._symbol} ".join(_paren(p, self._prec) for p in self.parts)


@dataclass(frozen=True, repr=False)
class Union(_NAry):
    """Allowed where any part allows. Nested unions are flattened."""

    parts: tuple[Pattern, ...]
    name: ClassVar[str] = "union"
    _op, _prec, _symbol = OP_OR, PREC_OR, "|"

    @staticmethod
    def _fold(x, y):
        return x | y

    @staticmethod
    def _fold_state(a, b):
        return _union_state(a, b)

    def blocks(self, geom, block_q, block_k):
        sets = [p.blocks(geom, block_q, block_k) for p in self.parts]
        if any(s is None for s in sets):
            return None
        out = sets[0]
        for s in sets[1:]:
            out = out.union(s)
        return out

    @property
    def is_causal(self):
        return all(p.is_causal for p in self.parts)


@dataclass(frozen=True, repr=False)
class Intersection(_NAry):
    """Allowed where every part allows. Nested intersections are flattened."""

    parts: tuple[Pattern, ...]
    name: ClassVar[str] = "intersection"
    _op, _prec, _symbol = OP_AND, PREC_AND, "&"

    @staticmethod
    def _fold(x, y):
        return x & y

    @staticmethod
    def _fold_state(a, b):
        return _intersection_state(a, b)

    def key_intervals(self, geom):
        """The parts' intervals intersected (latest start, earliest end), when every part has them."""
        parts = [p.key_intervals(geom) for p in self.parts]
        if any(iv is None for iv in parts):
            return None
        return np.maximum.reduce([lo for lo, _ in parts]), np.minimum.reduce([hi for _, hi in parts])

    def blocks(self, geom, block_q, block_k):
        # Enumerate one part (not a filter-first one such as causal, if any other exists), then
        # filter its blocks by the others' O(1) classifiers; enumerate only the unclassifiable.
        order = sorted(range(len(self.parts)), key=lambda n: self.parts[n].filter_first)
        out = self.parts[order[0]].blocks(geom, block_q, block_k)
        if out is None:
            return None
        for n in order[1:]:
            p = self.parts[n]
            st = p.classify(out.grid, out.rows, out.cols)
            if st is not None:
                out = out.filter_states(st)
                continue
            other = p.blocks(geom, block_q, block_k)
            if other is None:
                return None
            out = out.intersection(other)
        return out

    @property
    def is_causal(self):
        return any(p.is_causal for p in self.parts)


@dataclass(frozen=True, repr=False)
class Difference(Pattern):
    """Allowed where ``left`` allows and ``right`` does not."""

    left: Pattern
    right: Pattern
    name: ClassVar[str] = "difference"

    def allowed(self, q_idx, kv_idx, geom):
        return np.asarray(self.left.allowed(q_idx, kv_idx, geom), dtype=bool) & ~np.asarray(
            self.right.allowed(q_idx, kv_idx, geom), dtype=bool
        )

    def blocks(self, geom, block_q, block_k):
        a = self.left.blocks(geom, block_q, block_k)
        if a is None:
            return None
        st = self.right.classify(a.grid, a.rows, a.cols)
        if st is not None:
            return a.subtract_states(st)
        b = self.right.blocks(geom, block_q, block_k)
        return None if b is None else a.difference(b)

    def classify(self, grid, rows, cols):
        a = self.left.classify(grid, rows, cols)
        b = self.right.classify(grid, rows, cols) if a is not None else None
        if a is None or b is None:
            return None
        out = np.where(b < 0, a, np.where((a == 1) & (b == 0), 0, 2))
        return np.where((a < 0) | (b == 1), -1, out).astype(np.int8)

    def program(self):
        pa, pb = self.left.program(), self.right.program()
        if pa is None or pb is None:
            return None
        return pa + pb + [(OP_ANDNOT, 0, 0, 0)]

    def bind(self, context):
        return difference(self.left.bind(context), self.right.bind(context))

    @property
    def is_static(self):
        return self.left.is_static and self.right.is_static

    @property
    def is_causal(self):
        return self.left.is_causal

    @property
    def precedence(self):
        return PREC_SUB

    def __str__(self):
        return f"{_paren(self.left, PREC_SUB)} - {_paren(self.right, PREC_SUB + 1)}"


@dataclass(frozen=True, repr=False)
class Heads(Pattern):  # registered as "heads" by spattern.patterns.registry
    """A per-head stack: head ``h`` uses ``patterns[h]``. Compiles to one layout group per head.

    Binary operators distribute over the stack: ``heads(a, b) & c == heads(a & c, b & c)``.
    """

    patterns: tuple[Pattern, ...]
    name: ClassVar[str] = "heads"

    def allowed(self, q_idx, kv_idx, geom):
        raise TypeError(
            "heads(...) has one mask per head: call allowed() on heads.patterns[h], "
            "or compile it (one layout group per head)"
        )

    def dense_mask(self, q_len, kv_len=None):
        """(H, q_len, kv_len) boolean masks, one per head."""
        return np.stack([p.dense_mask(q_len, kv_len) for p in self.patterns])

    def bind(self, context):
        return Heads(tuple(p.bind(context) for p in self.patterns))

    @property
    def is_static(self):
        return all(p.is_static for p in self.patterns)

    @property
    def is_causal(self):
        return all(p.is_causal for p in self.patterns)

    def __str__(self):
        return f"heads({', '.join(str(p) for p in self.patterns)})"


def _union_state(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union of per-block states (-1 absent, 0 partial, 1 full, 2 unknown)."""
    out = np.where(a < 0, b, np.where(b < 0, a, 2))
    return np.where((a == 1) | (b == 1), 1, out).astype(np.int8)


def _intersection_state(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.where(a == 1, b, np.where(b == 1, a, 2))
    return np.where((a < 0) | (b < 0), -1, out).astype(np.int8)


def _paren(p: Pattern, min_prec: int) -> str:
    s = str(p)
    return f"({s})" if p.precedence < min_prec else s




def _combine_programs(parts: Sequence[Pattern], op: int):
    progs = [p.program() for p in parts]
    if any(p is None for p in progs):
        return None
    out = list(progs[0])
    for prog in progs[1:]:
        out += list(prog) + [(op, 0, 0, 0)]
    return out


def _distribute(op, parts: Sequence[Pattern]) -> Pattern | None:
    """If any part is a Heads stack, push the operator into each head."""
    stacks = [p for p in parts if isinstance(p, Heads)]
    if not stacks:
        return None
    n = len(stacks[0].patterns)
    for s in stacks:
        if len(s.patterns) != n:
            raise ValueError(
                f"combining per-head stacks of different sizes: expected {n} heads, got {len(s.patterns)}"
            )
    per_head = []
    for h in range(n):
        per_head.append(op(*[p.patterns[h] if isinstance(p, Heads) else p for p in parts]))
    return Heads(tuple(per_head))


def union(*parts: Pattern) -> Pattern:
    if not parts:
        raise ValueError("union: expected at least one pattern, got none")
    distributed = _distribute(union, parts)
    if distributed is not None:
        return distributed
    flat: list[Pattern] = []
    for p in parts:
        flat.extend(p.parts if isinstance(p, Union) else (p,))
    return flat[0] if len(flat) == 1 else Union(tuple(flat))


def intersection(*parts: Pattern) -> Pattern:
    if not parts:
        raise ValueError("intersection: expected at least one pattern, got none")
    distributed = _distribute(intersection, parts)
    if distributed is not None:
        return distributed
    flat: list[Pattern] = []
    for p in parts:
        flat.extend(p.parts if isinstance(p, Intersection) else (p,))
    return flat[0] if len(flat) == 1 else Intersection(tuple(flat))


def difference(left: Pattern, right: Pattern) -> Pattern:
    distributed = _distribute(difference, (left, right))
    if distributed is not None:
        return distributed
    return Difference(left, right)


def heads(*patterns: Pattern) -> Heads:
    """Per-head stack: ``heads(local(64), strided(8))`` gives head 0 a window, head 1 a stride."""
    if len(patterns) == 1 and isinstance(patterns[0], (list, tuple)):
        patterns = tuple(patterns[0])
    if not patterns:
        raise ValueError("heads: expected at least one pattern, got none")
    for i, p in enumerate(patterns):
        if not isinstance(p, Pattern):
            raise TypeError(f"heads: argument {i} must be a Pattern, got {type(p).__name__}")
        if isinstance(p, Heads):
            raise TypeError(f"heads: argument {i} is itself a heads(...) stack; stacks do not nest")
    return Heads(tuple(patterns))


def demo_main(family: str, examples: list[tuple["Pattern", str]], n: int = 128, argv=None) -> None:
    """``python -m spattern.patterns.<family>``: draw the family's examples at N = ``n`` as PNG
    files in ``--out-dir`` (default: the working directory) and say where each went."""
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(description=f"Draw {family} example pattern(s) at N = {n} as PNG.")
    ap.add_argument("--out-dir", type=Path, default=Path("."),
                    help="folder to write to (default: the working directory)")
    out_dir = ap.parse_args(argv).out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for example, filename in examples:
        example.draw(n, path=out_dir / filename)
        print(f"wrote {(out_dir / filename).resolve()}")
