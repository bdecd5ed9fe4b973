"""The sentences the report's prose reads (report.numbers): which runs a quality sentence compares, and
what the retrieval sentence names, on hand-made points."""
from __future__ import annotations

from spattern.report.numbers import quality_row, synthetic_groups, synthetic_row
from spattern.report.tables import fmt_p


def _kl(key, density, value, target=0.125):
    return {"key": key, "metric": "kl", "density": density, "target": target, "value": value,
            "lo": value - 0.01, "hi": value + 0.01}


def test_quality_compares_every_run_matched_to_the_lowest_target():
    """Matched runs achieve slightly different densities: all of them are compared at their target (not
    only the one run at the lowest achieved density), and causal (not matched) and the bound are not."""
    pts = [_kl("window", 0.1245, 0.56), _kl("outline", 0.1265, 0.15), _kl("streaming", 0.1245, 0.146),
           _kl("strided", 0.159, 0.61), _kl("causal", 0.5001, 0.002, target=None),
           _kl("oracle", 0.12, 0.08), _kl("window", 0.25, 0.2, target=0.25),
           {"key": "dense", "metric": "ppl", "density": 1.0, "target": None, "value": 10.38, "lo": 10, "hi": 11}]
    row = quality_row("e", pts)
    assert row["lowest_density"] == "matched to 12.5%, achieved 12.4%-15.9%"
    assert (row["best_key"], row["worst_key"]) == ("streaming", "strided")
    assert row["best_overlap"] == "outline"  # 0.15 +- 0.01 overlaps 0.146 +- 0.01: not ranked below it
    assert row["bound_key"] == "oracle" and row["dense_ppl"] == "10.4"


def test_quality_without_matching_uses_the_lowest_density():
    pts = [_kl("window", 0.0625, 0.9, target=None), _kl("streaming", 0.0625, 0.5, target=None),
           _kl("window", 0.25, 0.1, target=None)]
    row = quality_row("sweep", pts)
    assert row["lowest_density"] == "6.2%" and (row["best_key"], row["worst_key"]) == ("streaming", "window")
    assert "best_overlap" not in row


def _acc(key, distance, value):
    return {"key": key, "distance": distance, "value": value, "lo": value, "hi": value}


def test_retrieval_names_dense_and_the_best_sparse_pattern():
    pts = [_acc("dense", 128, 0.6), _acc("bigbird", 128, 0.53), _acc("window", 128, 0.03), _acc("causal", 128, 0.9),
           _acc("oracle", 128, 1.0), _acc("bigbird", 2, 0.9)]
    row = synthetic_row("mqar", pts, "distance")
    assert (row["distance"], row["best_key"]) == ("128", "bigbird") and row["dense"].startswith("0.6")
    tie = synthetic_row("p", [_acc("dense", 9, 1.0), _acc("window", 9, 0.0), _acc("outline", 9, 0.0)], "depth")
    assert tie["best_key"] == "every sparse pattern"
    one = synthetic_row("q", [_acc("window", 9, 0.0)], "depth")
    assert one["best_key"] == "window" and "dense" not in one


def test_retrieval_clauses_group_one_sparse_outcome_and_within_it_one_dense_value():
    """One clause per sparse outcome; the experiments in it with the same dense value named together, in
    the rows' order; an experiment alone is marked single (its clause reads "name (distance): dense vs")."""
    row = lambda name, d, dense, best: synthetic_row(  # noqa: E731
        name, [_acc("dense", d, dense), _acc("window", d, best), _acc("outline", d, best)], "distance")
    rows = [row("m", 128, 0.9, 0.5), row("a", 2048, 1.0, 0.0), row("b", 1024, 0.5, 0.0), row("c", 1024, 1.0, 0.0)]
    groups = synthetic_groups(rows)
    assert [g["single"] for g in groups] == [True, False]
    assert groups[0]["dense"] == [{"dense": rows[0]["dense"], "names": [{"name": "m", "distance": "128"}]}]
    alike = groups[1]
    assert (alike["best_key"], alike["best"]) == ("every sparse pattern", rows[1]["best"])
    assert [(s["dense"], [e["name"] for e in s["names"]]) for s in alike["dense"]] == [
        (rows[1]["dense"], ["a", "c"]), (rows[2]["dense"], ["b"])]
    no_dense = synthetic_groups([synthetic_row("q", [_acc("window", 9, 0.0)], "depth")])
    assert no_dense[0]["dense"] == [{"names": [{"name": "q", "distance": "9"}]}] and no_dense[0]["single"]


