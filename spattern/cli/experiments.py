"""``spattern run <config>``, ``spattern compare <results/experiment>`` and ``spattern pool <results/a> <results/b> ...``."""

from __future__ import annotations

from pathlib import Path


def cmd_run(args) -> int:
    from spattern.experiments.config import load_experiment
    from spattern.experiments.grow import describe, grown_from
    from spattern.experiments.runner import expand, run_experiment, select

    cfg = load_experiment(args.config, args.overrides)
    if args.list:
        for spec in select(expand(cfg), args.only, args.by_seed):
            state = "finished" if spec.dir.finished() else ("started" if spec.dir.metrics() else "new")
            grown = grown_from(spec) if cfg.kind == "evaluate" else None
            extra = f" (grows {grown[0].name}: adds {describe(grown[1])})" if grown else ""
            print(f"{spec.label:40s} seed {spec.seed:<3d} {'grows' if grown else state:9s} {spec.dir.path}{extra}")
        return 0
    run_experiment(cfg, only=args.only, by_seed=args.by_seed, runtime=args.runtime, jobs=args.jobs)
    if not args.no_compare:
        _print_compare(cfg.out_dir, cfg.baseline, cfg.compare.metrics, cfg.compare.test, None)
    if cfg.report and not args.no_report:
        from spattern.cli.report import build_and_print

        build_and_print([cfg.out_dir], args.report_out or cfg.out_dir / "report",
                        title=f"Sparse attention study: {cfg.name}", quiet=True)
    return 0


def _print_compare(folder, baseline, metrics, test, out, family="metric", only=None, write=True, also=None,
                   average=None) -> dict:
    from rich.console import Console

    from spattern.evaluation.compare import render_table, to_rows
    from spattern.experiments.results import compare_experiment

    table = compare_experiment(folder, baseline, metrics, test=test, out=out, family=family, only=only, write=write,
                               also=also, average=average)
    Console(width=160).print(render_table(to_rows(table), title=f"{Path(folder).name}: each run vs "
                                          f"{table['baseline']} (paired, Holm-corrected per {family})"))
    return table


def _averages(specs: list[str] | None) -> dict[str, list[str]] | None:
    """``--average NAME=L1,L2,...`` (repeated) as ``{NAME: [L1, L2, ...]}``."""
    from spattern.utils.errors import UserError

    out: dict[str, list[str]] = {}
    for spec in specs or []:
        name, sep, members = spec.partition("=")
        labels = members.split(",")
        if not sep or not name or name in out or not all(labels):
            raise UserError(f"--average: expected NAME=LABEL,LABEL,... with a new NAME each time, got {spec!r}")
        out[name] = labels
    return out or None


def cmd_compare(args) -> int:
    """Prints the table and writes it to ``--json``, else to ``<folder>/compare.json`` unless that file
    holds a comparison with other settings (the experiment's own, which ``spattern run`` and the report
    use): an exploratory ``--baseline`` or ``--metric`` never replaces it silently."""
    import json

    from spattern.experiments.results import comparison_settings
    from spattern.utils.io import write_json

    table = _print_compare(args.folder, args.baseline, args.metric, args.test, None, args.family, args.runs,
                           write=False, also=args.also, average=_averages(args.average))
    path = Path(args.json) if args.json else Path(args.folder) / "compare.json"
    if not args.json and path.is_file():
        try:
            kept = comparison_settings(json.loads(path.read_text()))
        except (ValueError, AttributeError):
            kept = None  # unreadable: replaced
        new = comparison_settings(table)
        if kept is not None and kept != new:
            diff = ", ".join(f"{k} {kept[k]} (now {new[k]})" for k in kept if kept[k] != new[k])
            print(f"not written: {path} holds a comparison with other settings ({diff}); "
                  f"pass --json FILE to keep this one")
            return 0
    write_json(path, table)
    print(f"wrote {path} ({len(table['rows'])} rows)")
    return 0


def cmd_pool(args) -> int:
    """Prints one line per (metric, run) with each experiment's mean difference, and writes the table."""
    from spattern.experiments.pooled import pool_experiments
    from spattern.report.tables import fmt_ci, fmt_p

    table = pool_experiments(args.folders, args.baseline, args.metric, args.runs, alpha=args.alpha, out=args.json,
                             name=args.name)
    for r in table["rows"]:
        each = ", ".join(f"{e} {s['diff']:+.4g} (n={s['n']})" for e, s in r["strata"].items())
        print(f"{r['metric']:<16} {r['run']} - {r['baseline']}: {fmt_ci(r['diff'], r['diff_ci_low'], r['diff_ci_high'])}"
              f"  p {fmt_p(r['p'])}  Holm p {fmt_p(r['p_holm'])}  [{each}]")
    if args.json:
        print(f"wrote {args.json} ({len(table['rows'])} rows)")
    return 0


