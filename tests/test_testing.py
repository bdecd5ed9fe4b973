"""Self-tests of spattern.testing: every assertion passes on correct input and catches a
deliberately broken case with a message that says what differed where; the strategies produce
what they promise (all families, odd lengths, q_len != kv_len, heads stacks, batch groups)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import spattern as sp
from spattern.compiler.layout import BITMASK, FULL, replace
from spattern.patterns import Heads, Local, Sink
from spattern import testing as spt
from spattern.testing import strategies as sst

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def copy_layout(layout, **changes):
    """A deep copy (compile caches layouts: never mutate the cached one)."""
    arrays = {n: getattr(layout, n).copy() for n in
              ("row_ptr", "col_idx", "block_kind", "mask_idx", "bitmasks", "programs", "program_len")}
    arrays.update(changes)
    return replace(layout, **arrays)


def drop_block(layout, e):
    """The layout without stored block e (row pointers fixed up)."""
    rows, groups = layout.block_rows(), layout.block_groups()
    keep = np.ones(layout.nnz, dtype=bool)
    keep[e] = False
    rp = layout.row_ptr.astype(np.int64).copy()
    g, r = int(groups[e]), int(rows[e])
    rp[g, r + 1:] -= 1
    rp[g + 1:] -= 1
    return copy_layout(layout, row_ptr=rp.astype(np.int32), col_idx=layout.col_idx[keep].copy(),
                       block_kind=layout.block_kind[keep].copy(), mask_idx=layout.mask_idx[keep].copy())


# ------------------------------------------------------------------------------------------
# broken patterns the assertions must catch
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class DropsLastBlock(Local):
    """local() whose analytic enumerator forgets its last block: compiles to a wrong layout."""

    name = "local"

    def blocks(self, geom, block_q, block_k):
        bs = super().blocks(geom, block_q, block_k)
        n = bs.rows.size - 1
        return type(bs)(bs.grid, bs.rows[:n], bs.cols[:n], bs.state[:n])


@dataclass(frozen=True, repr=False)
class FalselyCausal(Local):
    """A symmetric window that claims to be causal."""

    claims_causal = True

    @property
    def is_causal(self):
        return True


@dataclass(frozen=True, repr=False)
class WrongClosedForm(Sink):
    """sink(n) whose closed form is off by one (and claimed exact)."""

    def pairs_expr(self, N, causal=False, n=None):
        return super().pairs_expr(N, causal, n) + 1


@dataclass(frozen=True, repr=False)
class PrintsWrong(Sink):
    """Prints a different pattern than it is."""

    def __str__(self):
        return f"sink({self.n + 1})"


def test_assert_masks_equal_message_names_first_difference_and_counts():
    a = np.zeros((3, 4), dtype=bool)
    b = a.copy()
    b[1, 2] = b[2, 3] = True
    spt.assert_masks_equal(a, a.copy())
    with pytest.raises(AssertionError) as e:
        spt.assert_masks_equal(a, b, "mine", "truth")
    msg = str(e.value)
    assert "(i=1, j=2)" in msg and "differ at 2 of 12" in msg
    assert "mine 0, truth 2" in msg and "2 only in truth" in msg
    with pytest.raises(AssertionError, match="shape"):
        spt.assert_masks_equal(a, b[:2])


def test_layout_check_catches_one_block_removed():
    p = (sp.local(20) | sp.sink(3)) & sp.causal
    layout = sp.compile(p, 70, block=16)
    want = spt.expected_masks(p, 70)
    spt.assert_layout_equals_masks(layout, want)
    for e in (0, layout.nnz // 2, layout.nnz - 1):
        broken = drop_block(layout, e)
        broken.validate()  # still a valid CSR: only the mask comparison can catch it
        r, c = int(layout.block_rows()[e]), int(layout.col_idx[e])
        with pytest.raises(AssertionError) as info:
            spt.assert_layout_equals_masks(broken, want)
        m = re.search(r"first at \(i=(\d+), j=(\d+)\)", str(info.value))
        assert m, str(info.value)
        i, j = int(m.group(1)), int(m.group(2))
        assert i // 16 == r and j // 16 == c  # the difference is reported inside the removed block
    # the layout itself is untouched (compile caches it)
    spt.assert_layout_equals_masks(sp.compile(p, 70, block=16), want)


def test_layout_check_catches_wrong_kinds():
    p = sp.local(5) & sp.causal
    layout = sp.compile(p, 64, block=16)
    want = spt.expected_masks(p, 64)
    partial = int(np.flatnonzero(layout.block_kind != FULL)[0])
    kinds = layout.block_kind.copy()
    kinds[partial] = FULL  # a partial block claimed full: to_dense() shows the extra pairs
    with pytest.raises(AssertionError, match=r"differ at \d+ of .* only in layout.to_dense\(\)"):
        spt.assert_layout_equals_masks(copy_layout(layout, block_kind=kinds), want)
    # a full block stored as a bitmask block with all bits set: same mask, wrong kind
    full_layout = sp.compile(sp.full(), 32, block=16)
    kinds = full_layout.block_kind.copy()
    kinds[0] = BITMASK
    midx = full_layout.mask_idx.copy()
    midx[0] = 0
    bits = np.full((1, 16, 1), 0xFFFF, dtype=np.uint32)
    lay = copy_layout(full_layout, block_kind=kinds, mask_idx=midx, bitmasks=bits)
    lay.validate()
    with pytest.raises(AssertionError, match="stored as partial"):
        spt.assert_layout_equals_masks(lay, spt.expected_masks(sp.full(), 32))
    spt.assert_layout_equals_masks(lay, spt.expected_masks(sp.full(), 32), exact_kinds=False)
    # an empty stored block
    empty = copy_layout(full_layout, block_kind=kinds, mask_idx=midx, bitmasks=np.zeros((1, 16, 1), np.uint32))
    m = spt.expected_masks(sp.full(), 32)
    m[:, :16, :16] = False
    with pytest.raises(AssertionError, match="allows no pair"):
        spt.assert_layout_equals_masks(empty, m)


def test_layout_matches_mask_catches_a_lying_enumerator():
    spt.assert_layout_matches_mask(Local(7), 50, block=16)
    with pytest.raises(AssertionError, match=r"differ at \d+ of"):
        spt.assert_layout_matches_mask(DropsLastBlock(7), 50, block=16)
    with pytest.raises(AssertionError, match="analytic and generic paths differ"):
        spt.assert_paths_agree(DropsLastBlock(7), 50, block=16)
    assert spt.assert_paths_agree(Local(7), 50, block=16) is True
    # no analytic path: nothing to compare, and it says so
    assert spt.assert_paths_agree(sp.custom(lambda q, k: q >= k, name="tt_lower"), 40, block=16) is False


def test_assert_valid_layout_catches_corruptions():
    layout = sp.compile(sp.local(20) | sp.sink(2), 80, block=16)
    spt.assert_valid_layout(layout)
    cols = layout.col_idx.copy()
    cols[[0, 1]] = cols[[1, 0]]
    with pytest.raises(AssertionError, match="ascending"):
        spt.assert_valid_layout(copy_layout(layout, col_idx=cols))
    cols = layout.col_idx.copy()
    cols[-1] = layout.n_cols
    with pytest.raises(AssertionError, match="col_idx"):
        spt.assert_valid_layout(copy_layout(layout, col_idx=cols))
    with pytest.raises(AssertionError, match="dtype|int32"):
        spt.assert_valid_layout(copy_layout(layout, col_idx=layout.col_idx.astype(np.int64)))
    # a stray out-of-range bit in a bitmask block (validate() does not look at bits)
    c = sp.custom(lambda q, k: (q + k) % 3 == 0, name="tt_mod3")
    lay = sp.compile(c, 20, block=16)
    bits = lay.bitmasks.copy()
    e = int(np.flatnonzero(lay.block_rows() == 1)[0])
    bits[lay.mask_idx[e], 15, 0] |= np.uint32(1)  # query 31 >= q_len = 20
    with pytest.raises(AssertionError, match="out-of-range token pair"):
        spt.assert_valid_layout(copy_layout(lay, bitmasks=bits))
    with pytest.raises(AssertionError, match="BlockLayout"):
        spt.assert_valid_layout("not a layout")


def test_assert_causal():
    assert spt.assert_causal(sp.local(4, causal=True), 20) is True
    assert spt.assert_causal(sp.local(4), 20) is False  # no claim, nothing checked
    with pytest.raises(AssertionError, match=r"claims to be causal .* first: group 0, \(i=0, j=1\)"):
        spt.assert_causal(FalselyCausal(3), 10)
    # per head: the second head breaks the claim
    with pytest.raises(AssertionError, match="group 1"):
        spt.assert_causal(Heads((sp.local(2, causal=True), FalselyCausal(2))), 10)


def test_assert_algebra_laws_passes_and_catches_a_nondeterministic_predicate():
    spt.assert_algebra_laws(sp.local(3), sp.strided(4), sp.sink(2) & sp.causal, 23, 30, block=16)
    rng = np.random.default_rng(0)
    flaky = sp.custom(lambda q, k: rng.random(np.broadcast_shapes(np.shape(q), np.shape(k))) < 0.5,
                      name="tt_flaky")
    with pytest.raises(AssertionError, match="law"):
        spt.assert_algebra_laws(flaky, sp.local(2), sp.sink(1), 12)


def test_assert_closed_form_matches():
    out = spt.assert_closed_form_matches(sp.sink(5), 100, 16)
    assert out["pairs"] == (500, 500, True)
    with pytest.raises(AssertionError, match="claimed exact but gives 501"):
        spt.assert_closed_form_matches(WrongClosedForm(5), 100, 16)
    # a union's form is a bound: passes when above the exact count
    value, count, exact = spt.assert_closed_form_matches(sp.local(4) | sp.sink(2), 40, 16)["pairs"]
    assert not exact and value > count


def test_assert_roundtrip():
    spt.assert_roundtrip((sp.local(3) | sp.landmark(every=4, positions=[1])) & sp.causal)
    with pytest.raises(AssertionError, match=r"parse\(str\(p\)\) != p"):
        spt.assert_roundtrip(PrintsWrong(3))
    unregistered = sp.custom(lambda q, k: q >= k)  # a lambda: no name to parse it back by
    with pytest.raises(AssertionError, match="parse"):
        spt.assert_roundtrip(unregistered)


def test_check_pattern_runs_everything_that_applies():
    ran = spt.check_pattern(sp.local(9, causal=True) | sp.sink(2) & sp.causal, sizes=(17, (40, 23)))
    kinds = {r.split("@")[0] for r in ran}
    assert kinds == {"roundtrip", "causal", "layout", "paths", "closed_form"}
    assert not any(r.startswith("closed_form@40") for r in ran)  # only square sizes
    ran = spt.check_pattern(sp.custom(lambda q, k: (q // 16) == (k // 16), name="tt_blockdiag"), sizes=(33,))
    assert "roundtrip" in ran and not any(r.startswith("paths") for r in ran)
    with pytest.raises(AssertionError):
        spt.check_pattern(DropsLastBlock(5), sizes=(40,))
    # a document() needs its context
    ran = spt.check_pattern(sp.document() & sp.causal, sizes=(30,), context={"cu_seqlens": [0, 7, 30]},
                        closed_forms=False)
    assert any(r.startswith("layout") for r in ran)


# ------------------------------------------------------------------------------------------
# strategies produce what they promise
# ------------------------------------------------------------------------------------------
def test_families_cover_every_family():
    seen = set()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(sst.families())
    def collect(p):
        seen.add(p.name)
        if isinstance(p, sp.patterns.Local):
            seen.add(f"local/causal={p.causal}")
        if isinstance(p, sp.patterns.Landmark):
            seen.add(f"landmark/every={p.every is not None}/positions={bool(p.positions)}")

    collect()
    want = set(sst.FAMILY_NAMES) | {"local/causal=True", "local/causal=False",
                                     "landmark/every=True/positions=True", "landmark/every=False/positions=True",
                                     "landmark/every=True/positions=False"}
    assert want <= seen, want - seen


@SETTINGS
@given(sst.geometries())
def test_geometries_are_valid(g):
    assert g.q_len >= 1 and g.kv_len >= 1 and g.block_q % 16 == 0 and g.block_k % 16 == 0


def test_geometries_reach_odd_and_unequal_lengths():
    found = {"odd": False, "unequal": False}

    @settings(max_examples=100, deadline=None, derandomize=True)
    @given(sst.geometries())
    def collect(g):
        found["odd"] |= g.q_len % g.block_q != 0
        found["unequal"] |= g.q_len != g.kv_len

    collect()
    assert all(found.values()), found


def test_patterns_make_compositions_and_stacks():
    seen = set()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(sst.patterns(heads_stacks=True))
    def collect_patterns(p):
        seen.add(type(p).__name__)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(sst.layouts())
    def collect_layouts(layout):
        Bg, Hg = layout.group_shape
        seen.add("batch-groups" if Bg > 1 else "one-batch-group")
        seen.add("head-groups" if Hg > 1 else "one-head-group")

    collect_patterns()
    collect_layouts()
    # (derandomized: a deterministic sample, so this coverage check cannot flake)
    assert {"Union", "Intersection", "Difference", "Heads", "batch-groups", "head-groups"} <= seen, seen


@SETTINGS
@given(sst.layouts(with_pattern=True))
def test_layouts_strategy_compiles_the_pattern_it_reports(t):
    p, context, layout = t
    spt.assert_valid_layout(layout)
    spt.assert_layout_equals_masks(layout, spt.expected_masks(p, layout.q_len, layout.kv_len, context))


def test_family_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        sst.family("nope")
    with pytest.raises(ValueError, match="no pair"):
        sst.blocks(sizes=(16,), square=False)


def test_strategies_import_is_lazy_and_named():
    import spattern.testing as t

    assert t.strategies is sst
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        t.nothing  # noqa: B018
