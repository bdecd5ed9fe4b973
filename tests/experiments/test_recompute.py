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


def test_runs_of_another_experiment_on_the_same_data_join_the_table(tmp_path):
    a, b, c = tmp_path / "short", tmp_path / "long", tmp_path / "other"
    _run(a, "dense", [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
    short, long = [1.5, 1.6, 1.8, 1.7, 1.9, 2.2, 2.0], [1.2, 1.3, 1.3, 1.5, 1.6, 1.7, 1.8]
    _run(a, "indexed", short)
    _run(b, "dense", [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
    _run(b, "indexed", long)
    path = b / "compare_vs_short_indexed.json"
    table = compare_experiment(b, "short:indexed", ["nll"], test="t", only=["indexed"], out=path, also=["short"])
    (row,) = [r for r in table["rows"] if r["run"] == "indexed"]
    # the same documents, paired: long minus short, document by document
    assert row["diff"] == pytest.approx(sum(x - y for x, y in zip(long, short)) / 7) and row["n"] == 7
    assert table["also"] == ["short"] and table["runs_left_out"] == ["dense", "short:dense"]
    assert recompute_comparison(path, write=False)["rows"] == table["rows"]
    _run(c, "dense", [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
    rd = RunDir(c / "dense-s0-0000000000")  # scored other documents (another setup)
    rd.start({"kind": "evaluate", "setup": {"docs": 8}}, seed=0)
    rd.write_metrics({"status": "finished", "label": "dense", "seed": 0, "pattern": "dense"})
    with pytest.raises(UserError, match="did not score the same data"):
        compare_experiment(b, "dense", ["nll"], also=["other"], write=False)
    with pytest.raises(UserError, match="--also: expected the name of another experiment's folder"):
        compare_experiment(b, "dense", ["nll"], also=["long"], write=False)
    with pytest.raises(UserError, match="--also: expected the name"):
        compare_experiment(b, "dense", ["nll"], also=["../x"], write=False)