def test_a_bucketed_distance_is_named_as_its_range():
    """Passkey distances are grouped in power-of-two buckets (the lower edge is the x drawn): the
    sentence names the range, not the lower edge (a 2K passkey at depth 0.1 is about 1 800 tokens away)."""
    far = [{**_acc("dense", 1024, 1.0), "distance_to": 2047}, {**_acc("window", 1024, 0.0), "distance_to": 2047}]
    assert synthetic_row("p", far, "distance")["distance"] == "1 024-2 047"


def _row(run, metric="nll", baseline="dense", diff=0.1, n=8, significant=True):
    return {"run": run, "baseline": baseline, "metric": metric, "diff": diff, "diff_ci_low": diff - 0.05,
            "diff_ci_high": diff + 0.05, "p_holm": 0.04, "n": n, "test": "wilcoxon", "significant": significant,
            "higher_is_better": False}


def test_headline_floor_is_holm_adjusted_over_the_metric_comparisons():
    """With 8 pairs an exact test reaches p = 2/256; over 5 comparisons Holm multiplies that by 5."""
    from spattern.report.numbers import headline

    doc = {"experiment": "e", "baseline": "dense",
           "rows": [_row(f"r{i}", diff=0.1 * i) for i in range(5)] + [_row("r9", metric="kl")]}
    h = headline(doc)
    assert h["comparisons"] == "5" and h["min_p"] == fmt_p(5 * 2 / 2 ** 8)
    assert headline({**doc, "rows": [_row(f"r{i}", n=3) for i in range(5)]})["min_p"] == fmt_p(1.0)  # capped


def test_a_pair_compared_against_two_baselines_counts_once():
    """compare.json has window vs dense; compare_vs_window.json has dense vs window (and outline vs
    window): three distinct comparisons, dense/window counted as its own table has it."""
    from pathlib import Path
    from types import SimpleNamespace

    from spattern.report.numbers import distinct_comparisons

    own = SimpleNamespace(path=Path("r/e/compare.json"), data={"rows": [
        {"run": "dense", "baseline": "dense", "metric": "nll", "note": "baseline; constant values: zero-width interval"},
        _row("window"), _row("outline")]})
    vs = SimpleNamespace(path=Path("r/e/compare_vs_window.json"), data={"rows": [
        _row("dense", baseline="window", significant=False), _row("outline", baseline="window", significant=False)]})
    other = SimpleNamespace(path=Path("r/f/compare.json"), data={"rows": [_row("window")]})
    rows = distinct_comparisons([vs, other, own])
    assert len(rows) == 4
    assert [(r["run"], r["baseline"], r["significant"]) for r in rows[:3]] == [
        ("window", "dense", True), ("outline", "dense", True), ("outline", "window", False)]
    assert [r["experiment"] for r in rows] == ["e", "e", "e", "f"]  # a file without one: its folder's name


def test_a_benchmark_command_is_the_spattern_command_writing_that_file():
    """Recorded argv (a script path on the device machine, an output path there) or an old command
    ("python benchmarks/compile_bench.py", "--json ...") becomes the current `spattern bench` command
    writing the result file itself; a shell script with its settings stays as recorded."""
    import shlex
    from pathlib import Path

    from spattern.report.numbers import bench_command

    f = Path("results/hopper/b.json")
    assert bench_command(["/x/spattern/cli/__main__.py", "bench", "attention", "--json", "/root/out/a.json",
                          "--iters", "20"], f) == "spattern bench attention --json results/hopper/b.json --iters 20"
    assert bench_command(["/x/spattern/evaluation/bench_attention.py", "--seq", "4096"], f) == \
        "spattern bench attention --seq 4096"
    assert bench_command(shlex.split("python3 -m spattern.evaluation.bench_topk --k 32 --json ..."), f) == \
        "spattern bench topk --k 32 --json results/hopper/b.json"
    assert bench_command(shlex.split("python benchmarks/compile_bench.py --json x.json"), f) == \
        "spattern bench compile --json results/hopper/b.json"
    assert bench_command(["scripts/gpu_suite.sh", "--a"], f) == "scripts/gpu_suite.sh --a"


