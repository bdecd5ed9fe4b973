"""indexed(k): top-k key blocks chosen by each layer's lightning indexer from the layer's input, at every
attention call. Checked against a direct computation of the scores, against the scenario-4 layer that
makes the same choice (``IndexedAttention`` in sparse mode, the twin), in information_loss (never more
dense mass than the oracle's choice), and in an experiment: the warm-up on the train split, its cache,
its record, and the run ids of the runs that have no indexer."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import spattern
from spattern.evaluation.infoloss import information_loss
from spattern.experiments import load_experiment, run_experiment
from spattern.experiments.runs import expand
from spattern.indexer.lightning import LightningIndexer
from spattern.indexer.train import IndexedAttention, attach_indexers, detach_indexers, warmup_indexers
from spattern.models.attention import compiled_layout, cost_contexts, indexer_contexts, indexer_scored, self_scored
from spattern.models.config import get_config
from spattern.models.decoder import build_model
from spattern.models.rotary import Rotary
from tests.experiments.tiny import tiny_config

TEXT = "indexed(3, sink=0, local=1, block=32)"


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = build_model(get_config("llama-tiny", vocab_size=256, max_seq_len=1024)).eval()
    torch.manual_seed(1)
    m.set_indexers([LightningIndexer(m.cfg.d_model, 2, 16, rotary=Rotary(16, 8)) for _ in m.layers])
    return m


def test_indexed_is_self_scored_and_its_cost_compiles_without_scores():
    p = spattern.parse("indexed(3, sink=1, block=32, seed=2)")
    assert p.seed == 2 and str(p) == "indexed(3, block=32, seed=2)"
    assert self_scored(TEXT) and indexer_scored(TEXT) and indexer_scored(p)
    assert not indexer_scored("oracle(3, block=32)") and self_scored("oracle(3, block=32)")
    assert not indexer_scored(None) and not indexer_scored("local(4) & causal")
    lay = compiled_layout(TEXT, 200, 200, (32, 32), context=cost_contexts(TEXT, 200))
    assert lay.nnz == sum(min(3, r + 1) for r in range(7))
    with pytest.raises(ValueError, match="seed"):
        spattern.parse("indexed(3, seed=-1)")


def test_contexts_are_the_block_mass_of_the_indexer_softmax():
    torch.manual_seed(0)
    ix = LightningIndexer(24, 2, 8)
    x = torch.randn(2, 100, 24)
    ctx = indexer_contexts(ix, x, 32)
    p = torch.softmax(ix(x).double(), -1)                                   # (B, N, N), 0 in the future
    for b in range(2):
        got = ctx[b]["block_scores"]
        assert got.shape == (4, 4) and ctx[b]["q_len"] == ctx[b]["kv_len"] == 100
        for r in range(4):
            rows = p[b, r * 32:(r + 1) * 32]
            for c in range(4):
                want = rows[:, c * 32:(c + 1) * 32].sum(-1).mean().item()
                if c <= r:
                    assert math.isclose(got[r, c], want, rel_tol=1e-5, abs_tol=1e-7)
                else:
                    assert np.isneginf(got[r, c])


def test_a_layer_attends_the_blocks_its_indexer_chooses(model):
    attn = model.layers[0].attn
    x = torch.randn(2, 150, model.cfg.d_model)
    seen = {}
    attn.observer = lambda q, k, v, y: seen.update(q=q, k=k, v=v, y=y)
    attn.pattern, attn.backend = TEXT, "reference"
    out = attn(x)
    attn.observer = None
    ctx = indexer_contexts(attn.indexer, x, 32)
    ref = spattern.attention(seen["q"], seen["k"], seen["v"], compiled_layout(TEXT, 150, 150, (32, 32), context=ctx),
                             backend="reference")
    torch.testing.assert_close(seen["y"], ref)
    # k covering every block: dense causal attention
    attn.pattern = None
    dense = attn(x)
    attn.pattern = "indexed(10, sink=0, block=32)"
    torch.testing.assert_close(attn(x), dense, atol=2e-6, rtol=1e-5)
    assert not torch.allclose(out, dense, atol=1e-3)  # 3 blocks of 5 on the last rows: not dense


def test_the_pattern_and_the_scenario_4_layer_make_the_same_choice(model):
    """The twin: IndexedAttention in sparse mode (training) selects with the device builders; the pattern
    binds through the host's select_blocks. The same indexer must give the same output."""
    layer = model.layers[1]
    attn, ix = layer.attn, layer.attn.indexer
    x = torch.randn(1, 192, model.cfg.d_model)
    for sink, local in ((0, 1), (1, 1), (1, 2)):
        text = f"indexed(4, sink={sink}, local={local}, block=32)"
        attn.pattern, attn.backend = text, "reference"
        with torch.no_grad():
            mine = attn(x)
            twin = IndexedAttention(attn, model.cfg.d_model, 4, block=(32, 32), n_heads=2, head_dim=16, sink=sink,
                                    local=local, mode="sparse", backend="reference")
            twin.indexer = ix
            attn.pattern = None
            theirs = twin(x)
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


