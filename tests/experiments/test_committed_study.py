"""The committed study results match their configs (issue 14: `spattern run` over the study's configs
skips every finished run): every run a config expands to has finished under results/, and no run folder
there is one the config does not produce (`compare` and the report read every run in the folder).
The trained experiments only: their expansion needs no pretrained model or downloaded corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from spattern.experiments import expand, load_experiment

ROOT = Path(__file__).resolve().parents[2]
TRAINED = ["study_mqar", "study_indexer", "study_code_gpu", "study_code_cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_committed_runs_are_exactly_the_configs_runs(name):
    cfg = load_experiment(ROOT / "experiments" / f"{name}.toml", [f'results="{ROOT / "results"}"'])
    specs = expand(cfg)
    unfinished = [s.dir.path.name for s in specs if not s.dir.finished()]
    assert not unfinished, f"{name}: runs of the config not finished under results/: {unfinished}"
    folders = {p.parent.name for p in (ROOT / "results" / name).glob("*/metrics.json")}
    extra = sorted(folders - {s.dir.path.name for s in specs})
    assert not extra, f"{name}: run folders under results/ that the config does not produce: {extra}"
    assert len({s.seed for s in specs}) >= 3  # >= 3 seeds wherever anything is trained