def test_a_check_experiment_is_one_row_per_comparison_from_its_tables():
    """x_draws checks BigBird's random draw: against dense each draw's NLL difference (the range of Holm p);
    against draw 0 (compare_vs_bigbird.json) the other draws' differences, dense left out; a table
    against another experiment's run (x:bigbird) keeps that name, the study_ prefix dropped."""
    from pathlib import Path

    from spattern.report.numbers import check_row
    from spattern.report.tables import checks_table

    base = {"run": "dense", "baseline": "dense", "metric": "nll", "note": "baseline"}
    own = {"baseline": "dense", "rows": [base] + [{**_row(r, diff=d), "p_holm": p} for r, d, p in
                                                  (("bigbird", 0.385, 0.006), ("bigbird_draw1", 0.372, 0.006),
                                                   ("bigbird_draw2", 0.393, 0.004))]}
    vs = {"baseline": "bigbird", "rows": [{**_row(r, baseline="bigbird", diff=d), "p_holm": p} for r, d, p in
                                          (("dense", -0.385, 0.006), ("bigbird_draw1", -0.012, 0.21),
                                           ("bigbird_draw2", 0.008, 0.28))]}
    also = {"baseline": "study_x:bigbird", "rows": [{**_row("bigbird_draw1", baseline="study_x:bigbird", diff=0.01),
                                                     "p_holm": 0.5}]}
    row = check_row("study_x_draws", "study_x", [(own, Path("r/study_x_draws/compare.json")),
                                                 (vs, Path("r/study_x_draws/compare_vs_bigbird.json")),
                                                 (also, Path("r/study_x_draws/compare_vs_x.json"))])
    assert (row["name"], row["parent"], row["metric"]) == ("x_draws", "x", "nll")
    assert row["comparisons"] == [
        {"baseline": "dense", "runs": "bigbird +0.385, bigbird_draw1 +0.372, bigbird_draw2 +0.393",
         "p_holm": f"{fmt_p(0.004)} to {fmt_p(0.006)}"},
        {"baseline": "bigbird", "runs": "bigbird_draw1 -0.012, bigbird_draw2 +0.008", "p_holm": f"{fmt_p(0.21)} to {fmt_p(0.28)}"},
        {"baseline": "x:bigbird", "runs": "bigbird_draw1 +0.010", "p_holm": fmt_p(0.5)}]
    assert check_row("x_draws", "x", []) is None
    # compare --average: a run that is the mean of several (warm-up seeds) is named with their number
    seeds = {"baseline": "short", "average": {"short": ["study_x:indexed", "study_x:indexed_s1"],
                                              "ctx": ["indexed", "indexed_s1"]},
             "rows": [{**_row("ctx", baseline="short", diff=-0.28), "p_holm": 0.006}]}
    avg = check_row("study_x_ctx", "study_x", [(own, Path("r/study_x_ctx/compare.json")),
                                               (seeds, Path("r/study_x_ctx/compare_vs_short.json"))])
    assert avg["comparisons"][1] == {"baseline": "short (mean of 2)", "runs": "ctx (mean of 2) -0.280",
                                     "p_holm": fmt_p(0.006)}
    t = checks_table([row], [])  # the check named once, on its first row; one metric: in the caption
    assert [r[:3] for r in t.rows] == [["x_draws", "x", "dense"], ["", "", "bigbird"], ["", "", "x:bigbird"]]
    assert "metric" not in t.columns and "difference in nll" in t.caption
    t = checks_table([row, {**row, "name": "y", "metric": "kl"}], [])
    assert t.columns[2] == "metric" and [r[2] for r in t.rows[:4]] == ["nll", "", "", "kl"]


def test_the_quality_summary_is_one_row_per_experiment():
    from spattern.report.tables import quality_summary_table

    pts = [_kl("window", 0.1245, 0.56), _kl("outline", 0.1265, 0.15), _kl("streaming", 0.1245, 0.146)]
    t = quality_summary_table([quality_row("e", pts)], [])
    assert t.rows == [["e", "12.5% (12.4%-12.7%)", "streaming 0.146 [0.136, 0.156]", "outline",
                       "window 0.560 [0.550, 0.570]", "–", "–"]]