def test_a_missing_indexer_is_an_error_that_says_so(model):
    model.set_indexers(None)
    model.set_pattern(TEXT, "reference")
    with pytest.raises(ValueError, match="set_indexers"):
        model(torch.randint(0, 256, (1, 64)))
    with pytest.raises(ValueError, match="one per layer"):
        model.set_indexers([None])


def test_information_loss_never_keeps_more_mass_than_the_oracle(model):
    stream = np.random.default_rng(0).integers(0, 256, 300).astype(np.int64)
    got = {}
    for p in (TEXT, "oracle(3, sink=0, local=1, block=32)", "indexed(20, sink=0, block=32)"):
        got[p] = information_loss(model, stream, np.array([0, 300]), 256, p, block=(32, 32), backend="reference")
    assert 0 < got[TEXT]["recall"]["mean"] <= got["oracle(3, sink=0, local=1, block=32)"]["recall"]["mean"] + 1e-9
    every = got["indexed(20, sink=0, block=32)"]
    assert every["recall"]["mean"] == pytest.approx(1.0) and every["kl"] == pytest.approx(0.0, abs=1e-6)
    assert all(layer.attn.pattern is None for layer in model.layers)


def test_warmup_lowers_the_kl_and_detach_gives_the_layers_back(model):
    model.set_indexers(None)
    attns = [layer.attn for layer in model.layers]
    attach_indexers(model, 2, block=(32, 32), n_heads=2, head_dim=16)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 96))
    hist = warmup_indexers(model, iter([x] * 60), 60, lr=1e-2, stats=False)
    assert set(hist[0]) == {"step", "kl"}
    assert np.mean([h["kl"] for h in hist[-5:]]) < 0.8 * np.mean([h["kl"] for h in hist[:5]])
    got = detach_indexers(model)
    assert len(got) == 2 and all(isinstance(g, LightningIndexer) for g in got)
    assert [layer.attn for layer in model.layers] == attns
    assert all(p.requires_grad for p in model.parameters())  # the warm-up froze the model only while it ran


SWEEP = """[sweep]
pattern = ["dense"]
[match]
target = 0.45
families = {{ indexed = "indexed({{w}}, sink=0, local=1, block=32, seed=1)", oracle = "oracle({{w}}, sink=0, local=1, block=32)" }}
[setup.indexer]
steps = 4
context = 64
heads = 2
head_dim = 16
rope_dim = 8
"""


