"""The built report: manifest, determinism, page count, placeholders for missing results, CLI."""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import re

import numpy as np
import pytest

pypdf = pytest.importorskip("pypdf")


@functools.cache
def _pdf_text(path: str, mtime_ns: int) -> tuple[str, ...]:
    return tuple(p.extract_text() for p in pypdf.PdfReader(path).pages)


def pdf_text(path) -> tuple[str, ...]:
    """The text of each page (pypdf), cached per file version: extraction takes seconds."""
    return _pdf_text(str(path), os.stat(path).st_mtime_ns)


def test_complete_study_builds_everything(built):
    paths, out = built["paths"], built["out"]
    for name in ("pdf", "html", "manifest", "numbers"):
        assert paths[name].exists(), name
    figs = json.loads((out / "data" / "figures.json").read_text())
    assert {"heatmap", "cost", "kernels", "kernels_backward", "quality_density", "synthetic",
            "ablation", "indexer", "training"} <= set(figs)
    for f in figs.values():
        assert (out / f["file"]).stat().st_size > 0 and (out / f["png"]).stat().st_size > 0
    tables = {p.stem for p in (out / "tables").glob("*.json")}
    assert {"significance", "kernels", "targets", "cost", "environment", "quality_quality", "headline",
            "memory"} <= tables
    cost = json.loads((out / "tables" / "training_cost.json").read_text())["raw"]
    assert [(r["key"], r["seeds"]) for r in cost] == [("dense", 3), ("local", 3), ("local+landmark", 3)]
    assert all(r["tokens_per_s"] == 2000.0 and r["step_ms"] == 20.0 for r in cost)  # medians over the seeds
    assert all(r["tokens_per_s_range"] == [1000.0, 3000.0] for r in cost)  # seeds 0-2 ran at 1000 x (seed + 1)
    head = json.loads((out / "tables" / "headline.json").read_text())
    sig = json.loads((out / "tables" / "significance_primary.json").read_text())
    assert len(head["rows"]) == len({r["experiment"] for r in sig["raw"]}) and all("[" in r[5] for r in head["rows"])
    numbers = json.loads(paths["numbers"].read_text())
    assert numbers["missing"] == [] and not [w for w in built["warnings"] if w.startswith("report: missing")]


def test_page_count_of_the_complete_study(built):
    assert 4 <= len(pypdf.PdfReader(built["paths"]["pdf"]).pages) <= 6


def test_pdf_states_results_environment_and_commands(built):
    text = " ".join(pdf_text(built["paths"]["pdf"]))
    assert "missing:" not in text
    for expected in ("NVIDIA H100", "3.11.7", "spattern report", "spattern bench attention", "References"):
        assert expected in text, expected
    # the experiment runs as one loop over their config names (conclusion.typ)
    loop = re.search(r"for x in (.*?); do spattern run\s+experiments/\$x\.toml; done", text)
    assert loop and "quality" in loop.group(1).split(), text[-2000:]


ILLUSTRATIONS = {"outline"}  # drawn from fixed texts in the figure's module: no results file behind them


def test_manifest_lists_every_input_with_its_hash(built, study_root):
    from spattern.report.data import sha256

    manifest = json.loads(built["paths"]["manifest"].read_text())
    listed = {i["path"]: i["sha256"] for item in manifest["items"].values() for i in item["inputs"]}
    files = sorted(p for p in study_root.rglob("*") if p.is_file())
    for p in files:
        key = f"{study_root.name}/{p.relative_to(study_root)}"
        assert key in listed, f"{key} is not in the manifest"
        assert listed[key] == sha256(p)
    for name in json.loads((built["out"] / "data" / "figures.json").read_text()):
        assert manifest["items"][name]["inputs"] or name in ILLUSTRATIONS, name
    assert manifest["items"]["heatmap"]["derived"].startswith("compiled from the runs' pattern strings")


