"""The compiler: layouts equal the predicate's mask, the analytic path equals the generic path, CSR
validity, odd lengths and q_len != kv_len, group broadcasting (heads and per-batch contexts), block
kinds, save/load, the CSC transpose, caching, and validate() on corrupted layouts."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.compiler import BITMASK, FULL, PROGRAM, BlockLayout, LayoutError
from spattern.ir import program as prog
from spattern.compiler.layout import replace
from spattern import testing as spt
from spattern.testing import strategies as sst

FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def copy_layout(layout, **changes):
    """A deep copy with fields changed (compile caches layouts: never mutate the cached one)."""
    arrays = {n: getattr(layout, n).copy() for n in
              ("row_ptr", "col_idx", "block_kind", "mask_idx", "bitmasks", "programs", "program_len")}
    arrays.update(changes)
    return replace(layout, **arrays)


# ------------------------------------------------------------------------------------------
# properties on random patterns and geometries
# ------------------------------------------------------------------------------------------
@FAST
@given(sst.patterns(max_depth=3, heads_stacks=True), sst.geometries())
def test_layout_equals_dense_mask(p, g):
    spt.assert_layout_matches_mask(p, g.q_len, g.kv_len, g.block)


@FAST
@given(sst.patterns(max_depth=3, heads_stacks=True), sst.geometries())
def test_analytic_equals_generic(p, g):
    assert spt.assert_paths_agree(p, g.q_len, g.kv_len, g.block)  # every built-in has an analytic path


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(sst.families(), sst.families(), sst.families(), sst.geometries(max_len=70))
def test_algebra_laws_hold_on_masks_and_layouts(a, b, c, g):
    spt.assert_algebra_laws(a, b, c, g.q_len, g.kv_len, block=g.block)


@FAST
@given(sst.layouts())
def test_compiled_layouts_are_valid_csr(layout):
    spt.assert_valid_layout(layout)


@pytest.mark.parametrize("q_len,kv_len,block", [
    (1, 1, (16, 16)), (1, 100, (16, 64)), (100, 1, (64, 16)), (17, 33, (16, 32)), (65, 63, (64, 64)),
    (130, 47, (48, 16)), (47, 130, (16, 48)), (64, 64, (64, 64)),
])
@pytest.mark.parametrize("text", [
    "local(5)", "local(40, causal=true) | sink(3)", "strided(7) & causal", "blockstrided(2, block=24)",
    "dilated(3, dilation=5)", "landmark(every=20, positions=[3, 99])", "random(2, seed=3, block=16)",
    "document([0, 10, 11, 60]) & causal", "(local(9) | landmark(every=31)) & causal - sink(2)",
    "heads(local(3), strided(5), full())",
])
def test_odd_and_unequal_lengths(text, q_len, kv_len, block):
    p = sp.parse(text)
    spt.assert_layout_matches_mask(p, q_len, kv_len, block)
    spt.assert_paths_agree(p, q_len, kv_len, block)


def test_custom_pattern_via_check_pattern():
    diag_blocks = sp.custom(lambda q, k: (q // 10) == (k // 10), name="tc_diag10")
    ran = spt.check_pattern(diag_blocks & sp.causal, sizes=(1, 37, (50, 21)))
    assert any(r.startswith("layout") for r in ran)


# ------------------------------------------------------------------------------------------
# groups
# ------------------------------------------------------------------------------------------
def test_heads_give_one_group_per_head():
    p = sp.heads(sp.local(3), sp.sink(2), sp.strided(4) & sp.causal)
    layout = spt.assert_layout_matches_mask(p, 50, 40, (16, 32))
    assert layout.group_shape == (1, 3)
    for h, ph in enumerate(p.patterns):
        np.testing.assert_array_equal(layout.to_dense(h), ph.dense_mask(50, 40))
    assert [layout.group_of(b, h) for b in (0, 5) for h in range(3)] == [0, 1, 2, 0, 1, 2]
    shared = sp.compile(sp.local(3), 50)
    assert shared.group_shape == (1, 1) and shared.group_of(3, 7) == 0


def test_document_with_a_list_of_contexts_gives_batch_groups():
    contexts = [{"cu_seqlens": [0, 10, 40]}, {"cu_seqlens": [0, 40]}, {"cu_seqlens": [0, 3, 7, 20]}]
    p = sp.document() & sp.causal
    layout = spt.assert_layout_matches_mask(p, 40, 40, 16, context=contexts)
    assert layout.group_shape == (3, 1)
    for b, ctx in enumerate(contexts):
        np.testing.assert_array_equal(layout.to_dense(b), (sp.document(ctx["cu_seqlens"]) & sp.causal).dense_mask(40))
    assert [layout.group_of(b, 5) for b in range(3)] == [0, 1, 2]
    # per batch and per head: (B, H) groups, b-major
    ph = sp.heads(sp.document(), sp.document() & sp.local(4))
    layout = spt.assert_layout_matches_mask(ph, 40, 40, 16, context=contexts[:2])
    assert layout.group_shape == (2, 2) and layout.group_of(1, 1) == 3
    np.testing.assert_array_equal(layout.to_dense(3), (sp.document([0, 40]) & sp.local(4)).dense_mask(40))
    # a static pattern ignores a list of contexts: one shared group
    assert sp.compile(sp.local(3), 40, context=contexts).group_shape == (1, 1)
    # a single context, and the analytic path on bound documents
    spt.assert_paths_agree(p, 40, 40, 16, context=contexts[2])
    with pytest.raises(ValueError, match=r"needs (a context|boundaries)"):
        sp.compile(p, 40)
    with pytest.raises(ValueError, match="non-empty list"):
        sp.compile(p, 40, context=[])


# ------------------------------------------------------------------------------------------
# block kinds
# ------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(sst.patterns(max_depth=2), sst.geometries(max_len=130))
def test_block_kinds_mean_what_they_say(p, g):
    layout = sp.compile(p, g.q_len, g.kv_len, g.block)
    want = spt.expected_masks(p, g.q_len, g.kv_len)
    spt.assert_layout_equals_masks(layout, want)  # FULL blocks full, no empty blocks, programs reproduce the mask
    has_prog = p.program() is not None and len(p.program()) <= prog.MAX_PROGRAM
    if has_prog:  # built-in families with a program never need bitmasks
        assert not (layout.block_kind == BITMASK).any() and layout.bitmasks.shape[0] == 0
    if (layout.block_kind == PROGRAM).any():
        assert layout.program_len[0] > 0


def test_full_blocks_are_really_full():
    layout = sp.compile(sp.local(100) & sp.causal, 256, block=32)
    dense = layout.to_dense(0)
    rows = layout.block_rows()
    n_full = 0
    for e in np.flatnonzero(layout.block_kind == FULL):
        r, c = rows[e], layout.col_idx[e]
        assert dense[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32].all()
        assert (np.arange(r * 32, r * 32 + 32)[:, None] >= np.arange(c * 32, c * 32 + 32)[None]).all()
        n_full += 1
    # a 100-token causal window on 32-token blocks: rows r >= 3 hold blocks r-2, r-1 full
    assert n_full >= 2 * (8 - 3) + 2


def test_program_blocks_carry_the_program():
    p = (sp.local(10) | sp.landmark(every=32)) & sp.causal
    layout = sp.compile(p, 100, block=16)
    assert (layout.block_kind == PROGRAM).any() and layout.bitmasks.shape[0] == 0
    n = int(layout.program_len[0])
    assert layout.programs[0, :n].tolist() == [list(i) for i in p.program()]
    q, k = np.arange(100)[:, None], np.arange(100)[None]
    np.testing.assert_array_equal(prog.evaluate(layout.programs[0, :n].tolist(), q, k), p.dense_mask(100))


def test_custom_and_programless_patterns_use_bitmasks():
    c = sp.custom(lambda q, k: (q * 7 + k) % 5 == 0, name="tc_mod5")
    for p in (c, c & sp.causal, sp.blockstrided(2, block=24), sp.local(5) | c):
        layout = spt.assert_layout_matches_mask(p, 70, 50, 16)
        kinds = set(layout.block_kind.tolist())
        assert PROGRAM not in kinds and BITMASK in kinds, (str(p), kinds)
        assert (layout.program_len == 0).all()
        bm = layout.block_kind == BITMASK
        assert (layout.mask_idx[bm] >= 0).all() and (layout.mask_idx[~bm] == -1).all()
        # each distinct block mask stored once (dedupe_bitmasks), and every stored one used
        distinct = np.unique(layout.bitmasks[layout.mask_idx[bm]].reshape(int(bm.sum()), -1), axis=0)
        assert layout.bitmasks.shape[0] == distinct.shape[0] == np.unique(layout.mask_idx[bm]).size
    with pytest.raises(ValueError, match="no analytic block enumerator"):
        sp.compile(c, 64, path="analytic")


def test_long_programs_fall_back_to_bitmasks():
    p = sp.landmark(positions=list(range(1, 80, 2)))  # > MAX_PROGRAM instructions
    assert p.program() is None or len(p.program()) > prog.MAX_PROGRAM
    layout = spt.assert_layout_matches_mask(p, 90, 90, 16)
    assert (layout.block_kind != PROGRAM).all()


# ------------------------------------------------------------------------------------------
# persistence, transpose, caching, statistics
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,context", [
    ("(local(20) | sink(3)) & causal", None),
    ("heads(local(3), custom('tc_save'))", None),
    ("document() & causal", [{"cu_seqlens": [0, 5, 70]}, {"cu_seqlens": [0, 30]}]),
])
def test_save_load_round_trip(tmp_path, text, context):
    sp.register_predicate("tc_save", lambda q, k: (q + k) % 3 == 0)
    layout = sp.compile(text, 45, 70, (16, 32), context=context)
    path = layout.save(tmp_path / "layout.npz")
    back = BlockLayout.load(path)
    assert back.equals(layout) and layout.equals(back)
    assert back.pattern == layout.pattern and back.group_shape == layout.group_shape
    np.testing.assert_array_equal(back.to_dense(), layout.to_dense())
    for name in ("row_ptr", "col_idx", "block_kind", "mask_idx", "bitmasks", "programs", "program_len"):
        assert getattr(back, name).dtype == getattr(layout, name).dtype, name
    # equals() notices a difference
    cols = layout.col_idx.copy()
    cols[-1] = (cols[-1] + 1) % layout.n_cols
    assert not layout.equals(copy_layout(layout, col_idx=cols))


def test_load_rejects_a_corrupted_file(tmp_path):
    layout = sp.compile("local(9)", 64, block=16)
    arrays = {n: getattr(layout, n) for n in BlockLayout._ARRAYS}
    path = layout.save(tmp_path / "ok.npz")
    with np.load(path) as z:
        meta = z["meta"]
    arrays["col_idx"] = arrays["col_idx"][::-1].copy()
    np.savez(tmp_path / "bad.npz", meta=meta, **arrays)
    with pytest.raises(LayoutError, match="ascending"):
        BlockLayout.load(tmp_path / "bad.npz")


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(sst.layouts())
def test_csc_is_the_transpose_of_csr(layout):
    csc = layout.csc()
    G, _R, C = layout.n_groups, layout.n_rows, layout.n_cols
    col_ptr, row_idx, perm = csc["col_ptr"], csc["row_idx"], csc["perm"]
    assert col_ptr.dtype == row_idx.dtype == perm.dtype == np.int32
    assert col_ptr.shape == (G, C + 1) and row_idx.shape == perm.shape == (layout.nnz,)
    np.testing.assert_array_equal(np.sort(perm), np.arange(layout.nnz))  # a permutation
    rows, groups = layout.block_rows(), layout.block_groups()
    csr_set, csc_set = set(), set()
    for g in range(G):
        assert col_ptr[g, 0] == layout.row_ptr[g, 0] and col_ptr[g, -1] == layout.row_ptr[g, -1]
        for c in range(C):
            s, e = int(col_ptr[g, c]), int(col_ptr[g, c + 1])
            assert e >= s and np.all(np.diff(row_idx[s:e]) > 0)
            for n in range(s, e):
                p = perm[n]
                assert layout.col_idx[p] == c and rows[p] == row_idx[n] and groups[p] == g
                csc_set.add((g, int(row_idx[n]), c))
    for e in range(layout.nnz):
        csr_set.add((int(groups[e]), int(rows[e]), int(layout.col_idx[e])))
    assert csc_set == csr_set and len(csr_set) == layout.nnz
    assert layout.csc() is csc  # built once


def test_static_patterns_are_cached_and_contexts_are_not_shared():
    p = (sp.local(16) | sp.sink(2)) & sp.causal
    a = sp.compile(p, 96, block=32)
    assert sp.compile(sp.parse(str(p)), 96, block=(32, 32)) is a  # equal pattern, same object
    assert sp.compile(str(p), 96, 96, block=32) is a  # from its string too
    assert sp.compile(p, 97, block=32) is not a
    assert sp.compile(p, 96, block=16) is not a
    assert sp.compile(p, 96, block=32, path="generic") is not a
    ctx1, ctx2 = {"cu_seqlens": [0, 50, 96]}, {"cu_seqlens": [0, 10, 96]}
    d1 = sp.compile(sp.document(), 96, block=32, context=ctx1)
    d2 = sp.compile(sp.document(), 96, block=32, context=ctx2)
    assert not np.array_equal(d1.to_dense(), d2.to_dense())


def test_stats_and_pair_counts():
    p = sp.local(4) & sp.causal
    layout = sp.compile(p, 40, block=16)
    s = layout.stats()
    pairs = int(p.dense_mask(40).sum())
    assert s["pairs"] == pairs == 40 * 4 - 6
    assert s["blocks"] == layout.nnz == 5  # (0,0) (1,0) (1,1) (2,1) (2,2)
    assert s["full_blocks"] + s["program_blocks"] + s["bitmask_blocks"] == s["blocks"]
    assert s["density"] == pytest.approx(pairs / 1600)
    assert s["block_density"] == pytest.approx(5 / 9)


# ------------------------------------------------------------------------------------------
# bad compile arguments
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(q_len=0), ValueError, "q_len: expected a positive int, got 0"),
    (dict(q_len=10.5), ValueError, "q_len"),
    (dict(q_len=10, kv_len=-1), ValueError, "kv_len"),
    (dict(q_len=10, block=(8, 16)), ValueError, "multiples of 16, got \\(8, 16\\)"),
    (dict(q_len=10, block=(24, 16)), ValueError, "multiples of 16"),
    (dict(q_len=10, block="big"), TypeError, "block: expected an int or a pair"),
    (dict(q_len=10, path="fast"), ValueError, "path: expected one of"),
])
def test_bad_compile_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sp.compile(sp.local(3), **kwargs)


def test_compile_rejects_non_patterns_and_bad_strings():
    with pytest.raises(TypeError, match="pattern: expected a Pattern"):
        sp.compile(42, 10)
    with pytest.raises(sp.PatternSyntaxError, match="column"):
        sp.compile("local(3", 10)


# ------------------------------------------------------------------------------------------
# validate() catches corrupted layouts
# ------------------------------------------------------------------------------------------
@pytest.fixture
def good_layout():
    layout = sp.compile((sp.local(20) | sp.custom(lambda q, k: (q - k) % 7 == 0, name="tc_v7")) & sp.causal,
                        100, block=16)
    assert (layout.block_kind == BITMASK).any()
    return layout


def _unsorted(L):
    cols = L.col_idx.copy()
    e = int(np.flatnonzero(np.diff(L.row_ptr[0]) >= 2)[0])
    s = L.row_ptr[0, e]
    cols[s], cols[s + 1] = cols[s + 1], cols[s]
    return dict(col_idx=cols)


def _duplicate(L):
    cols = L.col_idx.copy()
    e = int(np.flatnonzero(np.diff(L.row_ptr[0]) >= 2)[0])
    s = L.row_ptr[0, e]
    cols[s + 1] = cols[s]
    return dict(col_idx=cols)


def _out_of_range(L):
    cols = L.col_idx.copy()
    cols[-1] = L.n_cols
    return dict(col_idx=cols)


def _negative(L):
    cols = L.col_idx.copy()
    cols[0] = -1
    return dict(col_idx=cols)


def _decreasing(L):
    rp = L.row_ptr.copy()
    rp[0, 3] = rp[0, 2] - 1
    return dict(row_ptr=rp)


def _bad_kind(L):
    k = L.block_kind.copy()
    k[0] = 7
    return dict(block_kind=k)


def _mask_idx_out(L):
    m = L.mask_idx.copy()
    m[np.flatnonzero(L.block_kind == BITMASK)[0]] = L.bitmasks.shape[0]
    return dict(mask_idx=m)


def _mask_idx_on_full(L):
    m = L.mask_idx.copy()
    m[np.flatnonzero(L.block_kind == FULL)[0]] = 0
    return dict(mask_idx=m)


@pytest.mark.parametrize("corrupt,match", [
    (_unsorted, "not strictly ascending"),
    (_duplicate, "not strictly ascending"),
    (_out_of_range, r"col_idx: expected values in \[0, 7\)"),
    (_negative, "col_idx: expected values in"),
    (_decreasing, "row_ptr of group 0 decreases at row 2"),
    (lambda L: dict(col_idx=L.col_idx.astype(np.int64)), "col_idx: expected a numpy int32 array, got int64"),
    (lambda L: dict(row_ptr=L.row_ptr.astype(np.float32)), "row_ptr: expected a numpy int32"),
    (lambda L: dict(block_kind=L.block_kind.astype(np.int32)), "block_kind: expected a numpy uint8"),
    (lambda L: dict(row_ptr=L.row_ptr[:, :-1].copy()), "row_ptr: expected shape"),
    (lambda L: dict(col_idx=L.col_idx[:-1].copy()), r"col_idx: expected shape"),
    (_bad_kind, "block_kind: expected values in"),
    (_mask_idx_out, "mask_idx: BITMASK blocks must index"),
    (_mask_idx_on_full, "mask_idx: expected -1"),
    (lambda L: dict(bitmasks=L.bitmasks[:, :, :0].copy()), "bitmasks: expected shape"),
])
def test_validate_catches_corruption(good_layout, corrupt, match):
    good_layout.validate()
    bad = copy_layout(good_layout, **corrupt(good_layout))
    with pytest.raises(LayoutError, match=match):
        bad.validate()
    with pytest.raises(AssertionError):
        spt.assert_valid_layout(bad)


def test_validate_catches_bad_scalars_and_programs():
    layout = sp.compile(sp.local(5) & sp.causal, 50, block=16)
    with pytest.raises(LayoutError, match="block sizes must be multiples of 16"):
        replace(layout, block_q=24).validate()
    with pytest.raises(LayoutError, match="row_ptr: expected shape"):
        replace(layout, q_len=90).validate()  # more rows than row_ptr has
    with pytest.raises(LayoutError, match="a PROGRAM block belongs to a group without a mask program"):
        copy_layout(layout, program_len=np.zeros(1, np.int32)).validate()
    progs = layout.programs.copy()
    progs[0, 0, 0] = 99
    with pytest.raises(LayoutError, match="unknown op 99"):
        copy_layout(layout, programs=progs).validate()
    with pytest.raises(LayoutError, match="group_shape"):
        replace(layout, group_shape=(0, 1)).validate()


# ------------------------------------------------------------------------------------------
# closed forms (spattern.compiler.complexity) against exact counts
# ------------------------------------------------------------------------------------------
def _leaves(p):
    stack = [p]
    while stack:
        x = stack.pop()
        kids = list(getattr(x, "parts", ()) or ()) + list(getattr(x, "patterns", ()) or ())
        kids += [getattr(x, a) for a in ("left", "right") if isinstance(getattr(x, a, None), sp.Pattern)]
        if not kids:
            yield x
        stack.extend(kids)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(sst.patterns(max_depth=2, heads_stacks=True), sst.lengths(1, 200), st.sampled_from((16, 32, 48, 64)))
def test_closed_forms_match_exact_counts(p, N, b):

    spt.assert_closed_form_matches(p, N, b)


FAMILY_GRID = (
    [sp.local(w, causal=c) for w in (1, 2, 16, 17, 40) for c in (False, True)]
    + [sp.strided(s) for s in (1, 3, 16, 31, 33)]
    + [sp.blockstrided(s, block=B) for s in (1, 3) for B in (16, 32)]
    + [sp.dilated(w, dilation=d) for w in (1, 4) for d in (1, 3, 40)]
    + [sp.landmark(every=e) for e in (1, 16, 50)] + [sp.landmark(every=32, positions=[5])]
    + [sp.sink(n) for n in (1, 16, 40)]
    + [sp.random(k, seed=3, block=B) for k in (0, 2) for B in (16, 32)]
    + [sp.document([0, 20, 21, 64]), sp.full(), sp.causal]
)


@pytest.mark.parametrize("p", FAMILY_GRID + [q & sp.causal for q in FAMILY_GRID[:-1]], ids=str)
def test_family_closed_forms_exact_where_claimed(p):
    """Every family (alone and & causal) at N multiple and not multiple of the block: equal where
    claimed exact, a bound otherwise; and the exact claims are made where the docs promise them."""
    from spattern.compiler.complexity import cost

    for N in (96, 100):  # a multiple of both block sizes, and not
        for b in (16, 32):
            spt.assert_closed_form_matches(p, N, b)
    c = cost(p, 128, block=(32, 32))
    if not isinstance(p, (sp.patterns.Dilated, sp.patterns.Union)) and c.pairs_closed is not None:
        assert c.pairs_exact, f"{p}: pairs closed form not claimed exact at N=128"
    base = p.parts[0] if isinstance(p, sp.patterns.Intersection) else p
    if isinstance(base, (sp.patterns.Local, sp.patterns.Sink, sp.patterns.Full)) or base == sp.causal:
        assert c.blocks_closed is not None and c.blocks_exact, f"{p}: blocks form not exact at N=128, b=32"


def test_closed_form_is_symbolic_in_N():
    from spattern.compiler.complexity import N, closed_form

    expr, exact = closed_form(sp.local(4) & sp.causal, "pairs")
    assert exact and N in expr.free_symbols
    assert int(expr.subs(N, 1000)) == int((sp.local(4) & sp.causal).dense_mask(1000).sum())
    expr, exact = closed_form(sp.local(4) | sp.sink(2), "pairs")
    assert not exact  # unions are bounds


def test_closed_form_blockstrided_is_not_a_bound_when_block_does_not_divide_N():
    spt.assert_closed_form_matches(sp.blockstrided(1, block=16), 5, 16)


def test_closed_form_landmark_positions_past_N():
    spt.assert_closed_form_matches(sp.landmark(every=5, positions=[3, 150]), 1, 16)


def test_closed_form_random_blocks_with_k_above_the_key_blocks():
    spt.assert_closed_form_matches(sp.random(3, seed=1, block=16), 16, 16)


def test_closed_form_document_shorter_than_its_boundaries():
    spt.assert_closed_form_matches(sp.document([0, 5, 30]), 1, 16)
