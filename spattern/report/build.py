"""``build_report(results_dirs, out_dir)``: figures, tables, numbers, the typst PDF, the HTML page
and the manifest, from ``results/`` only.

Out folder::

    figures/<name>.svg|png      one per figure (SVG in the PDF, PNG inlined in the HTML)
    tables/<name>.csv|json|typ  one per table
    data/numbers.json           every number the prose shows, formatted (and ``missing``)
    data/figures.json           figure index (file, caption, width) the typst source reads
    typst/*.typ, refs.bib       a copy of ``report/`` (the prose), compiled with the out folder as root
    report.pdf, report.html       the PDF and the one-page HTML
    slides.html                 the same figures and tables as full-screen slides (a presentation)
    manifest.json

Whatever cannot be built (no such results) is recorded as missing: a Python warning, a
``missing: <what>`` box in the PDF and the HTML, never an old number.
"""

from __future__ import annotations

import shutil
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from spattern.report import collect
from spattern.report import numbers as numbers_mod
from spattern.report import tables as T
from spattern.report.data import Study, load_study
from spattern.report.manifest import Manifest
from spattern.report.style import Palette, save_figure
from spattern.utils.io import atomic_write_bytes, write_json

# The typst sources: the repository's report/ (an editable install), else a copy shipped in the package.
SOURCE_DIRS = (Path(__file__).resolve().parents[2] / "report", Path(__file__).resolve().parent / "templates")
DATA_ERRORS = (ValueError, KeyError, TypeError, IndexError, ZeroDivisionError)
# the GPU whose Hopper cells the PDF's table shows (the project's GPU, on which the issues set the targets);
# every GPU's cells are in tables/kernels_hopper.csv and the HTML page
PDF_GPU = "H200"
COST_SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class _Builder:
    def __init__(self, study: Study, out: Path, formats: Sequence[str]):
        self.study, self.out, self.formats = study, out, tuple(formats)
        self.manifest = Manifest(study.roots, out)
        self.figs: dict[str, dict] = {}
        self.tables: dict[str, T.Table] = {}
        # one key per experiment that has it: the keys of many experiments take the most distinct colours
        keys = {(r.experiment, r.key) for r in study.runs} | {(c.experiment, c.key) for c in study.curves}
        self.palette = Palette(k for _, k in keys)

    def figure(self, name: str, make, inputs, caption: str, wide: bool, what: str, derived: str | None = None):
        """Build one figure; a ValueError (no data) or an empty input becomes a 'missing' record."""
        import matplotlib.pyplot as plt  # noqa: F401 - registers the backends savefig needs

        try:
            fig = make()
        except DATA_ERRORS as e:  # no data, or results of an unexpected shape: a placeholder, not a crash
            self.manifest.miss("figure", name, f"{what} ({type(e).__name__}: {e})")
            return
        paths = save_figure(fig, self.out / "figures" / name, self.formats)
        self.manifest.add("figure", name, inputs, paths, derived)
        self.figs[name] = {"file": f"figures/{name}.svg", "png": f"figures/{name}.png", "caption": caption,
                           "wide": wide}

    def table(self, make, name: str, what: str, derived: str | None = None):
        """Build one table (``make() -> Table | None``); None, no rows or bad data: 'missing'."""
        try:
            t = make()
        except DATA_ERRORS as e:
            self.manifest.miss("table", name, f"{what} ({type(e).__name__}: {e})")
            return
        if t is None or not t.rows:
            self.manifest.miss("table", name, what)
            return
        paths = T.write_table(t, self.out / "tables")
        self.manifest.add("table", t.name, t.sources, paths, derived)
        self.tables[t.name] = t


