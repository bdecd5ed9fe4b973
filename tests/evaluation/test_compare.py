"""compare.py: pairing, Holm over the family, the JSON schema, the rich table, errors."""

import json

import numpy as np
import pytest
from rich.console import Console

from spattern.evaluation import compare as cmp
from spattern.evaluation import stats
from spattern.utils.errors import UserError

RNG = np.random.default_rng(0)
IDS = [f"doc{i}" for i in range(30)]
BASE = RNG.normal(3.0, 0.5, 30)
VALUES = {
    "dense": dict(zip(IDS, BASE)),
    "local": dict(zip(IDS, BASE + 0.4 + RNG.normal(0, 0.1, 30))),
    "same": dict(zip(IDS, BASE.copy())),
    "noise": dict(zip(IDS, BASE + RNG.normal(0, 0.5, 30))),
}
SCHEMA = {"metric", "run", "baseline", "n", "mean", "ci_low", "ci_high", "baseline_mean", "diff", "diff_ci_low",
          "diff_ci_high", "p", "p_holm", "effect_size", "effect_size_name", "test", "higher_is_better",
          "significant", "note"}


def test_compare_rows_against_stats():
    rows = cmp.compare(VALUES, "dense", "nll", higher_is_better=False, n_resamples=1000)
    assert [r.run for r in rows] == ["dense", "local", "noise", "same"]
    base, local, noise, same = rows
    assert base.note == "baseline" and base.p == 1.0 and base.diff == 0.0 and not base.significant
    x, y = [VALUES["local"][i] for i in sorted(IDS)], [VALUES["dense"][i] for i in sorted(IDS)]
    ref = stats.paired_compare(x, y, n_resamples=1000)
    assert local.diff == pytest.approx(ref.diff.estimate) and local.p == pytest.approx(ref.test.p)
    assert (local.diff_ci_low, local.diff_ci_high) == pytest.approx((ref.diff.low, ref.diff.high))
    assert local.effect_size == pytest.approx(ref.cohen_dz) and local.n == 30
    assert local.significant and local.diff_ci_low < 0.4 < local.diff_ci_high
    assert same.p == 1.0 and same.p_holm == 1.0 and (same.diff_ci_low, same.diff_ci_high) == (0.0, 0.0)
    # Holm over the three non-baseline comparisons
    adj, _ = stats.holm([local.p, noise.p, same.p])
    assert [local.p_holm, noise.p_holm, same.p_holm] == pytest.approx(adj)


def test_compare_many_holm_over_whole_family():
    metrics = {"nll": VALUES, "acc": {k: {i: -v for i, v in d.items()} for k, d in VALUES.items()}}
    rows = cmp.compare_many(metrics, "dense", {"nll": False, "acc": True}, test="permutation", n_resamples=500)
    family = [r for r in rows if r.run != "dense"]
    assert len(family) == 6
    adj, _ = stats.holm([r.p for r in family])
    assert [r.p_holm for r in family] == pytest.approx(adj)
    single = cmp.compare(VALUES, "dense", "nll", False, test="permutation", n_resamples=500)
    assert family[0].p_holm >= single[1].p_holm  # a bigger family corrects more
    with pytest.raises(UserError, match="missing \\['acc'\\]"):
        cmp.compare_many(metrics, "dense", {"nll": False})


def test_json_schema_roundtrip_and_table():
    rows = cmp.compare(VALUES, "dense", "nll", False, n_resamples=500)
    table = cmp.to_json(rows, "exp1")
    assert set(table) == {"experiment", "baseline", "alpha", "correction", "family", "rows"}
    assert table["baseline"] == "dense" and table["correction"] == "holm"
    for row in table["rows"]:
        assert set(row) == SCHEMA and row["effect_size_name"] == "cohen_dz"
    back = cmp.to_rows(json.loads(json.dumps(table)))
    assert [r.as_dict() for r in back] == [r.as_dict() for r in rows]
    with pytest.raises(UserError, match="missing \\['p'\\]"):
        cmp.to_rows({"rows": [{k: v for k, v in table["rows"][0].items() if k != "p"}]})
    console = Console(record=True, width=200)
    console.print(cmp.render_table(rows, title="nll"))
    text = console.export_text()
    assert "local" in text and "noise" in text and f"{rows[1].diff:+.4g}" in text


