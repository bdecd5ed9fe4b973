"""A fitted per-layer, per-head pattern (a `spattern fit` record) as a candidate of an evaluate
experiment (`sweep.fitted`): scored as the per-layer patterns it names (against information_loss
run directly with them), its cost the mean over layers, and refused where it would not be a
held-out, like-for-like comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spattern.experiments import expand, load_experiment, run_experiment
from spattern.utils.errors import UserError
from tests.experiments.tiny import tiny_config

# neox-tiny: 2 layers of 4 heads; each layer's heads differ, and so do the two layers
PATTERNS = ["heads(local(8) & causal, local(8) & causal, (local(8) | sink(4)) & causal, local(40) & causal)",
            "heads((local(16) | sink(4)) & causal, local(16) & causal, local(16) & causal, local(16) & causal)"]

CONFIG = tiny_config("fitted", """[sweep]
pattern = ["dense"]
[sweep.fitted]
fitted = "fit.json"
""")


def _write(tmp_path, fit_docs=("stdlib:not/scored.py",), window=128, block=(32, 32), model="random:neox-tiny",
           train=False):
    rec = {"model": model, "target": 0.5, "measure": "block_density", "fit_split": "train",
           "fit": {"patterns": PATTERNS, "window": window, "block": list(block), "docs": list(fit_docs),
                   "fitted": {"recall": 0.9, "block_density": 0.5}}}
    (tmp_path / "fit.json").write_text(json.dumps(rec))
    p = tmp_path / "exp.toml"
    text = CONFIG.format(results=tmp_path / "results")
    p.write_text('kind = "train"\n' + text + '[train]\nconfig = "t.toml"\n' if train else text)
    return p


def test_fitted_run_scores_the_per_layer_patterns(tmp_path):
    from spattern.evaluation.infoloss import information_loss
    from spattern.experiments.inputs import _load, documents
    from spattern.models.attention import compiled_layout

    cfg = load_experiment(_write(tmp_path))
    spec = next(r for r in expand(cfg) if r.label == "fitted")
    assert spec.pattern == tuple(PATTERNS) and spec.resolved["match"]["fit_docs"] == ["stdlib:not/scored.py"]
    out = {s["label"]: s for s in run_experiment(cfg, log=lambda *a, **k: None)}["fitted"]
    recs = {r["id"]: r for r in spec.dir.examples()}
    model = _load(cfg.setup.model, "cpu", "float32", 0, False).model
    for doc_id, ids, _ in documents(cfg.setup):  # the twin: information_loss with the same list
        il = information_loss(model, np.asarray(ids, dtype=np.int64), np.array([0, len(ids)]), 128, PATTERNS,
                              block=(32, 32))
        d = next(iter(il["docs"].values()))
        assert recs[doc_id]["nll"] == pytest.approx(d["nll"], rel=1e-6)
        assert recs[doc_id]["kl"] == pytest.approx(d["kl"], rel=1e-6) and d["kl"] > 0
    cost = [compiled_layout(p, 128, 128, (32, 32)).stats()["block_density"] for p in PATTERNS]
    assert out["metrics"]["block_density"] == pytest.approx(np.mean(cost)) and cost[0] != cost[1]
    assert out["pattern"] == PATTERNS


def test_fitted_documents_must_be_held_out(tmp_path):
    from spattern.experiments.inputs import documents

    scored = [d for d, _, _ in documents(load_experiment(_write(tmp_path)).setup)]
    cfg = load_experiment(_write(tmp_path, fit_docs=["stdlib:other.py", scored[1]]))
    with pytest.raises(UserError, match="1 of the scored ones were fitted on"):
        run_experiment(cfg, log=lambda *a, **k: None)


@pytest.mark.parametrize("change, message", [
    ({"window": 256}, "fitted at 256 tokens"),
    ({"block": (64, 64)}, r"fitted with block \(64, 64\)"),
    ({"model": "smollm2"}, "fitted on model 'smollm2'"),
])
def test_fitted_refuses_another_length_block_or_model(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        expand(load_experiment(_write(tmp_path, **change)))


def test_fitted_refuses_a_missing_file_and_training_experiments(tmp_path):
    p = _write(tmp_path)
    (tmp_path / "fit.json").unlink()
    with pytest.raises(UserError, match="expected the JSON that `spattern fit` wrote"):
        expand(load_experiment(p))
    with pytest.raises(Exception, match="sweep.fitted only with kind = 'evaluate'"):
        load_experiment(_write(tmp_path, train=True))
