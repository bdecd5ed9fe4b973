"""The lightning indexer: shapes, causality, and a CPU warm-up in which its selection comes to
cover more of the dense attention's top probability mass."""

from pathlib import Path

import pytest
import torch

from spattern.indexer import LightningIndexer
from spattern.indexer.train import (
    attach_indexers,
    dense_attention_target,
    indexer_kl,
    indexer_modules,
    selection_stats,
    set_mode,
    warmup_indexers,
)
from spattern.models import build_model, get_config


def test_indexer_scores_shape_and_causality():
    x = torch.randn(2, 50, 32)
    s = LightningIndexer(32, n_heads=3, head_dim=8)(x)
    assert s.shape == (2, 50, 50)
    assert torch.isinf(s.triu(1)[:, torch.ones(50, 50).triu(1).bool()]).all()
    assert torch.isfinite(s.tril()).all()
    with pytest.raises(ValueError, match="x"):
        LightningIndexer(32)(torch.randn(50, 32))


def test_kl_is_zero_for_matching_distributions_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(1, 6, 6, generator=g).masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf"))
    p = torch.softmax(scores, -1)
    assert indexer_kl(scores, p).abs() < 1e-6
    assert indexer_kl(torch.zeros(1, 6, 6).masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf")), p) > 1e-3
    sel = torch.ones(1, 6, 6, dtype=torch.bool).tril()
    st = selection_stats(p, sel)
    assert st["mass_recall"] == pytest.approx(1.0) and st["top_mass_overlap"] == pytest.approx(1.0)


def _identity_attention_model():
    """A tiny decoder whose first layer attends by token identity (q = k = 4 x), a content-dependent
    attention pattern that a top-k selection has to learn."""
    torch.manual_seed(0)
    model = build_model(get_config("neox-tiny", vocab_size=256))
    with torch.no_grad():
        a = model.layers[0].attn
        d = a.q_proj.weight.shape[0]
        a.q_proj.weight.copy_(torch.eye(d) * 4)
        a.k_proj.weight.copy_(torch.eye(d) * 4)
        a.rotary = None
    return model


def _batches(n, batch, seed):
    text = Path(__file__).resolve().parents[1].joinpath("spattern/compiler/layout.py").read_bytes()
    data = torch.tensor(list(text[:20000]), dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    while True:
        i = torch.randint(0, len(data) - n, (batch,), generator=g)
        yield torch.stack([data[j : j + n] for j in i])


@pytest.mark.slow
def test_warmup_raises_overlap_with_dense_top_mass():
    model = _identity_attention_model()
    attach_indexers(model, k=4, layers=[0], block=(16, 16), n_heads=4, head_dim=16, sink=0, local=1)
    (mod,) = indexer_modules(model)
    eval_batch = next(_batches(256, 8, seed=123))

    def evaluate():
        with torch.no_grad():
            model(eval_batch)
        return float(mod.aux_loss), mod.stats

    kl0, st0 = evaluate()
    history = warmup_indexers(model, _batches(256, 4, seed=1), steps=30, lr=1e-2)
    kl1, st1 = evaluate()
    assert len(history) == 30
    assert kl1 < 0.5 * kl0  # the indexer matches the dense distribution much better
    assert st1["top_mass_overlap"] > st0["top_mass_overlap"] + 0.03
    assert st1["mass_recall"] > st0["mass_recall"] + 0.03
    # the model itself did not change (only the indexer learns in the warm-up)
    assert torch.equal(model.layers[0].attn.attn.q_proj.weight, torch.eye(64) * 4)


def test_sparse_mode_runs_on_the_selection_and_gives_gradients():
    model = _identity_attention_model()
    attach_indexers(model, k=3, layers=[0], block=(16, 16), n_heads=2, head_dim=8)
    set_mode(model, "sparse")
    idx = next(_batches(64, 2, seed=5))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    (mod,) = indexer_modules(model)
    total = loss + mod.aux_loss
    total.backward()
    assert mod.indexer.wq.weight.grad is not None and torch.isfinite(mod.indexer.wq.weight.grad).all()
    assert model.layers[0].attn.attn.v_proj.weight.grad is not None
    assert 0 < mod.stats["density"] <= 1


def test_dense_target_rows_sum_to_one_and_are_causal():
    q = torch.randn(1, 4, 10, 8)
    k = torch.randn(1, 2, 10, 8)
    p = dense_attention_target(q, k)
    assert torch.allclose(p.sum(-1), torch.ones(1, 10))
    assert (p.triu(1) == 0).all()


def test_attach_uses_the_indexers_given_and_checks_them():
    model = _identity_attention_model()
    mine = [LightningIndexer(model.cfg.d_model, n_heads=2, head_dim=8)]
    (mod,) = attach_indexers(model, k=3, layers=[0], block=(16, 16), n_heads=2, head_dim=8, indexers=mine)
    assert mod.indexer is mine[0]
    other = _identity_attention_model()
    with pytest.raises(ValueError, match="one indexer per wrapped layer"):
        attach_indexers(other, k=3, layers=[0], n_heads=2, head_dim=8, indexers=mine * 2)
    with pytest.raises(ValueError, match="n_heads=4"):
        attach_indexers(other, k=3, layers=[0], n_heads=4, head_dim=8, indexers=mine)
