"""The training-cost table's grouping: a run trained elsewhere (``spattern run --runtime train.device=cpu``
on a GPU config) counts in the loss but not in the timing of its series."""

from __future__ import annotations

from pathlib import Path

import pytest

from spattern.report.collect import collect_training_cost
from spattern.report.data import Run, Study
from spattern.report.tables import training_table


def _run(seed: int, loss: float, tps: float, device: str | None, machine: str = "cuda") -> Run:
    env = {"device": machine, "name": "NVIDIA H200" if machine == "cuda" else None}
    raw = {"train": {"device": device}} if device else {}
    return Run(dir=Path(f"/r/s{seed}"), experiment="mqar", run_id=f"bigbird-s{seed}", label="bigbird",
               pattern="local(8) & causal", params={}, status="finished",
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
