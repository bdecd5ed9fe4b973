"""Mask programs: the compact, kernel-evaluable description of built-in pattern families.

A program is a postfix sequence of instructions ``(op, a, b, c)`` (int32 each) over a stack of
booleans, evaluated per (query i, key j) in absolute token positions. ``mod`` is floor modulo.
The table is the contract with the GPU kernels (``runtime/kernels/*.cu``) and with
``docs/design.md``; keep the three in step.

| op        | code | pushes                    |
|-----------|------|---------------------------|
| TRUE      | 0    | true                      |
| FALSE     | 1    | false                     |
| BAND      | 2    | a <= i - j <= b           |
| DIFF_MOD  | 3    | (i - j) mod a == b        |
| KEY_MOD   | 4    | b <= j mod a <= c         |
| QUERY_MOD | 5    | b <= i mod a <= c         |
| KEY_RANGE | 6    | a <= j < b                |
| QUERY_RANGE | 7  | a <= i < b                |
| OR        | 8    | pop y, pop x, push x or y |
| AND       | 9    | pop y, pop x, push x and y|
| ANDNOT    | 10   | pop y, pop x, push x and not y |
| NOT       | 11   | pop x, push not x         |

``evaluate`` works on numpy arrays and on torch tensors alike (the reference runtime uses it).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

TRUE, FALSE, BAND, DIFF_MOD, KEY_MOD, QUERY_MOD, KEY_RANGE, QUERY_RANGE = range(8)
OR, AND, ANDNOT, NOT = 8, 9, 10, 11
NAMES = {
    TRUE: "TRUE", FALSE: "FALSE", BAND: "BAND", DIFF_MOD: "DIFF_MOD", KEY_MOD: "KEY_MOD",
    QUERY_MOD: "QUERY_MOD", KEY_RANGE: "KEY_RANGE", QUERY_RANGE: "QUERY_RANGE",
    OR: "OR", AND: "AND", ANDNOT: "ANDNOT", NOT: "NOT",
}
INF = 1 << 30  # "unbounded" in a program (fits int32; sequences are far shorter)
MAX_PROGRAM = 64
MAX_STACK = 32


def clamp(v: int) -> int:
    """Clamp a host-side bound into the int32 range a program stores."""
    return int(max(-INF, min(INF, v)))


def validate(program: Sequence[Sequence[int]]) -> None:
    """Raise ValueError unless the program is well formed (ops, arity, stack depth, length)."""
    if len(program) > MAX_PROGRAM:
        raise ValueError(f"mask program: expected at most {MAX_PROGRAM} instructions, got {len(program)}")
    depth = 0
    for n, ins in enumerate(program):
        if len(ins) != 4:
            raise ValueError(f"mask program instruction {n}: expected 4 ints (op, a, b, c), got {ins!r}")
        op, a = int(ins[0]), int(ins[1])
        if op not in NAMES:
            raise ValueError(f"mask program instruction {n}: unknown op {op}")
        if op in (DIFF_MOD, KEY_MOD, QUERY_MOD) and a < 1:
            raise ValueError(f"mask program instruction {n}: {NAMES[op]} needs a modulus >= 1, got {a}")
        if op <= QUERY_RANGE:
            depth += 1
        elif op in (OR, AND, ANDNOT):
            depth -= 1
            if depth < 1:
                raise ValueError(f"mask program instruction {n}: {NAMES[op]} needs two operands")
        elif op == NOT and depth < 1:
            raise ValueError(f"mask program instruction {n}: NOT needs an operand")
        if depth > MAX_STACK:
            raise ValueError(f"mask program: stack deeper than {MAX_STACK}")
    if depth != 1:
        raise ValueError(f"mask program: expected one value left on the stack, got {depth}")


def evaluate(program: Sequence[Sequence[int]], i, j):
    """Evaluate a program on broadcastable index arrays (numpy or torch); returns a bool array."""
    stack = []
    for ins in program:
        op, a, b, c = (int(x) for x in ins)
        if op == TRUE:
            stack.append((i - j) == (i - j))
        elif op == FALSE:
            stack.append((i - j) != (i - j))
        elif op == BAND:
            d = i - j
            stack.append((d >= a) & (d <= b))
        elif op == DIFF_MOD:
            stack.append(((i - j) % a) == b)
        elif op == KEY_MOD:
            m = (j + 0 * i) % a
            stack.append((m >= b) & (m <= c))
        elif op == QUERY_MOD:
            m = (i + 0 * j) % a
            stack.append((m >= b) & (m <= c))
        elif op == KEY_RANGE:
            jj = j + 0 * i
            stack.append((jj >= a) & (jj < b))
        elif op == QUERY_RANGE:
            ii = i + 0 * j
            stack.append((ii >= a) & (ii < b))
        elif op == NOT:
            stack.append(~stack.pop())
        else:
            y, x = stack.pop(), stack.pop()
            if op == OR:
                stack.append(x | y)
            elif op == AND:
                stack.append(x & y)
            elif op == ANDNOT:
                stack.append(x & ~y)
            else:
                raise ValueError(f"unknown op {op}")
    if len(stack) != 1:
        raise ValueError(f"mask program left {len(stack)} values on the stack, expected 1")
    return stack[0]


def to_array(program: Sequence[Sequence[int]], length: int | None = None) -> np.ndarray:
    """int32 [P, 4] array, padded with zeros to ``length``."""
    n = len(program) if length is None else length
    out = np.zeros((n, 4), dtype=np.int32)
    if len(program):
        out[: len(program)] = np.asarray(program, dtype=np.int64).clip(-INF, INF)
    return out