def test_the_quality_summary_sentence_counts_families_not_series():
    """Which family had the lowest KL, counted over experiments, and where outline was lowest or within
    the lowest's interval; a two-context experiment's series labels ("outline (N=2048)") count as their
    family; no outline clause where no experiment ran it; nothing without a ranked row."""
    from spattern.report.numbers import quality_summary

    a = quality_row("a", [_kl("window", 0.12, 0.56), _kl("outline", 0.12, 0.15), _kl("streaming", 0.12, 0.146)])
    b = quality_row("b", [_kl("window", 0.12, 0.5), _kl("streaming", 0.12, 0.2)])
    two = [{**_kl("outline", 0.12, 0.1), "series": "outline (N=2048)"},
           {**_kl("streaming", 0.12, 0.3), "series": "streaming (N=2048)"}]
    c = quality_row("c", two)
    assert c["best_key"] == "outline (N=2048)" and c["best_family"] == "outline"
    s = quality_summary([a, b, c])
    assert s["best"] == "streaming in 2, outline in 1" and s["n"] == "3"
    assert (s["pattern_top"], s["pattern_ran"], s["pattern_top_names"]) == ("2", "2", "a, c")  # a: overlap
    s = quality_summary([b])
    assert s == {"n": "1", "experiments": "experiment", "best": "streaming in 1"}  # outline never ran
    assert quality_summary([{"name": "x"}]) is None


def test_commands_recompute_the_tables_against_a_second_baseline(tmp_path, monkeypatch):
    """Each compare_vs_<run>.json is reproduced by scripts/recompute_comparisons.py: named when it is not
    what the script finds by default (results/ of the working directory), bare when it is."""
    from types import SimpleNamespace

    from spattern.report.numbers import _commands

    (tmp_path / "results" / "e").mkdir(parents=True)
    (tmp_path / "results" / "e" / "compare_vs_window.json").write_text("{}")
    same_call = SimpleNamespace(path=tmp_path / "results" / "e" / "throughput.json",  # a training-cost table's
                                data={"command": "python scripts/throughput_summary.py d --json x",  # ratios
                                      "logged_by": ["OUT=d bash scripts/profile_train.sh 'local(8)'"]})
    logs = SimpleNamespace(path=tmp_path / "results" / "logs" / "call1" / "throughput.json",   # device logs:
                           data={"command": "python scripts/throughput_summary.py call1", "logged_by": []})  # not
    study = SimpleNamespace(runs=[], bench=[], topk=[], compile_bench=[], memory=[], reach=[], roots=[tmp_path / "results"],
                            throughput=[same_call, logs], experiments=lambda: ["e"])
    monkeypatch.chdir(tmp_path)
    assert "python scripts/recompute_comparisons.py" in _commands(study)
    assert {"python scripts/throughput_summary.py d --json x", "OUT=d bash scripts/profile_train.sh 'local(8)'"} \
        <= set(_commands(study)) and "python scripts/throughput_summary.py call1" not in _commands(study)
    monkeypatch.chdir(tmp_path / "results")
    assert "python scripts/recompute_comparisons.py e/compare_vs_window.json" in _commands(study)
    assert not any("recompute" in c for c in _commands(SimpleNamespace(**{**vars(study), "roots": [tmp_path / "e"]})))


