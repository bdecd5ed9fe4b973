"""spattern.compiler.analysis: reachability over layers on hand-derived cases, and the matrix
method against networkx BFS on random layouts."""
from __future__ import annotations

import math
import time

import networkx as nx
import numpy as np
import pytest

from spattern import compile, custom
from spattern.compiler.analysis import (
    ReceptiveField,
    information_path,
    layers_to_full_reach,
    layout_graph,
    layout_is_causal,
    reach_table,
    receptive_field,
)


def _window_layers_token(N, w):
    # one layer moves information at most w - 1 positions (|i - j| <= w - 1): the farthest pair
    # (N - 1 apart) needs ceil((N - 1) / (w - 1)) layers
    return math.ceil((N - 1) / (w - 1))


def _window_layers_block(N, w, b):
    # block rows r attend key blocks c with |r - c| <= K, K = floor((w + b - 2) / b) (the block
    # holding a key w - 1 before the row's first query); R = N / b blocks need ceil((R - 1) / K)
    R, K = N // b, (w + b - 2) // b
    return math.ceil((R - 1) / K)


@pytest.mark.parametrize("causal", [False, True])
def test_local_window_by_hand(causal):
    N, w, b = 512, 24, 16
    p = f"local({w})" + (" & causal" if causal else "")
    layout = compile(p, N, block=b)
    assert _window_layers_token(N, w) == 23 and _window_layers_block(N, w, b) == 16
    assert layers_to_full_reach(layout, level="token") == 23
    assert layers_to_full_reach(layout, level="block") == 16
    rf = receptive_field(layout, level="token")
    assert rf.causal is causal
    assert rf.saturated and len(rf.fractions) == 23
    assert all(a < b for a, b in zip(rf.fractions, rf.fractions[1:]))  # grows every layer until full
    # depth 1 is the window itself: pairs of the mask (plus nothing: the diagonal is attended)
    pairs = int(layout.pair_counts()[0])
    assert rf.reached[0] == pairs


def test_local_window_large_n_block_level_is_fast():
    N, w, b = 65536, 256, 64  # 1024 blocks
    layout = compile(f"local({w}) & causal", N, block=b)
    t = time.perf_counter()
    assert layers_to_full_reach(layout) == _window_layers_block(N, w, b) == 256
    assert time.perf_counter() - t < 5.0


@pytest.mark.parametrize("level", ["token", "block"])
def test_window_plus_globals_reaches_in_two(level):
    # non-causal: any j -> global g -> any i
    assert layers_to_full_reach(compile("local(24) | landmark(every=128)", 512, block=16), level=level) == 2
    # causal: j -> g -> i needs a global g in [j, i]; with window >= spacing, every pair farther
    # apart than the window has one
    assert layers_to_full_reach(compile("(local(64) | landmark(every=64)) & causal", 512, block=16),
                                level=level) == 2


def test_causal_globals_sparser_than_window_need_more_than_two():
    layout = compile("(local(32) | landmark(every=128)) & causal", 512, block=16)
    L = layers_to_full_reach(layout, level="token")
    assert L is not None and L > 2