def test_an_experiment_warms_up_caches_and_scores_the_indexer(tmp_path, monkeypatch):
    monkeypatch.setenv("SPATTERN_CACHE", str(tmp_path / "cache"))
    p = tmp_path / "exp.toml"
    p.write_text(tiny_config("indexed", SWEEP).format(results=tmp_path / "results"))
    cfg = load_experiment(p)
    runs = {r.label: r for r in expand(cfg)}
    assert "indexer" in runs["indexed"].resolved["setup"]
    assert "indexer" not in runs["dense"].resolved["setup"] and "indexer" not in runs["oracle"].resolved["setup"]
    summaries = {s["label"]: s for s in run_experiment(cfg, log=lambda *a, **k: None)}
    i, o = summaries["indexed"], summaries["oracle"]
    assert i["params"]["param"] == o["params"]["param"] == 2
    assert i["metrics"]["block_density"] == o["metrics"]["block_density"]
    assert 0 < i["metrics"]["recall"] <= o["metrics"]["recall"] + 1e-9
    assert i["timings"]["indexer_warmup"] > 0
    from spattern.experiments.results import compare_experiment

    table = compare_experiment(cfg.out_dir)  # the warm-up's settings are not a different setup
    assert {"indexed", "oracle"} <= {r["run"] for r in table["rows"]}
    rec = json.loads((runs["indexed"].dir.path / "indexer_warmup.json").read_text())
    assert len(rec["kl"]) == 4 and rec["key"]["seed"] == 1 and rec["key"]["warmup"]["split"] == "train"
    from spattern.data import split_of

    assert rec["documents"] and all(split_of(d) == "train" for d in rec["documents"])
    assert list((tmp_path / "cache" / "indexers").glob("*.pt"))
    # a second warm-up of the same settings comes from the cache, the same weights
    from spattern.experiments.indexers import warmed_indexers
    from spattern.experiments.inputs import _load

    loaded = _load(cfg.setup.model, "cpu", "float32", 0, False)
    a, rec_a, trained = warmed_indexers(loaded.model, loaded.tokenizer, cfg.setup, 1)
    assert not trained and rec_a == rec
    assert all(p.grad is None for ix in a for p in ix.parameters())
    assert all(layer.attn.indexer is None for layer in loaded.model.layers)  # the run gave the model back


def test_the_warmup_split_must_not_be_the_scored_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SPATTERN_CACHE", str(tmp_path / "cache"))
    p = tmp_path / "exp.toml"
    p.write_text(tiny_config("indexed_split", SWEEP.replace("rope_dim = 8", 'rope_dim = 8\nsplit = "test"'))
                 .format(results=tmp_path / "results"))
    from spattern.utils.errors import UserError

    with pytest.raises(UserError, match="other than the scored one"):
        run_experiment(load_experiment(p), log=lambda *a, **k: None, only=["indexed"])
    with pytest.raises(ValueError, match="rope_dim"):
        p.write_text(tiny_config("indexed_rope", SWEEP.replace("rope_dim = 8", "rope_dim = 7"))
                     .format(results=tmp_path / "results"))
        load_experiment(p)


def test_a_family_that_starts_above_one_is_matched_from_its_first_member():
    """indexed(k, sink=1, local=3) needs k >= 4: matching starts there instead of failing at k = 1."""
    from spattern.evaluation.matching import family_fn, match, smallest_param
    from spattern.utils.errors import UserError

    fam = "indexed({w}, sink=1, local=3, block=32)"
    assert smallest_param(family_fn(fam)[0]) == 4 and smallest_param(family_fn("local({w}) & causal")[0]) == 1
    m = match(fam, 0.3, 512, (32, 32), contexts=cost_contexts("indexed(4, sink=1, local=3, block=32)", 512))
    free = match("indexed({w}, sink=0, local=1, block=32)", 0.3, 512, (32, 32),
                 contexts=cost_contexts("indexed(4, block=32)", 512))
    assert m.param == free.param >= 4 and m.achieved == free.achieved  # a row's count ignores which blocks
    with pytest.raises(UserError, match="no parameter"):
        smallest_param(family_fn("indexed({w}, sink=40, local=40, block=32)")[0])