def register(sub) -> None:
    r = sub.add_parser("run", help="run an experiment config: every run of its sweep into results/<name>/ "
                                   "(finished runs are skipped, interrupted ones resume)")
    r.add_argument("config", help="an experiment TOML, e.g. experiments/cpu_study.toml")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set setup.docs=4")
    r.add_argument("--runtime", action="append", default=[], metavar="KEY=VALUE",
                   help="train.device or train.max_seconds for the runs executed now, without changing their ids "
                        "(e.g. finish a GPU config's run on a CPU; its metrics.json records them and the device it trained on)")
    r.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train this many runs at once, each in its own process (small models that leave a GPU "
                        "mostly idle); each run's metrics.json records it, and the report labels their timings "
                        "'<device> xN' (a share of the device) and keeps them out of the PDF's training-cost rows")
    r.add_argument("--only", nargs="+", default=None, metavar="LABEL", help="run only these run labels")
    r.add_argument("--by-seed", action="store_true",
                   help="run seed by seed (every pattern of a seed before the next seed), so that a sweep stopped "
                        "early leaves complete sets paired by seed")
    r.add_argument("--list", action="store_true", help="list the runs (in the order they would run) and their "
                                                       "state, run nothing")
    r.add_argument("--no-compare", action="store_true", help="do not print the comparison table at the end")
    r.add_argument("--no-report", action="store_true", help="do not build the report even if the config asks")
    r.add_argument("--report-out", default=None, help="report folder (default results/<name>/report)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("compare", help="each run of an experiment against a baseline: means, CIs, paired "
                                       "differences, Holm-corrected p-values, effect sizes")
    c.add_argument("folder", help="results/<experiment>")
    c.add_argument("--baseline", default=None, help="the baseline run label (default: dense)")
    c.add_argument("--metric", nargs="+", default=None, help="metrics to compare (default: every one found)")
    c.add_argument("--test", choices=["wilcoxon", "permutation", "t"], default="wilcoxon",
                   help="paired test (default wilcoxon; t: the paired t-test, for a few seeds)")
    c.add_argument("--json", default=None, help="write the table here (default <folder>/compare.json, unless "
                                                "that holds a comparison with other settings)")
    c.add_argument("--family", choices=["metric", "all"], default="metric",
                   help="Holm family: the runs of each metric (default) or every (run, metric) comparison")
    c.add_argument("--runs", nargs="+", default=None, metavar="LABEL",
                   help="compare only these run labels with the baseline (the table lists the others as left out)")
    c.add_argument("--also", nargs="+", default=None, metavar="EXPERIMENT",
                   help="other experiments' folders beside FOLDER (their names) whose runs join the table as "
                        "EXPERIMENT:LABEL, when they scored the same data (e.g. another indexer warm-up)")
    c.add_argument("--average", nargs="+", default=None, metavar="NAME=LABEL,LABEL",
                   help="a run NAME whose value on each example is the mean of those runs' (e.g. an indexer's "
                        "warm-up seeds: the example stays the unit); usable as --baseline and in --runs")
    c.set_defaults(func=cmd_compare)

    p = sub.add_parser("pool", help="runs against a baseline pooled over experiments on different data (each "
                                    "a stratum, weighted equally): stratified bootstrap CI, sign-flip permutation "
                                    "test, Holm over the runs of each metric")
    p.add_argument("folders", nargs="+", help="two or more results/<experiment> folders (e.g. one per corpus)")
    p.add_argument("--baseline", required=True, help="the baseline run label, in every experiment")
    p.add_argument("--runs", nargs="+", required=True, metavar="LABEL", help="run labels to compare, in every experiment")
    p.add_argument("--metric", nargs="+", default=["nll"], help="metrics (default: nll)")
    p.add_argument("--alpha", type=float, default=0.05, help="level of the CIs and of Holm's rule (default 0.05)")
    p.add_argument("--name", default=None, help="the table's name (its 'experiment'; default: pooled)")
    p.add_argument("--json", default=None, help="write the table here (results/pooled/<name>.json: the report "
                                                "reads it, scripts/recompute_comparisons.py recomputes it)")
    p.set_defaults(func=cmd_pool)
