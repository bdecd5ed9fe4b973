"""The committed study results match their configs (issue 14: `spattern run` over the study's configs
skips every finished run): every run a config expands to has finished under results/, and no run folder
there is one the config does not produce (`compare` and the report read every run in the folder).
The trained experiments only: their expansion needs no pretrained model or downloaded corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from spattern.experiments import expand, load_experiment

ROOT = Path(__file__).resolve().parents[2]
# runs a device call left unfinished or not yet started, named in the session notes; `spattern run` runs
# (or resumes) them on a GPU
IN_PROGRESS: dict[str, set[str]] = {}
TRAINED = ["study_mqar", "study_mqar_long", "study_mqar_recipe", "study_indexer", "study_code_gpu", "study_code_cpu",
           "study_code_cpu_indexer"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_committed_runs_are_exactly_the_configs_runs(name):
    cfg = load_experiment(ROOT / "experiments" / f"{name}.toml", [f'results="{ROOT / "results"}"'])
    specs = expand(cfg)
    unfinished = [s.dir.path.name for s in specs if not s.dir.finished()]
    unfinished = [u for u in unfinished if u not in IN_PROGRESS.get(name, set())]
    assert not unfinished, f"{name}: runs of the config not finished under results/: {unfinished}"
    folders = {p.parent.name for p in (ROOT / "results" / name).glob("*/metrics.json")}
    extra = sorted(folders - {s.dir.path.name for s in specs})
    assert not extra, f"{name}: run folders under results/ that the config does not produce: {extra}"
    assert len({s.seed for s in specs}) >= 3  # >= 3 seeds wherever anything is trained
    # each run was trained with the training config its experiment gives it now (an id does not hash the
    # training TOML's content: spattern run refuses such runs, runner.changed_training_config)
    from spattern.experiments.runner import changed_training_config

    changed = {s.dir.path.name: d for s in specs if (d := changed_training_config(cfg, s))}
    assert not changed, f"{name}: runs trained with another training config than the current one: {changed}"


def _recorded() -> list[str]:
    """The study configs whose results folder has an experiment.json that lists the config's runs."""
    import json

    return [p.stem for p in sorted((ROOT / "experiments").glob("study_*.toml"))
            if (r := ROOT / "results" / p.stem / "experiment.json").is_file() and "runs" in json.loads(r.read_text())]


def test_every_study_record_lists_its_runs():
    """Each study experiment's record (experiment.json) names its config's runs, which the report's
    sentence on unfinished runs and the test below need."""
    import json

    missing = [p.stem for p in sorted((ROOT / "experiments").glob("study_*.toml"))
               if (r := ROOT / "results" / p.stem / "experiment.json").is_file() and "runs" not in json.loads(r.read_text())]
    assert not missing and len(_recorded()) >= 20, missing




@pytest.mark.slow
@pytest.mark.parametrize("name", _recorded())
def test_the_record_names_the_configs_runs_and_they_finished(name):
    """experiment.json (spattern run) lists the run folders the config expands to, and each has finished
    but those known to be in progress: a config changed after its runs (an inherited setting, say) would
    give other ids, and `spattern run` would redo the study. Expanding a pretrained scenario's config needs
    the SmolLM2 GGUF (for its tokenizer) and the corpus: skipped where they are absent."""
    import json

    from spattern.data.sources import SourceMissing
    from spattern.models.pretrained import ModelMissing

    cfg = load_experiment(ROOT / "experiments" / f"{name}.toml", [f'results="{ROOT / "results"}"'])
    record = json.loads((cfg.out_dir / "experiment.json").read_text())["runs"]
    try:
        specs = expand(cfg)
    except (ModelMissing, SourceMissing) as e:
        pytest.skip(f"{name}: {type(e).__name__}")
    assert [s.dir.path.name for s in specs] == record, f"{name}: the config's runs are not those it recorded"
    unfinished = {s.dir.path.name for s in specs if not s.dir.finished()}
    assert unfinished == IN_PROGRESS.get(name, set()), f"{name}: runs not finished: {sorted(unfinished)}"


def _configs_with_comparisons() -> list[str]:
    names = []
    for p in sorted((ROOT / "experiments").glob("study_*.toml")):
        if (ROOT / "results" / p.stem / "compare.json").is_file():
            names.append(p.stem)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("name", _configs_with_comparisons())
