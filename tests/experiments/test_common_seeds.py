"""common_seeds: runs compared by seed are paired on the seeds they share; per-example units are not."""

import pytest

from spattern.experiments.results import common_seeds, compare_experiment
from spattern.experiments.rundir import RunDir


def test_seed_units_keep_the_shared_seeds_and_record_the_rest():
    values = {"loss": {"dense": {"seed0": 1.0, "seed1": 1.1}, "new": {"seed0": 0.9, "seed1": 1.0, "seed2": 0.8}},
              "file_loss": {"dense": {"seed0": 2.0}, "new": {"seed0": 1.9, "seed10": 1.8, "seed2": 1.7}},
              "nll": {"dense": {"doc0": 1.0, "doc1": 2.0}, "new": {"doc0": 1.5}}}
    kept, left = common_seeds(values)
    assert kept["loss"] == {"dense": {"seed0": 1.0, "seed1": 1.1}, "new": {"seed0": 0.9, "seed1": 1.0}}
    assert kept["file_loss"] == {"dense": {"seed0": 2.0}, "new": {"seed0": 1.9}}
    assert left == {"loss": {"new": ["seed2"]}, "file_loss": {"new": ["seed2", "seed10"]}}  # by seed number
    assert kept["nll"] is values["nll"]  # per-example ids: left to the comparison's check
    same = {"loss": {"a": {"seed0": 1.0}, "b": {"seed0": 2.0}}}
    assert common_seeds(same) == (same, {})


def _train_run(root, label, seed, loss, file_loss=None):
    rd = RunDir(root / f"{label}-s{seed}-{seed:010d}")
    rd.start({"data": {"corpus": "x"}, "train": {"eval_batches": 1}}, seed=seed)
    rd.add_example({"id": "seq0", "loss": loss, **({"file_loss": file_loss} if file_loss is not None else {})})
    rd.write_metrics({"status": "finished", "label": label, "seed": seed, "pattern": label})


def test_a_family_with_more_seeds_is_compared_on_the_baselines_seeds(tmp_path):
    """dense recorded file_loss on seeds 0-2 only (as study_code_gpu's older runs), the new family on
    0-5: loss pairs all six seeds, file_loss the three shared, and the table says which were left out."""
    for s in range(6):
        _train_run(tmp_path, "dense", s, 3.0 + 0.01 * s, 3.2 if s < 3 else None)
        _train_run(tmp_path, "new", s, 2.9 + 0.01 * s, 3.1)
    table = compare_experiment(tmp_path, "dense", test="t", write=False)
    n = {(r["metric"], r["run"]): r["n"] for r in table["rows"]}
    assert n[("loss", "new")] == 6 and n[("file_loss", "new")] == 3
    assert table["seeds_left_out"] == {"file_loss": {"new": ["seed3", "seed4", "seed5"]}}
    assert [r["diff"] for r in table["rows"] if r["run"] == "new"] == pytest.approx([-0.1, -0.1])
