"""Top-k selection: row counts, forced blocks, causality, agreement with a sort, host twin."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.indexer import attention_topk_tokens, topk_block_layout, topk_token_indices
from spattern.indexer.select import available_blocks, block_scores, topk_block_table


@st.composite
def selections(draw):
    bq = draw(st.sampled_from([16, 32]))
    n = draw(st.integers(1, 160))
    R = C = -(-n // bq)
    sink = draw(st.integers(0, 2))
    local = draw(st.integers(0, 2))
    k = draw(st.integers(max(1, sink + local), sink + local + 5))
    causal = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    ties = draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, R, C, generator=g)
    if ties:
        s = torch.round(s)  # many equal scores
    return s, k, n, bq, causal, sink, local


@settings(max_examples=80, deadline=None)
@given(selections())
def test_rows_hold_min_k_available_with_forced_blocks(sel):
    s, k, n, bq, causal, sink, local = sel
    layout = topk_block_layout(s, k, n, n, (bq, bq), causal, sink, local)
    layout.validate()
    avail = available_blocks(n, n, bq, bq, causal)
    counts = layout.row_counts()
    assert (counts == np.minimum(k, avail)[None]).all()
    for b in range(2):
        sl = layout.group_slice(b)
        rows = layout.block_rows()[sl] - b * 0
        cols = layout.col_idx[sl]
        for r in range(len(avail)):
            cr = set(cols[rows == r].tolist())
            last_q = min((r + 1) * bq, n) - 1
            diag = last_q // bq
            forced = {c for c in range(min(sink, avail[r]))} | {c for c in range(diag - local + 1, diag + 1) if c >= 0}
            assert forced <= cr or len(forced) > k
            if causal:
                assert max(cr) * bq <= last_q  # no block entirely in the future


@settings(max_examples=60, deadline=None)
@given(selections())
def test_selection_equals_a_sort_with_deterministic_ties(sel):
    s, k, n, bq, causal, sink, local = sel
    table = topk_block_table(s, k, n, n, bq, bq, causal, sink, local)
    avail = available_blocks(n, n, bq, bq, causal)
    for b in range(2):
        for r in range(len(avail)):
            last_q = min((r + 1) * bq, n) - 1
            diag = last_q // bq
            cand = list(range(avail[r]))
            forced = [c for c in cand if c < sink or diag - local < c <= diag]
            rest = sorted((c for c in cand if c not in forced), key=lambda c: (-float(s[b, r, c]), c))
            want = sorted((forced + rest)[: min(k, avail[r])])
            assert list(table[b][r]) == want


def test_device_layout_equals_the_compiled_host_twin():
    g = torch.Generator().manual_seed(0)
    n, bq = 300, 32
    s = torch.randn(3, -(-n // bq), -(-n // bq), generator=g)
    dev = topk_block_layout(s, 4, n, n, (bq, bq))
    host = sp.compile(sp.parse(f"topk(4, block={bq})"), n, block=(bq, bq),
                      context=[{"block_scores": s[b], "q_len": n, "kv_len": n} for b in range(3)])
    assert dev.equals(host)  # same CSR, kinds and programs (the causal program on diagonal blocks)
    assert np.array_equal(dev.to_dense(), host.to_dense())
    q = torch.randn(3, 4, n, 16, generator=g)
    kv = torch.randn(3, 2, n, 16, generator=g)
    assert torch.allclose(sp.attention(q, kv, kv, dev), sp.attention(q, kv, kv, host), atol=1e-6)


def test_block_scores_pooling():
    scores = torch.full((1, 4, 4), float("-inf"))
    scores[0, 0, 0] = 0.0
    scores[0, 1, :2] = torch.tensor([0.0, 0.0])
    scores[0, 2, :3] = torch.tensor([0.0, 10.0, 0.0])
    scores[0, 3, :4] = 0.0
    bs = block_scores(scores, 2, 2, pooling="mass")
    # rows 0-1: key block 0 holds all the mass of both queries
    assert torch.allclose(bs[0, 0], torch.tensor([1.0, float("-inf")]))
    mx = block_scores(scores, 2, 2, pooling="max")
    assert mx[0, 1, 0] == pytest.approx(5.0)  # mean over queries (10 and 0) of the max over keys
    with pytest.raises(ValueError, match="pooling"):
        block_scores(scores, 2, 2, pooling="median")


def test_token_topk_matches_dense_masked_attention():
    g = torch.Generator().manual_seed(1)
    B, H, N, D, k = 2, 4, 40, 8, 6
    scores = torch.randn(B, N, N, generator=g)
    idx, valid = topk_token_indices(scores, k)
    assert (valid.sum(-1)[0] == torch.clamp(torch.arange(1, N + 1), max=k)).all()
    assert (idx[valid] <= torch.arange(N)[None, :, None].expand_as(idx)[valid]).all()  # causal
    q = torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    kv = torch.randn(B, 2, N, D, generator=g, dtype=torch.float64)
    out = attention_topk_tokens(q, kv, kv, idx, valid)
    mask = torch.zeros(B, N, N + 1, dtype=torch.bool)
    mask = mask.scatter_(2, torch.where(valid, idx, N), True)[..., :N]  # invalid slots -> column N
    kk = kv.repeat_interleave(2, 1)
    s = (q @ kk.transpose(-1, -2)) / D**0.5
    ref = torch.softmax(s.masked_fill(~mask[:, None], float("-inf")), -1) @ kk
    assert torch.allclose(out, ref, atol=1e-10)


def test_bad_arguments():
    s = torch.randn(1, 4, 4)
    with pytest.raises(ValueError, match="forced"):
        topk_block_layout(s, 1, 64, 64, (16, 16), sink=1, local=1)
    with pytest.raises(ValueError, match="bscores"):
        topk_block_layout(s, 3, 100, 100, (16, 16))


def test_fused_selection_kernel_compiles_for_sm90():
    import shutil
    import subprocess
    from pathlib import Path

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    src = Path(sp.__file__).parent / "indexer" / "kernels" / "topk_select.cu"
    r = subprocess.run([nvcc, "-arch=sm_90", "-std=c++17", "-c", str(src), "-o", "/dev/null"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_host_selection_rule_equals_the_device_builder(causal, seed):
    """patterns.topk.select_blocks (numpy, the pattern's twin) == indexer's torch selection."""
    from spattern.patterns.topk import select_blocks

    rng = np.random.default_rng(seed)
    n, bq, k = int(rng.integers(100, 700)), 64, int(rng.integers(2, 7))
    R = -(-n // bq)
    s = rng.standard_normal((1, R, R)).astype(np.float32)
    s[0, rng.random((R, R)) < 0.1] = np.nan
    s[0, rng.random((R, R)) < 0.05] = -np.inf
    s[0, :, ::3] = 0.5  # ties
    want = topk_block_table(torch.from_numpy(s), k, n, n, bq, bq, causal, 1, 1)[0]
    assert select_blocks(s[0], k, n, n, bq, bq, causal, 1, 1) == [tuple(r) for r in want]
