"""A structure='python' pattern on a corpus that is not Python source is flagged (a warning of `spattern
run`, not an error): nearly nothing of prose parses, so the statement tree is the text tree's fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from spattern.experiments import runner
from spattern.data.corpora import known_non_code
from spattern.experiments import load_experiment, run_experiment
from spattern.experiments.runs import corpus_of, python_structure_off_code
from spattern.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"


def _experiment_configs() -> list[Path]:
    out = []
    for p in sorted(EXPERIMENTS.glob("*.toml")):
        try:
            load_experiment(p)
        except ConfigError:  # a training config (experiments/train_*.toml, study_*_train.toml), not an experiment
            continue
        out.append(p)
    return out


@pytest.mark.parametrize("path", _experiment_configs(), ids=lambda p: p.stem)
def test_committed_configs_read_the_python_tree_only_of_code(path):
    assert python_structure_off_code(load_experiment(path)) == []


def test_a_prose_config_that_inherits_the_code_families_is_flagged():
    # study_pretrained_linuxdocs_8k's base is the code config; without its drop it would run outline_ast on reST
    cfg = load_experiment(EXPERIMENTS / "study_pretrained_linuxdocs_8k.toml", ['match.drop=["indexed"]'])
    assert corpus_of(cfg) == "linux-docs"
    assert python_structure_off_code(cfg) == ["outline_ast"]


def test_a_train_experiment_reads_its_training_configs_corpus():
    cfg = load_experiment(EXPERIMENTS / "study_code_gpu.toml")
    assert corpus_of(cfg) == "stdlib" and python_structure_off_code(cfg) == []
    prose = load_experiment(EXPERIMENTS / "study_code_gpu.toml", ['train.overrides=["data.corpus=\\"sotu\\""]'])
    assert corpus_of(prose) == "sotu" and python_structure_off_code(prose) == ["outline_ast"]


@pytest.mark.parametrize("spec, flagged", [("sotu", True), ("shakespeare+linux-docs", True), ("mqar", True),
                                           ("stdlib", False), ("sotu+stdlib", False), ("local:/x", False),
                                           ("hf:bigcode/the-stack", False), ("sotu+hf:x", False)])
def test_known_non_code(spec, flagged):
    assert known_non_code(spec) is flagged


def test_sweep_patterns_are_checked_too(tmp_path):
    (tmp_path / "x.toml").write_text(
        'name = "x"\n[setup]\ncorpus = "shakespeare"\n[sweep]\n'
        'pattern = ["dense", "outline(window=64, structure=\'python\') & causal", "local(64) & causal"]\n')
    cfg = load_experiment(tmp_path / "x.toml")
    assert python_structure_off_code(cfg) == ["outline(window=64, structure='python') & causal"]


class _Stop(Exception):
    pass


def test_run_warns_before_it_runs(tmp_path, monkeypatch):
    (tmp_path / "x.toml").write_text(
        f'name = "x"\nresults = "{tmp_path}"\n[setup]\ncorpus = "sotu"\n[sweep]\n'
        'pattern = ["outline(window=64, structure=\'python\') & causal"]\n')
    lines = []

    def stop(cfg):
        raise _Stop

    monkeypatch.setattr(runner, "expand", stop)
    with pytest.raises(_Stop):
        run_experiment(load_experiment(tmp_path / "x.toml"), log=lines.append)
    assert len(lines) == 1 and "warning" in lines[0] and "'sotu'" in lines[0] and "structure='python'" in lines[0]