def test_building_twice_gives_the_same_pdf_text_and_tables(built, built_again):
    a, b = built["out"], built_again["out"]
    assert pdf_text(a / "report.pdf") == pdf_text(b / "report.pdf")
    assert (a / "report.pdf").read_bytes() == (b / "report.pdf").read_bytes()  # no date, fixed fonts: same bytes
    names = sorted(p.name for p in (a / "tables").iterdir())
    assert names == sorted(p.name for p in (b / "tables").iterdir())
    for n in names:
        assert (a / "tables" / n).read_bytes() == (b / "tables" / n).read_bytes(), n
    assert (a / "data" / "numbers.json").read_bytes() == (b / "data" / "numbers.json").read_bytes()
    for svg in (a / "figures").glob("*.svg"):
        assert svg.read_bytes() == (b / "figures" / svg.name).read_bytes(), svg.name


def test_missing_results_give_placeholders_and_warnings_never_stale_files(partial):
    out = partial["out"]
    text = " ".join(pdf_text(out / "report.pdf"))
    assert "missing:" in text
    assert any("kernel benchmark" in w for w in partial["warnings"])
    assert any("significance table" in w for w in partial["warnings"])
    assert not (out / "figures" / "kernels.svg").exists()      # the earlier complete build's file is gone
    assert not (out / "tables" / "significance.json").exists()
    numbers = json.loads((out / "data" / "numbers.json").read_text())
    assert "kernel" not in numbers and "significance" not in numbers
    html = (out / "report.html").read_text()
    assert 'class="missing"' in html


def test_cli_builds_and_rejects_absent_folders(study_root, tmp_path, capsys):
    from spattern.cli import report as cli_report
    from spattern.utils.errors import UserError

    small = tmp_path / "results"  # a study of one benchmark file keeps this fast
    (small / "bench").mkdir(parents=True)
    (small / "bench" / "bench_topk.json").write_bytes((study_root / "bench" / "bench_topk.json").read_bytes())
    ap = argparse.ArgumentParser()
    cli_report.register(ap.add_subparsers())
    args = ap.parse_args(["report", str(small), "--out", str(tmp_path / "o"), "--no-pdf", "--no-html"])
    assert args.func(args) == 0
    assert (tmp_path / "o" / "manifest.json").exists() and not (tmp_path / "o" / "report.pdf").exists()
    assert "figures" in capsys.readouterr().out
    bad = ap.parse_args(["report", str(tmp_path / "nope")])
    with pytest.raises(UserError, match="expected existing folders"):
        bad.func(bad)


def test_an_empty_study_still_builds_with_placeholders(tmp_path):
    from spattern.report import build_report

    (tmp_path / "results").mkdir()
    with pytest.warns(UserWarning, match="report: missing"):
        paths = build_report([tmp_path / "results"], tmp_path / "out", html=False)
    text = " ".join(pdf_text(paths["pdf"]))
    assert "0 runs in 0 experiments" in text and "missing: kernel.best.speedup" in text
    assert json.loads(paths["manifest"].read_text())["missing"]