def test_mqar_reach_names_the_far_bucket_best_first_and_skips_hidden_experiments(tmp_path, monkeypatch):
    """A reach_by_distance.json (scripts/mqar_reach.py) is read by its content: the sentence takes its
    largest bucket only, the patterns by accuracy (best first), routes as counts; a check experiment
    (hidden) gets none."""
    import json

    from spattern.report.data import load_study
    from spattern.report.numbers import mqar_reach_rows

    def row(label, lo, reach, routes, acc):
        return {"label": label, "bucket": f"[{lo}, {2 * lo})", "lo": lo, "n_pairs": [2, 4],
                "attended": 0.0, "reach_2": reach, "routes_2": routes, "accuracy": acc}

    for name in ("mqar", "mqar_check"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "reach_by_distance.json").write_text(json.dumps({
            "experiment": name, "context": 256, "layers": 2, "rows": [],
            "by_distance": [row("window", 64, 1.0, 46.75, 0.87), row("window", 128, 0.07, 0.0, 0.03),
                            row("longformer", 128, 1.0, 1.0, 0.07), row("dense", 128, 1.0, 173.0, 0.9)]}))
    study = load_study([tmp_path])
    assert len(study.reach) == 2 and not study.skipped
    (out,) = mqar_reach_rows(study, hidden={"mqar_check"})
    assert (out["name"], out["bucket"], out["layers"]) == ("mqar", "[128, 256)", "2")
    assert [(p["key"], p["reach"], p["routes"], p["accuracy"]) for p in out["patterns"]] == [
        ("dense", "1.00", "173", "0.90"), ("longformer", "1.00", "1", "0.07"), ("window", "0.07", "0", "0.03")]
    assert "draws" not in out
    from spattern.report.numbers import _commands

    monkeypatch.chdir(tmp_path)
    assert "python scripts/mqar_reach.py mqar" in _commands(study)  # how the file is made again
    # draws (scripts/mqar_reach.py --draws): the range over the single draws only, at the far bucket only
    data = json.loads((tmp_path / "mqar" / "reach_by_distance.json").read_text())
    data["draws"] = {"label": "bigbird", "template": "random(2, seed={seed})", "seeds": 3, "lo": 128, "rows": [
        {"draws": [0, 0], "routes_2": 17.0}, {"draws": [1, 1], "routes_2": 1.0}, {"draws": [2, 2], "routes_2": 7.25},
        {"draws": [0, 1], "routes_2": 40.0}]}
    (tmp_path / "mqar" / "reach_by_distance.json").write_text(json.dumps(data))
    (out,) = mqar_reach_rows(load_study([tmp_path]), hidden={"mqar_check"})
    assert out["draws"] == {"label": "bigbird", "n": "3", "lo": "1", "hi": "17"}
    assert ("python scripts/mqar_reach.py mqar --draws 'random(2, seed={seed})' --draws-label bigbird --seeds 3"
            in _commands(load_study([tmp_path])))
    data["draws"]["lo"] = 64  # drawn at another bucket than the sentence's: left out
    (tmp_path / "mqar" / "reach_by_distance.json").write_text(json.dumps(data))
    assert "draws" not in mqar_reach_rows(load_study([tmp_path]), hidden={"mqar_check"})[0]
    # per_run (a draw per run): the rank correlation with routes, and the paired comparison with the fixed draw
    data["per_run"] = [{"label": "bigbird_draws", "lo": 128, "rows": [],
                        "spearman": {"routes_2": {"rho": 0.8412, "p": 5.2e-5, "n": 16}, "attended": {"rho": 0.5, "p": 0.04}},
                        "against_fixed": [{"baseline": "bigbird", "diff": -0.1801, "diff_ci": [-0.317, -0.029],
                                           "p": 0.0654, "mean": 0.3401, "mean_baseline": 0.5202}]}]
    (tmp_path / "mqar" / "reach_by_distance.json").write_text(json.dumps(data))
    (out,) = mqar_reach_rows(load_study([tmp_path]), hidden={"mqar_check"})
    assert out["per_run"] == [{"label": "bigbird_draws", "n": "16", "rho": "+0.84", "p": "< 0.001", "fixed": {
        "baseline": "bigbird", "diff": "-0.18 [-0.32, -0.029]", "p": "0.065", "mean": "0.34", "mean_baseline": "0.52"}}]
    data["per_run"][0]["lo"] = 64  # another bucket than the sentence's: left out
    (tmp_path / "mqar" / "reach_by_distance.json").write_text(json.dumps(data))
    assert "per_run" not in mqar_reach_rows(load_study([tmp_path]), hidden={"mqar_check"})[0]


def test_a_significant_result_whose_mean_interval_includes_zero_is_marked():
    """The rank test can reject while the bootstrap CI of the mean difference still includes 0 (skewed
    differences: study_mqar_long's strided against dense, where dense's one plateaued seed makes the
    mean's interval reach +0.12). Such a result is marked † in the headline and significance tables,
    whose captions then say what the mark means; a plain significant or null result is not."""
    from pathlib import Path

    from spattern.report.numbers import headline
    from spattern.report.tables import DISAGREE, disagrees, headline_table, significance_table

    skewed = {**_row("strided", diff=-0.05), "diff_ci_low": -0.12, "diff_ci_high": 0.12, "higher_is_better": True}
    plain = {**_row("window", diff=-0.16), "higher_is_better": True}
    null = {**_row("streaming", diff=-0.01, significant=False), "diff_ci_low": -0.1, "higher_is_better": True}
    assert [disagrees(r) for r in (skewed, plain, null)] == [True, False, False]
    doc = {"experiment": "e", "baseline": "dense", "alpha": 0.05, "rows": [skewed, plain, null]}
    for r in doc["rows"]:
        r["metric"] = "mqar_accuracy"
    h = headline(doc)
    assert h["best"]["run"] == "streaming" and DISAGREE not in h["best"]["p_holm"]
    sig = significance_table([(doc, Path("e/compare.json"))])
    assert [row[-1] for row in sig.rows] == ["yes" + DISAGREE, "yes", "no"] and DISAGREE in sig.caption
    doc["rows"] = [skewed]
    h = headline(doc)
    assert h["best"]["p_holm"].endswith(DISAGREE)
    assert DISAGREE in headline_table([(h, Path("e/compare.json"))]).caption
    doc["rows"] = [plain]
    assert DISAGREE not in significance_table([(doc, Path("e/compare.json"))]).caption


