"""Trials: two example ids with the same input are one trial, in the tasks, in compare and in the report."""

import json
import string
import textwrap

import numpy as np
import pytest
import torch

from spattern.data.tokenizer import ByteTokenizer
from spattern.evaluation.tasks import TASKS, Passkey
from spattern.evaluation.trials import passkey_unit, unique_trials, unit
from spattern.experiments.results import compare_experiment, load_runs
from spattern.experiments.rundir import RunDir
from spattern.report.data import Run

PROSE = [json.__doc__, string.__doc__, textwrap.__doc__]
# 200 lines without a sentence end (as source code often is): the haystack's only boundaries are its
# ends, so depths 0.1 and 0.3 both put the needle first
CODE = ["\n".join(f"x_{i} = compute({i}, offset={i * 7})" for i in range(200))]


def _records(task, seeds):
    """Records as the scorer writes them (id, group, meta) with the inputs they came from."""
    out = []
    for s in seeds:
        for e in task.examples(s):
            for g in range(len(e.groups)):
                out.append(({"id": e.id, "group": g, **e.meta}, tuple(e.input_ids.tolist())))
    return out


@pytest.mark.parametrize("name", sorted(TASKS))
def test_contract_one_unit_per_input(name):
    """Over every registered task's demo: two records share a unit exactly when they share input and group."""
    recs = _records(TASKS[name].demo(), seeds=(0, 1))
    for i, (a, xa) in enumerate(recs):
        for b, xb in recs[i + 1:]:
            assert (unit(a) == unit(b)) == (xa == xb and a["group"] == b["group"]), (a["id"], b["id"])


def test_passkey_depths_that_snap_to_one_boundary_are_one_trial():
    task = Passkey(ByteTokenizer(), CODE, context_lengths=(1500,), depths=(0.1, 0.3, 0.9))
    ex = task.examples(0)
    same = [(a.id, b.id) for i, a in enumerate(ex) for b in ex[i + 1:] if torch.equal(a.input_ids, b.input_ids)]
    assert same, "the haystack was meant to make two depths snap to one boundary"
    recs = [{"id": e.id, "group": 0, **e.meta} for e in ex]
    units = [unit(r) for r in recs]
    assert len(set(units)) == len({tuple(e.input_ids.tolist()) for e in ex}) < len(ex)
    kept = unique_trials(recs)
    assert [r["id"] for r in kept] == [r["id"] for r in recs if r["id"] not in {b for _, b in same}]
    # the records of a run (spattern.experiments.lm_eval) name the distance "distance"
    stored = [{"id": r["id"], "distance": r["distance_tokens"], "passkey_correct": 1.0} for r in recs]
    assert [unit(r) for r in stored] == units
    # over a sweep of lengths, depths and seeds on prose: as many units as distinct inputs
    prose = _records(Passkey(ByteTokenizer(), PROSE, context_lengths=(400, 700), depths=(0.0, 0.5, 1.0)), (0, 1))
    assert len({unit(r) for r, _ in prose}) == len({x for _, x in prose}) >= 10


def test_unit_of_records_without_a_task_prefix_or_distance():
    assert unit({"id": "val/3", "loss": 1.0}) == "val/3"
    assert unit({"id": "mqar/n2/s0/b0/1", "group": 4}) == "mqar/n2/s0/b0/1#4"
    assert passkey_unit({"id": "passkey/L4096/d0.1/s2"}) == "passkey/L4096/d0.1/s2"  # no distance: its id
    assert passkey_unit({"id": "passkey/L4096/d0.1/s2", "distance": 3941}) == "passkey/L4096/s2/at3941"


def _run(root, label, values, distances, seed=0):
    rd = RunDir(root / f"{label}-s{seed}-0000000000")
    rd.start({"kind": "evaluate", "setup": {"tasks": ["passkey"]}}, seed=seed)
    for (d, dist), v in zip(distances, values):
        rd.add_example({"id": f"passkey/L4096/d{d}/s0", "passkey_correct": float(v), "distance": dist})
    rd.write_metrics({"status": "finished", "label": label, "seed": seed, "pattern": label})