def test_spattern_run_rewrites_the_committed_comparison(name, tmp_path):
    """`spattern run` ends by comparing with the config's [compare] test and metrics: what it would write
    is the committed compare.json (a run of a finished study must not replace, say, a t-test by Wilcoxon)."""
    from spattern.experiments.results import compare_experiment
    from spattern.utils.io import read_json

    cfg = load_experiment(ROOT / "experiments" / f"{name}.toml", [f'results="{ROOT / "results"}"'])
    got = compare_experiment(cfg.out_dir, cfg.baseline, cfg.compare.metrics, test=cfg.compare.test,
                             out=tmp_path / "compare.json")
    _assert_same_rows(got, read_json(cfg.out_dir / "compare.json"), name)


def _assert_same_rows(got: dict, want: dict, name: str) -> None:
    """Two significance tables compare the same (metric, run) pairs with the same test and results."""
    g = {(r["metric"], r["run"]): r for r in got["rows"]}
    w = {(r["metric"], r["run"]): r for r in want["rows"]}
    assert sorted(g) == sorted(w), f"{name}: compared (metric, run) pairs differ"
    assert sorted(got.get("runs", {})) == sorted(want.get("runs", {})), f"{name}: compared runs differ"
    assert got.get("runs_left_out", []) == want.get("runs_left_out", []), f"{name}: runs left out differ"
    for k, row in w.items():
        assert (g[k]["test"], g[k]["n"], g[k]["significant"]) == (row["test"], row["n"], row["significant"]), (name, k)
        for field in ("mean", "diff", "p", "p_holm"):
            a, b = g[k][field], row[field]
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-6, abs=1e-12), (name, k, field, a, b)


def test_the_compare_section_offers_the_tests_compare_runs():
    from typing import get_args

    from spattern.evaluation.stats import TESTS
    from spattern.experiments.config import Compare

    assert set(get_args(Compare.model_fields["test"].annotation)) == set(TESTS)


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT / "results").as_posix()
                                        for p in (ROOT / "results").glob("*/compare_vs_*.json")))
def test_committed_further_comparisons_are_current(path):
    """A table against a second baseline (``compare_vs_<run>.json``, written by `spattern compare` or
    ``scripts/recompute_comparisons.py``) says what its runs and settings give with the current code."""
    from spattern.experiments.results import recompute_comparison
    from spattern.utils.io import read_json

    f = ROOT / "results" / path
    _assert_same_rows(recompute_comparison(f, write=False), read_json(f), path)


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT / "results").as_posix()
                                        for p in (ROOT / "results" / "pooled").glob("*.json")))
def test_committed_pooled_tables_are_current(path):
    """A table pooled over experiments (``spattern pool``) says what the experiments it names give now."""
    from spattern.experiments.pooled import recompute_pooled
    from spattern.utils.io import read_json

    f = ROOT / "results" / path
    _assert_same_rows(recompute_pooled(f, write=False), read_json(f), path)


@pytest.mark.slow
def test_the_committed_results_build_the_report_in_4_to_6_pages_with_nothing_missing(tmp_path):
    """Issue 14: `spattern report` rebuilds the PDF from the committed results, 4-6 pages (a new run, row
    or sentence can push it to 7 without any test on a synthetic study noticing)."""
    import json

    pypdf = pytest.importorskip("pypdf")
    pytest.importorskip("typst")
    from spattern.report.build import build_report

    paths = build_report([ROOT / "results"], tmp_path / "report", html=False)
    assert json.loads(paths["numbers"].read_text())["missing"] == []
    pages = len(pypdf.PdfReader(paths["pdf"]).pages)
    assert 4 <= pages <= 6, f"the report has {pages} pages"


@pytest.mark.slow
def test_the_gpu_check_scores_the_cpu_experiments_documents_alike():
    """study_pretrained_pydocs_2k_gpu repeats study_pretrained_pydocs_cpu's scoring on a GPU (same documents,
    float32, the CPU's indexer warm-up): per document, every run both have gives the same NLL to 1e-3
    (measured: 9e-6 for dense and sink + window, 3e-4 for the indexers, whose warm-up ran on the other
    device), so the notes read its _long twin's difference as the warm-up's, not the device's."""
    from spattern.experiments.results import load_runs, metric_values

    gpu, cpu = (metric_values(load_runs(ROOT / "results" / n), ["nll"])["nll"]
                for n in ("study_pretrained_pydocs_2k_gpu", "study_pretrained_pydocs_cpu"))
    shared = sorted(set(gpu) & set(cpu))
    assert shared == ["dense", "indexed", "indexed_forced", "streaming"]
    for label in shared:
        assert gpu[label].keys() == cpu[label].keys() and len(gpu[label]) == 10, label
        worst = max(abs(gpu[label][d] - cpu[label][d]) for d in gpu[label])
        assert worst < 1e-3, (label, worst)
