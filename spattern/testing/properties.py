"""Property assertions for patterns and layouts, for the project's tests and for users' own patterns.

Each raises ``AssertionError`` with a message that says what differed and where (the first
differing (group, i, j), how many pairs differ, the counts on each side) and returns quietly (or
with a small summary) when the property holds.

    from spattern.testing import check_pattern
    check_pattern(my_pattern)                      # everything that applies, at a few sizes
    assert_layout_matches_mask(my_pattern, 100, 77, block=(32, 16))

``context`` (where accepted) is what ``spattern.compile`` takes for content-dependent patterns: a
context (``{"cu_seqlens": [...]}``) or a list of them, one per batch element.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Sequence

import numpy as np

from spattern.compiler import compile as compile_pattern
from spattern.compiler.layout import BITMASK, FULL, PROGRAM, BlockLayout, LayoutError, unpack_bits
from spattern.ir import program as prog
from spattern.patterns.base import Heads, Pattern

__all__ = [
    "assert_masks_equal", "expected_masks", "assert_causal", "assert_layout_matches_mask",
    "assert_layout_equals_masks", "assert_valid_layout", "assert_paths_agree", "assert_algebra_laws",
    "assert_closed_form_matches", "assert_roundtrip", "check_pattern",
]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _block(block) -> tuple[int, int]:
    if isinstance(block, (int, np.integer)):
        return int(block), int(block)
    bq, bk = block
    return int(bq), int(bk)


def _contexts(p: Pattern, context) -> list:
    """The contexts compile() makes groups for (static patterns share one group)."""
    if isinstance(context, (list, tuple)):
        if not context:
            raise ValueError("context: expected a context or a non-empty list of them, got []")
        return [None] if p.is_static else list(context)
    return [None] if p.is_static else [context]


def expected_masks(p: Pattern, q_len: int, kv_len: int | None = None, context: Any = None) -> np.ndarray:
    """bool [G, q_len, kv_len]: the predicate's token masks in layout group order
    (one per (context, head), as ``compile`` lays them out)."""
    kv_len = q_len if kv_len is None else kv_len
    head_patterns = p.patterns if isinstance(p, Heads) else (p,)
    out = []
    for ctx in _contexts(p, context):
        for h in head_patterns:
            bound = h.bind(ctx) if ctx is not None else h
            out.append(bound.dense_mask(q_len, kv_len))
    return np.stack(out)


def _group_label(G_shape, g) -> str:
    Bg, Hg = G_shape
    return f"group {g} (batch group {g // Hg}, head group {g % Hg})" if Bg * Hg > 1 else "the layout"


def assert_masks_equal(got: np.ndarray, want: np.ndarray, got_name: str = "got", want_name: str = "expected",
                       where: str = "") -> None:
    """Assert two boolean masks ([q, k] or [G, q, k]) are equal; the message names the first
    differing index and the counts."""
    got, want = np.asarray(got, dtype=bool), np.asarray(want, dtype=bool)
    pre = f"{where}: " if where else ""
    if got.shape != want.shape:
        raise AssertionError(f"{pre}{got_name} has shape {got.shape}, {want_name} has shape {want.shape}")
    diff = got != want
    if not diff.any():
        return
    first = tuple(int(x) for x in np.argwhere(diff)[0])
    idx = ", ".join(f"{n}={v}" for n, v in zip(("g", "i", "j")[-len(first):], first))
    extra = int((got & ~want).sum())
    missing = int((~got & want).sum())
    raise AssertionError(
        f"{pre}{got_name} and {want_name} differ at {int(diff.sum())} of {diff.size} (query, key) pairs; "
        f"first at ({idx}): {got_name}={bool(got[first])}, {want_name}={bool(want[first])}; "
        f"{extra} pairs only in {got_name}, {missing} only in {want_name}; "
        f"allowed pairs: {got_name} {int(got.sum())}, {want_name} {int(want.sum())}"
    )


# ------------------------------------------------------------------------------------------
# causality
# ------------------------------------------------------------------------------------------
def assert_causal(p: Pattern, n: int, kv_len: int | None = None, context: Any = None) -> bool:
    """When ``p.is_causal`` claims causality, no allowed pair has key j > query i (per head and
    per context). Returns whether the claim was made (and so checked)."""
    if not p.is_causal:
        return False
    masks = expected_masks(p, n, kv_len, context)
    future = np.triu(np.ones(masks.shape[1:], dtype=bool), k=1)
    bad = masks & future
    if bad.any():
        g, i, j = (int(x) for x in np.argwhere(bad)[0])
        raise AssertionError(
            f"{p} claims to be causal (is_causal is True) but allows {int(bad.sum())} pairs with key j > "
            f"query i at q_len={n}, kv_len={masks.shape[2]}; first: group {g}, (i={i}, j={j})"
        )
    return True


# ------------------------------------------------------------------------------------------
# layouts
# ------------------------------------------------------------------------------------------
def assert_valid_layout(layout: BlockLayout) -> None:
    """CSR validity: ``layout.validate()`` passes, and independently of it: dtypes and shapes,
    monotone row pointers with contiguous groups, columns in range and strictly ascending in each
    row, block kinds in {FULL, PROGRAM, BITMASK} with mask_idx -1 exactly off BITMASK blocks and in
    range on them, a well-formed program for every group with PROGRAM blocks, and no bitmask bit
    set for an out-of-range token."""
    if not isinstance(layout, BlockLayout):
        raise AssertionError(f"expected a BlockLayout, got {type(layout).__name__}")
    try:
        layout.validate()
    except LayoutError as e:
        raise AssertionError(f"layout.validate() failed: {e}") from None

    def fail(msg):
        raise AssertionError(f"invalid layout {layout!r}: {msg}")

    dtypes = {"row_ptr": np.int32, "col_idx": np.int32, "block_kind": np.uint8, "mask_idx": np.int32,
              "bitmasks": np.uint32, "programs": np.int32, "program_len": np.int32}
    for name, dt in dtypes.items():
        if getattr(layout, name).dtype != dt:
            fail(f"{name} has dtype {getattr(layout, name).dtype}, expected {np.dtype(dt).name}")
    Bg, Hg = layout.group_shape
    G, R, C = Bg * Hg, -(-layout.q_len // layout.block_q), -(-layout.kv_len // layout.block_k)
    rp = layout.row_ptr.astype(np.int64)
    if rp.shape != (G, R + 1):
        fail(f"row_ptr has shape {rp.shape}, expected {(G, R + 1)}")
    nnz = layout.col_idx.size
    prev_end = 0
    for g in range(G):
        if rp[g, 0] != prev_end:
            fail(f"group {g} starts at {rp[g, 0]}, expected {prev_end} (where group {g - 1} ends)")
        for r in range(R):
            s, e = int(rp[g, r]), int(rp[g, r + 1])
            if e < s:
                fail(f"row_ptr decreases in group {g} at row {r}: {s} then {e}")
            cols = layout.col_idx[s:e].astype(np.int64)
            if cols.size and (cols.min() < 0 or cols.max() >= C):
                fail(f"group {g} row {r}: column out of range [0, {C}): {cols.tolist()}")
            if np.any(np.diff(cols) <= 0):
                fail(f"group {g} row {r}: columns not strictly ascending: {cols.tolist()}")
        prev_end = int(rp[g, R])
    if prev_end != nnz:
        fail(f"row_ptr ends at {prev_end} but there are {nnz} stored blocks")
    kinds = layout.block_kind
    if layout.mask_idx.shape != (nnz,) or kinds.shape != (nnz,):
        fail(f"block_kind/mask_idx have shapes {kinds.shape}/{layout.mask_idx.shape}, expected ({nnz},)")
    if np.any(kinds > BITMASK):
        fail(f"block kinds {sorted(set(kinds.tolist()))}, expected values in {{0, 1, 2}}")
    bm = kinds == BITMASK
    if np.any(layout.mask_idx[~bm] != -1):
        fail("mask_idx is not -1 on a block that is not BITMASK")
    M = layout.bitmasks.shape[0]
    if bm.any() and (layout.mask_idx[bm].min() < 0 or layout.mask_idx[bm].max() >= M):
        fail(f"a BITMASK block's mask_idx is outside [0, {M})")
    groups = np.repeat(np.arange(G), np.diff(rp[:, [0, -1]], axis=1)[:, 0])
    for g in np.unique(groups[kinds == PROGRAM]):
        n = int(layout.program_len[g])
        if n == 0:
            fail(f"group {g} has PROGRAM blocks but no mask program")
        try:
            prog.validate(layout.programs[g, :n].tolist())
        except ValueError as e:
            fail(f"program of group {g}: {e}")
    # out-of-range bits of bitmask blocks are zero
    if bm.any():
        rows = layout.block_rows()
        idx = np.flatnonzero(bm)
        bits = unpack_bits(layout.bitmasks[layout.mask_idx[idx]], layout.block_k)  # (n, bq, bk)
        qi = rows[idx, None, None] * layout.block_q + np.arange(layout.block_q)[None, :, None]
        kj = layout.col_idx[idx, None, None].astype(np.int64) * layout.block_k + np.arange(layout.block_k)[None, None, :]
        stray = bits & ((qi >= layout.q_len) | (kj >= layout.kv_len))
        if stray.any():
            n, a, b = (int(x) for x in np.argwhere(stray)[0])
            fail(f"bitmask of stored block {idx[n]} sets a bit for out-of-range token pair "
                 f"(i={int(qi[n, a, 0])}, j={int(kj[n, 0, b])})")


def assert_layout_equals_masks(layout: BlockLayout, masks: np.ndarray, exact_kinds: bool = True,
                               what: str = "expected mask") -> None:
    """A layout against token masks bool [G, q_len, kv_len]: ``to_dense()`` equals them, the pair
    counts agree, FULL blocks are fully allowed, no stored block is empty, PROGRAM blocks have
    their group's program and it reproduces the mask on them; with ``exact_kinds`` also no block
    that is fully allowed is stored as partial."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    G = layout.n_groups
    if masks.shape != (G, layout.q_len, layout.kv_len):
        raise AssertionError(f"layout {layout!r} has {G} groups of {layout.q_len} x {layout.kv_len}; "
                             f"the {what} has shape {masks.shape}")
    dense = layout.to_dense()
    for g in range(G):
        assert_masks_equal(dense[g], masks[g], "layout.to_dense()", what,
                           where=f"{layout.pattern or 'layout'} at q_len={layout.q_len}, kv_len={layout.kv_len}, "
                                 f"block=({layout.block_q}, {layout.block_k}), {_group_label(layout.group_shape, g)}")
    counts = layout.pair_counts()
    want = masks.reshape(G, -1).sum(axis=1)
    if not np.array_equal(counts, want):
        g = int(np.argmax(counts != want))
        raise AssertionError(f"layout.pair_counts() of {_group_label(layout.group_shape, g)} is {int(counts[g])}, "
                             f"the {what} allows {int(want[g])}")
    if layout.nnz == 0:
        return
    # allowed pairs and in-range area of every (group, row block, col block)
    bq, bk, R, C = layout.block_q, layout.block_k, layout.n_rows, layout.n_cols
    padded = np.zeros((G, R * bq, C * bk), dtype=bool)
    padded[:, : layout.q_len, : layout.kv_len] = masks
    per_block = padded.reshape(G, R, bq, C, bk).sum(axis=(2, 4))  # [G, R, C]
    h = np.minimum((np.arange(R) + 1) * bq, layout.q_len) - np.arange(R) * bq
    w = np.minimum((np.arange(C) + 1) * bk, layout.kv_len) - np.arange(C) * bk
    rows, groups = layout.block_rows(), layout.block_groups()
    cols = layout.col_idx.astype(np.int64)
    n = per_block[groups, rows, cols]
    area = h[rows] * w[cols]
    kinds = layout.block_kind

    def where(e):
        return (f"block (row {int(rows[e])}, col {int(cols[e])}) of {_group_label(layout.group_shape, int(groups[e]))} "
                f"in {layout.pattern or 'layout'}")

    bad = np.flatnonzero(n == 0)
    if bad.size:
        raise AssertionError(f"{where(bad[0])} is stored but allows no pair (an empty block costs a kernel step); "
                             f"{bad.size} such blocks")
    bad = np.flatnonzero((kinds == FULL) & (n < area))
    if bad.size:
        e = bad[0]
        raise AssertionError(f"{where(e)} is FULL but only {int(n[e])} of its {int(area[e])} pairs are allowed")
    if exact_kinds:
        bad = np.flatnonzero((kinds != FULL) & (n == area))
        if bad.size:
            e = bad[0]
            raise AssertionError(f"{where(e)} is stored as partial (kind {int(kinds[e])}) but every pair of it is "
                                 f"allowed; {bad.size} such blocks")
    bad = np.flatnonzero((kinds == PROGRAM) & (layout.program_len[groups] == 0))
    if bad.size:
        raise AssertionError(f"{where(bad[0])} is PROGRAM but its group has no program")


