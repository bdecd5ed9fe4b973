"""The training-cost table's grouping: a run trained elsewhere (``spattern run --runtime train.device=cpu``
on a GPU config) counts in the loss but not in the timing of its series; a same-call throughput file
(scripts/throughput_summary.py) in the experiment's folder gives each pattern's ratio to its baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from spattern.report.collect import collect_training_cost
from spattern.report.data import Found, Run, Study, _classify
from spattern.report.tables import training_table


def _run(seed: int, loss: float, tps: float, device: str | None, machine: str = "cuda", label: str = "bigbird",
         pattern: str = "local(8) & causal", jobs: int | None = None) -> Run:
    env = {"device": machine, "name": "NVIDIA H200" if machine == "cuda" else None}
    raw = {"train": {"device": device}} if device else {}
    if jobs is not None:
        raw["jobs"] = jobs
    return Run(dir=Path(f"/r/s{seed}"), experiment="mqar", run_id=f"{label}-s{seed}", label=label,
               pattern=pattern, params={}, status="finished",
               metrics={"loss": loss, "tokens_per_s": tps, "step_ms": 1e6 / tps}, timings={}, env=env,
               sources=[Path(f"/r/s{seed}/metrics.json")], raw=raw)


def test_a_run_trained_elsewhere_counts_in_the_loss_not_the_timing():
    runs = [_run(0, 1.0, 1000.0, "cuda:0"), _run(1, 2.0, 3000.0, None),  # None: a run from before the field
            _run(2, 3.0, 2000.0, "cuda:0"), _run(3, 2.0, 10.0, "cpu")]   # seed 3 on the CPU of the same machine
    (row,), _ = collect_training_cost(Study(roots=[Path("/r")], runs=runs))
    assert row["seeds"] == 4 and row["timed_seeds"] == 3
    assert row["device"] == "H200" and row["untimed"] == {"CPU": 1}
    table = training_table([row], [])
    assert table.rows[0][2] == "H200*" and "another device (CPU)" in table.caption
    assert row["loss"] == pytest.approx(2.0)  # all four seeds
    assert row["tokens_per_s"] == 2000.0 and row["tokens_per_s_range"] == [1000.0, 3000.0]
    assert row["step_ms"] == pytest.approx(500.0)


def test_one_device_keeps_the_plain_name():
    runs = [_run(s, 1.0, 100.0 * (s + 1), None, machine="cpu") for s in range(3)]
    (row,), _ = collect_training_cost(Study(roots=[Path("/r")], runs=runs))
    assert row["device"] == "CPU" and row["untimed"] == {} and row["timed_seeds"] == 3
    table = training_table([row], [])
    assert table.rows[0][2] == "CPU" and "another device" not in table.caption and row["tokens_per_s"] == 200.0


def test_runs_trained_several_at_a_time_are_timed_apart_and_labelled():
    """``spattern run --jobs 6``: a run's tokens/s was measured beside five others; its device reads
    "H200 x6" (the caption says what that means), and solo runs of the same series are the timed ones
    when they are the most."""
    shared = [_run(s, 1.0, 100.0, "cuda:0", jobs=6) for s in range(3)]
    (row,), _ = collect_training_cost(Study(roots=[Path("/r")], runs=shared))
    assert row["device"] == "H200 x6" and row["untimed"] == {} and row["tokens_per_s"] == 100.0
    table = training_table([row], [])  # the PDF leaves a series timed only beside others out; the CSV keeps it
    assert table.rows == [] and table.raw[0]["device"] == "H200 x6"
    assert "Not shown (in the CSV): mqar, trained several runs at a time (spattern run --jobs)." in table.caption
    mixed = [_run(s, 1.0, 500.0, "cuda:0") for s in range(2)] + [_run(2, 4.0, 100.0, "cuda:0", jobs=6)]
    (row,), _ = collect_training_cost(Study(roots=[Path("/r")], runs=mixed))
    assert row["device"] == "H200" and row["untimed"] == {"H200 x6": 1} and row["tokens_per_s"] == 500.0
    assert row["loss"] == pytest.approx(2.0)  # every seed counts in the loss


def test_a_series_left_out_of_the_pdf_adds_no_star_note():
    """A --jobs series (not shown) with a seed finished on a CPU: its "trained on another device" note
    would explain a star that no shown row carries."""
    runs = [_run(s, 1.0, 100.0, "cuda:0", jobs=16) for s in range(3)] + [_run(3, 1.0, 10.0, "cpu", jobs=2)]
    (row,), _ = collect_training_cost(Study(roots=[Path("/r")], runs=runs))
    assert row["untimed"] == {"CPU x2": 1}
    table = training_table([row], [])
    assert table.rows == [] and "another device" not in table.caption and "Not shown" in table.caption


def test_same_call_ratios_come_from_the_experiments_throughput_file():
    runs = [_run(0, 1.0, 100.0, None, label="window", pattern="local(8) & causal"),
            _run(0, 1.0, 50.0, None, label="outline", pattern="outline(window=8) & causal"),
            _run(0, 1.0, 50.0, None, label="dense", pattern="dense")]
    data = {"from_step": 20, "baseline": "local(8) & causal", "runs": [
        {"run": "a_1", "pattern": "local(8) & causal", "tok_per_s_median": 9.0, "ratio_to_baseline": 1.0},
        {"run": "a_2", "pattern": "outline(window=8) & causal", "tok_per_s_median": 8.0, "ratio_to_baseline": 0.8},
        {"run": "b_1", "pattern": "outline(window=8) & causal", "tok_per_s_median": 7.0, "ratio_to_baseline": 0.7},
        {"run": "b_2", "pattern": "local(8) & causal", "tok_per_s_median": 10.0, "ratio_to_baseline": 1.0}]}
    assert _classify(data) == "throughput"
    here, elsewhere = Path("/r/mqar/throughput.json"), Path("/r/other/throughput.json")
    study = Study(roots=[Path("/r")], runs=runs, throughput=[Found("throughput", data, elsewhere)])
    rows, _ = collect_training_cost(study)
    assert not any("same_call_ratio" in r for r in rows)  # another experiment's file is not read
    study.throughput = [Found("throughput", data, here)]
    rows, sources = collect_training_cost(study)
    by = {r["key"]: r for r in rows}
    assert by["outline"]["same_call_ratio"] == [0.7, 0.8] and by["outline"]["same_call_baseline"] == "window"
    assert "same_call_ratio" not in by["dense"] and here in sources
    caption = training_table(rows, sources).caption
    assert "relative to window: outline 0.70-0.80." in caption and "after step 20" in caption
    assert "in one device call" in caption
    study.throughput = [Found("throughput", {**data, "calls": ["call77", "call79"]}, here)]  # two calls' runs
    caption = training_table(*collect_training_cost(study)).caption
    assert "mqar in 2 device calls, each run against window's of its call" in caption
