"""The per-file validation loss table (scenario 2's "validation loss per file"): the training loop's
per-file rows of each run (per_example.jsonl), averaged over each series' seeds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spattern.report.collect import collect_file_losses
from spattern.report.data import Run, Study
from spattern.report.tables import file_loss_table


def _run(tmp: Path, label: str, seed: int, files: dict[str, tuple[float, int]] | None) -> Run:
    d = tmp / f"{label}-s{seed}"
    d.mkdir()
    rows = [{"id": "val/0", "loss": 5.0}]
    rows += [{"id": f, "file_loss": loss, "file_tokens": n} for f, (loss, n) in (files or {}).items()]
    (d / "per_example.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Run(dir=d, experiment="code", run_id=d.name, label=label, pattern=None, params={}, status="finished",
               metrics={"loss": 4.0, "tokens_per_s": 1e3}, timings={}, env=None, sources=[d / "metrics.json"],
               per_example_path=d / "per_example.jsonl")


def test_each_files_loss_is_its_mean_over_seeds(tmp_path):
    runs = [_run(tmp_path, "dense", 0, {"stdlib:a.py": (4.0, 100), "stdlib:b.py": (5.0, 300)}),
            _run(tmp_path, "dense", 1, {"stdlib:a.py": (4.2, 100), "stdlib:b.py": (5.4, 300)}),
            _run(tmp_path, "window", 0, {"stdlib:a.py": (3.9, 100), "stdlib:b.py": (5.1, 300)}),
            _run(tmp_path, "window", 1, None)]  # a run from before the per-file rows: left out
    got = collect_file_losses(Study(roots=[tmp_path], runs=runs))
    items, sources = got["code"]
    assert [it["row"]["file"] for it in items] == ["stdlib:b.py", "stdlib:a.py"]  # most tokens first
    assert items[0]["row"]["loss"] == {"dense": pytest.approx(5.2), "window": pytest.approx(5.1)}
    assert items[0]["seeds"] == {"dense": 2, "window": 1}
    assert runs[3].per_example_path not in sources and runs[0].per_example_path in sources
    t = file_loss_table(items, "code", sources)
    assert t.columns == ["file", "tokens", "dense (n=2)", "window (n=1)"]
    assert t.rows[0][:2] == ["b.py", "300"] and t.rows[-1][0] == "mean over files"
    assert t.raw[-1]["dense"] == pytest.approx((5.2 + 4.1) / 2)  # unweighted, as compare's file_loss


def test_no_table_without_per_file_rows(tmp_path):
    assert collect_file_losses(Study(roots=[tmp_path], runs=[_run(tmp_path, "dense", 0, None)])) == {}