def assert_layout_matches_mask(p: Pattern, q_len: int, kv_len: int | None = None, block=(64, 64),
                               context: Any = None, path: str = "auto", exact_kinds: bool = True) -> BlockLayout:
    """``compile(p).to_dense()`` equals ``p.dense_mask()`` exactly, per group (per head for
    ``heads(...)``, per context for a list of contexts); the layout is valid and its block kinds
    are right (see ``assert_layout_equals_masks``). Returns the layout."""
    kv_len = q_len if kv_len is None else kv_len
    layout = compile_pattern(p, q_len, kv_len, _block(block), context=context, path=path)
    want = expected_masks(p, q_len, kv_len, context)
    n_ctx = len(_contexts(p, context))
    n_heads = len(p.patterns) if isinstance(p, Heads) else 1
    if tuple(layout.group_shape) != (n_ctx, n_heads):
        raise AssertionError(f"compile({p}) gave group_shape {tuple(layout.group_shape)}, expected "
                             f"({n_ctx}, {n_heads}) ({n_ctx} context(s) x {n_heads} head(s))")
    assert_valid_layout(layout)
    assert_layout_equals_masks(layout, want, exact_kinds=exact_kinds, what="p.dense_mask()")
    return layout


def _layout_diff(a: BlockLayout, b: BlockLayout) -> str:
    shapes_a = (a.q_len, a.kv_len, a.block_q, a.block_k, tuple(a.group_shape))
    shapes_b = (b.q_len, b.kv_len, b.block_q, b.block_k, tuple(b.group_shape))
    if shapes_a != shapes_b:
        return f"shapes (q_len, kv_len, block_q, block_k, group_shape) {shapes_a} vs {shapes_b}"
    if not np.array_equal(a.row_ptr, b.row_ptr):
        g, r = (int(x) for x in np.argwhere(a.row_ptr != b.row_ptr)[0])
        return (f"row_ptr differs first at group {g}, entry {r}: {int(a.row_ptr[g, r])} vs {int(b.row_ptr[g, r])} "
                f"(nnz {a.nnz} vs {b.nnz})")
    rows, groups = a.block_rows(), a.block_groups()
    for name in ("col_idx", "block_kind"):
        x, y = getattr(a, name), getattr(b, name)
        if not np.array_equal(x, y):
            e = int(np.argmax(x != y))
            return (f"{name} differs first at stored block {e} (group {int(groups[e])}, row {int(rows[e])}): "
                    f"{int(x[e])} vs {int(y[e])}")
    if not np.array_equal(a.program_len, b.program_len):
        return f"program_len {a.program_len.tolist()} vs {b.program_len.tolist()}"
    return "programs or bitmask contents differ"


