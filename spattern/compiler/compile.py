"""Pattern -> BlockLayout.

Two paths that must give identical layouts:

- ``analytic``: each built-in family enumerates its blocks in O(nnz) (``Pattern.blocks``) and
  compositions merge sorted block lists or filter them by O(1) per-block classifiers; blocks
  whose state composition cannot decide (partial | partial, partial & partial, partial - partial)
  are resolved by evaluating the predicate on just those blocks.
  A pattern without a mask program whose every key is seen by one interval of queries
  (``Pattern.key_intervals``: outline on a laminar tree, and its intersections with causal or
  full) skips all of that: its blocks and states come from the intervals
  (``spattern.ir.blocks.interval_blocks``), and its partial blocks are grouped by their per-key
  row ranges so that only the distinct ones are turned into bitmasks. (Causal and full have
  intervals too, but their own band enumeration is cheaper and their programs need no bitmask.)
- ``generic``: evaluates the predicate block row by block row (block_q x kv_len at a time, never
  N x N at once) and reduces to blocks. Works for any pattern, custom predicates included.

``auto`` takes the analytic path when every part of the pattern has an enumerator.
Partial blocks carry the group's mask program when the pattern has one (the kernel evaluates it
per element) and a bitmask otherwise. Static patterns are compiled once and cached.

Limits, checked before anything large is allocated (``CompileTooLarge``, a ``UserError``, a
``MemoryError`` and a ``ValueError``, naming the size):

- ``q_len``, ``kv_len`` <= ``MAX_LEN`` = 2**30 (mask programs and kernels use int32 positions, with
  2**30 meaning "unbounded"); block sizes <= ``MAX_BLOCK`` = 2**14 tokens per side.
- memory: an estimate of the bytes a compile needs must fit ``memory_limit()`` (half the
  machine's RAM, or ``SPATTERN_COMPILE_MEMORY_GIB``). Estimated before enumerating blocks, from
  the number of blocks (the grid's R * C, or when that is too large the pattern's closed-form
  block count from ``spattern.compiler.complexity``) at ``BYTES_PER_BLOCK`` each, plus the
  generic path's per-row evaluation (block_q * kv_len pairs at ``BYTES_PER_PAIR``); and again
  before token masks of blocks are materialized (n blocks * block_q * block_k bytes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from spattern.ir import program as prog
from spattern.ir.blocks import FULL as S_FULL
from spattern.ir.blocks import UNKNOWN, Grid, interval_blocks, interval_masks, interval_signatures
from spattern.compiler.layout import (BITMASK, FULL, PROGRAM, BlockLayout, dedupe_bitmasks, first_use_unique,
                                      pack_bits)
from spattern.patterns.base import Geometry, Heads, Pattern
from spattern.patterns.parse import parse
from spattern.utils.errors import UserError

PATHS = ("auto", "analytic", "generic")
_EVAL_CHUNK = 1 << 20  # token pairs evaluated at once when resolving blocks
MAX_LEN = 1 << 30
MAX_BLOCK = 1 << 14
# int64 row + col, int8 state, uint8 kind, int64 mask_idx, int32 copies in the layout, and the
# temporaries of merging/sorting block lists (about 2x): an estimate, not a measurement bound
BYTES_PER_BLOCK = 64
# generic path, per evaluated (query, key) pair: int64 index temporaries of the predicate (3 x 8),
# the bool mask and its padded copy
BYTES_PER_PAIR = 26


class CompileTooLarge(UserError, MemoryError, ValueError):
    """A compile that would need more memory (or larger sizes) than allowed; says how much (a
    ``UserError``: the CLI prints the one-line message and exits 2)."""


def memory_limit() -> int:
    """Bytes a compile may use: ``SPATTERN_COMPILE_MEMORY_GIB`` GiB, else half the physical RAM."""
    env = os.environ.get("SPATTERN_COMPILE_MEMORY_GIB")
    if env:
        try:
            return int(float(env) * 2**30)
        except ValueError:
            raise ValueError(f"SPATTERN_COMPILE_MEMORY_GIB: expected a number of GiB, got {env!r}") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf (e.g. Windows): 8 GiB
        return 8 << 30


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def _reserve(nbytes: float, what: str, where: str) -> None:
    """Refuse (CompileTooLarge) before allocating ``nbytes`` when that exceeds the limit."""
    limit = memory_limit()
    if nbytes > limit:
        source = ("SPATTERN_COMPILE_MEMORY_GIB" if os.environ.get("SPATTERN_COMPILE_MEMORY_GIB")
                  else "half this machine's memory; set SPATTERN_COMPILE_MEMORY_GIB to change it")
        raise CompileTooLarge(
            f"compile {where}: expected to need about {_gib(nbytes)} for {what}, more than the limit of "
            f"{_gib(limit)} ({source}); use a shorter length or larger blocks")


def _estimate_blocks(pattern: Pattern, q_len: int, kv_len: int, bq: int, bk: int) -> tuple[float, str]:
    """An upper estimate of the blocks a compile enumerates, and where it comes from; 0 when the
    grid is too large to be the estimate and no closed form is known (then only the later,
    per-step checks apply)."""
    R, C = -(-q_len // bq), -(-kv_len // bk)
    grid = float(R) * float(C)
    if grid * BYTES_PER_BLOCK <= memory_limit() or bq != bk or q_len != kv_len:
        return grid, f"a grid of {R} x {C} blocks"
    from spattern.compiler.complexity import closed_form, evaluate_form  # sympy: only for huge grids

    parts = pattern.patterns if isinstance(pattern, Heads) else (pattern,)
    total = 0.0
    for p in parts:
        form = closed_form(p, "blocks", b=bq)
        if form is None:
            return 0.0, "unknown"
        total += max(0, evaluate_form(form[0], q_len))
    return min(total, grid), f"about {total:.3g} blocks (closed form)"


@dataclass
class _Group:
    counts: np.ndarray  # int64 [R]
    cols: np.ndarray  # int64 [nnz]
    kinds: np.ndarray  # uint8 [nnz]
    mask_idx: np.ndarray  # int64 [nnz], local
    bitmasks: np.ndarray  # uint32 [m, bq, W]
    program: list | None


def _check_block(block) -> tuple[int, int]:
    if isinstance(block, (int, np.integer)) and not isinstance(block, bool):
        block = (int(block), int(block))
    try:
        bq, bk = (int(b) for b in block)
    except (TypeError, ValueError):
        raise TypeError(f"block: expected an int or a pair (block_q, block_k), got {block!r}") from None
    if bq < 16 or bk < 16 or bq % 16 or bk % 16:
        raise ValueError(f"block: expected sizes that are positive multiples of 16, got ({bq}, {bk})")
    if max(bq, bk) > MAX_BLOCK:
        raise CompileTooLarge(f"block: expected sizes of at most {MAX_BLOCK} (2**14) tokens, got ({bq}, {bk})")
    return bq, bk


def _check_len(value, what) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what}: expected a positive int, got {value!r}")
    if value > MAX_LEN:
        raise CompileTooLarge(f"{what}: expected at most {MAX_LEN} (2**30: kernels use int32 positions), got {value}")
    return int(value)


def compile(
    pattern: Pattern | str,
    q_len: int,
    kv_len: int | None = None,
    block: int | tuple[int, int] = (64, 64),
    context: Any = None,
    path: str = "auto",
) -> BlockLayout:
    """Compile a pattern (or its string) into a BlockLayout.

    ``context``: what content-dependent patterns need (e.g. ``{"cu_seqlens": [...]}``), or a list
    of such contexts, one per batch element (one layout group each). Per-head stacks
    (``heads(...)``) give one group per head. ``cu_seqlens`` may end before ``q_len`` (a shorter
    sequence: later positions attend nothing) or after it (cut at the length); see
    ``spattern/patterns/document.py``.
    """
    if isinstance(pattern, str):
        pattern = parse(pattern)
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern: expected a Pattern or its string, got {type(pattern).__name__}")
    q_len = _check_len(q_len, "q_len")
    kv_len = q_len if kv_len is None else _check_len(kv_len, "kv_len")
    bq, bk = _check_block(block)
    if path not in PATHS:
        raise ValueError(f"path: expected one of {PATHS}, got {path!r}")
    where = f"{pattern} at q_len={q_len}, kv_len={kv_len}, block=({bq}, {bk})"
    n_groups = len(pattern.patterns) if isinstance(pattern, Heads) else 1
    if isinstance(context, (list, tuple)):
        n_groups *= max(1, len(context))
    blocks, source = _estimate_blocks(pattern, q_len, kv_len, bq, bk)
    _reserve(n_groups * (blocks * BYTES_PER_BLOCK + 24.0 * (-(-q_len // bq) + 1)), f"the block lists ({source})", where)
    _reserve(float(bq) * bk, "the token mask of one block", where)
    if pattern.is_static and not isinstance(context, (list, tuple)):
        return _compile_static(pattern, q_len, kv_len, bq, bk, path)
    contexts = list(context) if isinstance(context, (list, tuple)) else [context]
    if not contexts:
        raise ValueError("context: expected a context or a non-empty list of them, got []")
    if pattern.is_static:
        contexts = [None]  # a static pattern ignores the context: one shared group
    head_patterns = pattern.patterns if isinstance(pattern, Heads) else (pattern,)
    groups = []
    for ctx in contexts:
        for p in head_patterns:
            bound = p.bind(ctx)  # a pattern that needs a context says what it needs
            if not bound.is_static:
                raise ValueError(f"pattern {p} needs a context to compile (got {ctx!r})")
            groups.append(_compile_group(bound, q_len, kv_len, bq, bk, path))
    return _assemble(groups, (len(contexts), len(head_patterns)), q_len, kv_len, bq, bk, str(pattern))


@lru_cache(maxsize=128)
def _compile_static(pattern, q_len, kv_len, bq, bk, path) -> BlockLayout:
    head_patterns = pattern.patterns if isinstance(pattern, Heads) else (pattern,)
    groups = [_compile_group(p, q_len, kv_len, bq, bk, path) for p in head_patterns]
    return _assemble(groups, (1, len(head_patterns)), q_len, kv_len, bq, bk, str(pattern))


def _assemble(groups: Sequence[_Group], group_shape, q_len, kv_len, bq, bk, text) -> BlockLayout:
    G = len(groups)
    R = -(-q_len // bq)
    row_ptr = np.zeros((G, R + 1), dtype=np.int64)
    off, moff = 0, 0
    mask_idx = []
    for g, grp in enumerate(groups):
        row_ptr[g, 0] = off
        row_ptr[g, 1:] = off + np.cumsum(grp.counts)
        off = int(row_ptr[g, -1])
        mask_idx.append(np.where(grp.mask_idx >= 0, grp.mask_idx + moff, -1))
        moff += grp.bitmasks.shape[0]
    W = -(-bk // 32)
    P = max([len(g.program) for g in groups if g.program] + [1])
    programs = np.zeros((G, P, 4), dtype=np.int32)
    program_len = np.zeros(G, dtype=np.int32)
    for g, grp in enumerate(groups):
        if grp.program:
            programs[g] = prog.to_array(grp.program, P)
            program_len[g] = len(grp.program)
    cat = lambda arrs, dt: np.concatenate(arrs).astype(dt) if arrs else np.zeros(0, dt)  # noqa: E731
    bitmasks = [g.bitmasks for g in groups if g.bitmasks.shape[0]]
    bitmasks, mask_idx_all = dedupe_bitmasks(
        np.concatenate(bitmasks).astype(np.uint32) if bitmasks else np.zeros((0, bq, W), np.uint32),
        cat(mask_idx, np.int32))
    layout = BlockLayout(
        q_len=q_len, kv_len=kv_len, block_q=bq, block_k=bk, group_shape=tuple(int(x) for x in group_shape),
        row_ptr=row_ptr.astype(np.int32),
        col_idx=cat([g.cols for g in groups], np.int32),
        block_kind=cat([g.kinds for g in groups], np.uint8),
        mask_idx=mask_idx_all,
        bitmasks=bitmasks,
        programs=programs, program_len=program_len, pattern=text,
    )
    for name in BlockLayout._ARRAYS:  # cached and shared: read-only
        getattr(layout, name).setflags(write=False)
    return layout


def _program_of(pattern: Pattern) -> list | None:
    p = pattern.program()
    if p is None:
        return None
    try:
        prog.validate(p)
    except ValueError:
        return None  # too long or too deep for a kernel: bitmasks instead
    return [tuple(int(x) for x in ins) for ins in p]


def _states_on(pattern: Pattern, grid: Grid, rows, cols) -> np.ndarray:
    """Exact state of ``pattern`` on given blocks: -1 absent, 0 partial, 1 full."""
    st = pattern.classify(grid, rows, cols)
    if st is not None and not (st == UNKNOWN).any():
        return st
    n = block_token_masks(pattern, grid, rows, cols).sum(axis=(1, 2))
    area = _areas(grid, rows, cols)
    return np.where(n == area, S_FULL, np.where(n > 0, 0, -1)).astype(np.int8)


_UNIFORM_CHUNK = 16  # blocks evaluated at a time when looking for a non-uniform one


def _uniform_state(pattern: Pattern, grid: Grid, rows, cols) -> int | None:
    """S_FULL or -1 when ``pattern`` has that state on every given block, else None (mixed, or
    partial somewhere: ``_program_on`` treats both alike). The O(1) classifier when the pattern has
    one; else the predicate a few blocks at a time, stopping at the first partial or differing
    block (the part of an intersection whose blocks are all partial costs one chunk, not all)."""
    st = pattern.classify(grid, rows, cols)
    if st is not None and not (st == UNKNOWN).any():
        return int(st[0]) if st.size and (st == st[0]).all() and st[0] != 0 else None
    first = None
    for s in range(0, rows.size, _UNIFORM_CHUNK):
        part = _states_on(pattern, grid, rows[s : s + _UNIFORM_CHUNK], cols[s : s + _UNIFORM_CHUNK])
        if first is None:
            first = int(part[0])
        if first == 0 or (part != first).any():
            return None
    return first


def _program_on(pattern: Pattern, grid: Grid, rows, cols) -> list | None:
    """A mask program that is exact on the given (partial) blocks, or None.

    A part without a program of its own can still be described on these blocks when its state is
    the same on all of them: full inside an intersection (drop it), absent inside a union (drop
    it), and so on. E.g. ``blockstrided(4) & causal`` compiled with the pattern's block size:
    its partial blocks are the diagonal ones, where blockstrided is full, so the causal program
    alone is exact there and no bitmask is needed. The kernel evaluates a group's program only on
    its PROGRAM blocks, which are these blocks.
    """
    own = _program_of(pattern)
    if own is not None or rows.size == 0:
        return own
    from spattern.patterns.base import Difference, Intersection, Union

    TRUE, FALSE = [(prog.TRUE, 0, 0, 0)], [(prog.FALSE, 0, 0, 0)]

    def uniform(p):  # the part's state if it is FULL (or absent) on every block, else None
        return _uniform_state(p, grid, rows, cols)

    if isinstance(pattern, (Intersection, Union)):
        neutral, absorbing, op = ((S_FULL, -1, prog.AND) if isinstance(pattern, Intersection)
                                  else (-1, S_FULL, prog.OR))
        parts = []
        for p in pattern.parts:
            sub = _program_on(p, grid, rows, cols)
            if sub is None:
                u = uniform(p)
                if u == absorbing:
                    return FALSE if op == prog.AND else TRUE
                if u != neutral:
                    return None
                continue
            if sub == (TRUE if op == prog.AND else FALSE):
                continue  # neutral element
            if sub == (FALSE if op == prog.AND else TRUE):
                return sub  # absorbing element
            parts.append(sub)
        if not parts:
            return TRUE if op == prog.AND else FALSE
        out = list(parts[0])
        for sub in parts[1:]:
            out += list(sub) + [(op, 0, 0, 0)]
        return _valid_or_none(out)
    if isinstance(pattern, Difference):
        left = _program_on(pattern.left, grid, rows, cols)
        if left is None:
            if uniform(pattern.left) != S_FULL:
                return None
            left = TRUE
        right = _program_on(pattern.right, grid, rows, cols)
        if right is None:
            u = uniform(pattern.right)
            if u == -1:
                return _valid_or_none(list(left))
            if u == S_FULL:
                return FALSE
            return None
        return _valid_or_none(list(left) + list(right) + [(prog.ANDNOT, 0, 0, 0)])
    u = uniform(pattern)
    return TRUE if u == S_FULL else (FALSE if u == -1 else None)


def _valid_or_none(p):
    try:
        prog.validate(p)
    except ValueError:
        return None
    return [tuple(int(x) for x in ins) for ins in p]


@lru_cache(maxsize=256)
def _compile_group(pattern: Pattern, q_len, kv_len, bq, bk, path) -> _Group:
    geom = Geometry(q_len, kv_len)
    grid = Grid(q_len, kv_len, bq, bk)
    # key intervals where partial blocks need bitmasks: a pattern with a mask program (causal, full)
    # enumerates its blocks more cheaply by its own band (in order, no sort) and needs no bitmask
    intervals = pattern.key_intervals(geom) if path != "generic" and _program_of(pattern) is None else None
    if intervals is not None:  # exact blocks and states from the keys' query intervals
        bs = interval_blocks(grid, *intervals)
    else:
        bs = pattern.blocks(geom, bq, bk) if path != "generic" else None
    if bs is None and path == "analytic":
        raise ValueError(f"path='analytic': pattern {pattern} has no analytic block enumerator "
                         "(custom predicates don't); use path='auto' or 'generic'")
    masks, have = None, None  # token masks already evaluated (candidate blocks), reused for the bitmasks
    if bs is not None:
        rows, cols, state = bs.rows, bs.cols, bs.state
        unk = np.flatnonzero(state == UNKNOWN)
        if unk.size:
            masks = block_token_masks(pattern, grid, rows[unk], cols[unk])
            n = masks.sum(axis=(1, 2))
            area = _areas(grid, rows[unk], cols[unk])
            state = state.copy()
            state[unk] = np.where(n == area, S_FULL, np.where(n > 0, 0, -1))
            have = np.full(rows.size, -1, dtype=np.int64)
            have[unk] = np.arange(unk.size)
            keep = state >= 0
            rows, cols, state, have = rows[keep], cols[keep], state[keep], have[keep]
        full = state == S_FULL
    else:
        rows, cols, full = _generic_blocks(pattern, grid)
    counts = np.bincount(rows, minlength=grid.n_rows).astype(np.int64)
    part = np.flatnonzero(~full)
    program = _program_on(pattern, grid, rows[part], cols[part])
    kinds = np.where(full, FULL, PROGRAM if program is not None else BITMASK).astype(np.uint8)
    if program is not None and part.size == 0:
        program = None  # no partial block: nothing to evaluate
    mask_idx = np.full(rows.size, -1, dtype=np.int64)
    W = -(-bk // 32)
    bitmasks = np.zeros((0, bq, W), dtype=np.uint32)
    if program is None and part.size and intervals is not None:
        bitmasks, mask_idx[part] = _interval_bitmasks(grid, rows[part], cols[part], intervals)
    elif program is None and part.size:
        mask_idx[part] = np.arange(part.size)
        bitmasks = pack_bits(_part_masks(pattern, grid, rows[part], cols[part], masks,
                                         None if have is None else have[part]))
    return _Group(counts, cols.astype(np.int64), kinds, mask_idx, bitmasks, program)


def _interval_bitmasks(grid: Grid, rows, cols, intervals) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 [m, block_q, W] bitmasks, int64 [n] index into them) of blocks (rows, cols) under key
    intervals: blocks are grouped by their signatures (``interval_signatures``: O(block_k) each), and
    only the m distinct ones are turned into token masks, in order of first use."""
    sig = interval_signatures(grid, rows, cols, *intervals)
    first, index = first_use_unique(sig)
    _reserve(float(first.size) * grid.block_q * grid.block_k, f"the token masks of {first.size} distinct blocks",
             f"key intervals at q_len={grid.q_len}, kv_len={grid.kv_len}, block=({grid.block_q}, {grid.block_k})")
    return pack_bits(interval_masks(sig[first], grid.block_q)), index


