"""Each figure function on small synthetic results: it renders, draws the expected series, labels its axes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from spattern.report import collect, tables
from spattern.report.data import family, load_study, mean_ci
from spattern.report.style import CYCLE, Palette


@pytest.fixture(scope="module")
def study(study_root):
    return load_study([study_root])


def rendered(fig) -> Figure:
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.tell() > 1000
    # a y label may be given once a row (panels of one quantity side by side): an axes without one needs a
    # labelled axes in its row of the same figure (or subfigure)
    drawn = [ax for ax in fig.axes if ax.get_visible() and (ax.lines or ax.images or ax.collections)]
    row = lambda ax: (id(ax.get_figure()), round(ax.get_position().y0, 2))  # noqa: E731
    labelled_rows = {row(ax) for ax in drawn if ax.get_ylabel()}
    # an x label may be given once a column, under its last row (rows of one quantity stacked): an axes
    # without one needs a labelled axes below it in its column (on the rendered page, subfigures included)
    # (a column: the same place from the left among its row's panels, empty panels counted)
    box = {id(ax): ax.get_window_extent() for ax in fig.axes}
    place = {id(ax): sum(row(b) == row(ax) and box[id(b)].x0 < box[id(ax)].x0 for b in fig.axes) for ax in fig.axes}
    below = lambda a, b: place[id(a)] == place[id(b)] and box[id(b)].y1 < box[id(a)].y0  # noqa: E731
    for ax in drawn:  # a drawn panel below carries the label it leaves out (the lowest of a column of three)
        assert ax.get_xlabel() or any(b.get_xlabel() for b in drawn if below(ax, b)), \
            f"no x label in its column: {ax.get_title()!r}"
        assert ax.get_ylabel() or row(ax) in labelled_rows, f"no y label in its row: {ax.get_title()!r}"
    return fig


def legend_labels(fig) -> set[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return {t.get_text() for leg in legends for t in leg.get_texts()}


def test_family_keys_and_palette():
    assert family("(local(512) | landmark(every=2048) | sink(64)) & causal") == "local+landmark+sink"
    assert family(None) == family("dense") == "dense"
    pal = Palette(["local", "strided", "dense"])
    assert pal("dense") == "#000000" and pal("local") != pal("strided")
    assert Palette(["strided", "local"])("local") == pal("local")  # order of discovery does not matter
    many = [f"k{i:02d}" for i in range(25)]  # as many keys as the cycle has colours: none shares one
    assert len({Palette(many)(k) for k in many}) == 25
    freq = Palette(["rare", "window", "window", "streaming", "streaming", "streaming"])
    assert [freq(k) for k in ("streaming", "window", "rare")] == list(CYCLE[:3])  # most frequent first


def test_mean_ci_t_interval():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo < 2.0 < hi and abs((hi - m) - (m - lo)) < 1e-12
    assert mean_ci([1.0])[1] != mean_ci([1.0])[1]  # NaN: no interval from one value


def test_heatmap_and_cost(study):
    from spattern.report.figures import cost_figure, cost_points, heatmap_figure

    assert collect.block_of(study) == 32  # setup.block of the runs' config.toml
    pats, sources, n = collect.patterns_of(study)
    assert [k for k, _ in pats] == ["local", "local+landmark", "local+sink"] and n == 2048 and sources
    assert [k for k, _ in collect.patterns_of(study, highlight=["local+sink"], limit=2)[0]] == ["local+sink", "local"]
    fig = rendered(heatmap_figure(pats[:2], n_token=128, n_block=512, block=32))
    assert len(fig.axes) == 4 and all(ax.images for ax in fig.axes)
    assert "density" in fig.axes[0].get_title() and "block density" in fig.axes[1].get_title()
    assert [t.get_text() for t in (s._suptitle for s in fig.subfigs)] == ["local", "local+landmark"]
    rows = cost_points(pats[:2], [256, 512, 8192], exact_max=512)
    assert [r["pairs"] is None for r in rows] == [False, False, True] * 2
    local = [r for r in rows if r["key"] == "local"]
    assert local[0]["pairs_exact"] and local[0]["pairs"] == local[0]["pairs_closed"]
    fig = rendered(cost_figure(rows))
    assert {"local exact", "local closed form"} <= legend_labels(fig)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"


def test_kernel_figure_marks_the_targets(study):
    from spattern.report.figures import kernel_figure
    from spattern.report.figures.kernels import TARGETS, select_cells, target_rows

    cells = [c for c, _ in study.bench_cells()]
    for backward in (False, True):
        fig = rendered(kernel_figure(cells, backward=backward))
        assert len(fig.axes) == 3
        stars = [ln for ln in fig.axes[2].lines if ln.get_marker() == "*"]
        assert len(stars) == len(TARGETS)
        assert {"density 50%", "spattern mma.sync", "FlexAttention", "SDPA flash (dense)"} <= legend_labels(fig)
        assert not [lb for lb in legend_labels(fig) if "filled" in lb or "hollow" in lb]  # one GPU: no fill key
    assert {c["family"] for c in cells} == {"band+landmark", "lrs"}  # the benchmark's band_landmark, one name across files
    assert sum(c["backward"] for c in cells) == len(cells) / 2  # from pass_ == "fwd+bwd"
    sel, sl = select_cells(cells)
    assert sl == {"D": 128, "causal": False, "backward": False, "family": "band+landmark"}
    assert len(sel) == 12 and select_cells(cells, family="lrs")[1]["family"] == "lrs"
    rows = target_rows(sel)
    assert all(r["cell"] is not None and r["vs_sdpa_flash"] > 0 for r in rows)
    with pytest.raises(ValueError):
        kernel_figure([c for c in cells if not c.get("backward")], backward=True)


def test_quality_figure_has_bands_per_family(study):
    from spattern.report.figures import quality_figure

    assert collect.quality_experiments(study) == ["quality"]
    pts, src = collect.collect_quality(study, "quality")
    assert any(p.name == "per_example.jsonl" for p in src)
    ppl = [p for p in pts if p["metric"] == "ppl" and p["key"] != "dense"]
    assert ppl and all(p["lo"] < p["value"] < p["hi"] for p in ppl)
    fig = rendered(quality_figure(pts))
    assert len(fig.axes) == 4
    assert {"dense", "local", "local+landmark", "local+sink"} <= legend_labels(fig)
    assert all(ax.collections for ax in fig.axes)  # the CI bands


def test_matched_density_experiments_share_one_dot_plot():
    from spattern.report.figures import quality_matched_figure, single_density

    def pt(key, d, m, v):
        return {"key": key, "density": d, "metric": m, "value": v, "lo": v * 0.9, "hi": v * 1.1}

    a = [pt("dense", 1.0, "kl", 0.0), pt("causal", 0.5, "kl", 1e-9), pt("window", 0.09, "kl", 0.6),
         pt("streaming", 0.12, "kl", 0.1), pt("window", 0.09, "recall", 0.5), pt("streaming", 0.12, "recall", 0.8)]
    sweep = [pt("window", 0.06, "kl", 1.0), pt("window", 0.25, "kl", 0.3)]
    assert single_density(a) and not single_density(sweep)
    fig = rendered(quality_matched_figure({"study_a": a, "study_b": [p for p in a if p["key"] != "window"]}))
    assert [ax.get_xlabel() for ax in fig.axes] == ["KL(dense || sparse) (nats)", "dense attention mass kept"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b"]
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"window", "streaming"}  # no references
    with pytest.raises(ValueError):
        quality_matched_figure({"x": [pt("dense", 1.0, "kl", 0.0)]})


def test_synthetic_training_ablation_indexer(study):
    from spattern.report.figures import (
        ablation_figure,
        indexer_figure,
        synthetic_figure,
        synthetic_panels,
        training_panels,
    )

    assert collect.synthetic_experiments(study) == ["mqar", "quality"]
    syn, _, xname = collect.collect_synthetic(study, "mqar")
    assert xname == "distance" and {p["n_runs"] for p in syn} == {3}
    assert all("distance_to" not in p for p in syn)  # a dozen distances or fewer: each its own x
    fig = rendered(synthetic_figure(syn))
    assert {"dense", "local", "local+landmark"} == legend_labels(fig)
    quality = collect.collect_synthetic(study, "quality")
    fig = rendered(synthetic_panels({"mqar": (syn, "distance"), "quality": (quality[0], quality[2])}))
    assert [ax.get_title() for ax in fig.axes] == ["mqar", "quality"]
    three = {"a": (syn, "distance"), "b": (syn, "distance"), "c": (syn, "pairs")}  # two a row: a above c
    fig = rendered(synthetic_panels(three, per_row=2))
    assert [ax.get_xlabel() for ax in fig.axes] == ["distance", "distance", "pairs"]
    fig = rendered(synthetic_panels({"a": (syn, "distance"), "b": (syn, "distance"), "c": (syn, "distance")}, per_row=2))
    assert [ax.get_xlabel() for ax in fig.axes] == ["", "distance", "distance"]  # once, below
    assert {t.get_text() for t in fig.legends[0].get_texts()} >= {"dense", "local", "local+landmark"}
    for n, grid in ((12, (2, 6)), (13, (2, 7)), (15, (3, 5)), (3, (1, 3))):  # the fewest rows of <= 7, even
        fig = rendered(synthetic_panels({f"p{i}": (syn, "distance") for i in range(n)}))
        assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == grid, (n, grid)
    pairs = collect.collect_mqar_pairs(study)  # accuracy by number of key-value pairs, over the 3 seeds
    assert list(pairs) == ["mqar"]
    pts = {(p["key"], p["distance"]): p for p in pairs["mqar"][0]}
    assert set(pts) == {(k, n) for k in ("dense", "local", "local+landmark") for n in (2.0, 8.0)}
    assert pts[("dense", 2.0)]["n_runs"] == 3 and abs(pts[("dense", 2.0)]["value"] - 1.0) < 1e-9  # capped at 1
    assert abs(pts[("local", 8.0)]["value"] - (0.6 * 2 / 8 ** 0.5 + 0.01)) < 1e-9  # mean of seeds 0, 1, 2
    assert pts[("local", 8.0)]["lo"] < pts[("local", 8.0)]["value"] < pts[("local", 8.0)]["hi"]

    curves, _, exp = collect.training_curves(study)
    assert exp == "train_code" and len(curves) == 9
    fig = rendered(training_panels({exp: curves, "other": curves[:3]}))
    # one legend for the figure, below the panels (a legend per panel covered the curves); each panel's
    # title says how many runs are behind its series
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"dense", "local", "local+landmark"}
    first3 = {c.key for c in curves[:3]}
    assert [ax.get_title() for ax in fig.axes] == [f"{exp}\n(3 seeds)", f"other\n({'3 seeds' if len(first3) == 1 else '1 run'})"]
    # one quantity in the row: its y label on the first panel only
    assert [ax.get_ylabel() for ax in fig.axes] == ["val. loss (nats)", ""]
    with pytest.raises(ValueError):
        training_panels({exp: []})

    abl, _ = collect.collect_ablation(study)
    assert {p["param"] for p in abl} == {"window"} and len(abl) == 4
    fig = rendered(ablation_figure(abl))
    assert fig.axes[0].get_xlabel() == "window"

    snap, icurves, _ = collect.collect_indexer(study)
    fig = rendered(indexer_figure(snap, icurves))
    assert sum(bool(ax.images) for ax in fig.axes) == 6  # 2 heads x (scores, selection, attention)
    assert "topk (3 seeds)" in legend_labels(fig)
    rendered(indexer_figure(None, icurves))  # recall only
    # without a snapshot the recall is the training figure's last panel; an extra without the field is skipped
    fig = rendered(training_panels({exp: curves}, extra={"indexer recall": (icurves, "indexer_mass_recall"),
                                                         "nothing": (curves, "indexer_mass_recall")}))
    assert [ax.get_title().split("\n(")[0] for ax in fig.axes] == [exp, "indexer recall"]
    assert fig.axes[1].get_ylabel() == "dense mass\nrecalled" and fig.axes[1].get_ylim() == (0.0, 1.02)
    assert "topk" in {t.get_text() for t in fig.legends[0].get_texts()}
    # one pattern's recall in two experiments ("<pattern>: <experiment>"): the pattern's colour, a line
    # style each
    from dataclasses import replace

    from spattern.report.figures.training import series_style
    from spattern.report.style import Palette

    two = [replace(c, key=f"{c.key}: a") for c in icurves] + [replace(c, key=f"{c.key}: b") for c in icurves]
    pal = Palette(["topk", "local"])
    fig = rendered(training_panels({exp: curves}, palette=pal, extra={"recall": (two, "indexer_mass_recall")}))
    lines = {ln.get_label(): ln for ln in fig.axes[1].lines}
    assert {lab: (ln.get_color(), ln.get_linestyle()) for lab, ln in lines.items()} == {
        "topk: a": (pal("topk"), "-"), "topk: b": (pal("topk"), "--")}
    assert series_style("local", ["local", "topk: a"], pal) == (pal("local"), "-")
    with pytest.raises(ValueError):
        indexer_figure(None, [])
    from spattern.report.figures import indexer_caption  # the caption names only what is drawn
    both, recall, heads = indexer_caption(snap, icurves), indexer_caption(None, icurves), indexer_caption(snap, [])
    assert "raw index scores" in both and "recall" in both
    assert "raw index scores" not in recall and "recall" in recall
    assert "raw index scores" in heads and "recall" not in heads


def test_loose_training_curves_like_train_h100(tmp_path):
    import json

    d = tmp_path / "results" / "train_x"
    d.mkdir(parents=True)
    (d / "a_run.json").write_text(json.dumps({"config": {"model": {"pattern": "local(64) & causal"}}, "seed": 0}))
    (d / "a_metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 5.0 / s}) + "\n" for s in (1, 2, 3)))
    s = load_study([tmp_path / "results"])
    assert len(s.curves) == 1 and s.curves[0].key == "local" and len(s.curves[0].sources) == 2


def test_bench_cells_take_backward_from_the_cell_or_the_file(tmp_path):
    import json

    r = tmp_path / "results"
    r.mkdir()
    cell = {"N": 4096, "D": 64, "density_target": 0.5, "density": 0.5, "ms": {"spattern": 1.0}}
    (r / "a.json").write_text(json.dumps({"results": [{**cell, "backward": True}]}))
    (r / "b.json").write_text(json.dumps({"config": {"backward": True}, "results": [{**cell, "D": 128}]}))
    (r / "c.json").write_text(json.dumps({"results": [{**cell, "D": 32}]}))
    got = {c["D"]: c["backward"] for c, _ in load_study([r]).bench_cells()}
    assert got == {64: True, 128: True, 32: False}
    (r / "x" / "superseded").mkdir(parents=True)  # kept as evidence, not read by the report
    (r / "x" / "superseded" / "d.json").write_text(json.dumps({"results": [{**cell, "D": 16}]}))
    assert 16 not in {c["D"] for c, _ in load_study([r]).bench_cells()}


def test_bench_cells_of_two_gpus_stay_apart_and_are_named(tmp_path):
    """The same (N, D, density) timed on an H100 (mma.sync only) and on an H200 (with the Hopper kernel):
    both cells are kept with their GPU, a target is judged on the H200's Hopper kernel, the table has a
    GPU column, and every series of the figure names its GPU."""
    import json

    from spattern.report.figures import kernel_figure
    from spattern.report.figures.kernels import select_cells, target_rows
    from spattern.report.tables import kernel_table, target_table

    r = tmp_path / "results"
    r.mkdir()
    ms = {"sdpa_flash": 0.4, "sdpa_cudnn": 0.2, "spattern": 0.3}
    cell = {"N": 4096, "D": 128, "causal": False, "family": "lrs", "density_target": 0.5, "density": 0.5}
    (r / "h100.json").write_text(json.dumps({"env": {"device": "NVIDIA H100 80GB HBM3"},
                                             "results": [{**cell, "ms": ms}, {**cell, "N": 8192, "ms": ms}]}))
    (r / "h200.json").write_text(json.dumps({"env": {"device": "cuda", "name": "NVIDIA H200"},
                                             "results": [{**cell, "ms": {**ms, "spattern_hopper": 0.125}}]}))
    cells = [c for c, _ in load_study([r]).bench_cells()]
    assert sorted((c["device"], c["N"]) for c in cells) == [("H100", 4096), ("H100", 8192), ("H200", 4096)]
    sel, _ = select_cells(cells)
    t = next(t for t in target_rows(sel) if t["N"] == 4096)
    assert (t["kernel"], t["device"], t["vs_sdpa_cudnn"]) == ("Hopper", "H200", 1.6)
    assert target_table([t], []).rows[0][3] == "Hopper (H200)"
    table = kernel_table(sel, "slice", [])
    assert table.columns[0] == "GPU" and [row[0] for row in table.rows] == ["H100", "H200", "H100"]
    fig = rendered(kernel_figure(cells))
    assert {"H100 (filled)", "H200 (hollow; dense: x)", "spattern Hopper", "density 50%"} <= legend_labels(fig)
    series = [ln.get_label() for ln in fig.axes[0].lines]  # each drawn series names its GPU
    assert {"spattern mma.sync 50% (H100)", "spattern mma.sync 50% (H200)", "spattern Hopper 50% (H200)"} <= set(series)
    assert all("(H100)" in lb or "(H200)" in lb for lb in series)


def test_a_density_sweep_is_one_quality_figure():
    """Experiments x, x_d50, x_d12 (one target density each) are one group: one point per family
    and density, dense once (the members score the same documents)."""
    from spattern.report.data import Run, Study

    def run(exp, label, bd, kl):
        return Run(dir=Path("."), experiment=exp, run_id=f"{exp}-{label}", label=label, pattern=None,
                   params={"measure": "block_density"}, status="finished",
                   metrics={"block_density": bd, "kl": kl, "density": bd / 2, "passkey_correct": min(1.0, 2 * bd)},
                   timings={}, env=None, sources=[])

    study = Study(roots=[])
    for exp, bd in (("x", 0.125), ("x_d50", 0.25), ("x_d12", 0.0625)):
        study.runs += [run(exp, "dense", 1.0, 0.0), run(exp, "window", bd, 0.5 - bd)]
    study.runs.append(run("y_ablation", "window", 0.1, 0.3))
    assert collect.density_group("x_d50") == "x" and collect.density_group("x_d50b") == "x_d50b"
    assert collect.member_of("x_d50", ["x", "x_d50"]) == "x" and collect.member_of("x", ["x", "x_d50"]) is None
    assert collect.member_of("x_d50", ["x_d50"]) is None  # alone, it is no sweep's member: a panel of its own
    assert collect.member_of("x_8k", ["x", "x_8k"]) is None  # another context is its own experiment
    checks = {"x_draws": "x"}  # declared by the config (check_of), not guessed from the name
    assert collect.member_of("x_draws", ["x", "x_draws"], checks) == "x"
    assert collect.member_of("x_draws", ["x_draws"], checks) is None
    assert collect.quality_experiments(study) == ["x"]
    pts, _ = collect.collect_quality(study, "x")
    kl = sorted((p["key"], p["density"], p["value"]) for p in pts if p["metric"] == "kl")
    assert kl == [("dense", 1.0, 0.0), ("window", 0.0625, 0.4375), ("window", 0.125, 0.375), ("window", 0.25, 0.25)]
    passkey = sorted((p["density"], p["value"]) for p in pts if p["metric"] == "passkey_correct" and p["key"] != "dense")
    assert passkey == [(0.0625, 0.125), (0.125, 0.25), (0.25, 0.5)]  # passkey against density beside the quality
    from spattern.report.figures import quality_figure

    fig = rendered(quality_figure(pts))
    assert [ax.get_ylabel() for ax in fig.axes] == ["KL(dense || sparse) (nats)", "passkey retrieved (fraction)"]


def test_density_sweeps_share_one_figure_a_row_each():
    """Two sweeps: one row each, named; the same metric in the same column (an absent metric leaves its
    panel empty); one legend for every family of both."""
    from spattern.report.figures import quality_sweeps_figure

    def pts(keys, metrics, dens=(0.0625, 0.125, 0.25)):
        return [dict(key=k, density=d, metric=m, value=0.5 - d if k != "dense" else 0.1, lo=0.3 - d, hi=0.6 - d,
                     measure="block_density") for k in keys for d in (dens if k != "dense" else (1.0,)) for m in metrics]

    groups = {"study_a": pts(["dense", "window", "outline"], ["ppl", "kl", "passkey_correct"]),
              "study_b": pts(["dense", "window", "streaming"], ["ppl", "kl"])}
    fig = rendered(quality_sweeps_figure(groups))
    axes = [ax for ax in fig.axes]
    assert len(axes) == 6
    assert [sf._suptitle.get_text() for sf in fig.subfigs] == ["a", "b"]  # each row named by its experiment
    assert [ax.get_ylabel() for ax in axes[:3]] == ["perplexity", "KL to dense (nats)", "passkey retrieved"]
    assert not axes[5].axison  # study_b scored no passkey
    # the rows share their x label: it is written once a column, under its last drawn panel
    assert [ax.get_xlabel() for ax in axes] == ["", "", "block density", "block density", "block density", ""]
    groups["study_b"] = [p | {"measure": "density"} for p in groups["study_b"]]  # another measure: each row its own
    fig = rendered(quality_sweeps_figure(groups))
    assert [ax.get_xlabel() for ax in fig.axes if ax.axison] == ["block density"] * 3 + ["density"] * 2
    (legend,) = fig.legends
    assert {t.get_text() for t in legend.get_texts()} == {"dense", "window", "outline", "streaming"}


def test_hopper_table_rows_ratios_and_targets():
    """The Hopper table holds only cells that timed the Hopper kernel; its ratios are the cell's own
    times divided, and a cell at a Project C (N, density) carries that target with its verdict."""
    from spattern.report import tables as T

    cells = [
        dict(N=4096, D=128, causal=False, family="lrs", density_target=0.5, density=0.49,
             ms=dict(spattern=0.38, spattern_hopper=0.2, flex_native=0.44, sdpa_cudnn=0.32),
             tflops=dict(spattern_hopper=400.0)),
        dict(N=8192, D=128, causal=True, family="lrs", density_target=0.3, density=0.3,
             ms=dict(spattern=0.5, spattern_hopper=0.25, sdpa_cudnn=0.5), tflops={}),
        dict(N=8192, D=128, causal=False, family="lrs", density_target=0.25, density=0.2,
             ms=dict(spattern=0.38, sdpa_cudnn=0.23), tflops={}),  # no Hopper time: not in the table
    ]
    t = T.hopper_table(cells, [Path("b.json")])
    assert [r["N"] for r in t.raw] == [4096, 8192]
    first = t.raw[0]
    assert first["hopper_vs_cudnn"] == pytest.approx(1.6) and first["hopper_vs_flex_native"] == pytest.approx(2.2)
    assert first["hopper_vs_mma_sync"] == pytest.approx(1.9) and first["target_vs_cudnn"] == 1.5
    assert t.rows[0][-1] == "1.50x: met" and t.rows[1][-1] == "–"
    cells[0]["ms"]["sdpa_cudnn"] = 0.25  # 1.25x of a 1.5x target
    assert T.hopper_table(cells, []).rows[0][-1] == "1.50x: missed by 16.7%"
    assert T.hopper_table(cells[2:], []) is None
    # one row per GPU and cell, the GPU named in its column and the caption; ``device`` keeps one GPU's
    cells[1]["device"] = "H100"
    cells[0]["device"] = "H200"
    both = T.hopper_table(cells, [])
    assert [r[0] for r in both.rows] == ["H100", "H200"] and [r["device"] for r in both.raw] == ["H100", "H200"]
    assert "on the H100 and the H200" in both.caption
    one = T.hopper_table(cells, [], device="H200", head_dim=128)
    assert [r[0] for r in one.rows] == ["H200"] and one.caption.startswith("Head dim 128 (the issue's targets), the H200 only")


def test_targets_are_judged_on_the_kernel_auto_runs():
    """Where a cell timed the Hopper kernel, the target rows use it (what `auto` runs on that GPU);
    elsewhere the mma.sync kernel."""
    from spattern.report.figures.kernels import target_rows

    cell = {"N": 4096, "D": 128, "causal": False, "family": "lrs", "density_target": 0.5, "density": 0.5,
            "ms": {"spattern": 0.30, "spattern_hopper": 0.13, "sdpa_flash": 0.40, "sdpa_cudnn": 0.21}}
    row = next(r for r in target_rows([cell]) if r["N"] == 4096)
    assert row["kernel"] == "Hopper" and row["vs_sdpa_cudnn"] == pytest.approx(0.21 / 0.13)
    assert row["met_sdpa_cudnn"] is True
    old = dict(cell, ms={k: v for k, v in cell["ms"].items() if k != "spattern_hopper"})
    row = next(r for r in target_rows([old]) if r["N"] == 4096)
    assert row["kernel"] == "mma.sync" and row["vs_sdpa_cudnn"] == pytest.approx(0.21 / 0.30)


def test_records_that_name_their_bucket_carry_its_last_distance():
    """MQAR's bucket records give the bucket's lower edge as ``distance`` and the bucket as
    ``distance_bucket`` "[lo, hi)": a point carries hi - 1 as ``distance_to``; a bucket of one
    distance ("[1, 2)") carries none."""
    from types import SimpleNamespace

    recs = [{"id": f"b{lo}", "distance": lo, "distance_bucket": f"[{lo}, {2 * lo})", "accuracy": a}
            for lo, a in ((1, 1.0), (64, 0.5), (128, 0.25))]
    run = SimpleNamespace(experiment="mqar", key="dense", per_example=recs, sources=[], per_example_path=None)
    pts, _, _ = collect.collect_synthetic(SimpleNamespace(runs=[run]), "mqar")
    assert [(p["distance"], p.get("distance_to")) for p in pts] == [(1, None), (64, 127), (128, 255)]
    assert [tables.distance_label(p) for p in pts] == ["1", "64-127", "128-255"]


def test_many_distances_are_bucketed_by_powers_of_two_with_their_range():
    """More than a dozen distinct distances (a passkey at many depths): power-of-two buckets, each
    point drawn at its first distance and carrying its last (``distance_to``)."""
    from types import SimpleNamespace

    recs = [{"id": f"p{d}", "distance": d, "passkey_correct": float(d < 300)} for d in range(100, 2000, 100)]
    run = SimpleNamespace(experiment="pk", key="dense", per_example=recs, sources=[], per_example_path=None)
    pts, _, xname = collect.collect_synthetic(SimpleNamespace(runs=[run]), "pk")
    assert xname == "distance"
    assert [(p["distance"], p["distance_to"]) for p in pts] == [(64, 127), (128, 255), (256, 511), (512, 1023),
                                                               (1024, 2047)]
    assert [p["value"] for p in pts] == [1.0, 1.0, 0.0, 0.0, 0.0]  # 100 | 200 | 300, 400, 500 | ...


def test_a_block_size_ablation_is_drawn_against_its_companion_at_another_block(tmp_path):
    """An ablation whose runs differ only by pattern, at 128-blocks, and an experiment with the same
    patterns at 64-blocks on a superset of its documents: one "block" panel, each pattern at both sizes
    on the shared documents (perplexity = exp of their mean NLL)."""
    import json
    import math

    from spattern.report.figures import ablation_figure

    def run(exp, label, block, nll):
        d = tmp_path / "results" / exp / f"{label}-s0"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"experiment": exp, "run_id": d.name, "label": label,
                                                    "pattern": label, "status": "finished", "context": 4096,
                                                    "metrics": {"ppl": math.exp(sum(nll) / len(nll))}}))
        (d / "config.toml").write_text(f"[setup]\nblock = [{block}, {block}]\n")
        (d / "per_example.jsonl").write_text("".join(json.dumps({"id": f"doc{i}", "nll": v}) + "\n"
                                                     for i, v in enumerate(nll)))

    run("block_ablation", "window", 128, [2.0, 3.0])
    run("block_ablation", "outline", 128, [4.0, 5.0])
    run("code", "window", 64, [1.0, 2.0, 9.0])  # doc2 not in the ablation: left out
    run("code", "outline", 64, [1.5, 2.5, 9.0])
    run("other", "window", 64, [1.0, 2.0])  # one label in common only: not the companion
    s = load_study([tmp_path / "results"])
    assert {(r.experiment, r.block) for r in collect.block_companion(s, "block_ablation")} == {("code", 64)}
    pts, _ = collect.collect_ablation(s)
    got = {(p["key"], p["value"]): round(p["mean"], 6) for p in pts if p["param"] == "block"}
    assert got == {("window", 128): round(math.exp(2.5), 6), ("outline", 128): round(math.exp(4.5), 6),
                   ("window", 64): round(math.exp(1.5), 6), ("outline", 64): round(math.exp(2.0), 6)}
    fig = rendered(ablation_figure(pts))
    assert fig.axes[0].get_title() == "block_ablation (2 shared documents)" and fig.axes[0].get_xlabel() == "block"
    assert collect.block_companion(s, "code") is None  # an ablation is never the companion; "other" is at 64 too


def test_bottom_legend_takes_as_few_rows_as_fit_the_figure():
    """Few short labels: one row; many long ones: more rows, each no wider than the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from spattern.report.figures._common import bottom_legend

    def legend(labels):
        fig = Figure(figsize=(6.5, 2), layout="constrained")
        ax = fig.subplots()
        lines = [ax.plot([0, 1], [i, i])[0] for i in range(len(labels))]
        leg = bottom_legend(fig, lines, labels, fontsize=5.5)
        return leg, fig.bbox.width, leg.get_window_extent(FigureCanvasAgg(fig).get_renderer()).width

    leg, fig_w, w = legend(["dense", "window"])
    assert leg._ncols == 2 and w <= fig_w
    long = [f"a_rather_long_series_name_{i}" for i in range(12)]
    leg, fig_w, w = legend(long)
    assert leg._ncols < 12 and w <= fig_w and len(leg.get_texts()) == 12
