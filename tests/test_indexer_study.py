"""Study scenario 4 (learned sparsity): the indexer's recall of dense attention mass against a
brute-force twin, its mean over validation forwards, and experiments/study_indexer.toml run tiny
on the CPU through the runner and `compare` (recall over training and step time in the files)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spattern.experiments import compare_experiment, expand, load_experiment, run_experiment
from spattern.indexer.select import available_blocks
from spattern.indexer.train import attach_indexers, collect_stats, indexer_modules, set_mode
from spattern.models import build_model, get_config
from spattern.train.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]


def _brute_stats(q, k, iscores, K, block, sink, local):
    """Loops in float64: the dense causal softmax of every (batch, head, query), the top-K block
    selection from the indexer's mass-pooled block scores (forced sink/local blocks first, ties to
    the lower block), and the share of each query's dense mass inside its row's selected blocks."""
    q, k, iscores = q.double(), k.double(), iscores.double()
    B, H, N, D = q.shape
    k = k.repeat_interleave(H // k.shape[1], dim=1)
    bq, bk = block
    R, C = math.ceil(N / bq), math.ceil(N / bk)
    recall, pairs = [], 0
    for b in range(B):
        chosen = []
        for r in range(R):
            rows = range(r * bq, min((r + 1) * bq, N))
            last = rows[-1]
            avail = [c for c in range(C) if c * bk <= last]
            score = {}
            for c in avail:
                tot = 0.0
                for i in rows:
                    p = torch.softmax(iscores[b, i, : i + 1], dim=0)
                    tot += float(p[c * bk: min((c + 1) * bk, i + 1)].sum())
                score[c] = tot / len(rows)
            diag = last // bk
            forced = [c for c in avail if c < sink or diag - local < c <= diag]
            rest = sorted((c for c in avail if c not in forced), key=lambda c: (-score[c], c))
            chosen.append(set((forced + rest)[: min(K, len(avail))]))
        for i in range(N):
            sel = chosen[i // bq]
            keys = [j for j in range(i + 1) if j // bk in sel]
            pairs += len(keys)
            for h in range(H):
                p = torch.softmax(q[b, h, i] @ k[b, h, : i + 1].T / math.sqrt(D), dim=0)
                recall.append(float(p[keys].sum()))
    return {"mass_recall": sum(recall) / len(recall), "density": pairs / B / (N * (N + 1) / 2)}


@pytest.mark.parametrize("N,K,sink,local", [(96, 3, 1, 1), (90, 4, 0, 2)])
def test_mass_recall_equals_a_brute_force_twin(N, K, sink, local):
    torch.manual_seed(0)
    model = build_model(get_config("neox-tiny", vocab_size=256))
    with torch.no_grad():  # peaked, content-dependent dense attention: the selection decides the recall
        a = model.layers[0].attn
        a.q_proj.weight.copy_(torch.eye(a.q_proj.weight.shape[0]) * 4)
        a.k_proj.weight.copy_(torch.eye(a.k_proj.weight.shape[0]) * 4)
        a.rotary = None  # each query spreads its mass over the keys of its token id, in every block
    attach_indexers(model, k=K, layers=[0], block=(16, 16), n_heads=2, head_dim=8, sink=sink, local=local)
    (mod,) = indexer_modules(model)
    seen = []
    mod.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    idx = torch.randint(0, 6, (2, N))  # few token ids: each query matches keys in many blocks
    for mode in ("dense", "sparse"):  # both stages measure the same thing: dense mass in the selection
        set_mode(model, mode)
        with torch.no_grad():
            model(idx)
        x = seen[-1]
        with torch.no_grad():
            q, k, _ = mod._qkv(x)
            ref = _brute_stats(q, k, mod.indexer(x), K, (16, 16), sink, local)
        st = mod.stats
        assert st["mass_recall"] == pytest.approx(ref["mass_recall"], abs=1e-5)
        assert st["density"] == pytest.approx(ref["density"], abs=1e-9)
        assert 0.3 < st["mass_recall"] < 0.97  # not trivially everything


def test_collect_stats_is_the_mean_over_forwards_and_layers():
    torch.manual_seed(1)
    model = build_model(get_config("neox-tiny", vocab_size=256))
    mods = attach_indexers(model, k=2, block=(16, 16), n_heads=2, head_dim=8)
    batches = [torch.randint(0, 256, (1, 64)) for _ in range(3)]
    each = []
    with torch.no_grad():
        for x in batches:
            model(x)
            each += [m.stats for m in mods]
        with collect_stats(model) as got:
            for x in batches:
                model(x)
    assert len(each) == 6 and all(m.collect is None for m in mods)
    for key in ("mass_recall", "density", "top_mass_overlap"):
        assert got[key] == pytest.approx(sum(s[key] for s in each) / 6, rel=1e-6)
    with collect_stats(build_model(get_config("neox-tiny", vocab_size=256))) as none:
        pass
    assert none == {}


TINY = ["train.device=cpu", "train.dtype=fp32", "model.preset=neox-tiny", "data.vocab_size=512", "data.max_docs=60",
        "train.steps=6", "train.log_every=1", "train.eval_every=3", "train.eval_batches=1", "train.batch_size=2",
        "train.warmup=1", "indexer.block=[32, 32]", "indexer.n_heads=2", "indexer.head_dim=16"]


def test_study_config_runs_tiny_on_cpu_and_compares(tmp_path, cache):
    over = [f"results={json.dumps(str(tmp_path))}", f"train.overrides={json.dumps(TINY)}", "setup.context=128",
            "sweep.seed=[0, 1]", 'sweep.variants={dense = [], indexer = ["indexer.k=2", "indexer.warmup_steps=3"]}']
    cfg = load_experiment(ROOT / "experiments" / "study_indexer.toml", over)
    summaries = run_experiment(cfg, log=lambda *a: None)
    assert [s["status"] for s in summaries] == ["finished"] * 4
    curves = {}
    for spec in expand(cfg):
        m = json.loads(spec.dir.metrics_path.read_text())
        recs = [json.loads(line) for line in (spec.dir.path / "metrics.jsonl").read_text().splitlines()]
        steps, vals = [r for r in recs if "loss" in r], [r for r in recs if "val_loss" in r]
        assert len(steps) == 6 and [r["step"] for r in vals] == [3, 6]
        assert m["label"] == spec.label and m["metrics"]["step_ms"] > 0
        curves[spec.label, spec.seed] = steps
        if spec.label == "dense":
            assert not any(k.startswith(("indexer", "val_indexer")) for r in recs for k in r)
            assert m["curves"] == {} and "indexer_mass_recall" not in m["metrics"]
            continue
        assert [r["indexer_stage"] for r in steps] == ["dense-warmup"] * 3 + ["sparse"] * 3
        assert all(0 < r["indexer_mass_recall"] <= 1 and 0 < r["indexer_density"] <= 1 for r in steps)
        assert all(0 < r["val_indexer_mass_recall"] <= 1 for r in vals)
        assert [c["mass_recall"] for c in m["curves"]["indexer"]] == [r["indexer_mass_recall"] for r in steps]
        assert [c["step"] for c in m["curves"]["val_indexer"]] == [3, 6]
        assert m["metrics"]["val_indexer_mass_recall"] == vals[-1]["val_indexer_mass_recall"]
        assert m["metrics"]["step_ms_sparse"] > 0 and m["metrics"]["step_ms_dense_warmup"] > 0
    for seed in (0, 1):  # warmup_train_lm: the LM trains densely in the warm-up, as the dense run does
        for d, i in itertools.islice(zip(curves["dense", seed], curves["indexer", seed]), 3):
            assert i["loss"] == pytest.approx(d["loss"], abs=1e-3)
    table = compare_experiment(cfg.out_dir, baseline=cfg.baseline)
    rows = {(r["metric"], r["run"]): r for r in table["rows"]}
    assert rows[("loss", "indexer")]["n"] == 2 and rows[("loss", "dense")]["note"] == "baseline"


def test_study_config_expands_to_two_variants_by_its_seeds():
    cfg = load_experiment(ROOT / "experiments" / "study_indexer.toml")
    runs = expand(cfg)
    seeds = cfg.sweep.seed
    assert seeds == list(range(len(seeds))) and len(seeds) >= 3  # the issue: >= 3 seeds where anything trains
    assert [(r.label, r.seed) for r in runs] == [(v, s) for v in ("dense", "indexer") for s in seeds]
    assert cfg.baseline == "dense" and cfg.kind == "train"
    ind = runs[len(seeds)].resolved["train"]["overrides"]
    assert "indexer.k=4" in ind and runs[0].resolved["train"]["overrides"] == []
    # k = 4 of 64-token blocks at 2048 tokens: about a quarter of the causal blocks
    avail = available_blocks(2048, 2048, 64, 64, True)
    assert np.minimum(4, avail).sum() / avail.sum() == pytest.approx(0.231, abs=1e-3)
    tcfg = load_train_config(ROOT / "experiments" / "study_indexer_train.toml", ind)
    assert tcfg.data.seq_len == cfg.setup.context == 2048 and tuple(tcfg.indexer.block) == (64, 64)
    assert tcfg.indexer.k == 4 and tcfg.indexer.warmup_train_lm and tcfg.train.device == "cuda"
