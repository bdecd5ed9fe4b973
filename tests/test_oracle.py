"""oracle(k): top-k key blocks by the exact attention mass of the layer's own q and k, computed at each
attention call; checked against a direct dense computation, in a model forward, and in an experiment
(matched at equal block density, its cost independent of the scores)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import spattern
from spattern.experiments import load_experiment, run_experiment
from spattern.patterns.topk import select_blocks
from spattern.models.attention import attend, compiled_layout, cost_contexts, needs_context, oracle_contexts, self_scored
from tests.experiments.tiny import tiny_config


def _direct_mass(q, k, block):
    """(R, C) per sequence: mean over heads and a block's query rows of the causal softmax mass of
    each key block (float64, no chunks)."""
    B, H, N, D = q.shape
    k = k.repeat_interleave(H // k.shape[1], dim=1)
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(D)
    s = s.masked_fill(torch.ones(N, N, dtype=torch.bool).triu(1), float("-inf"))
    p = torch.softmax(s, -1)                                               # (B, H, N, N)
    R = -(-N // block)
    out = torch.zeros(B, R, R, dtype=torch.float64)
    for r in range(R):
        for c in range(r + 1):
            out[:, r, c] = p[:, :, r * block:(r + 1) * block, c * block:(c + 1) * block].sum(-1).mean((1, 2))
    return out


@pytest.mark.parametrize("N,block,chunk", [(200, 32, 1024), (200, 32, 64), (256, 64, 64)])
def test_scores_are_the_block_attention_mass_averaged_over_heads(N, block, chunk):
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, N, 16), torch.randn(2, 2, N, 16)
    ctx = oracle_contexts(q, k, block, chunk=chunk)
    ref = _direct_mass(q, k, block)
    for b in range(2):
        got = ctx[b]["block_scores"]
        lower = np.tril(np.ones(got.shape, bool))
        np.testing.assert_allclose(got[lower], ref[b].numpy()[lower], rtol=1e-4, atol=1e-6)
        assert np.isneginf(got[~lower]).all()  # no valid pair above the diagonal
        np.testing.assert_allclose(got[lower].reshape(-1).sum(), ref[b].sum().item(), rtol=1e-4)


def test_the_layout_keeps_the_heaviest_blocks_and_attention_follows_it():
    torch.manual_seed(1)
    B, H, N, D, blk, kk = 2, 4, 300, 16, 32, 4
    q, k, v = torch.randn(B, H, N, D), torch.randn(B, 2, N, D), torch.randn(B, 2, N, D)
    ctx = oracle_contexts(q, k, blk)
    text = f"oracle({kk}, sink=0, local=1, block={blk})"
    lay = compiled_layout(text, N, N, (blk, blk), context=ctx)
    assert lay.n_groups == B  # one selection per sequence, shared by the heads
    for b in range(B):
        rows = select_blocks(ctx[b]["block_scores"], kk, N, N, blk, blk, True, 0, 1)
        dense = lay.to_dense()[b]
        for r, cols in enumerate(rows):
            qrow = min((r + 1) * blk, N) - 1  # the block's last query row sees every causal key
            kept = {c for c in range(-(-N // blk)) if dense[qrow, c * blk:(c + 1) * blk].any()}
            assert kept == set(cols) and len(cols) == min(kk, r + 1)
    y = attend(q, k, v, text, backend="reference", block=(blk, blk))
    ref = spattern.attention(q, k, v, lay, backend="reference")
    torch.testing.assert_close(y, ref)
    # every block kept: dense causal attention
    full = attend(q, k, v, f"oracle(10, block={blk})", backend="reference", block=(blk, blk))
    torch.testing.assert_close(full, attend(q, k, v, None), atol=2e-6, rtol=1e-5)


def test_oracle_needs_no_context_and_its_cost_compiles_without_scores():
    text = "oracle(3, sink=1, local=1, block=32)"
    assert self_scored(text) and self_scored(spattern.parse(text)) and not needs_context(text)
    assert not self_scored("topk(3)") and needs_context("topk(3)") and not self_scored(None)
    lay = compiled_layout(text, 200, 200, (32, 32), context=cost_contexts(text, 200))
    assert lay.nnz == sum(min(3, r + 1) for r in range(7))
    assert cost_contexts("local(4) & causal", 200) is None
    with pytest.raises(ValueError, match="k >= sink \\+ local"):
        spattern.parse("oracle(1)")


def test_an_experiment_matches_and_scores_the_oracle(tmp_path):
    cfg = tiny_config("oracle", """[sweep]
pattern = ["dense"]
[match]
target = 0.45
families = {{ oracle = "oracle({{w}}, sink=0, local=1, block=32)", window = "local({{w}}) & causal" }}
""")
    p = tmp_path / "exp.toml"
    p.write_text(cfg.format(results=tmp_path / "results"))
    summaries = {s["label"]: s for s in run_experiment(load_experiment(p), log=lambda *a, **k: None)}
    o, w = summaries["oracle"], summaries["window"]
    # at 128 tokens with 32-blocks the grid is 4 x 4: k = 2 keeps 7 of the 16 blocks, as the window does
    assert o["params"]["param"] == 2 and o["metrics"]["block_density"] == w["metrics"]["block_density"] == 7 / 16
    recs = [json.loads(x) for x in next((tmp_path / "results" / "oracle").glob("oracle*")).joinpath(
        "per_example.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all(0 < r["recall"] <= 1 and r["kl"] >= 0 for r in recs)
    # the most dense attention mass any 2 blocks per row (the diagonal one included) can keep: at least
    # the window's, whose token mask lies inside 2 such blocks per row
    assert o["metrics"]["recall"] >= w["metrics"]["recall"] > 0
