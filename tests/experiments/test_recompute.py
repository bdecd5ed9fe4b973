"""recompute_comparison: a committed table computed again from its runs, with the settings it records."""

import json

import pytest

from spattern.experiments.results import compare_experiment, recompute_comparison
from spattern.experiments.rundir import RunDir
from spattern.utils.errors import UserError


def _run(root, label, nll):
    rd = RunDir(root / f"{label}-s0-0000000000")
    rd.start({"kind": "evaluate", "setup": {"docs": len(nll)}}, seed=0)
    for i, v in enumerate(nll):
        rd.add_example({"id": f"doc{i}", "nll": v, "top1": 1.0 - v / 10})
    rd.write_metrics({"status": "finished", "label": label, "seed": 0, "pattern": label})


def _folder(tmp_path):
    _run(tmp_path, "dense", [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
    _run(tmp_path, "window", [1.3, 1.5, 1.4, 1.9, 1.6, 1.8, 2.0])
    _run(tmp_path, "streaming", [1.2, 1.2, 1.3, 1.5, 1.5, 1.7, 1.9])
    path = tmp_path / "compare_vs_streaming.json"
    compare_experiment(tmp_path, "streaming", ["nll"], test="t", family="all", out=path)
    return path


def test_recompute_keeps_the_recorded_settings_and_runs(tmp_path):
    path = _folder(tmp_path)
    want = json.loads(path.read_text())
    _run(tmp_path, "outline", [9.0, 9.1, 9.2, 9.3, 9.4, 9.5, 9.6])  # a run added after the table was written
    got = recompute_comparison(path, write=False)
    assert {(r["metric"], r["run"], r["test"]) for r in got["rows"]} == \
        {(r["metric"], r["run"], r["test"]) for r in want["rows"]} == \
        {("nll", "streaming", "t"), ("nll", "dense", "t"), ("nll", "window", "t")}
    assert [r["p_holm"] for r in got["rows"]] == pytest.approx([r["p_holm"] for r in want["rows"]])
    assert got["family"] == "all" and got["baseline"] == "streaming" and got["runs_left_out"] == ["outline"]


def test_recompute_refuses_what_it_cannot_reproduce(tmp_path):
    path = _folder(tmp_path)
    table = json.loads(path.read_text())
    path.write_text(json.dumps({**table, "rows": []}))
    with pytest.raises(UserError, match="expected a table with rows"):
        recompute_comparison(path)
    path.write_text(json.dumps({**table, "rows": [*table["rows"], {**table["rows"][1], "metric": "kl"}]}))
    with pytest.raises(UserError, match=r"lost \[\('kl', 'dense'\)\]"):
        recompute_comparison(path)
    path.write_text(json.dumps(table))
    (tmp_path / "window-s0-0000000000" / "metrics.json").unlink()  # a compared run gone
    with pytest.raises(UserError, match="no longer in its folder: \\['window'\\]"):
        recompute_comparison(path)
