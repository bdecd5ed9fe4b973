"""Content-dependent patterns (outline) in an evaluate experiment: bound per document from its
token ids, their cost recorded per document and averaged in the run's summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spattern.experiments import load_experiment, run_experiment
from spattern.experiments.lm_eval import sequence_pattern
from spattern.data.tokenizer import ByteTokenizer
from tests.experiments.tiny import tiny_config

CONFIG = tiny_config("content", """[sweep]
pattern = ["dense", "outline(window=16, header=4) & causal"]
""")


def test_outline_runs_per_document_and_reports_its_mean_cost(tmp_path):
    p = tmp_path / "exp.toml"
    p.write_text(CONFIG.format(results=tmp_path / "results"))
    summaries = {s["label"]: s for s in run_experiment(load_experiment(p), log=lambda *a, **k: None)}
    out = summaries["outline(window=16, header=4) & causal"]
    run_dir = next((tmp_path / "results" / "content").glob("outline*"))
    recs = [json.loads(line) for line in (run_dir / "per_example.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all(0 < r["block_density"] <= 1 and 0 < r["density"] < 1 for r in recs)
    assert len({r["density"] for r in recs}) > 1  # one layout per document
    assert np.isclose(out["metrics"]["block_density"], np.mean([r["block_density"] for r in recs]))
    assert all(0 < r["recall"] < 1 and r["kl"] > 0 for r in recs)
    assert summaries["dense"]["metrics"]["block_density"] == 1.0


def test_sequence_pattern_binds_only_content_dependent_patterns():
    tok = ByteTokenizer()
    ids = tok.encode("def f():\n    return 1\n")
    assert sequence_pattern("local(4) & causal", tok, ids) == "local(4) & causal"
    assert sequence_pattern(None, tok, ids) is None
    bound = sequence_pattern("outline() & causal", tok, ids)
    assert bound.is_static and str(bound) == "outline() & causal"


def test_matches_are_cached_with_the_documents_in_the_key(tmp_path, monkeypatch):
    from spattern.experiments import expand
    import spattern.evaluation.matching as matching

    p = tmp_path / "exp.toml"
    p.write_text(CONFIG.format(results=tmp_path / "results") + """
[match]
target = 0.4
families = { outline = "outline(window={w}) & causal", window = "local({w}) & causal" }
""")
    first = {r.label: r.pattern for r in expand(load_experiment(p))}
    assert (tmp_path / "results" / "content" / "matches.json").is_file()

    def no_match(*a, **k):
        raise AssertionError("matched again instead of reading matches.json")

    monkeypatch.setattr(matching, "match", no_match)
    assert {r.label: r.pattern for r in expand(load_experiment(p))} == first
    with pytest.raises(AssertionError, match="matched again"):  # other documents: a new key
        expand(load_experiment(p, ["setup.docs=2"]))


def test_compare_defaults_to_the_configs_baseline(tmp_path):
    from spattern.experiments import compare_experiment

    p = tmp_path / "exp.toml"
    p.write_text(CONFIG.format(results=tmp_path / "results").replace('baseline = "dense"',
                                                                     'baseline = "outline(window=16, header=4) & causal"'))
    run_experiment(load_experiment(p), log=lambda *a, **k: None)
    table = compare_experiment(tmp_path / "results" / "content")
    assert table["baseline"] == "outline(window=16, header=4) & causal"