def test_the_verdict_on_the_studys_pattern_counts_its_direct_comparisons():
    """pattern_verdict: experiments whose comparison with dense has outline, where outline (or a variant)
    is the best contender, and each compare_vs_<static pattern> row of outline as better / worse / null;
    a table against dense or against an outline variant is not a direct comparison."""
    from pathlib import Path

    from spattern.report.numbers import pattern_verdict

    def doc(exp, base, rows):
        return {"experiment": exp, "baseline": base, "rows": rows}

    a = doc("a", "dense", [_row("window", diff=0.2), _row("outline", diff=0.1)])         # outline best
    b = doc("b", "dense", [_row("streaming", diff=0.1), _row("outline", diff=0.3)])
    c = doc("c", "dense", [_row("window", diff=0.2)])                                    # no outline
    b_vs = doc("b", "streaming", [_row("outline", baseline="streaming", diff=0.2)])        # worse
    a_vs = doc("a", "window", [_row("outline", baseline="window", diff=-0.01, significant=False)])  # null
    variant = doc("a", "outline_r0", [_row("outline", baseline="outline_r0", diff=0.05)])  # an ablation
    pooled = {**doc("p", "streaming", [_row("outline", baseline="streaming", diff=0.1)]), "pooled": ["a", "b"]}
    docs = [(a, Path("r/a/compare.json")), (b, Path("r/b/compare.json")), (c, Path("r/c/compare.json")),
            (b_vs, Path("r/b/compare_vs_streaming.json")), (a_vs, Path("r/a/compare_vs_window.json")),
            (variant, Path("r/a/compare_vs_outline_r0.json")), (pooled, Path("r/pooled/p.json"))]  # (counted in a, b)
    v = pattern_verdict(docs)
    assert v["experiments"] == "2" and v["best"] == ["a (outline)"]
    assert [(d["experiment"], d["baseline"], d["verdict"]) for d in v["direct"]] == [
        ("a", "window", "null"), ("b", "streaming", "worse")]
    assert v["counts"] == {"better": "0", "worse": "1", "null": "1"}
    assert pattern_verdict([(c, Path("r/c/compare.json"))]) is None


def test_fitted_patterns_are_reproduced_by_their_fit_command(tmp_path):
    """fit_commands: a fit record's own command, else the fit configuration whose ``out`` is the record;
    other JSON under fit/ (not a fit record) and records no configuration writes give nothing."""
    import json

    from spattern.report.numbers import fit_commands

    (tmp_path / "fit").mkdir()
    (tmp_path / "cfg").mkdir()
    (tmp_path / "fit" / "a.json").write_text(json.dumps({"fit": {}, "command": "spattern fit --docs 2"}))
    (tmp_path / "fit" / "b.json").write_text(json.dumps({"fit": {}}))
    (tmp_path / "fit" / "c.json").write_text(json.dumps({"fit": {}}))
    (tmp_path / "fit" / "notes.json").write_text(json.dumps({"other": 1}))
    (tmp_path / "cfg" / "fit_b.toml").write_text(f'model = "smollm2"\nout = "{tmp_path / "fit" / "b.json"}"\n')
    (tmp_path / "cfg" / "broken.toml").write_text("out = ")  # not a fit_*.toml: not read
    got = fit_commands(tmp_path, tmp_path / "cfg")
    assert got == ["spattern fit --docs 2", f"spattern fit --config {tmp_path / 'cfg' / 'fit_b.toml'}"]


def test_repeated_benchmark_runs_are_one_loop():
    """collapse_repeats: commands equal but for a repeat's number in their output file become one loop;
    a lone repeat, another command and a command naming two repeats stay as they are."""
    from spattern.report.numbers import collapse_repeats

    cmds = ["spattern bench attention --json raw/b_r1.json --iters 20", "spattern bench attention --json raw/b_r2.json --iters 20",
            "spattern bench attention --json raw/b_r3.json --iters 9", "python merge.py raw/b_r1.json raw/b_r2.json",
            "spattern run x.toml"]
    assert collapse_repeats(cmds) == [
        "for r in 1 2; do spattern bench attention --json raw/b_r$r.json --iters 20; done",
        "spattern bench attention --json raw/b_r3.json --iters 9", "python merge.py raw/b_r1.json raw/b_r2.json",
        "spattern run x.toml"]