def assert_paths_agree(p: Pattern, q_len: int, kv_len: int | None = None, block=(64, 64),
                       context: Any = None) -> bool:
    """The analytic fast path and the generic path give identical layouts (``layout.equals``).
    Returns False (nothing checked) when ``p`` has no analytic path."""
    kv_len = q_len if kv_len is None else kv_len
    try:
        fast = compile_pattern(p, q_len, kv_len, _block(block), context=context, path="analytic")
    except ValueError as e:
        if "no analytic block enumerator" in str(e):
            return False
        raise
    slow = compile_pattern(p, q_len, kv_len, _block(block), context=context, path="generic")
    if not fast.equals(slow):
        raise AssertionError(
            f"compile({p}, q_len={q_len}, kv_len={kv_len}, block={_block(block)}): analytic and generic "
            f"paths differ: {_layout_diff(fast, slow)}"
        )
    return True


# ------------------------------------------------------------------------------------------
# algebra
# ------------------------------------------------------------------------------------------
def _m(p: Pattern, n: int, kv: int) -> np.ndarray:
    return np.asarray(p.dense_mask(n, kv), dtype=bool)


def assert_algebra_laws(a: Pattern, b: Pattern, c: Pattern, n: int, kv_len: int | None = None,
                        block=None) -> None:
    """On token masks at (n, kv_len): the combinators compute the set operations
    (``a | b`` = A or B, ``a & b`` = A and B, ``a - b`` = A and not B), and ``|`` and ``&`` are
    commutative, associative and idempotent, ``&`` distributes over ``|``, and ``a - b == a & ~b``.
    With ``block`` given, the compiled layouts of both sides of each law are compared too."""
    kv = n if kv_len is None else kv_len
    A, B, C = _m(a, n, kv), _m(b, n, kv), _m(c, n, kv)
    laws = [
        ("a | b == A or B", a | b, A | B),
        ("a & b == A and B", a & b, A & B),
        ("a - b == A and not B", a - b, A & ~B),
        ("a | b == b | a", a | b, _m(b | a, n, kv)),
        ("a & b == b & a", a & b, _m(b & a, n, kv)),
        ("(a | b) | c == a | (b | c)", (a | b) | c, _m(a | (b | c), n, kv)),
        ("(a & b) & c == a & (b & c)", (a & b) & c, _m(a & (b & c), n, kv)),
        ("a | a == a", a | a, A),
        ("a & a == a", a & a, A),
        ("a & (b | c) == (a & b) | (a & c)", a & (b | c), _m((a & b) | (a & c), n, kv)),
        ("(a | b) | c == A or B or C", (a | b) | c, A | B | C),
        ("a & (b | c) == A and (B or C)", a & (b | c), A & (B | C)),
        ("a - b == a & ~b (on masks)", a - b, _m(a, n, kv) & ~_m(b, n, kv)),
        ("(a - b) | (a & b) == a", (a - b) | (a & b), A),
    ]
    for name, lhs, want in laws:
        got = _m(lhs, n, kv)
        assert_masks_equal(got, np.broadcast_to(want, got.shape), f"mask of {lhs}", "the law's right side",
                           where=f"law {name} with a={a}, b={b}, c={c} at ({n}, {kv})")
        if block is not None:
            layout = compile_pattern(lhs, n, kv, _block(block))
            dense = layout.to_dense()
            assert_masks_equal(dense, np.broadcast_to(want, dense.shape), f"compile({lhs}).to_dense()",
                               "the law's right side",
                               where=f"law {name} compiled at ({n}, {kv}), block={_block(block)}")