def build_report(results_dirs, out_dir, *, pdf: bool = True, html: bool = True,
                 formats: Sequence[str] = ("svg", "png"), source_dir: str | Path | None = None,
                 title: str = "Sparse attention patterns with spattern",
                 highlight: Sequence[str] = ()) -> dict[str, Path]:
    """Build the report from ``results_dirs`` (one path or several) into ``out_dir``; returns the
    written paths by name (``pdf``, ``html``, ``manifest``, ``numbers``, figures and tables).
    ``highlight``: pattern families (series keys such as ``"local+landmark"``) drawn first in the
    heatmap and cost figures; ``source_dir``: the typst sources (default: the repository's report/)."""
    from spattern.report.figures import (
        ablation_figure,
        cost_figure,
        cost_points,
        heatmap_figure,
        indexer_caption,
        indexer_figure,
        kernel_figure,
        quality_sweeps_figure,
        quality_matched_figure,
        single_density,
        synthetic_panels,
        training_panels,
    )
    from spattern.report.figures.kernels import select_cells, target_rows

    out = Path(out_dir)
    roots = [Path(d) for d in ([results_dirs] if isinstance(results_dirs, (str, Path)) else results_dirs)]
    for r in roots:  # the build folder is cleared below: it must never be (or hold) a results folder
        if r.exists() and (r.resolve() == out.resolve() or out.resolve() in r.resolve().parents):
            from spattern.utils.errors import UserError

            raise UserError(f"out: expected a folder that is not a results folder nor contains one, got {out} "
                            f"(results folder {r})")
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("figures", "tables", "data"):  # nothing stale survives from an earlier build
        shutil.rmtree(out / sub, ignore_errors=True)
    study = load_study(roots, exclude=[out])  # a report built inside a results folder is not a result
    formats = tuple(formats)
    if not html:  # the PNGs are only for the HTML page
        formats = tuple(f for f in formats if f != "png")
    if pdf and "svg" not in formats:  # the PDF includes the SVGs
        formats += ("svg",)
    if html and "png" not in formats:  # the HTML inlines the PNGs
        formats += ("png",)
    b = _Builder(study, out, formats)
    s = study

    # --- patterns: heatmaps and costs (compiled from the pattern strings the runs recorded) -------
    pats, pat_src, n_seq = collect.patterns_of(s, highlight=highlight)
    derived = "compiled from the runs' pattern strings with spattern.compile / spattern.cost"
    blk = collect.block_of(s)
    check_of = s.check_of()  # experiment -> the experiment it checks a setting of
    fams = sorted({r.key for r in s.runs if r.pattern and r.key not in ("dense", "causal")
                   and r.experiment not in check_of})
    b.figure("heatmap", lambda: heatmap_figure(pats, n_block=n_seq, block=blk, palette=b.palette), pat_src,
             f"{len(pats)} of the study's {len(fams)} pattern families ({', '.join(k for k, _ in pats)}; "
             f"{'outline in its own figure; ' if 'outline' in fams else ''}patterns that need a document or one "
             f"pattern per layer are not drawn), each from one of its runs at N = {n_seq}: its token mask at small "
             f"N (left of each pair, with its density) and its block layout at N = {n_seq} with blocks of {blk} "
             f"(right, with its block density).", True,
             "pattern heatmaps (no run records a static pattern)", derived)
    from spattern.report.figures.outline import outline_figure

    b.figure("outline", outline_figure, [], "Outline attention (spattern's pattern) on a piece of code and a piece "
             "of prose, one token per character: the window, the document's start, and the openings of the "
             "enclosing and recent lines; right of each, the blocks a kernel computes.", True,
             "outline attention illustration",
             "an illustration, not a result: fixed texts in spattern/report/figures/outline.py, compiled with "
             "spattern.compile from their outline trees")
    try:
        rows = cost_points(pats, sorted(set(COST_SIZES) | {n_seq}), block=blk, exact_at=(n_seq,)) if pats else []
    except DATA_ERRORS as e:  # a pattern the cost model cannot handle: the figure and table say so
        warnings.warn(f"report: cost of the study's patterns failed ({type(e).__name__}: {e})", stacklevel=2)
        rows = []
    b.figure("cost", lambda: cost_figure(rows, palette=b.palette), pat_src,
             "Attended pairs against sequence length: exact counts (markers) and closed forms (lines; dashed: "
             "upper bound), log-log.", False, "cost curves (no static pattern in the results)", derived)
    b.table(lambda: T.cost_table([r for r in rows if r["N"] == n_seq], pat_src) if rows else None, "cost",
            "cost table (no static pattern in the results)", derived)

    # --- kernels -----------------------------------------------------------------------------------
    cells_src = s.bench_cells()
    cells = [c for c, _ in cells_src]
    bench_src = sorted({p for _, p in cells_src})
    sel_f, sl_f = select_cells(cells, backward=False)
    sel_b, sl_b = select_cells(cells, backward=True)
    b.figure("kernels", lambda: kernel_figure(cells, backward=False), bench_src,
             "Forward attention: time against N, TFLOP/s against density at the N with the most densities timed, and speed-up over "
             "dense SDPA against density with the Project C targets (stars); the speed-up is the Hopper kernel's "
             "where a cell timed it (what auto runs on the H200), else the mma.sync kernel's. Each series is one "
             f"GPU's ({' and '.join(sorted({str(c.get('device')) for c in sel_f})) or 'none'}; where there are two, "
             "the second's markers are hollow and its dense lines marked x).", True,
             "forward kernel benchmark (no spattern bench attention results)")
    b.figure("kernels_backward", lambda: kernel_figure(cells, backward=True), bench_src,
             "Forward+backward attention: time, TFLOP/s and speed-up over dense SDPA, as in the forward figure.",
             True, "forward+backward kernel benchmark (no cells with backward = true)")
    desc = lambda sl, sel: f"{'forward+backward' if sl['backward'] else 'forward'}, head dim {sl['D']}, " \
                           f"{'causal' if sl['causal'] else 'non-causal'}, {sl['family']} layouts, " \
                           f"{' and '.join(sorted({str(c.get('device')) for c in sel}))}"
    b.table(lambda: T.kernel_table(sel_f, desc(sl_f, sel_f), bench_src) if sel_f else None, "kernels",
            "kernel benchmark table (no forward benchmark cells)")
    if sel_b:
        b.table(lambda: T.kernel_table(sel_b, desc(sl_b, sel_b), bench_src, name="kernels_backward"),
                "kernels_backward", "")
    hop = T.hopper_cells(cells)
    if hop:  # only benchmarks of the sm_90a kernel have it
        b.table(lambda: T.hopper_table(cells, bench_src), "kernels_hopper", "Hopper kernel benchmark")
        if len({(c.get("D"), c.get("device")) for c in hop}) > 1:  # the PDF's: D 128 on one GPU
            at128 = Counter(c.get("device") for c in T.hopper_cells(cells, head_dim=128))
            gpu = PDF_GPU if PDF_GPU in at128 else (at128.most_common(1)[0][0] if at128 else None)
            b.table(lambda: T.hopper_table(cells, bench_src, head_dim=128, device=gpu, name="kernels_hopper_main"),
                    "kernels_hopper_main", "Hopper kernel benchmark at head dim 128")
    mem = s.memory[-1] if s.memory else None  # the newest file (load order: sorted paths)
    b.table(lambda: T.memory_table(mem.data["memory"], [mem.path]) if mem else None, "memory",
            "memory kept per layout (no spattern bench memory results)")
    targets = target_rows(sel_f)
    b.table(lambda: T.target_table(targets, bench_src) if sel_f else None, "targets",
            "speed-up targets (no forward benchmark cells)")

    # --- quality -------------------------------------------------------------------------------------
    q_exps = collect.quality_experiments(s)
    q_points: dict[str, list[dict]] = {}
    q_src: dict[str, list] = {}
    for e in q_exps:
        q_points[e], q_src[e] = collect.collect_quality(s, e)
        b.table(lambda pts=q_points[e], e=e, src=q_src[e]: T.quality_table(pts, e, src), f"quality_{e}",
                f"quality table of {e}")
    # a check of one setting of another experiment (x_draws beside x): its tables, and one sentence
    checks = {e: parent for e in q_exps if (parent := collect.member_of(e, s.experiments(), check_of)) is not None}
    checks |= {e: parent for e, parent in check_of.items()  # a check of a trained experiment (its schedule, say)
               if e in s.experiments() and parent in s.experiments() and parent != e}
    matched = {e: q_points[e] for e in q_exps if single_density(q_points[e]) and e not in checks}
    sweeps = {e: q_points[e] for e in q_exps if e not in matched and e not in checks}
    if sweeps:  # density sweeps: one figure, a row each; experiments at one density: one figure together
        b.figure("quality_density", lambda: quality_sweeps_figure(sweeps, palette=b.palette),
                 [p for e in sweeps for p in q_src[e]],
                 f"Quality against density, one row per density sweep ({', '.join(sweeps)}): each pattern "
                 "family's value with its 95% CI band (passkey: the fraction of trials retrieved, where scored); "
                 "dense attention dashed.", True, "quality curves against density")
    if matched:
        b.figure("quality_matched", lambda: quality_matched_figure(matched, palette=b.palette),
                 [p for e in matched for p in q_src[e]],
                 "Quality at one matched density, one row per experiment: KL to dense, top-1 agreement and "
                 "dense attention mass kept of each pattern family with its 95% CI; dense, not drawn, is the "
                 "reference (0, 1 and 1 by definition).",
                 True, "quality at matched density")
    shown_q = [e for e in q_exps if e not in checks]
    b.table(lambda: T.quality_summary_table([numbers_mod.quality_row(e, q_points[e]) for e in shown_q],
                                            [p for e in shown_q for p in q_src[e]]) if shown_q else None,
            "quality_summary", "quality at each experiment's lowest cost")
    if not q_exps:
        b.manifest.miss("figure", "quality", "quality vs density (no run compares against dense with KL, "
                        "top-1 agreement or recall)")

    # --- synthetic tasks, training, ablations, indexer ------------------------------------------------
    syn_points: dict[str, tuple[list[dict], str]] = {}
    syn_srcs: list[Path] = []
    for e in collect.synthetic_experiments(s):
        syn, syn_src, xname = collect.collect_synthetic(s, e)
        syn_points[e] = (syn, xname)
        syn_srcs += syn_src
    pairs = {e: v for e, v in collect.collect_mqar_pairs(s).items() if e not in checks}  # MQAR accuracy
    # against the number of key-value pairs (a check's runs: its sentence and the tables)
    syn_srcs += [p for _, src in pairs.values() for p in src]
    # the figure and the retrieval sentence: one panel per experiment; the members of another (a density
    # sweep's x_d50, x_d12 in its passkey panel; a check such as x_draws) have none: the table keeps them
    experiments = s.experiments()
    syn_shown = {e: v for e, v in syn_points.items() if collect.member_of(e, experiments, check_of) is None}
    if syn_points:  # one figure, one panel per experiment, then MQAR's by number of pairs
        panels = {e: (pts, f"{x} (tokens)" if x == "distance" else x) for e, (pts, x) in syn_shown.items()}
        panels.update({f"{e}: by pairs": (pts, "key-value pairs") for e, (pts, _) in pairs.items()})
        b.figure("synthetic", lambda: synthetic_panels(panels, palette=b.palette), syn_srcs,
                 "Long-range retrieval, one panel per experiment: accuracy against the distance between key and "
                 "query (or the passkey's depth), mean over seeds (or examples) with 95% CI"
                 + ("; MQAR's also against the number of key-value pairs in the sequence." if pairs else "."), True,
                 "synthetic-task accuracy")
        rows = [(e, pts, x) for e, (pts, x) in syn_points.items()] + [(e, pts, "pairs") for e, (pts, _) in pairs.items()]
        b.table(lambda: T.synthetic_table(rows, syn_srcs), "synthetic",  # CSV and HTML (no room in the PDF)
                "synthetic-task accuracy table")
    else:
        b.manifest.miss("figure", "synthetic", "synthetic-task accuracy (no per-example distance/depth with "
                        "correct/accuracy values)")
    curves_by: dict[str, list] = {}
    train_src: list = []
    for e in collect.training_experiments(s):
        if e in checks:  # a check's curves: in the CSV of its runs, not a panel of the figure
            continue
        curves, cur_src, _ = collect.training_curves(s, e)
        curves_by[e] = curves
        train_src += cur_src
    snap, idx_curves, idx_src = collect.collect_indexer(s)
    # the indexer's recall over training: a panel of the training figure unless a snapshot (its scores and
    # selections) makes it a figure of its own
    # (short title: 7 panels a row); one series per experiment where several logged it (their settings differ)
    if len({c.experiment for c in idx_curves}) > 1:
        idx_curves = [replace(c, key=f"{c.key}: {str(c.experiment).removeprefix('study_')}") if c.experiment else c
                      for c in idx_curves]
    recall = {"recall": (idx_curves, "indexer_mass_recall")} if idx_curves and snap is None else {}
    if curves_by:
        b.figure("training", lambda: training_panels(curves_by, palette=b.palette, extra=recall),
                 train_src + (idx_src if recall else []),
                 "Validation loss (nats per token) against training step, one panel per training experiment (the training "
                 "loss where no validation was logged): mean over seeds, band from the lowest to the highest "
                 "seed" + ("; last panel: the top-k indexer's recall of dense attention mass over training "
                           "(mean over seeds, band = range)." if recall else "."), True, "training curves")
        if recall and "training" in b.figs:  # the PDF and the HTML then place no indexer figure of its own
            b.figs["training"]["indexer_panel"] = True
    else:
        b.manifest.miss("figure", "training", "training curves (no training metrics.jsonl)")
    t_rows, t_src = collect.collect_training_cost(s, exclude=list(checks))  # a check repeats its parent's model
    b.table(lambda: T.training_table(t_rows, t_src) if t_rows else None, "training_cost",
            "training cost table (no run with tokens_per_s)")
    for e, (items, f_src) in collect.collect_file_losses(s).items():  # CSV and HTML (no room in the PDF)
        b.table(lambda items=items, e=e, src=f_src: T.file_loss_table(items, e, src), f"file_loss_{e}",
                f"validation loss per file of {e}")
    abl, abl_src = collect.collect_ablation(s, hidden=set(checks))  # a check of an ablation: tables
    b.figure("ablation", lambda: ablation_figure(abl, palette=b.palette), abl_src,
             "Ablations: one parameter varied at a time, the rest fixed (95% CI over documents; the paired tests "
             "are in the significance table). A block-size ablation is drawn against the experiment that runs the "
             "same patterns at another block size, on the documents both scored.", False,
             "ablations (no experiment named ablation*)")
    if not b.figs.get("training", {}).get("indexer_panel"):
        b.figure("indexer", lambda: indexer_figure(snap, idx_curves, palette=b.palette), idx_src,
                 indexer_caption(snap, idx_curves), snap is not None,
                 "top-k indexer results (no snapshot and no indexer recall logged)")

    # --- tables from other results -------------------------------------------------------------------
    sig_docs = [(f.data, f.path) for f in s.significance]
    b.table(lambda: T.significance_table(sig_docs) if sig_docs else None, "significance",
            "significance table (no spattern compare --json output)")
    # the PDF's table: each experiment's own comparison (compare.json, against its config's baseline);
    # further comparisons of an experiment (compare_vs_<run>.json) are in the headline table and the CSV
    own = {p.parent for _, p in sig_docs if p.name == "compare.json"}
    primary_docs = [(d, p) for d, p in sig_docs if p.name == "compare.json" or p.parent not in own]
    b.table(lambda: T.significance_table(primary_docs, T.PRIMARY_METRICS, "significance_primary") if sig_docs else None,
            "significance_primary", "significance table of the primary metrics (no spattern compare --json output)")
    heads = [(h, f.path) for f in s.significance  # a check's comparisons have their own sentence
             if f.path.parent.name not in checks and (h := numbers_mod.headline(f.data))]
    b.table(lambda: T.headline_table(heads) if heads else None, "headline",
            "headline comparisons (no spattern compare --json output)")
    b.table(lambda: T.env_table(s.envs()) if s.envs() else None, "environment", "environment (no env.json)")
    q_checks = {e: p for e, p in checks.items() if e in q_exps}  # (a trained check: the MQAR sentence, its tables)
    check_docs = {e: [(f.data, f.path) for f in s.significance if f.path.parent.name == e] for e in q_checks}
    check_rows = [r for e, p in q_checks.items() if (r := numbers_mod.check_row(e, p, check_docs[e])) is not None]
    if q_checks:  # (no check experiment: no table, nothing missing)
        b.table(lambda: T.checks_table(check_rows, [p for d in check_docs.values() for _, p in d]) if check_rows else None,
                "checks", "check experiments (no spattern compare --json output)")

    # --- numbers, figure index, typst, html, manifest -------------------------------------------------
    # the check sentences: the quality checks' (a trained check, such as MQAR's schedules, is summed up by
    # the MQAR sentence, numbers.mqar_learnt, and keeps its tables)
    nums = numbers_mod.numbers(s, b, targets, sl_f, {e: v for e, v in q_points.items() if e not in checks},
                               syn_shown, abl, out, title, checks=q_checks,
                               hidden=set(checks))
    num_inputs = [p for r in s.runs for p in r.sources] + [f.path for f in s.topk + s.significance + s.bench
                                                           + s.compile_bench + s.meta]
    # the runs not finished, which the sentence on them names (numbers.unfinished_rows)
    num_inputs += [p for d, _ in s.unfinished for p in (d / "metrics.json", d / "per_example.jsonl") if p.is_file()]
    paths: dict[str, Path] = {"numbers": write_json(out / "data" / "numbers.json", nums),
                              "figures_index": write_json(out / "data" / "figures.json", b.figs)}
    b.manifest.add("data", "numbers.json", num_inputs, [paths["numbers"]],
                   "counts, environment and commands of every run; the headline values of the tables above")
    tab_index = {name: {"file": f"tables/{name}.json"} for name in b.tables}
    paths["tables_index"] = write_json(out / "data" / "tables.json", tab_index)
    if pdf:
        src = Path(source_dir) if source_dir else next((d for d in SOURCE_DIRS if (d / "main.typ").exists()),
                                                        SOURCE_DIRS[0])
        paths["pdf"] = _compile_pdf(out, src)
        b.manifest.add("document", "report.pdf", [], [paths["pdf"]], "typst sources of report/ and the files above")
    if html:
        from spattern.report.html import build_html

        paths["html"] = build_html(out, nums, b.figs, b.tables)
        b.manifest.add("document", "report.html", [], [paths["html"]], "figures (PNG) and tables above")
        from spattern.report.slides import build_slides

        paths["slides"] = build_slides(out, nums, b.figs, b.tables)
        b.manifest.add("document", "slides.html", [], [paths["slides"]], "figures (PNG) and tables above")
    paths["manifest"] = b.manifest.write({"build_seconds_note": "not recorded (keeps the manifest reproducible)"})
    for name, f in b.figs.items():
        paths[f"figure:{name}"] = out / f["file"]
    for name in b.tables:
        paths[f"table:{name}"] = out / "tables" / f"{name}.json"
    return paths


def _compile_pdf(out: Path, source_dir: Path) -> Path:
    import typst

    if not (source_dir / "main.typ").exists():
        from spattern.utils.errors import UserError

        raise UserError(f"report sources: expected {source_dir}/main.typ (the report/ folder of the repository; "
                        "install with pip install -e . or pass source_dir)")
    dst = out / "typst"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for p in sorted(source_dir.iterdir()):
        if p.is_file() and p.suffix in (".typ", ".bib", ".yml", ".csl"):
            shutil.copy2(p, dst / p.name)
    with warnings.catch_warnings():
        data = typst.compile(str(dst / "main.typ"), root=str(out), ignore_system_fonts=True)
    return atomic_write_bytes(out / "report.pdf", data)