def test_the_environment_table_names_cuda_and_cupy_of_gpu_results():
    """env_table: one row per machine and software, CUDA (torch's) and CuPy (any cupy-cudaXYx package) beside
    torch; a CPU result has neither; the revisions of one row are counted."""
    from pathlib import Path

    from spattern.report.tables import env_table

    gpu = {"name": "NVIDIA H200", "device": "cuda", "cuda": "13.0", "python": "3.12.3",
           "packages": {"torch": "2.11.0", "cupy-cuda13x": "14.2.0", "numpy": "2.5.2"}, "git": {"revision": "a" * 40}}
    cpu = {"device": "cpu", "python": "3.11.7", "packages": {"torch": "2.13.0+cpu", "numpy": "2.4.6"},
           "git": {"revision": "b" * 40, "dirty": True}}
    t = env_table([(gpu, Path("g/env.json")), (cpu, Path("c/env.json")), ({**gpu, "git": {"revision": "c" * 40}},
                                                                          Path("g2/env.json"))])
    assert t.columns == ["device", "Python", "torch", "CUDA", "CuPy", "numpy", "spattern", "git revision"]
    assert sorted(t.rows) == [["CPU", "3.11.7", "2.13.0+cpu", "–", "–", "2.4.6", "–", "b" * 10 + " (dirty)"],
                              ["NVIDIA H200", "3.12.3", "2.11.0", "13.0", "14.2.0", "2.5.2", "–", "2 revisions"]]


def test_hopper_numbers_are_per_gpu_and_name_the_gpu_of_each_missed_target():
    """The Hopper sentence's ranges are per GPU (each GPU's kernels and baselines are its own), a GPU without
    a value reads "–", and each missed target names its GPU, furthest from its target first."""
    from spattern.report.numbers import hopper_numbers

    def row(device, N, vs_cudnn, target, flex=None):
        return {"device": device, "N": N, "D": 128, "causal": False, "family": "lrs", "density": 0.5,
                "hopper_vs_mma_sync": 1.5, "hopper_vs_flex_native": flex, "hopper_vs_cudnn": vs_cudnn,
                "tflops_hopper": 400.0, "target_vs_cudnn": target}

    raw = [row("H100", 4096, 1.49, 1.5, flex=1.2), row("H100", 8192, 3.0, 2.5, flex=2.0), row("H200", 4096, 1.0, 1.5)]
    h = hopper_numbers(raw, raw[2:])
    assert [(d["device"], d["cells"], d["met"], d["n_targets"], d["in_table"]) for d in h["by_device"]] == \
        [("H100", "2", "1", "2", False), ("H200", "1", "0", "1", True)]
    assert h["by_device"][0]["vs_flex"] == {"min": "1.20x", "max": "2.00x"}
    assert h["by_device"][1]["vs_flex"] == {"min": "–", "max": "–"}  # no Flex time on that GPU
    assert [(m["device"], m["measured"]) for m in h["missed"]] == [("H200", "1.00x"), ("H100", "1.49x")]
    assert h["met"] == "1" and h["n_targets"] == "3" and h["missed_count"] == "2"