# ------------------------------------------------------------------------------------------
# closed forms
# ------------------------------------------------------------------------------------------
def assert_closed_form_matches(p: Pattern, N: int, block=64, context: Any = None) -> dict:
    """The sympy closed forms of ``spattern.compiler.complexity`` against the exact counts of the
    compiled layout at q_len = kv_len = N: equal where the form is claimed exact at this N, an
    upper bound (>=) where it is not. The exact counts are checked against the predicate's mask
    too. Returns {"pairs": (closed, exact count, claimed exact) or None, "blocks": ...}."""
    from spattern.compiler.complexity import cost

    bq, bk = _block(block)
    c = cost(p, N, block=(bq, bk), context=context)
    masks = expected_masks(p, N, N, context)
    if c.pairs != int(masks.sum()):
        raise AssertionError(f"cost({p}, {N}).pairs = {c.pairs} but the predicate allows {int(masks.sum())} pairs")
    out: dict = {"pairs": None, "blocks": None}
    for kind, closed, value, exact, count in (
        ("pairs", c.pairs_closed, c.pairs_closed_value, c.pairs_exact, c.pairs),
        ("blocks", c.blocks_closed, c.blocks_closed_value, c.blocks_exact, c.blocks),
    ):
        if closed is None:
            continue
        out[kind] = (value, count, exact)
        if exact and value != count:
            raise AssertionError(
                f"closed form of {kind} for {p} at N={N}, block={(bq, bk)} is claimed exact but gives {value} "
                f"({closed}); the exact count is {count}")
        if not exact and value < count:
            raise AssertionError(
                f"closed form of {kind} for {p} at N={N}, block={(bq, bk)} is a bound but gives {value} "
                f"({closed}), below the exact count {count}")
    return out