def _part_masks(pattern, grid, rows, cols, masks, have) -> np.ndarray:
    """Token masks of the partial blocks: the ones evaluated already (``have`` >= 0 indexes
    ``masks``), the rest evaluated now."""
    if have is None:
        return block_token_masks(pattern, grid, rows, cols)
    new = np.flatnonzero(have < 0)
    out = masks[np.maximum(have, 0)]
    if new.size:
        out[new] = block_token_masks(pattern, grid, rows[new], cols[new])
    return out


def _areas(grid: Grid, rows, cols) -> np.ndarray:
    q0, q1 = grid.row_extent(rows)
    k0, k1 = grid.col_extent(cols)
    return (q1 - q0 + 1) * (k1 - k0 + 1)


def block_token_masks(pattern: Pattern, grid: Grid, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """bool [n, block_q, block_k]: the predicate on blocks (rows, cols); out-of-range bits False."""
    bq, bk = grid.block_q, grid.block_k
    geom = Geometry(grid.q_len, grid.kv_len)
    # out, and per chunk the index temporaries (int64) of the predicate
    _reserve(float(rows.size) * bq * bk + min(float(rows.size) * bq * bk, _EVAL_CHUNK) * BYTES_PER_PAIR,
             f"the token masks of {rows.size} blocks",
             f"{pattern} at q_len={grid.q_len}, kv_len={grid.kv_len}, block=({bq}, {bk})")
    out = np.zeros((rows.size, bq, bk), dtype=bool)
    step = max(1, _EVAL_CHUNK // (bq * bk))
    for s in range(0, rows.size, step):
        r, c = rows[s : s + step], cols[s : s + step]
        qi = r[:, None, None] * bq + np.arange(bq)[None, :, None]
        kj = c[:, None, None] * bk + np.arange(bk)[None, None, :]
        ok = (qi < grid.q_len) & (kj < grid.kv_len)
        m = np.asarray(pattern.allowed(np.minimum(qi, grid.q_len - 1), np.minimum(kj, grid.kv_len - 1), geom))
        out[s : s + step] = np.broadcast_to(m, ok.shape) & ok
    return out


def _generic_blocks(pattern: Pattern, grid: Grid):
    """Evaluate the predicate block row by block row: (rows, cols, full) of present blocks."""
    bq, bk, C = grid.block_q, grid.block_k, grid.n_cols
    geom = Geometry(grid.q_len, grid.kv_len)
    _reserve(float(bq) * C * bk * BYTES_PER_PAIR, f"evaluating the predicate on {bq} x {C * bk} pairs per block row",
             f"{pattern} at q_len={grid.q_len}, kv_len={grid.kv_len}, block=({bq}, {bk})")
    k = np.arange(grid.kv_len, dtype=np.int64)[None, :]
    col_w = np.minimum((np.arange(C) + 1) * bk, grid.kv_len) - np.arange(C) * bk
    rows, cols, fulls = [], [], []
    for r in range(grid.n_rows):
        q = np.arange(r * bq, min((r + 1) * bq, grid.q_len), dtype=np.int64)[:, None]
        m = np.broadcast_to(np.asarray(pattern.allowed(q, k, geom), dtype=bool), (q.shape[0], grid.kv_len))
        padded = np.zeros((q.shape[0], C * bk), dtype=bool)
        padded[:, : grid.kv_len] = m
        n = padded.reshape(q.shape[0], C, bk).sum(axis=(0, 2))
        c = np.flatnonzero(n)
        rows.append(np.full(c.size, r, dtype=np.int64))
        cols.append(c)
        fulls.append(n[c] == q.shape[0] * col_w[c])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(fulls)


def clear_cache() -> None:
    _compile_static.cache_clear()
    _compile_group.cache_clear()
