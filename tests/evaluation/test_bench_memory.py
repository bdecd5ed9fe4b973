"""`spattern bench memory`: the CLI writes, per cell, the bytes ``runtime.memory`` counts on the very
layout ``spattern bench attention`` times; the report reads the file into its memory table."""
from __future__ import annotations

import json

from spattern.cli import main
from spattern.evaluation.bench_attention import structured_layout
from spattern.report.data import _classify
from spattern.report.tables import memory_rows, memory_table
from spattern.runtime.memory import state_bytes


def test_cli_writes_the_counts_of_the_benchmarks_layouts(tmp_path, capsys):
    out = tmp_path / "mem.json"
    assert main(["bench", "memory", "--seq", "1024", "2048", "--density", "0.5", "--causal", "both",
                 "--family", "band_landmark", "--heads", "4", "--json", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert _classify(doc) == "memory" and doc["config"]["heads"] == 4 and len(doc["memory"]) == 4
    assert doc["command"].startswith("spattern bench memory --seq 1024 2048")  # the report's reproduction line
    for r in doc["memory"]:
        lay = structured_layout(r["N"], 0.5, (128, 128), r["causal"], "band_landmark")
        assert r["nnz_blocks"] == lay.nnz
        assert {k: v for k, v in r["bytes"].items() if k != "flex_mask_mod"} == state_bytes(lay, "cpu", 1, 4, 128)
        assert r["bytes"]["flex_mask_mod"] == 0  # band + landmark: Flex's mask_mod is arithmetic, no table
        assert r["bytes"]["dense_bool_mask"] == r["N"] ** 2


def test_the_native_mask_mod_of_the_random_pattern_brings_its_block_table(tmp_path):
    out = tmp_path / "mem.json"
    assert main(["bench", "memory", "--seq", "2048", "--density", "0.5", "--causal", "no", "--family", "lrs",
                 "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["memory"]
    assert r["bytes"]["flex_mask_mod"] == (2048 // 64) ** 2  # the random pattern's bool table, 64-token blocks


def test_memory_table_takes_the_project_cells_and_the_largest_n_per_family():
    def row(fam, n, d, causal=False):
        return {"family": fam, "N": n, "density_target": d, "density": d, "causal": causal,
                "bytes": {"mma_sync": 2048, "hopper": 4096, "backward": 1024, "flex_blockmask": 8192,
                          "dense_bool_mask": n * n}}

    rows = [row(f, n, d, c) for f in ("lrs", "band_landmark") for n in (4096, 8192, 65536)
            for d in (0.5, 0.25, 0.05) for c in (False, True)]
    picked = memory_rows(rows)
    assert [(r["family"], r["N"], r["density_target"]) for r in picked] == [
        (f, n, d) for f in ("band_landmark", "lrs") for n, d in ((4096, 0.5), (8192, 0.25), (65536, 0.05))]
    t = memory_table(rows, [])
    assert t.rows[0] == ["b+l", "4 096", "50%", "2.00", "4.00", "1.00", "8.00", "16.0"]
    assert t.raw[0]["bytes_flex_blockmask"] == 8192


def test_bad_grid_options_are_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "mem.json"
    for argv, msg in ((["--seq", "0"], "--seq: expected positive"), (["--density", "0"], "--density: expected fractions"),
                      (["--density", "1.5"], "--density: expected fractions")):
        assert main(["bench", "memory", *argv, "--json", str(out)]) != 0
        assert msg in capsys.readouterr().err
    assert not out.exists()