# ------------------------------------------------------------------------------------------
# printing
# ------------------------------------------------------------------------------------------
def assert_roundtrip(p: Pattern) -> None:
    """``parse(str(p)) == p`` (same hash, same printed string)."""
    from spattern.patterns.parse import PatternSyntaxError, parse

    s = str(p)
    try:
        q = parse(s)
    except (PatternSyntaxError, KeyError, ValueError, TypeError) as e:
        raise AssertionError(f"parse(str(p)) failed for str(p) = {s!r}: {e}") from None
    if q != p:
        why = (" (the same text names different functions: a custom predicate's name is registered to "
               "another function than the one p holds)") if str(q) == s else ""
        raise AssertionError(f"parse(str(p)) != p: str(p) = {s!r} parses to {q!r}, expected {p!r}{why}")
    if hash(q) != hash(p):
        raise AssertionError(f"parse(str(p)) == p but their hashes differ for {s!r}")
    if str(q) != s:
        raise AssertionError(f"str(parse(str(p))) = {str(q)!r} differs from str(p) = {s!r}")


def _roundtrip_blocker(p: Pattern) -> str | None:
    """Why ``parse(str(p))`` cannot be checked, or None: a custom predicate whose name is not
    registered at all (e.g. a lambda). A name registered to a DIFFERENT function is not a
    blocker: the round trip then runs and fails, as it must."""
    from spattern.patterns.custom import Custom
    from spattern.patterns.registry import PREDICATES

    stack = [p]
    while stack:
        x = stack.pop()
        if isinstance(x, Custom) and x.name_ not in PREDICATES:
            return (f"custom predicate {x.name_!r} is not registered by name, so str(p) cannot be parsed back; "
                    "give it a name (spattern.custom(fn, name=...)) to check the round trip")
        for attr in ("parts", "patterns"):
            stack.extend(getattr(x, attr, ()) or ())
        for attr in ("left", "right"):
            if isinstance(getattr(x, attr, None), Pattern):
                stack.append(getattr(x, attr))
    return None