def test_generated_typst_tables_compile_on_their_own(built):
    import typst

    out = built["out"]
    doc = out / "tables_only.typ"
    doc.write_text("".join(f'#include "tables/{p.name}"\n' for p in sorted((out / "tables").glob("*.typ"))))
    pdf = typst.compile(str(doc), root=str(out), ignore_system_fonts=True)
    doc.unlink()
    text = " ".join(" ".join(p.extract_text().split()) for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    for caption in ("Paired comparisons against the baseline", "Attention kernel times", "Cost of each pattern"):
        assert caption in text, caption


def test_malformed_results_give_placeholders_not_a_crash(tmp_path):
    from spattern.report import build_report

    r = tmp_path / "results"
    (r / "e" / "r1").mkdir(parents=True)
    (r / "e" / "r1" / "metrics.json").write_text(json.dumps(
        {"experiment": "e", "run_id": "r1", "pattern": "local(64) & causal", "params": None,
         "metrics": {"kl": "not a number", "density": 0.5}}))
    (r / "e" / "r1" / "per_example.jsonl").write_text(
        '{"id": "a", "kl": null, "distance": 3}\n{"id": "b", "kl": 1.0, "correct": true, "distance": "far"}\n')
    (r / "bench.json").write_text(json.dumps({"results": [{"N": 4096, "ms": {"spattern": None}},
                                                          {"N": "x", "ms": {}}]}))
    (r / "compare.json").write_text(json.dumps({"rows": [{"metric": "kl"}], "correction": "holm"}))
    (r / "torn.json").write_text("{not json")
    with pytest.warns(UserWarning, match="report: missing"):
        paths = build_report([r], tmp_path / "out", html=False)
    manifest = json.loads(paths["manifest"].read_text())
    assert {m["name"] for m in manifest["missing"]} >= {"kernels", "targets", "quality"}
    assert "heatmap" in manifest["items"] and "significance" in manifest["items"]
    from spattern.report.data import load_study

    skipped = {p.name: why for p, why in load_study([r]).skipped}
    assert "unreadable JSON" in skipped["torn.json"]


@pytest.mark.filterwarnings("ignore:report. missing:UserWarning")
def test_a_report_inside_its_results_folder_is_not_read_back(tmp_path):
    from spattern.report import build_report
    from spattern.utils.errors import UserError

    r = tmp_path / "results"
    (r / "bench").mkdir(parents=True)
    (r / "bench" / "topk.json").write_text(json.dumps({"build_eager_ms": 0.1, "build_graph_ms": 0.02,
                                                       "attention_ms": 1.0}))
    first = build_report([r], r / "report", pdf=False, html=False)
    second = build_report([r], r / "report", pdf=False, html=False)
    assert first["numbers"].read_bytes() == second["numbers"].read_bytes()
    listed = {i["path"] for item in json.loads(second["manifest"].read_text())["items"].values() for i in item["inputs"]}
    assert listed == {"results/bench/topk.json"}
    with pytest.raises(UserError, match="not a results folder"):
        build_report([r], r, pdf=False, html=False)
    with pytest.raises(UserError, match="not a results folder"):
        build_report([r], tmp_path, pdf=False, html=False)


def test_superseded_and_raw_folders_are_not_read(tmp_path):
    """Files under `superseded/` (replaced by later measurements) and `raw/` (per-run files merged into a
    file above) stay as evidence but are not read as results."""
    from spattern.report.data import load_study

    r = tmp_path / "results"
    cell = {"N": 4096, "D": 128, "causal": False, "family": "lrs", "density_target": 0.5, "ms": {"x": 1.0}}
    for sub in ("hopper", "hopper/raw", "hopper/superseded"):
        (r / sub).mkdir(parents=True, exist_ok=True)
        (r / sub / "bench.json").write_text(json.dumps({"results": [cell]}))
    study = load_study(r)
    assert [f.path.relative_to(r).as_posix() for f in study.bench] == ["hopper/bench.json"]


def test_a_run_in_progress_is_left_out_until_it_finishes(tmp_path):
    """A run folder whose metrics.json says "running" (the runner writes it as it goes) has partial
    results: the study leaves it out, says why, and takes it once it is finished."""
    from spattern.report.data import load_study

    d = tmp_path / "results" / "e" / "dense-s0-abc"
    d.mkdir(parents=True)
    m = {"experiment": "e", "run_id": "dense-s0-abc", "label": "dense", "status": "running", "metrics": {"nll": 2.0}}
    (d / "metrics.json").write_text(json.dumps(m))
    study = load_study([tmp_path / "results"])
    assert study.runs == [] and study.experiments() == []
    assert "not finished (status 'running')" in dict(study.skipped)[d / "metrics.json"]
    (d / "metrics.json").write_text(json.dumps({**m, "status": "finished"}))
    assert [r.label for r in load_study([tmp_path / "results"]).runs] == ["dense"]


def test_experiment_records_name_the_checks(tmp_path):
    """experiment.json (spattern run) is read, not skipped; its check_of marks a check experiment."""
    from spattern.report.data import load_study

    r = tmp_path / "results"
    for name, extra in (("x", {}), ("x_draws", {"check_of": "x"})):
        (r / name).mkdir(parents=True)
        (r / name / "experiment.json").write_text(json.dumps({"experiment": name, "kind": "evaluate",
                                                             "baseline": "dense", **extra}))
    study = load_study([r])
    assert study.check_of() == {"x_draws": "x"} and not study.skipped


def test_a_trained_check_has_no_panel_row_or_headline_and_mqar_counts_learnt_seeds(study_root, tmp_path):
    """A check of a trained experiment (``check_of``: MQAR's schedules beside MQAR) draws no panel in the
    training and retrieval figures, adds no training-cost row and no headline row; the MQAR sentence
    counts, per experiment and dense series, the seeds that learnt the task."""
    import shutil

    from spattern.report import build_report
    from tests.report.fixtures.make_study import _curve, _run, _write

    root = tmp_path / "results"
    shutil.copytree(study_root, root)
    for seed, acc in enumerate((1.0, 0.22, 0.99)):  # the parent's dense runs: 2 of 3 learnt
        _run(root, "mqar_train", f"dense-s{seed}", "dense", {"seed": seed},
             {"loss": 1.0, "mqar_accuracy": acc, "mqar_accuracy_n2": acc, "tokens_per_s": 500.0, "step_ms": 5.0},
             curve=_curve(np.random.default_rng(seed), 1.0))
    _write(root / "mqar_sched" / "experiment.json",
           {"experiment": "mqar_sched", "kind": "train", "baseline": "long", "check_of": "mqar_train"})
    for key, accs in (("long", (1.0, 1.0, 0.95)), ("slow", (0.2, 1.0, 0.21))):
        for seed, acc in enumerate(accs):
            _run(root, "mqar_sched", f"{key}-s{seed}", "dense", {"seed": seed},
                 {"loss": 1.0, "mqar_accuracy": acc, "mqar_accuracy_n2": acc, "tokens_per_s": 400.0, "step_ms": 6.0},
                 curve=_curve(np.random.default_rng(seed), 1.0), top={"label": key, "jobs": 4})
    _write(root / "mqar_sched" / "compare.json", {"baseline": "long", "test": "wilcoxon", "rows": [
        {"metric": "mqar_accuracy", "run": "slow", "baseline": "long", "n": 3, "mean": 0.47, "diff": -0.51,
         "diff_ci_low": -0.8, "diff_ci_high": 0.0, "p": 0.25, "p_holm": 0.25, "effect_size": -1.0,
         "higher_is_better": True}]})
    out = tmp_path / "build"
    paths = build_report([root], out, html=False)
    items = json.loads((out / "manifest.json").read_text())["items"]
    for name in ("training", "synthetic", "training_cost"):
        assert not any("mqar_sched" in i["path"] for i in items[name]["inputs"]), name
    assert any("mqar_train" in i["path"] for i in items["training"]["inputs"])
    cost = json.loads((out / "tables" / "training_cost.json").read_text())["raw"]
    assert {r["experiment"] for r in cost} >= {"mqar_train"} and "mqar_sched" not in {r["experiment"] for r in cost}
    head = json.loads((out / "tables" / "headline.json").read_text())
    assert not any("mqar_sched" in str(r) for r in head["rows"])
    learnt = json.loads(paths["numbers"].read_text())["mqar_learnt"]
    assert learnt["threshold"] == "0.9"
    assert {e["name"]: e["series"] for e in learnt["experiments"]} == {
        "mqar_train": "dense 2 of 3", "mqar_sched": "long 3 of 3, slow 1 of 3"}
    assert "mqar_sched: long 3 of 3, slow 1 of 3" in " ".join(" ".join(pdf_text(paths["pdf"])).split())  # line breaks
    families = json.loads(paths["numbers"].read_text())["study"]["families"].split(", ")
    assert "dense" in families and "long" not in families and "slow" not in families  # settings, not patterns


def test_a_check_of_an_ablation_draws_no_panel_and_no_headline_row(study_root, tmp_path):
    """An ablation made again elsewhere (``check_of``: the outline ablation on the GPU, 8 of the CPU
    ablation's documents) keeps its tables: the ablation figure and the headline table leave it out."""
    import shutil

    from spattern.report import build_report
    from tests.report.fixtures.make_study import _run, _write

    root = tmp_path / "results"
    shutil.copytree(study_root, root)
    for w, nll in ((64, 3.4), (128, 3.2)):
        _run(root, "ablation_window_gpu", f"w{w}", f"(local({w}) | sink(64)) & causal", {"window": w},
             {"nll": nll, "ppl": float(np.exp(nll))}, [{"id": f"doc{i}", "nll": nll + 0.01 * i} for i in range(4)])
    _write(root / "ablation_window_gpu" / "experiment.json",
           {"experiment": "ablation_window_gpu", "kind": "evaluate", "baseline": "w64", "check_of": "ablation_window"})
    _write(root / "ablation_window_gpu" / "compare.json", {"baseline": "w64", "test": "wilcoxon", "rows": [
        {"metric": "nll", "run": "w128", "baseline": "w64", "n": 4, "mean": 3.2, "diff": -0.2,
         "diff_ci_low": -0.25, "diff_ci_high": -0.15, "p": 0.125, "p_holm": 0.125, "effect_size": -2.0,
         "higher_is_better": False}]})
    out = tmp_path / "build"
    paths = build_report([root], out, html=False)
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert any("ablation_window/" in i["path"] for i in items["ablation"]["inputs"])
    assert not any("ablation_window_gpu" in i["path"] for i in items["ablation"]["inputs"])
    head = json.loads((out / "tables" / "headline.json").read_text())
    assert not any("ablation_window_gpu" in str(r) for r in head["rows"])
    assert json.loads(paths["numbers"].read_text())["ablation"]["experiments"] == "ablation_window"


def test_runs_matched_out_of_reach_are_named(tmp_path):
    """matches.json (spattern run) is read, not skipped; a matched run whose family could not reach its
    target (the matching's note) is named with the cost it ran at, per family over experiments; a family
    that reached it, a note whose pattern no run used, and a check experiment are not."""
    from spattern.report.data import load_study
    from spattern.report.numbers import unreachable_rows
    from tests.report.fixtures.make_study import _run, _write

    r = tmp_path / "results"

    def match(pattern, achieved, note=None):
        return {"key": {"family": "f", "target": 0.125}, "match": {"pattern": pattern, "achieved": achieved,
                                                                   "target": 0.125, "note": note}}

    far = "target 0.125 is outside the reachable range"
    for exp, achieved in (("a", 0.166), ("b", 0.159), ("a_draws", 0.17)):
        _write(r / exp / "matches.json", {"1": match("(local(384) | strided(384)) & causal", achieved, far),
                                          "2": match("local(386) & causal", 0.118),
                                          "3": match("outline(window=1) & causal", 0.10, far)})  # not run
        for label, pattern in (("strided", "(local(384) | strided(384)) & causal"), ("window", "local(386) & causal")):
            _run(r, exp, f"{label}-s0", pattern, {"target": 0.125, "family": label}, {"nll": 1.0})
    study = load_study([r])
    assert len(study.matches) == 3 and not [p for p, _ in study.skipped if p.name == "matches.json"]
    assert unreachable_rows(study, hidden={"a_draws"}) == [
        {"key": "strided", "experiments": "a, b", "target": "12.5%", "where": "2 experiments", "achieved": "15.9%-16.6%"}]


def test_the_committed_device_logs_feed_no_benchmark_into_the_report():
    """results/study_device_logs keeps each device call's evidence (A/B runs, probes) beside the results;
    the report reads `spattern bench attention` JSON anywhere under results/, so none of those may look
    like one (an A/B there would enter the performance section's cells: keep both arms in one file)."""
    from pathlib import Path

    from spattern.report.data import load_study

    root = Path(__file__).resolve().parents[2] / "results"
    benches = [f.path for f in load_study([root]).bench]
    assert benches and not [p for p in benches if "study_device_logs" in p.parts]


def test_without_a_snapshot_the_indexer_recall_is_a_training_panel(study_root, tmp_path):
    """No indexer snapshot: the recall curve is the training figure's last panel (figures.json marks it),
    and neither the PDF, the HTML nor the slides show an indexer figure or a "missing" box for one."""
    import shutil

    from spattern.report import build_report

    root = tmp_path / "results"
    shutil.copytree(study_root, root)
    for snap in root.rglob("indexer_snapshot.json"):
        snap.unlink()
    paths = build_report([root], tmp_path / "build")
    figs = json.loads((tmp_path / "build" / "data" / "figures.json").read_text())
    assert "indexer" not in figs and figs["training"].get("indexer_panel") is True
    assert "missing:" not in " ".join(pdf_text(paths["pdf"]))
    for doc in ("html", "slides"):
        assert "missing:" not in paths[doc].read_text()