def test_runs_not_finished_are_named_with_how_far_they_got(tmp_path):
    """The report names the runs it leaves out: a config's runs (experiment.json's ``runs``) without a
    finished folder ("not started"), and a folder in progress ("stopped after k examples"), per experiment."""
    import json

    from spattern.report.data import load_study
    from spattern.report.numbers import unfinished_rows

    e = tmp_path / "results" / "x"
    names = ["dense-s0-0123456789", "window-s0-abcdef0123", "outline-s0-fedcba9876"]
    e.mkdir(parents=True)
    (e / "experiment.json").write_text(json.dumps({"experiment": "x", "kind": "evaluate", "baseline": "dense",
                                                   "runs": names}))
    for name, status in ((names[0], "finished"), (names[1], "running")):
        (e / name).mkdir()
        (e / name / "metrics.json").write_text(json.dumps({"experiment": "x", "run_id": name, "label": name[:-14],
                                                           "status": status, "metrics": {"nll": 1.0}}))
    # two examples so far, one of them written twice (a repeated trial): distinct ids count
    (e / names[1] / "per_example.jsonl").write_text('{"id": "a", "nll": 1.0}\n{"id": "b", "nll": 2.0}\n'
                                                     '{"id": "b", "nll": 2.0}\n')
    study = load_study([tmp_path / "results"])
    assert [r.dir.name for r in study.runs] == [names[0]]
    assert unfinished_rows(study) == [{"experiment": "x",
                                       "runs": "window-s0 (stopped after 2 examples), outline-s0 (not started)"}]

    def run(folder, run_id, status):
        (e / folder).mkdir(exist_ok=True)
        (e / folder / "metrics.json").write_text(json.dumps({"experiment": "x", "run_id": run_id, "status": status,
                                                             "metrics": {"nll": 1.0}}))

    # the config changed (a new id for outline): its run under the old id is finished and shown; window failed
    old = "outline-s0-0000000000"
    run(old, old, "finished")
    run(names[1], names[1], "failed")
    assert unfinished_rows(load_study([tmp_path / "results"])) == [
        {"experiment": "x", "runs": "window-s0 (status failed), outline-s0 (not run; an earlier version is shown)"}]
    # the old folder being adopted under the new id (grow.adopt: its metrics name the new run_id): one row
    run(old, names[2], "running")
    (e / old / "per_example.jsonl").write_text('{"id": "a"}\n')
    assert unfinished_rows(load_study([tmp_path / "results"]))[0]["runs"] == \
        "window-s0 (status failed), outline-s0 (stopped after 1 examples)"
    # two names that read alike keep their hashes
    (e / "experiment.json").write_text(json.dumps({"experiment": "x", "kind": "evaluate", "baseline": "dense",
                                                   "runs": ["w-s0-aaaaaaaaaa", "w-s0-bbbbbbbbbb"]}))
    assert unfinished_rows(load_study([tmp_path / "results"]))[0]["runs"].startswith(
        "w-s0-aaaaaaaaaa (not started), w-s0-bbbbbbbbbb (not started)")
    # one label's runs that got equally far read as one entry, their seeds as ranges
    (e / "experiment.json").write_text(json.dumps({"experiment": "x", "kind": "evaluate", "baseline": "dense",
                                                   "runs": [f"ast-s{k}-{k:010d}" for k in (0, 1, 2, 4, 5)]
                                                   + ["w-s0-aaaaaaaaaa"]}))
    assert unfinished_rows(load_study([tmp_path / "results"]))[0]["runs"].startswith(
        "ast seeds 0-2, 4-5 (not started), w-s0 (not started)")
    (e / old / "metrics.json").unlink()
    (e / names[1] / "metrics.json").write_text(json.dumps({"experiment": "x", "run_id": names[1], "status": "finished",
                                                           "metrics": {"nll": 1.0}}))
    (e / "experiment.json").write_text(json.dumps({"experiment": "x", "kind": "evaluate", "baseline": "dense"}))
    assert unfinished_rows(load_study([tmp_path / "results"])) == []  # an older record names no runs: nothing to say
    # two experiments whose unfinished runs read alike (a family added to both): one row names both
    e2 = tmp_path / "results" / "y"
    e2.mkdir()
    for d, h in ((e, 0), (e2, 1)):
        (d / "experiment.json").write_text(json.dumps({"experiment": d.name, "kind": "evaluate", "baseline": "dense",
                                                       "runs": [f"ast-s{k}-{k + h:010d}" for k in (0, 1, 2)]}))
    assert unfinished_rows(load_study([tmp_path / "results"])) == [{"experiment": "x, y",
                                                                    "runs": "ast seeds 0-2 (not started)"}]
    (e2 / "experiment.json").write_text(json.dumps({"experiment": "y", "kind": "evaluate", "baseline": "dense",
                                                    "runs": ["ast-s0-0000000001"]}))
    assert [r["experiment"] for r in unfinished_rows(load_study([tmp_path / "results"]))] == ["x", "y"]
    from spattern.report.html import _unfinished  # the HTML names them as the PDF does

    html = "".join(_unfinished({"unfinished": [{"experiment": "x", "runs": "w-s0 (status <failed>)"}]}))
    assert "Runs not finished" in html and "<li>x: w-s0 (status &lt;failed&gt;)</li>" in html
    assert _unfinished({}) == []
