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


def test_an_average_of_runs_pairs_example_by_example_and_recomputes(tmp_path):
    """--average: the seeds of one pattern (here across two experiments) become one run whose value on each
    example is their mean; the example stays the unit of the paired test."""
    a, b = tmp_path / "short", tmp_path / "long"
    s0, s1 = [1.5, 1.6, 1.8, 1.7, 1.9, 2.2, 2.0], [1.7, 1.6, 1.6, 1.9, 2.1, 2.0, 2.2]
    l0, l1 = [1.2, 1.3, 1.3, 1.5, 1.6, 1.7, 1.8], [1.4, 1.2, 1.5, 1.5, 1.5, 1.9, 1.7]
    for root, runs in ((a, {"indexed": s0, "indexed_s1": s1}), (b, {"indexed": l0, "indexed_s1": l1})):
        _run(root, "dense", [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
        for label, nll in runs.items():
            _run(root, label, nll)
    path = b / "compare_vs_short_warmup.json"
    average = {"long": ["indexed", "indexed_s1"], "short": ["short:indexed", "short:indexed_s1"]}
    table = compare_experiment(b, "short", ["nll"], only=["long"], out=path, also=["short"], average=average)
    rows = {r["run"]: r for r in table["rows"]}
    want = [(x0 + x1) / 2 - (y0 + y1) / 2 for x0, x1, y0, y1 in zip(l0, l1, s0, s1)]
    assert set(rows) == {"long", "short"} and rows["long"]["n"] == 7
    assert rows["long"]["diff"] == pytest.approx(sum(want) / 7)
    assert rows["short"]["mean"] == pytest.approx(sum(s0 + s1) / 14)
    assert table["average"] == average and table["runs"]["long"]["mean_of"] == ["indexed", "indexed_s1"]
    assert "indexed" in table["runs_left_out"] and "long" not in table["runs_left_out"]
    assert recompute_comparison(path, write=False)["rows"] == table["rows"]
    # a run of the average compared on its own as well
    both = compare_experiment(b, "short", ["nll"], only=["long", "indexed"], also=["short"], average=average,
                              write=False)
    assert {r["run"] for r in both["rows"]} == {"long", "indexed", "short"}


@pytest.mark.parametrize("average, match", [
    ({"dense": ["indexed", "indexed_s1"]}, "a new name"),            # a label the runs already have
    ({"mean": ["indexed"]}, "two or more distinct"),                  # one run is no average
    ({"mean": ["indexed", "indexed"]}, "two or more distinct"),
    ({"mean": ["indexed", "nope"]}, "labels among"),
])
def test_an_average_is_checked(tmp_path, average, match):
    for label in ("dense", "indexed", "indexed_s1"):
        _run(tmp_path, label, [1.0, 1.1, 1.2, 1.3])
    with pytest.raises(UserError, match=match):
        compare_experiment(tmp_path, "dense", ["nll"], average=average, write=False)


def test_an_average_needs_its_runs_on_the_same_examples(tmp_path):
    _run(tmp_path, "dense", [1.0, 1.1, 1.2, 1.3])
    _run(tmp_path, "indexed", [1.0, 1.1, 1.2, 1.3])
    rd = RunDir(tmp_path / "indexed_s1-s0-0000000000")  # one example short
    rd.start({"kind": "evaluate", "setup": {"docs": 4}}, seed=0)
    for i, v in enumerate([1.0, 1.1, 1.2]):
        rd.add_example({"id": f"doc{i}", "nll": v})
    rd.write_metrics({"status": "finished", "label": "indexed_s1", "seed": 0, "pattern": "x"})
    with pytest.raises(UserError, match="on the same examples"):
        compare_experiment(tmp_path, "dense", ["nll"], average={"mean": ["indexed", "indexed_s1"]}, write=False)
