"""programs_as_bitmasks: PROGRAM blocks stored as BITMASK blocks keep the layout's token mask exactly."""
from __future__ import annotations

import numpy as np
import pytest

import spattern
from spattern.compiler.layout import BITMASK, PROGRAM, programs_as_bitmasks

PATTERNS = [
    ("(local(40) | sink(3)) & causal", 300, (64, 64)),
    ("local(300) | sink(128)", 1000, (128, 128)),
    ("(local(200) | random(2, seed=3) | sink(128)) & causal", 1100, (128, 64)),
    ("strided(64) & causal", 700, (128, 128)),
]


@pytest.mark.parametrize("pattern,n,block", PATTERNS)
def test_same_token_mask_and_no_program_block_left(pattern, n, block):
    lay = spattern.compile(pattern, n, block=block)
    out = programs_as_bitmasks(lay)
    if (lay.block_kind == PROGRAM).any():
        assert out is not lay and not (out.block_kind == PROGRAM).any()
        assert (out.block_kind == BITMASK).sum() == (lay.block_kind == PROGRAM).sum() + (lay.block_kind == BITMASK).sum()
    out.validate()
    np.testing.assert_array_equal(out.to_dense(), lay.to_dense())
    assert np.array_equal(out.row_ptr, lay.row_ptr) and np.array_equal(out.col_idx, lay.col_idx)


def test_per_head_layouts_keep_each_group():
    lay = spattern.compile("heads(local(64) & causal, strided(32) & causal)", 512, block=(128, 128))
    assert lay.n_groups == 2
    out = programs_as_bitmasks(lay)
    np.testing.assert_array_equal(out.to_dense(), lay.to_dense())


def test_too_many_program_blocks_or_none_leave_the_layout_as_it_is():
    lay = spattern.compile("local(40) & causal", 1024, block=(64, 64))
    assert programs_as_bitmasks(lay, max_blocks=1) is lay
    full = spattern.compile("full()", 512, block=(128, 128))
    assert programs_as_bitmasks(full) is full
