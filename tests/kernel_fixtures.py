"""Test-only layout fixtures for the kernel tests (GPU suites, sanitizer script, CPU checks).

``layout_from_masks`` builds a BlockLayout block by block from dense boolean masks, with the block
kinds chosen here rather than by the compiler: the kernels' independent twin. The mask-program
opcodes are ``spattern.ir.program``'s (no private copy).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from spattern.compiler.layout import BlockLayout
from spattern.ir.program import (AND, ANDNOT, BAND, DIFF_MOD, FALSE, INF, KEY_MOD, KEY_RANGE, NOT, OR,  # noqa: F401
                                 QUERY_MOD, QUERY_RANGE, TRUE)
from spattern.ir.program import evaluate as eval_program

def layout_from_masks(masks: np.ndarray, block_q: int, block_k: int, group_shape=(1, 1),
                      programs: Sequence | None = None, bitmask_every: int = 0) -> BlockLayout:
    """A BlockLayout built block by block from dense boolean masks (G, q_len, kv_len), with the
    block kinds chosen here rather than by the compiler: the kernel tests' independent twin.

    Partial blocks of a group with a program become PROGRAM blocks (every ``bitmask_every``-th
    partial block a BITMASK block instead, to exercise both paths), otherwise BITMASK.
    ``programs[g]`` must reproduce ``masks[g]`` exactly (checked).
    """
    masks = np.asarray(masks, bool)
    G, q_len, kv_len = masks.shape
    assert G == int(np.prod(group_shape))
    R, C = -(-q_len // block_q), -(-kv_len // block_k)
    W = -(-block_k // 32)
    pad = np.zeros((G, R * block_q, C * block_k), bool)
    pad[:, :q_len, :kv_len] = masks
    inr = np.zeros((R * block_q, C * block_k), bool)
    inr[:q_len, :kv_len] = True
    if programs is None:
        programs = [[] for _ in range(G)]
    P = max(1, max(len(p) for p in programs))
    prog_arr = np.zeros((G, P, 4), np.int32)
    prog_len = np.zeros(G, np.int32)
    ii, jj = np.meshgrid(np.arange(q_len), np.arange(kv_len), indexing="ij")
    for g, p in enumerate(programs):
        if len(p):
            assert np.array_equal(eval_program(p, ii, jj), masks[g]), f"program of group {g} != mask"
            prog_arr[g, : len(p)] = np.asarray(p, np.int32)
            prog_len[g] = len(p)
    row_ptr = np.zeros((G, R + 1), np.int32)
    cols, kinds, midx, bms = [], [], [], []
    npart = 0
    for g in range(G):
        row_ptr[g, 0] = len(cols)
        for r in range(R):
            for c in range(C):
                blk = pad[g, r * block_q:(r + 1) * block_q, c * block_k:(c + 1) * block_k]
                ib = inr[r * block_q:(r + 1) * block_q, c * block_k:(c + 1) * block_k]
                if not blk.any():
                    continue
                cols.append(c)
                if np.array_equal(blk, ib):
                    kinds.append(0)
                    midx.append(-1)
                    continue
                npart += 1
                if prog_len[g] > 0 and not (bitmask_every and npart % bitmask_every == 0):
                    kinds.append(1)
                    midx.append(-1)
                else:
                    kinds.append(2)
                    midx.append(len(bms))
                    bits = np.zeros((block_q, W * 32), bool)
                    bits[:, :block_k] = blk
                    sh = np.arange(32, dtype=np.uint64)
                    words = (bits.reshape(block_q, W, 32).astype(np.uint64) << sh).sum(-1)
                    bms.append(words.astype(np.uint32))
            row_ptr[g, r + 1] = len(cols)
    bitmasks = np.stack(bms).astype(np.uint32) if bms else np.zeros((0, block_q, W), np.uint32)
    return BlockLayout(q_len, kv_len, block_q, block_k, tuple(group_shape), row_ptr,
                       np.asarray(cols, np.int32), np.asarray(kinds, np.uint8),
                       np.asarray(midx, np.int32), bitmasks, prog_arr, prog_len).validate()


def layout_dense_mask(layout) -> np.ndarray:
    """(G, q_len, kv_len) token mask of a layout (small N; tests)."""
    return layout.to_dense()


# Mask programs of the built-in families, one per opcode family, on absolute (i, j) (the kernels'
# correctness suites run every one of them).
PROGRAM_FAMILIES = {
    "causal": [(BAND, 0, INF, 0)],
    "window": [(BAND, -37, 37, 0)],
    "causal_window": [(BAND, 0, 90, 0)],
    "dilated": [(DIFF_MOD, 3, 0, 0), (BAND, -100, 100, 0), (AND, 0, 0, 0)],
    "strided": [(KEY_MOD, 64, 60, 63), (BAND, 0, 20, 0), (OR, 0, 0, 0), (BAND, 0, INF, 0), (AND, 0, 0, 0)],
    "landmark": [(BAND, -50, 50, 0), (KEY_RANGE, 0, 16, 0), (OR, 0, 0, 0), (QUERY_RANGE, 0, 16, 0), (OR, 0, 0, 0)],
    "query_mod": [(QUERY_MOD, 5, 1, 2), (BAND, -10, 10, 0), (OR, 0, 0, 0)],
    "not_andnot": [(TRUE, 0, 0, 0), (BAND, -3, 3, 0), (ANDNOT, 0, 0, 0), (KEY_MOD, 7, 0, 0), (NOT, 0, 0, 0),
                   (AND, 0, 0, 0)],
    # rows 64..127 (and the tail) attend nothing -> empty rows
    "empty_rows": [(BAND, -20, 20, 0), (QUERY_RANGE, 64, 128, 0), (ANDNOT, 0, 0, 0), (QUERY_RANGE, 0, 180, 0),
                   (AND, 0, 0, 0)],
    # rows 64..127 attend nothing (empty rows) and keys 180.. are never attended (empty columns)
    "empty_rows_cols": [(BAND, -20, 20, 0), (QUERY_RANGE, 64, 128, 0), (ANDNOT, 0, 0, 0), (KEY_RANGE, 0, 180, 0),
                        (AND, 0, 0, 0)],
}