# ------------------------------------------------------------------------------------------
# everything at once
# ------------------------------------------------------------------------------------------
def check_pattern(p: Pattern, sizes: Iterable = (1, 17, 64, 100), blocks: Sequence = ((16, 16), (32, 48)),
                  context: Any = None, roundtrip: bool | None = None, closed_forms: bool = True) -> list[str]:
    """Run every applicable property on ``p``: causality where claimed, layout == mask (with
    block-kind checks and CSR validity), analytic == generic, and at each square size the closed
    forms; plus ``parse(str(p)) == p``. ``roundtrip=None`` runs it unless a custom predicate in p
    has no registered name; that skip is never silent: it warns (``UserWarning``) and the
    returned list says ``"roundtrip skipped: <why>"``. ``roundtrip=True`` always runs it.
    ``sizes`` are ints (q_len = kv_len) or (q_len, kv_len) pairs.
    Returns the names of the checks that ran (and of any skipped)."""
    ran: list[str] = []
    sizes = [(s, s) if isinstance(s, (int, np.integer)) else tuple(s) for s in sizes]
    if roundtrip is None:
        blocker = _roundtrip_blocker(p)
        roundtrip = blocker is None
        if blocker is not None:
            warnings.warn(f"check_pattern: round trip not checked: {blocker}", UserWarning, stacklevel=2)
            ran.append(f"roundtrip skipped: {blocker}")
    if roundtrip:
        assert_roundtrip(p)
        ran.append("roundtrip")
    for q_len, kv_len in sizes:
        if assert_causal(p, q_len, kv_len, context=context):
            ran.append(f"causal@{q_len}x{kv_len}")
        for blk in blocks:
            assert_layout_matches_mask(p, q_len, kv_len, blk, context=context)
            ran.append(f"layout@{q_len}x{kv_len}/{_block(blk)}")
            if assert_paths_agree(p, q_len, kv_len, blk, context=context):
                ran.append(f"paths@{q_len}x{kv_len}/{_block(blk)}")
            if closed_forms and q_len == kv_len and not isinstance(context, (list, tuple)):
                assert_closed_form_matches(p, q_len, blk, context=context)
                ran.append(f"closed_form@{q_len}/{_block(blk)}")
    return ran
