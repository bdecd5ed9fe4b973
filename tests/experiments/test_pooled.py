"""spattern pool: runs against a baseline pooled over experiments on different data (one stratum each)."""

import json

import pytest

from spattern.experiments.pooled import pool_experiments, recompute_pooled
from spattern.experiments.rundir import RunDir
from spattern.utils.errors import UserError


def _run(root, label, nll, prefix="doc"):
    rd = RunDir(root / f"{label}-s0-0000000000")
    rd.start({"kind": "evaluate", "setup": {"docs": len(nll)}}, seed=0)
    for i, v in enumerate(nll):
        rd.add_example({"id": f"{prefix}{i}", "nll": v})
    rd.write_metrics({"status": "finished", "label": label, "seed": 0, "pattern": label})


def _study(tmp_path):
    a, b = tmp_path / "results" / "corpus_a", tmp_path / "results" / "corpus_b"
    base_a, base_b = [1.0, 1.4, 1.1, 1.9, 1.2, 1.6], [3.0, 3.3, 2.9, 3.8, 3.1, 3.5, 3.6, 3.2]
    _run(a, "streaming", base_a)
    _run(a, "indexed", [v - 0.2 + 0.01 * i for i, v in enumerate(base_a)])
    _run(b, "streaming", base_b, prefix="other")  # another corpus: other documents
    _run(b, "indexed", [v + 0.02 * (i % 2) for i, v in enumerate(base_b)], prefix="other")
    return a, b


def test_pooling_pairs_within_each_experiment_and_weighs_them_equally(tmp_path):
    a, b = _study(tmp_path)
    out = tmp_path / "results" / "pooled" / "t.json"
    table = pool_experiments([a, b], "streaming", ["nll"], ["indexed"], out=out, name="t")
    (row,) = table["rows"]
    diff_a = -0.2 + 0.01 * 2.5  # mean of -0.2 + 0.01 i over i < 6
    diff_b = 0.01               # half the documents +0.02
    assert row["strata"]["corpus_a"]["diff"] == pytest.approx(diff_a)
    assert row["strata"]["corpus_b"]["diff"] == pytest.approx(diff_b)
    assert row["diff"] == pytest.approx((diff_a + diff_b) / 2) and row["n"] == 14
    assert row["diff_ci_low"] < row["diff"] < row["diff_ci_high"] and row["test"] == "stratified_permutation"
    assert table["pooled"] == ["corpus_a", "corpus_b"] and table["correction"] == "holm"
    assert json.loads(out.read_text()) == json.loads(json.dumps(table))
    again = recompute_pooled(out, write=False)  # from the experiments it names, beside its folder
    assert again["rows"][0]["p_holm"] == pytest.approx(row["p_holm"])


def test_pooling_refuses_what_it_cannot_pair(tmp_path):
    a, b = _study(tmp_path)
    with pytest.raises(UserError, match="two or more experiment folders"):
        pool_experiments([a], "streaming", ["nll"], ["indexed"])
    with pytest.raises(UserError, match=r"corpus_a: expected a run 'oracle'"):
        pool_experiments([a, b], "streaming", ["nll"], ["oracle"])
    with pytest.raises(UserError, match="other than the baseline"):
        pool_experiments([a, b], "streaming", ["nll"], ["streaming"])
    _run(a, "window", [1.0] * 6)
    _run(b, "window", [1.0] * 7, prefix="other")  # one document short of the baseline's
    with pytest.raises(UserError, match="did not score the same 'nll' examples"):
        pool_experiments([a, b], "streaming", ["nll"], ["window"])


def test_spattern_pool_prints_each_stratum_and_writes_the_table(tmp_path, capsys):
    from spattern.cli import main

    a, b = _study(tmp_path)
    out = tmp_path / "results" / "pooled" / "cli.json"
    assert main(["pool", str(a), str(b), "--baseline", "streaming", "--runs", "indexed", "--name", "cli",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "indexed - streaming" in text and "corpus_a -0.175 (n=6)" in text and "corpus_b +0.01 (n=8)" in text
    table = json.loads(out.read_text())
    assert table["experiment"] == "cli" and [r["metric"] for r in table["rows"]] == ["nll"]
