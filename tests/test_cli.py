"""The command line: the tour runs end to end; show/compile/cost/patterns print and write files."""

import json

import numpy as np

import spattern
from spattern.cli import main
from spattern.compiler.layout import BlockLayout


def test_tour_quick_runs_the_whole_path(tmp_path, capsys):
    assert main(["tour", "--quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"]
    assert set(summary["patterns"]) == set(spattern.EXAMPLES)
    for entry in summary["patterns"].values():
        assert entry["paths_agree"] and entry["attention_check"]["ok"]
        assert entry["costs"][0]["pairs"] > 0
    out = capsys.readouterr().out
    assert "analytic path == generic path" in out and "all checks passed" in out


def test_show_writes_png_and_prints_costs(tmp_path, capsys):
    png = tmp_path / "p.png"
    assert main(["show", "(local(64) | strided(64)) & causal", "--seq", "512", "--out", str(png)]) == 0
    assert png.exists() and png.stat().st_size > 1000
    out = capsys.readouterr().out
    assert "pairs(N) =" in out and "density" in out


def test_compile_writes_a_loadable_layout(tmp_path):
    f = tmp_path / "l.npz"
    assert main(["compile", "local(128) & causal", "--seq", "1000", "--block", "64x32", "--out", str(f)]) == 0
    layout = BlockLayout.load(f)
    ref = spattern.compile("local(128) & causal", 1000, block=(64, 32))
    assert layout.equals(ref) and np.array_equal(layout.to_dense(0), ref.to_dense(0))


def test_cost_and_patterns(capsys):
    assert main(["cost", "sink(8) & causal", "--seq", "256", "512"]) == 0
    assert main(["patterns"]) == 0
    out = capsys.readouterr().out
    assert "exact" in out and "landmark" in out


def test_bad_pattern_is_reported_with_column(capsys):
    assert main(["cost", "local(64) &| causal", "--seq", "256"]) == 2
    err = capsys.readouterr().err
    assert "column 12" in err and "^" in err