def test_compare_and_report_count_a_repeated_trial_once(tmp_path):
    # depths 0.1 and 0.3 landed on one boundary (distance 3900): four trials under five ids
    dist = [(0.1, 3900), (0.3, 3900), (0.5, 2000), (0.7, 1200), (0.9, 400)]
    _run(tmp_path, "dense", [1, 1, 1, 1, 1], dist)
    _run(tmp_path, "window", [0, 0, 0, 0, 1], dist)
    runs = load_runs(tmp_path)
    assert sorted(len(r["examples"]) for r in runs) == [4, 4]
    table = compare_experiment(tmp_path, baseline="dense", write=False)
    (row,) = [r for r in table["rows"] if r["run"] == "window"]
    assert row["n"] == 4 and row["diff"] == pytest.approx(-0.75)
    d = tmp_path / "window-s0-0000000000"
    run = Run(dir=d, experiment="x", run_id="0000000000", label="window", pattern="window", params={},
              status="finished", metrics={}, timings={}, env=None, sources=[], per_example_path=d / "per_example.jsonl")
    assert [e["id"] for e in run.per_example] == ["passkey/L4096/d0.1/s0", "passkey/L4096/d0.5/s0",
                                                 "passkey/L4096/d0.7/s0", "passkey/L4096/d0.9/s0"]
    assert np.mean(run.values("passkey_correct")) == pytest.approx(0.25)


def test_line_boundaries_give_code_distinct_trials():
    """The fix for source code: with ``boundaries="line"`` every depth puts the needle at its own line end."""
    tok = ByteTokenizer()
    task = Passkey(tok, CODE, context_lengths=(1500,), depths=(0.1, 0.3, 0.5, 0.7, 0.9), boundaries="line")
    for seed in (0, 1, 2):
        ex = task.examples(seed)
        assert len({tuple(e.input_ids.tolist()) for e in ex}) == len(ex)
        assert all(abs(e.meta["depth_actual"] - e.meta["depth"]) < 0.05 for e in ex)  # lines are short
        for e in ex:  # the needle sits on a line of its own, between two whole lines of the code
            text = tok.decode(e.input_ids.tolist())
            before = text.split("\nThe pass key is")[0]
            assert before.endswith("\n")
    with pytest.raises(Exception, match="boundaries: expected one of"):
        Passkey(tok, CODE, boundaries="paragraph")


def test_records_that_are_not_passkey_trials_are_all_kept():
    rows = [{"id": "val/0", "loss": 1.0}, {"id": "val/1", "loss": 1.0}, {"id": "stdlib:aifc.py", "file_loss": 2.0},
            {"id": "mqar/n2/s0/b0/1", "mqar_accuracy": 1.0}, {"loss": 3.0}, {"loss": 3.0}, {"id": None, "loss": 3.0}]
    assert unique_trials(rows) == rows  # no id: a trial of its own, never merged with another
    assert unit({"id": "stdlib:aifc.py", "file_loss": 2.0}) == "stdlib:aifc.py" and unit({"loss": 1}) is None
    # the scorer's records name the distance distance_tokens; a run's records, distance
    assert passkey_unit({"id": "passkey/L64/d0.5/s1", "distance": None, "distance_tokens": 7}) == "passkey/L64/s1/at7"


def test_a_runs_summary_counts_a_repeated_trial_once(tmp_path):
    from types import SimpleNamespace

    from spattern.experiments.lm_eval import summarize

    _run(tmp_path, "window", [1, 1, 0, 0, 0], [(0.1, 3900), (0.3, 3900), (0.5, 2000), (0.7, 1200), (0.9, 400)])
    d = RunDir(tmp_path / "window-s0-0000000000")
    spec = SimpleNamespace(dir=d, pattern="dense", context=4096, resolved={}, label="window", seed=0)
    summary = summarize(SimpleNamespace(name="x"), spec, {})
    assert summary["n_examples"] == 4 and summary["metrics"]["passkey_correct"] == pytest.approx(0.25)