def test_errors():
    with pytest.raises(UserError, match="available: dense, local, noise, same"):
        cmp.compare(VALUES, "full", "nll", False)
    bad = dict(VALUES, short={i: 1.0 for i in IDS[:27]})
    with pytest.raises(UserError, match="3 baseline id\\(s\\) missing"):
        cmp.compare(bad, "dense", "nll", False)
    with pytest.raises(UserError, match="test: expected one of"):
        cmp.compare(VALUES, "dense", "nll", False, test="ttest")
    nan = dict(VALUES, broken=dict(VALUES["dense"], doc3=float("nan")))
    with pytest.raises(UserError, match="broken/nll"):
        cmp.compare(nan, "dense", "nll", False)


def test_single_example_rows_have_null_cis():
    rows = cmp.compare({"a": {"x": 1.0}, "b": {"x": 2.0}}, "a", "m", True, n_resamples=100)
    assert rows[1].ci_low is None and rows[1].diff_ci_low is None and rows[1].effect_size is None
    assert "n = 1" in rows[1].note


def test_holm_family_per_metric_corrects_each_metric_on_its_own():
    rng = np.random.default_rng(0)
    runs = {"dense": {f"d{i}": float(x) for i, x in enumerate(rng.normal(size=12))}}
    runs["a"] = {k: v + 1.0 for k, v in runs["dense"].items()}
    runs["b"] = {k: v + 1.0 + 0.01 * i for i, (k, v) in enumerate(runs["dense"].items())}
    metrics = {"nll": runs, "acc": runs}
    per = cmp.compare_many(metrics, "dense", {"nll": False, "acc": True}, family="metric")
    whole = cmp.compare_many(metrics, "dense", {"nll": False, "acc": True}, family="all")
    single = cmp.compare(runs, "dense", "nll", False)
    by = lambda rows, m: {r.run: r.p_holm for r in rows if r.metric == m and r.run != "dense"}  # noqa: E731
    assert by(per, "nll") == by(single, "nll")                  # one metric's family = compare's
    assert all(by(whole, "nll")[k] >= by(per, "nll")[k] for k in ("a", "b"))
    with pytest.raises(UserError, match="family"):
        cmp.compare_many(metrics, "dense", {"nll": False, "acc": True}, family="runs")


def test_significant_follows_holm_not_the_raw_p():
    """Two comparisons with raw p 0.03 and 0.04: both below alpha raw, Holm gives 0.06 and 0.06 (not
    significant); p_holm equal to alpha is significant (statsmodels' rule, p_holm <= alpha)."""
    rows = [cmp.Row(metric="nll", run=r, baseline="dense", n=8, mean=1.0, ci_low=0.9, ci_high=1.1, baseline_mean=0.9,
                    diff=0.1, diff_ci_low=0.0, diff_ci_high=0.2, p=p, p_holm=p, effect_size=None,
                    effect_size_name="cohen_dz", test="wilcoxon", higher_is_better=False, significant=True, note=None)
            for r, p in (("a", 0.03), ("b", 0.04))]
    out = cmp.apply_holm(rows, 0.05)
    assert [r.p_holm for r in out] == pytest.approx([0.06, 0.06]) and not any(r.significant for r in out)
    edge = cmp.apply_holm([cmp.Row(**{**vars(rows[0]), "p": 0.025}), cmp.Row(**{**vars(rows[1]), "p": 0.025})], 0.05)
    assert [r.p_holm for r in edge] == pytest.approx([0.05, 0.05]) and all(r.significant for r in edge)


def test_render_colours_a_significant_difference_by_the_metric_direction():
    """A significant loss increase is worse (red); the same increase of an accuracy is better (green);
    a non-significant difference has no colour."""
    def row(diff, higher, significant):
        return cmp.Row(metric="m", run="r", baseline="dense", n=8, mean=1.0, ci_low=0.9, ci_high=1.1,
                       baseline_mean=0.9, diff=diff, diff_ci_low=diff - 0.1, diff_ci_high=diff + 0.1, p=0.01,
                       p_holm=0.01, effect_size=1.0, effect_size_name="cohen_dz", test="wilcoxon",
                       higher_is_better=higher, significant=significant, note=None)

    def diff_style(r):
        table = cmp.render_table([r])
        return str(table.columns[3]._cells[0].style)

    assert diff_style(row(0.2, False, True)) == "red" and diff_style(row(-0.2, False, True)) == "green"
    assert diff_style(row(0.2, True, True)) == "green" and diff_style(row(-0.2, True, True)) == "red"
    assert diff_style(row(0.2, True, False)) == ""