def test_documents_never_reach_across():
    cu = [0, 100, 300, 512]
    layout = compile(f"document({cu}) & causal", 512, block=16)
    rf = receptive_field(layout, level="token")
    assert rf.layers_to_full_reach is None and rf.saturated
    lens = np.diff(cu)
    # within-document causal pairs are all that is ever reached, already at depth 1
    assert rf.reached == [int((lens * (lens + 1) // 2).sum())]
    assert rf.total == 512 * 513 // 2
    assert rf.fraction(10) == rf.fractions[-1]
    # block level, boundaries on block edges: exact, the same story in blocks (2, 3, 3 blocks)
    layout = compile("document([0, 128, 320, 512])", 512, block=64)
    rf = receptive_field(layout, level="block")
    assert rf.layers_to_full_reach is None and not rf.causal
    assert rf.reached == [4 + 9 + 9] and rf.total == 64
    # token level agrees with block level there
    assert layers_to_full_reach(layout, level="token") is None


def test_block_level_is_an_approximation_for_straddling_blocks():
    # documented: a block that holds the end of one document and the start of the next joins them
    layout = compile("document([0, 100, 300, 512]) & causal", 512, block=64)
    assert layers_to_full_reach(layout, level="token") is None
    assert layers_to_full_reach(layout, level="block") is not None


def _random_layout(rng, N, b, causal, density):
    M = rng.random((N, N)) < density
    M |= np.eye(N, dtype=bool) & (rng.random() < 0.5)
    if causal:
        M &= np.tril(np.ones((N, N), dtype=bool))
    fn = lambda q, k: M[q, k]  # noqa: E731
    return compile(custom(fn, name=f"rand{rng.integers(1 << 30)}", register_name=False), N, block=b)


@pytest.mark.parametrize("seed", range(6))
def test_matrix_and_networkx_agree_on_random_layouts(seed):
    rng = np.random.default_rng(seed)
    N = int(rng.choice([64, 80, 96]))
    causal = bool(seed % 2)
    layout = _random_layout(rng, N, 16, causal, density=float(rng.choice([0.003, 0.01, 0.03])))
    assert layout_is_causal(layout) is (causal or not np.triu(layout.to_dense(0), 1).any())
    for level in ("token", "block"):
        for max_layers in (None, 1, 2, 5):
            a = receptive_field(layout, max_layers=max_layers, level=level, method="matrix")
            b = receptive_field(layout, max_layers=max_layers, level=level, method="networkx")
            assert a.reached == b.reached, (level, max_layers)
            assert a.saturated == b.saturated and a.total == b.total and a.causal == b.causal
            assert a.layers_to_full_reach == b.layers_to_full_reach


@pytest.mark.parametrize("p", ["(local(40) | strided(37)) & causal", "local(16) | random(2, seed=3, block=32)",
                               "dilated(6, dilation=5) & causal", "heads(local(16), strided(24)) & causal"])
def test_matrix_and_networkx_agree_on_builtins(p):
    layout = compile(p, 384, block=32)
    group = None  # a layer's heads together
    for level in ("token", "block"):
        a = receptive_field(layout, group=group, level=level)
        b = receptive_field(layout, group=group, level=level, method="networkx")
        assert a.reached == b.reached and a.saturated == b.saturated


def test_graph_and_paths():
    layout = compile("local(20) & causal", 160, block=16)
    G = layout_graph(layout)
    assert isinstance(G, nx.DiGraph) and G.graph["level"] == "block" and G.graph["causal"]
    assert G.number_of_nodes() == 10 and G.number_of_edges() == layout.nnz
    rows = layout.block_rows()
    for r, c, kind in zip(rows, layout.col_idx, layout.block_kind):
        assert G.has_edge(int(c), int(r))  # key block -> query block
        assert G.edges[int(c), int(r)]["kind"] in ("full", "program", "bitmask")
    Gt = layout_graph(layout, level="token")
    assert Gt.number_of_edges() == int(layout.pair_counts()[0])
    assert Gt.has_edge(100, 119) and not Gt.has_edge(119, 100)  # causal: key 100 -> query 119 only
    path = information_path(layout, query=159, key=0, level="token", graph=Gt)
    assert path[0] == 0 and path[-1] == 159 and len(path) - 1 == math.ceil(159 / 19)
    assert information_path(layout, query=0, key=159, level="token", graph=Gt) is None
    # shortest path lengths agree with the depth at which the pair first counts
    rf = receptive_field(layout, level="token")
    assert rf.layers_to_full_reach == len(path) - 1


def test_causality_detection():
    N = 256
    assert layout_is_causal(compile("local(8) & causal", N, block=32))
    assert layout_is_causal(compile("strided(4) & causal", N, block=32))
    assert layout_is_causal(compile("document([0, 50, 256]) & causal", N, block=32))
    assert not layout_is_causal(compile("local(8)", N, block=32))
    assert not layout_is_causal(compile("sink(4)", N, block=32))
    # one key past the diagonal, inside a diagonal block
    fn = lambda q, k: (k <= q) | ((q == 40) & (k == 41))  # noqa: E731
    assert not layout_is_causal(compile(custom(fn, name="leak1", register_name=False), N, block=32))
    # per-head stack: causal per group; the union too
    lay = compile("heads(local(8), sink(4)) & causal", N, block=32)
    assert layout_is_causal(lay, group=0) and layout_is_causal(lay, group=1) and layout_is_causal(lay, group=None)


def test_reach_table_rows():
    rows = reach_table({"local": "local(64) & causal", "longformer": "(local(64) | landmark(every=64)) & causal",
                        "doc": "document([0, 256, 512])"}, 512, 32)
    assert [r["name"] for r in rows] == ["local", "longformer", "doc"]
    assert set(rows[0]) == {"name", "pattern", "causal", "layers_to_full_reach", "frac_1", "frac_2", "frac_4"}
    assert rows[1]["layers_to_full_reach"] == 2 and rows[1]["frac_2"] == 1.0 == rows[1]["frac_4"]
    assert rows[2]["layers_to_full_reach"] is None and rows[2]["frac_4"] == rows[2]["frac_1"] == 0.5
    assert rows[0]["causal"] and not rows[2]["causal"]
    assert 0 < rows[0]["frac_1"] < rows[0]["frac_2"] < rows[0]["frac_4"] < 1


def test_input_errors():
    lay = compile("local(8)", 128, block=16)
    with pytest.raises(ValueError, match="level"):
        receptive_field(lay, level="tokens")
    with pytest.raises(ValueError, match="group"):
        receptive_field(lay, group=3)
    with pytest.raises(ValueError, match="max_layers"):
        receptive_field(lay, max_layers=0)
    with pytest.raises(ValueError, match="q_len == kv_len"):
        receptive_field(compile("local(8)", 128, 256, block=16))
    with pytest.raises(ValueError, match="square blocks"):
        receptive_field(compile("local(8)", 128, block=(16, 32)))
    with pytest.raises(ValueError, match="max_tokens"):
        receptive_field(compile("local(8)", 8192, block=64), level="token")
    with pytest.raises(TypeError, match="BlockLayout"):
        receptive_field("local(8)")
    rf = receptive_field(lay, max_layers=2)
    assert isinstance(rf, ReceptiveField) and len(rf.fractions) == 2 and not rf.saturated
    with pytest.raises(ValueError, match="not computed"):
        rf.fraction(3)


def _reach_by_bfs(mask: np.ndarray, layers: int) -> np.ndarray:
    """[query, key]: key within ``layers`` attended edges of query (the residual a self-loop), by a
    breadth-first walk over the token graph: the slow twin of reach_by_distance's matrix powers."""
    n = mask.shape[0]
    out = np.zeros((n, n), dtype=bool)
    for q in range(n):
        seen, frontier = {q}, {q}
        for _ in range(layers):
            frontier = {k for j in frontier for k in np.nonzero(mask[j])[0].tolist()} - seen
            seen |= frontier
        out[q, sorted(seen)] = True
    return out


@pytest.mark.parametrize("p,layers", [("local(6) & causal", 2), ("(local(3) | landmark(every=16)) & causal", 2),
                                      ("(local(4) | random(2, block=16)) & causal", 3)])
def test_reach_by_distance_against_a_walk_and_the_receptive_field(p, layers):
    from spattern.compiler.analysis import reach_by_distance, reach_matrix, walk_counts

    N = 64
    layout = compile(p, N, block=16)
    mask = layout.to_dense(0)
    walk = _reach_by_bfs(mask, layers)
    rows = reach_by_distance(layout, layers, [0, 1, 2, 4, 8, 16, 32, 64])
    assert np.array_equal(reach_matrix(layout, layers), walk)
    assert np.array_equal(walk_counts(layout, layers) > 0, walk)
    d = np.subtract.outer(np.arange(N), np.arange(N))
    for r in rows:
        sel = (d >= r["lo"]) & (d < r["hi"])
        assert r["pairs"] == int(sel.sum()) and r["reached"] == int(walk[sel].sum())
        assert r["fraction"] == (r["reached"] / r["pairs"] if r["pairs"] else None)
    assert rows[-1]["lo"] == 32 and rows[-1]["pairs"] == (N - 32) * (N - 31) // 2  # distances 32..63
    # every pair (d >= 0) together is the receptive field at that depth
    rf = receptive_field(layout, max_layers=layers, level="token")
    assert sum(r["reached"] for r in rows) == rf.reached[layers - 1]


@pytest.mark.parametrize("p", ["local(6) & causal", "(local(3) | landmark(every=16)) & causal",
                               "(local(4) | random(2, block=16)) & causal"])
def test_walk_counts_against_enumerated_walks(p):
    """The number of 2- and 3-edge walks (self-loops included) from key to query, counted one
    intermediate position at a time: the slow twin of walk_counts's matrix products."""
    from spattern.compiler.analysis import walk_counts

    N = 48
    layout = compile(p, N, block=16)
    step = layout.to_dense(0).astype(bool) | np.eye(N, dtype=bool)
    two = np.array([[sum(step[q, j] and step[j, k] for j in range(N)) for k in range(N)] for q in range(N)])
    assert np.array_equal(walk_counts(layout, 2), two)
    three = np.array([[sum(step[q, j] and two[j, k] for j in range(N)) for k in range(N)] for q in range(N)])
    assert np.array_equal(walk_counts(layout, 3), three)
    assert np.array_equal(walk_counts(layout, 1), step)


def test_walk_counts_of_a_global_token_is_one_route():
    """Longformer-like at 64 tokens: a query past the window reaches a key before the landmark at 32
    through that one position only (the MQAR bottleneck: scripts/mqar_reach.py)."""
    from spattern.compiler.analysis import walk_counts

    layout = compile("(local(4) | landmark(every=32)) & causal", 64, block=16)
    w = walk_counts(layout, 2)
    assert w[60, 10] == 1 and w[33, 10] == 1  # only through 32, the landmark (0 sees nothing after it)
    assert w[60, 58] == 3 and w[12, 10] == 3  # through the key, the query and the one between


def test_reach_by_distance_of_a_window_by_hand_and_its_errors():
    from spattern.compiler.analysis import reach_by_distance

    layout = compile("local(5) & causal", 64, block=16)  # keys up to 4 back: 2 layers reach 8 back
    (near, far), = [reach_by_distance(layout, 2, [1, 9, 64])]
    assert near["fraction"] == 1.0 and far["reached"] == 0
    assert reach_by_distance(layout, 1, [4, 6])[0]["fraction"] == pytest.approx((60 + 0) / (60 + 59))
    with pytest.raises(ValueError, match="layers: expected an int >= 1"):
        reach_by_distance(layout, 0, [0, 1])
    with pytest.raises(ValueError, match="edges: expected >= 2 increasing"):
        reach_by_distance(layout, 1, [4, 4])


def test_walk_counts_of_one_layout_per_layer_against_enumerated_walks():
    """Layouts per layer (BigBird with a random draw per layer): walk edge i lies in layer i's layout, so
    the count is sum_j step_2[q, j] step_1[j, k], not the other order; one layout listed per layer
    gives what the layout and a depth give; the arguments are checked."""
    from spattern.compiler.analysis import reach_matrix, walk_counts

    N = 48
    first, second = (compile(f"(local(3) | random(1, block=16, seed={s})) & causal", N, block=16) for s in (0, 3))
    one = first.to_dense(0).astype(bool) | np.eye(N, dtype=bool)
    two = second.to_dense(0).astype(bool) | np.eye(N, dtype=bool)
    want = np.array([[sum(two[q, j] and one[j, k] for j in range(N)) for k in range(N)] for q in range(N)])
    backwards = np.array([[sum(one[q, j] and two[j, k] for j in range(N)) for k in range(N)] for q in range(N)])
    assert not np.array_equal(want, backwards)  # the order matters for these two draws
    assert np.array_equal(walk_counts([first, second], None), want)
    assert np.array_equal(walk_counts([first, second], 2), want)
    assert np.array_equal(reach_matrix([first, second], 2), want > 0)
    assert np.array_equal(walk_counts([first, first, first], 3), walk_counts(first, 3))
    with pytest.raises(ValueError, match="layers: expected None or 2"):
        walk_counts([first, second], 3)
    with pytest.raises(ValueError, match="non-empty sequence"):
        reach_matrix([], None)
    with pytest.raises(ValueError, match="one \\(q_len, kv_len\\)"):
        walk_counts([first, compile("local(3) & causal", 32, block=16)], None)
    with pytest.raises(ValueError, match="layers: expected an int"):
        walk_counts(first, None)
