"""Information loss of a pattern against dense attention: layer metrics against brute force, the
model-level entry on tiny random models (dense pattern loses nothing, a local one loses some)."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

import spattern
from spattern.evaluation.infoloss import (
    information_loss,
    layer_information_loss,
    layout_token_mask,
    token_kl_top1,
)
from spattern.models import build_model, get_config

PER_HEAD = "heads(local(5), causal, strided(4), local(9)) & causal"


def _brute(q, k, v, mask):
    """Materialized dense probs and masked softmax. q (B,H,N,D), k/v (B,Hkv,N,D), mask (G, N, N)."""
    _, H, N, D = q.shape
    rep = H // k.shape[1]
    kk, vv = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = q @ kk.transpose(-1, -2) / math.sqrt(D)                                   # (B, H, N, N)
    causal = torch.ones(N, N, dtype=torch.bool).tril()
    p = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)
    m = torch.from_numpy(mask).reshape(1, -1, N, N)                               # (1, G, N, N)
    recall = (p * m).sum(-1)
    sp = torch.softmax(s.masked_fill(~m, float("-inf")), -1).nan_to_num(0.0)
    y_d, y_p = p @ vv, sp @ vv
    return recall, (y_p - y_d).pow(2).sum(-1), y_d.pow(2).sum(-1)


@pytest.mark.parametrize("pattern", ["local(6) & causal", PER_HEAD, "sink(3) | local(4) & causal"])
@pytest.mark.parametrize("N", [37, 64, 1])
def test_layout_token_mask_equals_dense_rows(pattern, N):
    layout = spattern.compile(pattern, N, block=(16, 16))
    dense = layout.to_dense()
    for g in range(layout.n_groups):
        for q0, q1 in [(0, N), (0, 1), (N - 1, N), (min(5, N - 1), min(29, N)), (min(16, N - 1), N)]:
            assert np.array_equal(layout_token_mask(layout, g, q0, q1), dense[g, q0:q1])


@pytest.mark.parametrize("pattern", ["local(6) & causal", PER_HEAD, "causal"])
@pytest.mark.parametrize("N,q_chunk", [(37, 10), (37, 64), (48, 16), (5, 3)])
def test_layer_loss_matches_brute_force_gqa(pattern, N, q_chunk):
    torch.manual_seed(N)
    q = torch.randn(2, 4, N, 8, dtype=torch.float64)
    k, v = torch.randn(2, 2, N, 8, dtype=torch.float64), torch.randn(2, 2, N, 8, dtype=torch.float64)
    layout = spattern.compile(pattern, N, block=(16, 16))
    got = layer_information_loss(q, k, v, layout, q_chunk=q_chunk, backend="reference")
    recall, err_sq, ref_sq = _brute(q, k, v, layout.to_dense())
    torch.testing.assert_close(got.recall, recall, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.err_sq, err_sq, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(got.ref_sq, ref_sq, rtol=1e-10, atol=1e-12)
    if pattern == "causal":
        assert torch.allclose(got.recall, torch.ones_like(got.recall)) and got.err_sq.max() < 1e-20


def test_layer_loss_chunked_equals_one_shot_float32():
    torch.manual_seed(0)
    N = 203                                          # not a multiple of the block nor of the chunk
    q, k, v = torch.randn(1, 4, N, 16), torch.randn(1, 1, N, 16), torch.randn(1, 1, N, 16)
    layout = spattern.compile("local(40) & causal", N, block=(32, 32))
    one = layer_information_loss(q, k, v, layout, q_chunk=N)
    for chunk in (1, 50, 64):
        part = layer_information_loss(q, k, v, layout, q_chunk=chunk)
        torch.testing.assert_close(part.recall, one.recall, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(part.rel_error(), one.rel_error(), rtol=1e-5, atol=1e-7)
    mask = layout.to_dense()[0]
    whole = torch.from_numpy(np.array([mask[i, : i + 1].all() for i in range(N)]))   # all causal keys kept
    assert 0 < whole.sum() < N
    assert (one.recall[0, :, ~whole] < 1 - 1e-3).all()
    torch.testing.assert_close(one.recall[0, :, whole], torch.ones(4, int(whole.sum()), dtype=torch.float64))


def test_bf16_inputs_dense_pattern_has_no_error():
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 70, 16).bfloat16() for _ in range(3))
    loss = layer_information_loss(q, k, v, spattern.compile("causal", 70, block=(16, 16)), q_chunk=32)
    assert loss.rel_error().max() < 1e-5
    torch.testing.assert_close(loss.recall, torch.ones(1, 2, 70, dtype=torch.float64), atol=1e-5, rtol=0)


def test_token_kl_top1_against_scipy():
    torch.manual_seed(1)
    ld, ls = torch.randn(7, 11, dtype=torch.float64), torch.randn(7, 11, dtype=torch.float64)
    ls[3] = ld[3]
    kl, top1 = token_kl_top1(ld, ls, chunk=3)
    pd, ps = ld.softmax(-1).numpy(), ls.softmax(-1).numpy()
    np.testing.assert_allclose(kl.numpy(), scipy.stats.entropy(pd, ps, axis=-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(top1.numpy(), (pd.argmax(-1) == ps.argmax(-1)).astype(float))
    assert kl[3].abs() < 1e-6 and top1[3] == 1


def _corpus(lens, vocab=2048, seed=0):
    stream = np.random.default_rng(seed).integers(0, vocab, sum(lens))
    return stream, np.concatenate([[0], np.cumsum(lens)])


@pytest.fixture(scope="module", params=["neox-tiny", "llama-tiny"])
def model(request):
    torch.manual_seed(0)
    return build_model(get_config(request.param, init_std=0.2))   # larger init: attention matters


@pytest.mark.parametrize("dense", ["causal", "full() & causal"])
def test_dense_pattern_loses_nothing(model, dense):
    stream, offsets = _corpus([90, 61, 140])
    r = information_loss(model, stream, offsets, 60, dense, block=(16, 16), q_chunk=25)
    assert r["tokens"] == 89 + 60 + 139
    assert abs(r["kl"]) < 1e-5 and r["top1_agreement"] == 1.0
    rec, rel = np.array(r["recall"]["per_layer_head"]), np.array(r["rel_error"]["per_layer_head"])
    assert rec.shape == rel.shape == (model.cfg.n_layers, model.cfg.n_heads)
    np.testing.assert_allclose(rec, 1.0, atol=1e-5)
    assert rel.max() < 1e-5


def test_local_pattern_loses_and_aggregates_per_document(model):
    stream, offsets = _corpus([90, 20, 141])         # the short document has no full window
    r = information_loss(model, stream, offsets, 50, "local(4) & causal", block=(16, 16), stride=20,
                         q_chunk=32, per_token=True)
    assert sorted(r["docs"]) == [0, 2]
    docs = r["docs"]
    assert [docs[d]["tokens"] for d in (0, 2)] == [89, 140]          # every position once
    assert all(len(docs[d]["kl_tokens"]) == docs[d]["tokens"] for d in (0, 2))
    assert r["kl"] > 0 and r["recall"]["mean"] < 1 and r["rel_error"]["mean"] > 0
    assert all(0 < x < 1 for row in r["recall"]["per_layer_head"] for x in row)
    # overall = token-weighted pool of the documents
    assert r["kl"] == pytest.approx(sum(np.sum(docs[d]["kl_tokens"]) for d in docs) / r["tokens"])
    assert r["top1_agreement"] == pytest.approx(sum(docs[d]["top1"] * docs[d]["tokens"] for d in docs)
                                                / r["tokens"])
    assert all(k >= -1e-6 for d in docs for k in docs[d]["kl_tokens"])


def test_model_recall_matches_brute_force_and_observer_sees_dense_output(model):
    """Recall from information_loss equals brute force on the q, k the model's layers compute."""
    stream, offsets = _corpus([41])
    seen = {}
    for i, layer in enumerate(model.layers):
        layer.attn.observer = lambda q, k, v, y, i=i: seen.__setitem__(i, (q, k, v, y))
    try:
        with torch.no_grad():
            model(torch.from_numpy(stream[:40])[None])
    finally:
        for layer in model.layers:
            layer.attn.observer = None
    pattern = "local(7) & causal"
    r = information_loss(model, stream, offsets, 40, pattern, block=(16, 16), q_chunk=13)
    layout = spattern.compile(pattern, 40, block=(16, 16))
    for i, (q, k, v, y) in seen.items():
        recall, err_sq, ref_sq = _brute(q.double(), k.double(), v.double(), layout.to_dense())
        torch.testing.assert_close(ref_sq.float(), y.pow(2).sum(-1), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(r["recall"]["per_layer_head"][i], recall[0].mean(-1).numpy(), rtol=1e-5)
        np.testing.assert_allclose(r["rel_error"]["per_layer_head"][i],
                                   (err_sq[0].sum(-1) / ref_sq[0].sum(-1)).sqrt().numpy(), rtol=1e-4)


def test_per_layer_patterns_and_model_restored():
    torch.manual_seed(0)
    model = build_model(get_config("llama-tiny", pattern="local(8) & causal", block=(32, 32), init_std=0.2))
    model.train()
    stream, offsets = _corpus([70])
    r = information_loss(model, stream, offsets, 69, [None, "local(3) & causal"], block=(16, 16))
    rec, rel = np.array(r["recall"]["per_layer_head"]), np.array(r["rel_error"]["per_layer_head"])
    assert np.all(rec[0] == 1.0) and np.all(rel[0] == 0.0) and np.all(rec[1] < 1)
    assert r["kl"] > 0
    assert model.training and model.cfg.pattern == "local(8) & causal"
    assert all(l.attn.pattern == "local(8) & causal" and l.attn.block == (32, 32) and l.attn.observer is None
               for l in model.layers)


def test_bad_inputs():
    model = build_model(get_config("neox-tiny"))
    stream, offsets = _corpus([30])
    with pytest.raises(ValueError, match="no document has more than window=40"):
        information_loss(model, stream, offsets, 40, "causal")
    with pytest.raises(ValueError, match="window: expected a positive int"):
        information_loss(model, stream, offsets, 0, "causal")
    with pytest.raises(TypeError, match="model: expected a spattern DecoderLM"):
        information_loss(torch.nn.Linear(2, 2), stream, offsets, 10, "causal")
    with pytest.raises(ValueError, match="pattern: expected a string or a list of 2"):
        information_loss(model, stream, offsets, 10, ["causal"])
    assert all(l.attn.observer is None and l.attn.pattern is None for l in model.layers)
