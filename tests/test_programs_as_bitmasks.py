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


def test_dedupe_bitmasks_stores_each_mask_once_and_keeps_the_token_mask():
    from spattern.compiler.layout import dedupe_bitmasks

    rng = np.random.default_rng(0)
    shapes = rng.integers(0, 2**32, size=(3, 16, 2), dtype=np.uint32)
    pick = np.array([2, 0, 2, 1, 0, 2])
    bitmasks = shapes[pick]                                  # 6 stored, 3 distinct
    mask_idx = np.array([-1, 5, 0, -1, 3, 1, 2, 4], np.int32)
    uniq, idx = dedupe_bitmasks(bitmasks, mask_idx)
    assert uniq.shape == (3, 16, 2) and idx.dtype == mask_idx.dtype
    np.testing.assert_array_equal(uniq, shapes[[2, 0, 1]])   # order of first use
    np.testing.assert_array_equal(idx == -1, mask_idx == -1)
    used = mask_idx >= 0
    np.testing.assert_array_equal(uniq[idx[used]], bitmasks[mask_idx[used]])
    distinct = shapes[[0, 1, 2]]
    same = dedupe_bitmasks(distinct, np.array([0, 1, 2], np.int32))
    assert same[0] is distinct  # nothing repeats: the inputs themselves
    # a compiled layout whose random block pattern is finer than its blocks: many partial blocks, few shapes
    text = "(local(200) | random(2, seed=3, block=32) | sink(128)) & causal"
    lay = spattern.compile(text, 2048, block=(128, 128))
    assert 0 < lay.bitmasks.shape[0] < int((lay.block_kind == BITMASK).sum())
    lay.validate()
    np.testing.assert_array_equal(lay.to_dense()[0], spattern.parse(text).dense_mask(2048))


@pytest.mark.parametrize("pattern,n,block", [p for p in PATTERNS if "random" not in p[0]] + [
    ("(local(322) | landmark(every=512) | sink(64)) & causal", 2048, (64, 64)),
    ("heads(dilated(64, 3) & causal, (local(30) | strided(50)) & causal)", 777, (64, 128)),
])
def test_each_program_block_gets_its_own_evaluated_mask(pattern, n, block):
    """The slow twin of the per-class evaluation: every PROGRAM block's mask evaluated on its own and
    packed equals the bits its BITMASK block points at in the twin."""
    from spattern.compiler.layout import pack_bits

    lay = spattern.compile(pattern, n, block=block)
    out = programs_as_bitmasks(lay)
    idx = np.flatnonzero(lay.block_kind == PROGRAM)
    assert idx.size
    np.testing.assert_array_equal(out.bitmasks[out.mask_idx[idx]], pack_bits(lay.block_masks(idx)))
    keep = lay.block_kind != PROGRAM  # the other blocks' kinds and masks as they were
    np.testing.assert_array_equal(out.block_kind[keep], lay.block_kind[keep])
    bm = np.flatnonzero(lay.block_kind == BITMASK)
    np.testing.assert_array_equal(out.bitmasks[out.mask_idx[bm]], lay.bitmasks[lay.mask_idx[bm]])


def test_a_long_band_converts_by_block_classes_not_blocks():
    """64K tokens of a band with landmarks: 17K PROGRAM blocks of 128 x 128 but a dozen distinct masks;
    evaluated per block this took 34 s on this CPU, per class it is a fraction of a second."""
    import time

    lay = spattern.compile("(local(322) | landmark(every=2048) | sink(64)) & causal", 65536, block=(128, 128))
    assert (lay.block_kind == PROGRAM).sum() > 17000
    t = time.perf_counter()
    out = programs_as_bitmasks(lay)
    assert time.perf_counter() - t < 5.0
    assert out.bitmasks.shape[0] <= 16 and not (out.block_kind == PROGRAM).any()


def test_the_mma_kernels_read_programs_beyond_bands_as_bits(monkeypatch):
    """cupy_backend.kernel_layout's policy (no GPU needed: the twin is built on the host and cached on
    the layout under any device key): auto keeps a causal window's bands as programs and reads a sink's
    range, a landmark's or a stride's modulo as bits; 1 reads every PROGRAM block as bits, 0 none."""
    from spattern.runtime import cupy_backend as cb

    def lay(text):
        return spattern.compile(text, 1024, block=(64, 64))

    window, sink = lay("local(200) & causal"), lay("(local(160) | sink(64)) & causal")
    landmark, strided = lay("(local(160) | landmark(every=512)) & causal"), lay("(local(64) | strided(128)) & causal")
    bits_only = lay("(local(100) | random(2, seed=1)) & causal")  # its partial blocks are bitmasks already
    assert [cb.reads_as_bits(x) for x in (window, sink, landmark, strided, bits_only)] == [False, True, True, True, False]
    assert cb.reads_as_bits(window, "1") and not cb.reads_as_bits(landmark, "0") and not cb.reads_as_bits(bits_only, "1")
    monkeypatch.delenv(cb.ENV_BITMASK, raising=False)
    assert cb.kernel_layout(window, "cpu") is window
    assert not (cb.kernel_layout(sink, "cpu").block_kind == PROGRAM).any()
    twin = cb.kernel_layout(landmark, "cpu")
    assert twin is not landmark and not (twin.block_kind == PROGRAM).any()
    np.testing.assert_array_equal(twin.to_dense(), landmark.to_dense())
    assert cb.kernel_layout(landmark, "cpu") is twin  # built once per layout
    monkeypatch.setenv(cb.ENV_BITMASK, "0")
    assert cb.kernel_layout(landmark, "cpu") is landmark
    monkeypatch.setenv(cb.ENV_BITMASK, "1")
    assert cb.kernel_layout(window, "cpu") is not window
    monkeypatch.setenv(cb.ENV_BITMASK, "sometimes")
    with pytest.raises(ValueError, match="SPATTERN_MMA_BITMASK: expected one of"):
        cb.kernel_layout(window, "cpu")


def test_the_hopper_launcher_reads_any_number_of_program_blocks_as_bits():
    """hopper_backend.kernel_layout (host side, no GPU needed): a layout of 3,168 PROGRAM blocks, over the
    2,048 the launcher used to cap its bitmask conversion at, is read as bits, with the same token mask."""
    from spattern.runtime import hopper_backend

    lay = spattern.compile("dilated(1024, 4) & causal", 8192, block=(128, 64))
    assert (lay.block_kind == PROGRAM).sum() > 2048
    out = hopper_backend.kernel_layout(lay, "cpu", int(lay.program_len.max()))
    assert out is not lay and not (out.block_kind == PROGRAM).any()
    idx = np.flatnonzero(lay.block_kind == PROGRAM)[::97]  # a sample of the blocks, against their own masks
    from spattern.compiler.layout import pack_bits
    np.testing.assert_array_equal(out.bitmasks[out.mask_idx[idx]], pack_bits(lay.block_masks(idx)))
