"""Growing a finished run's passkey seeds: the run's directory is taken over under its new id, only
the new examples are computed, and the result equals a run made with every seed from the start."""

from __future__ import annotations

import json

import pytest

from spattern.experiments import expand, load_experiment, run_experiment
from spattern.experiments.grow import grown_from
from spattern.utils.errors import ConfigError, UserError

from .tiny import tiny_config

SWEEP = """
tasks = ["passkey"]
[setup.passkey]
context_lengths = [256]
depths = [0.2, 0.8]
seeds = {seeds}
[sweep]
pattern = ["dense", "(local(32) | sink(16)) & causal"]
"""


def _config(tmp_path, seeds, results="results", name="grow.toml", tasks='["passkey"]'):
    p = tmp_path / name
    text = tiny_config("grow", SWEEP.format(seeds=seeds)).format(results=tmp_path / results)  # tasks: in [setup]
    p.write_text(text.replace('tasks = ["passkey"]', f"tasks = {tasks}"))
    return load_experiment(p)


def _quiet(*args) -> None:
    pass


def _lines(path):
    return path.read_text().splitlines()


def test_more_seeds_grow_the_finished_runs_and_equal_a_run_with_every_seed(tmp_path):
    small = _config(tmp_path, "[0]")
    run_experiment(small, log=_quiet)
    old = [spec.dir.path for spec in expand(small)]
    before = {p.name: _lines(p / "per_example.jsonl") for p in old}
    assert all(len(v) == 3 + 2 for v in before.values())  # 3 documents, 2 depths x 1 seed

    grown = _config(tmp_path, "[0, 1]")
    specs = expand(grown)
    assert [grown_from(s)[0] for s in specs] == old
    assert grown_from(specs[0])[1] == {"setup.passkey.seeds": [1]}
    messages = []
    summaries = run_experiment(grown, log=messages.append)
    assert sum("grows" in m for m in messages) == 2
    assert not any(p.exists() for p in old)  # taken over, not copied
    for spec, path, s in zip(specs, old, summaries):
        lines = _lines(spec.dir.examples_path)
        assert lines[:5] == before[path.name]  # the documents and seed 0 are kept as they were
        assert [json.loads(x)["id"] for x in lines[5:]] == ["passkey/L256/d0.2/s1", "passkey/L256/d0.8/s1"]
        assert s["status"] == "finished" and s["n_examples"] == 7 and s["run_id"] == spec.dir.path.name
        env = json.loads(spec.dir.env_path.read_text())
        assert env["grown"][0]["from"] == path.name and env["grown"][0]["added"] == {"setup.passkey.seeds": [1]}
        assert "git" in env["grown"][0] and env["seed"] == 0  # the run's own environment is kept

    fresh = _config(tmp_path, "[0, 1]", results="fresh", name="fresh.toml")
    ref = run_experiment(fresh, log=_quiet)
    for a, b in zip(ref, summaries):
        assert a["run_id"] == b["run_id"]  # the same config, the same id
        for key, value in a["metrics"].items():
            assert b["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    # finished now: nothing grows, nothing runs again
    assert all(grown_from(s) is None for s in expand(grown))


def test_only_a_superset_of_seeds_with_everything_else_equal_grows(tmp_path):
    run_experiment(_config(tmp_path, "[0, 1]"), log=_quiet)
    assert all(grown_from(s) is None for s in expand(_config(tmp_path, "[1, 2]")))  # drops seed 0
    assert all(grown_from(s) is None for s in expand(_config(tmp_path, "[0]")))     # fewer seeds
    other = load_experiment(tmp_path / "grow.toml", ["setup.passkey.seeds=[0, 1, 2]", "setup.docs=2"])
    assert all(grown_from(s) is None for s in expand(other))                     # other documents too
    more = expand(_config(tmp_path, "[0, 1, 2]"))
    assert all(grown_from(s) is not None for s in more)
    more[0].dir.path.mkdir(parents=True)  # a directory of its own already: it is not taken over
    assert grown_from(more[0]) is None


def test_an_unfinished_run_is_not_grown(tmp_path):
    small = _config(tmp_path, "[0]")
    run_experiment(small, log=_quiet)
    spec = expand(small)[1]
    m = json.loads(spec.dir.metrics_path.read_text())
    spec.dir.metrics_path.write_text(json.dumps({**m, "status": "running"}))
    grown = expand(_config(tmp_path, "[0, 1]"))
    assert grown_from(grown[0]) is not None and grown_from(grown[1]) is None


def test_resuming_a_run_whose_documents_the_config_no_longer_selects_is_refused(tmp_path):
    cfg = _config(tmp_path, "[0]")
    spec = expand(cfg)[0]
    spec.dir.start(spec.resolved, 0)
    spec.dir.write_metrics({"status": "running"})
    spec.dir.add_example({"id": "stdlib:not/selected.py", "tokens": 128, "nll": 1.0})
    with pytest.raises(UserError, match=r"stdlib:not/selected.py.*not among the 3 the config selects"):
        run_experiment(cfg, log=_quiet)


def test_an_adoption_interrupted_before_its_rename_is_taken_up_again(tmp_path, monkeypatch):
    import os

    from spattern.experiments import grow

    small = _config(tmp_path, "[0]")
    run_experiment(small, log=_quiet)
    old = expand(small)[0].dir.path
    grown = _config(tmp_path, "[0, 1]")
    spec = expand(grown)[0]

    class Stopped(Exception):
        pass

    def crash(a, b):
        raise Stopped("stopped before the rename")

    rename = os.rename
    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(Stopped):
        grow.adopt(spec, *grow.grown_from(spec))
    monkeypatch.setattr(os, "rename", rename)
    assert old.exists() and not spec.dir.path.exists()
    assert grow.grown_from(spec) == (old, {"setup.passkey.seeds": [1]})  # found again by its marker
    summaries = run_experiment(grown, log=_quiet)
    assert not old.exists() and summaries[0]["n_examples"] == 7
    env = json.loads(spec.dir.env_path.read_text())
    assert [g["from"] for g in env["grown"]] == [old.name]  # recorded once


def test_a_run_grown_elsewhere_and_copied_back_replaces_its_old_self(tmp_path):
    """The GPU machine grows a copy of the results; unpacked here, the grown run arrives beside the
    run it grew from. The next `spattern run` here removes the old one (its examples are all in the
    grown one), runs nothing, and the comparison sees one run per label."""
    import shutil

    from spattern.experiments import compare_experiment

    run_experiment(_config(tmp_path, "[0]"), log=_quiet)
    shutil.copytree(tmp_path / "results", tmp_path / "remote")
    run_experiment(_config(tmp_path, "[0, 1]", results="remote", name="remote.toml"), log=_quiet)  # "elsewhere"
    here = _config(tmp_path, "[0, 1]")
    for spec in expand(here):  # unpacked here: the grown runs beside the old ones
        shutil.copytree(tmp_path / "remote" / "grow" / spec.dir.path.name, spec.dir.path)
    assert len(list((tmp_path / "results" / "grow").glob("*/metrics.json"))) == 4
    messages = []
    summaries = run_experiment(here, log=messages.append)
    assert sum("removed" in m for m in messages) == 2 and all(s["n_examples"] == 7 for s in summaries)
    assert len(list((tmp_path / "results" / "grow").glob("*/metrics.json"))) == 2
    assert compare_experiment(tmp_path / "results" / "grow", write=False)["baseline"] == "dense"


def test_an_old_run_with_examples_the_grown_run_lacks_is_not_removed(tmp_path):
    import shutil

    run_experiment(_config(tmp_path, "[0]"), log=_quiet)
    old = expand(_config(tmp_path, "[0]"))[0].dir.path
    keep = tmp_path / "kept"
    shutil.copytree(old, keep)
    run_experiment(_config(tmp_path, "[0, 1]"), log=_quiet)
    shutil.copytree(keep, old)  # the old run back, with one line changed
    lines = (old / "per_example.jsonl").read_text().splitlines()
    (old / "per_example.jsonl").write_text("\n".join([lines[0].replace('"nll": ', '"nll": 1'), *lines[1:]]) + "\n")
    with pytest.raises(UserError, match="holds examples the second does not"):
        run_experiment(_config(tmp_path, "[0, 1]"), log=_quiet)
    assert old.exists()


def test_an_added_task_grows_a_run_that_had_none(tmp_path):
    """A run scored without passkey (tasks = [], its passkey settings at their defaults) grows when the
    config adds the task with settings of its own: only the passkey examples are computed."""
    run_experiment(_config(tmp_path, "[0, 1]", tasks="[]"), log=_quiet)
    old = [s.dir.path for s in expand(_config(tmp_path, "[0, 1]", tasks="[]"))]
    assert all(len(_lines(p / "per_example.jsonl")) == 3 for p in old)  # the documents only
    grown = _config(tmp_path, "[5, 6, 7]")  # settings the old runs never used
    assert [grown_from(s) for s in expand(grown)] == [(p, {"setup.tasks": ["passkey"]}) for p in old]
    summaries = run_experiment(grown, log=_quiet)
    assert [s["n_examples"] for s in summaries] == [3 + 2 * 3] * 2 and not any(p.exists() for p in old)
    assert grown_from(expand(_config(tmp_path, "[5, 6, 7, 8]"))[0])[1] == {"setup.passkey.seeds": [8]}
    with pytest.raises(ConfigError, match=r"'setup.tasks.1': expected 'passkey', got 'mqar'"):  # no such task here
        _config(tmp_path, "[5, 6, 7]", tasks='["passkey", "mqar"]')
