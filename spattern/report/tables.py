"""Tables as data (CSV with the raw values, JSON with raw and formatted cells) and as typst.

Each table is a ``Table``: a name, a caption, column headers, formatted rows (what the PDF and the
HTML show) and the raw rows (what the CSV keeps, unrounded). ``write_table`` writes
``<name>.csv``, ``<name>.json`` and ``<name>.typ`` (a typst ``table`` a reader can include on its
own); the report's typst source reads the JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spattern.report.data import family_name
from spattern.utils.io import atomic_write_text, write_json


# --- formatting (one place, so the PDF, the HTML and numbers.json agree) -------------------------
def fmt(x, sig: int = 3) -> str:
    """A number with ``sig`` significant digits; integers as integers; None/NaN as an en dash."""
    if x is None or isinstance(x, bool):
        return "–" if x is None else ("yes" if x else "no")
    if isinstance(x, int):
        return f"{x:,}".replace(",", " ")
    if not math.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** sig:
        return f"{x:,.0f}".replace(",", " ")
    if abs(x) < 1e-3:  # tiny values (a KL of dense against itself): scientific, not a row of zeros
        return f"{x:.{max(sig - 2, 0)}e}"
    digits = max(sig - 1 - math.floor(math.log10(abs(x))), 0)
    return f"{x:.{digits}f}"


def fmt_ci(m, lo, hi, sig: int = 3) -> str:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return fmt(m, sig)
    return f"{fmt(m, sig)} [{fmt(lo, sig)}, {fmt(hi, sig)}]"


def fmt_p(p) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return "< 0.001" if p < 1e-3 else f"{p:.3f}"


def fmt_pct(x) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.{0 if abs(100 * x - round(100 * x)) < 1e-9 else 1}f}%"


def fmt_x(x) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.2f}x"


@dataclass
class Table:
    name: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    raw: list[dict]
    sources: list[Path] = field(default_factory=list)
    note: str = ""


def _typst_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_typst(t: Table) -> str:
    cells = ",\n  ".join(", ".join(_typst_str(c) for c in row) for row in t.rows)
    header = ", ".join(_typst_str(c) for c in t.columns)
    return (f"// generated from results/ by spattern.report; do not edit\n"
            f"#figure(table(columns: {len(t.columns)}, stroke: none, align: left,\n"
            f"  table.hline(), table.header({header}), table.hline(),\n  {cells},\n  table.hline()),\n"
            f"  caption: [#{_typst_str(t.caption)}])\n")


def write_table(t: Table, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    fields: list[str] = []
    for r in t.raw:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in t.raw:
        w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    paths = [atomic_write_text(folder / f"{t.name}.csv", buf.getvalue()),
             write_json(folder / f"{t.name}.json", {"name": t.name, "caption": t.caption, "columns": t.columns,
                                                    "rows": t.rows, "note": t.note, "raw": t.raw}),
             atomic_write_text(folder / f"{t.name}.typ", to_typst(t))]
    return paths


# --- the tables ------------------------------------------------------------------------------------
#: the metric each experiment is judged on first: the first of these its comparisons hold
PRIMARY_METRICS = ("nll", "mqar_accuracy", "loss")


#: appended to a significant result whose mean difference's 95% CI includes 0
DISAGREE = "†"
DISAGREE_NOTE = "†: the rank test rejects while the mean difference's CI includes 0 (skewed differences)."


def disagrees(r: dict) -> bool:
    """A comparison row (``compare --json``) judged significant whose bootstrap CI of the mean difference
    still includes 0: the rank test and the interval of the mean disagree."""
    lo, hi = r.get("diff_ci_low"), r.get("diff_ci_high")
    return bool(r.get("significant")) and isinstance(lo, (int, float)) and isinstance(hi, (int, float)) \
        and lo <= 0 <= hi


def primary_metric(doc: dict, metrics: Sequence[str] = PRIMARY_METRICS) -> str | None:
    have = {r.get("metric") for r in doc.get("rows", [])}
    return next((m for m in metrics if m in have), None)


def significance_table(docs: Sequence[tuple[dict, Path]], primary: Sequence[str] | None = None,
                       name: str = "significance") -> Table:
    """Rows of every ``compare --json`` document: mean [CI], paired difference [CI], raw and Holm
    p-values, effect size, and whether the difference is significant at the document's alpha.
    ``primary``: only each document's primary metric (the first of ``primary`` it holds)."""
    rows, raw, sources = [], [], []
    alphas = set()
    for doc, path in docs:
        sources.append(path)
        alphas.add(doc.get("alpha"))
        keep = primary_metric(doc, primary) if primary else None
        for r in doc.get("rows", []):
            if primary and r.get("metric") != keep:
                continue
            raw.append({"experiment": doc.get("experiment"), **r})
            better = r.get("higher_is_better")
            is_base = r.get("run") == r.get("baseline")  # its note may add reasons to "baseline"
            rows.append([str(doc.get("experiment", "")), str(r.get("metric", "")),
                         f"{r.get('run', '')} vs {r.get('baseline', doc.get('baseline', ''))}",
                         fmt(r.get("n")), fmt_ci(r.get("mean"), r.get("ci_low"), r.get("ci_high")),
                         fmt_ci(r.get("diff"), r.get("diff_ci_low"), r.get("diff_ci_high")),
                         "–" if is_base else fmt_p(r.get("p_holm")), f"{fmt(r.get('effect_size'), 2)} {r.get('effect_size_name', '')}".strip(),
                         "–" if better is None else ("higher" if better else "lower"),
                         "baseline" if is_base else ("yes" + DISAGREE * disagrees(r) if r.get("significant") else "no")])
    alpha = ", ".join(f"{a:g}" for a in sorted(a for a in alphas if a is not None))
    flagged = any(disagrees(r) for r in raw)
    return Table(name, f"{'Primary metric of each experiment. ' if primary else ''}"
                 f"Paired comparisons against the baseline: mean with 95% CI, paired difference "
                 f"with 95% CI, Holm-adjusted p-value, effect size; significant at alpha = {alpha} after Holm "
                 f"correction; better: the direction in which the metric improves." + (" " + DISAGREE_NOTE if flagged else ""),
                 ["experiment", "metric", "comparison", "n", "mean [CI]", "difference [CI]", "p (Holm)",
                  "effect size", "better", "significant"], rows, raw, sources)


def kernel_table(cells: Sequence[dict], slice_desc: str, sources: Sequence[Path], name: str = "kernels") -> Table:
    from spattern.report.figures.kernels import flex_method

    flex = flex_method(cells)
    rows, raw = [], []
    for c in sorted(cells, key=lambda c: (c["N"], -float(c.get("density_target", c.get("density", 0))),
                                          str(c.get("device")))):
        ms = c.get("ms") or {}
        fl = ms.get("sdpa_flash")
        cu = ms.get("sdpa_cudnn")
        spm = ms.get("spattern")
        raw.append({"N": c["N"], "D": c.get("D"), "causal": c.get("causal"), "backward": bool(c.get("backward")),
                    "density": c.get("density"), "device": c.get("device"), **{f"ms_{k}": v for k, v in ms.items()},
                    **{f"tflops_{k}": v for k, v in (c.get("tflops") or {}).items()}})
        rows.append([str(c.get("device", "–")), fmt(c["N"]), fmt_pct(c.get("density")), fmt(spm), fmt(ms.get(flex)),
                     fmt(fl), fmt(cu), fmt((c.get("tflops") or {}).get("spattern")),
                     fmt_x(fl / spm if fl and spm else None), fmt_x(cu / spm if cu and spm else None)])
    flex_desc = "its own compiled mask" if flex == "flex_native" else "spattern's layout"
    return Table(name, f"Attention kernel times ({slice_desc}): the mma.sync spattern kernel and FlexAttention "
                 f"({flex_desc}) on the sparse pattern, dense SDPA (flash, cuDNN) at the same N, each row from one "
                 "GPU's run; TFLOP/s counted on computed blocks; speed-up = dense time / spattern time (the Hopper "
                 "kernel's times: the Hopper table).",
                 ["GPU", "N", "density", "spattern ms", "Flex ms", "flash ms", "cuDNN ms", "TFLOP/s", "vs flash",
                  "vs cuDNN"], rows, raw, list(sources))


LAYOUT_NAMES = {"lrs": "lrs", "band+landmark": "b+l"}  # family names as data.bench_cells gives them


def hopper_cells(cells: Sequence[dict], head_dim: int | None = None, device: str | None = None) -> list[dict]:
    """The forward cells that timed the Hopper kernel (``spattern_hopper``), of one head dim / GPU if given."""
    return [c for c in cells if not c.get("backward") and isinstance((c.get("ms") or {}).get("spattern_hopper"), (int, float))
            and (head_dim is None or c.get("D") == head_dim) and (device is None or c.get("device") == device)]


def hopper_table(cells: Sequence[dict], sources: Sequence[Path], targets=None, head_dim: int | None = None,
                 name: str = "kernels_hopper", device: str | None = None) -> Table | None:
    """The two forward kernels side by side on the cells that timed the Hopper kernel
    (``spattern_hopper``), one row per GPU and cell: times, the Hopper kernel's TFLOP/s on computed blocks
    and its speed-up over native FlexAttention and dense SDPA cuDNN (causal when the cell is), with the
    Project C target of the cell's (N, density) where there is one. ``head_dim``, ``device``: only those
    cells. None without such cells."""
    from spattern.report.figures.kernels import TARGETS

    targets = TARGETS if targets is None else targets
    hop = hopper_cells(cells, head_dim, device)
    if not hop:
        return None
    gpu = lambda c: str(c.get("device") or "–")  # noqa: E731
    gpus = sorted({gpu(c) for c in hop})
    rows, raw = [], []
    for c in sorted(hop, key=lambda c: (gpu(c), c.get("D") or 0, str(c.get("family")), bool(c.get("causal")), c["N"],
                                        -float(c.get("density_target", 1)))):
        ms = c["ms"]
        h, m, nat, cu = ms.get("spattern_hopper"), ms.get("spattern"), ms.get("flex_native"), ms.get("sdpa_cudnn")
        t = next((t["speedup"] for t in targets if t["N"] == c["N"]
                  and abs(t["density"] - float(c.get("density_target", -1))) < 1e-9), None)
        vs_cu = cu / h if cu and h else None
        raw.append({"device": gpu(c), "N": c["N"], "D": c.get("D"), "causal": bool(c.get("causal")),
                    "family": c.get("family"),
                    "density": c.get("density"), "ms_mma_sync": m, "ms_hopper": h, "ms_flex_native": nat,
                    "ms_sdpa_cudnn": cu, "tflops_hopper": (c.get("tflops") or {}).get("spattern_hopper"),
                    "hopper_vs_cudnn": vs_cu, "hopper_vs_flex_native": nat / h if nat and h else None,
                    "hopper_vs_mma_sync": m / h if m and h else None, "target_vs_cudnn": t})
        rows.append([gpu(c), fmt(c.get("D")), LAYOUT_NAMES.get(str(c.get("family")), str(c.get("family"))),
                     "yes" if c.get("causal") else "no", fmt(c["N"]), fmt_pct(c.get("density")),
                     fmt(m), fmt(h), fmt(nat), fmt(cu), fmt((c.get("tflops") or {}).get("spattern_hopper")),
                     fmt_x(m / h if m and h else None), fmt_x(nat / h if nat and h else None), fmt_x(vs_cu),
                     "–" if t is None else (f"{fmt_x(t)}: " + ("met" if vs_cu and vs_cu >= t else
                                                               f"missed by {fmt_pct(1 - (vs_cu or 0) / t)}"))])
    scope = ", ".join(x for x in (f"head dim {head_dim} (the issue's targets)" if head_dim else "",
                                  f"the {device} only" if device else "") if x)
    only = f"{scope[:1].upper()}{scope[1:]} (every cell of every GPU: tables/kernels_hopper.csv and the HTML page). " \
        if scope else ""
    return Table(name, only + f"Forward kernels on the {' and the '.join(gpus)} (bf16, batch 1, 16 heads, 128 x 128 blocks, "
                 "layouts lrs = local | random | sink and b+l = band + landmark): the mma.sync kernel and the sm_90a "
                 "Hopper kernel (wgmma, TMA, "
                 "warp-specialised) against FlexAttention with its own mask_mod and dense SDPA cuDNN (causal "
                 "when the layout is), do_bench medians, ratios within one run (or medians over repeated runs where the "
                 "benchmark file merges them); times in ms; TFLOP/s on computed blocks; the Project C target "
                 "is a speed-up over cuDNN.",
                 ["GPU", "D", "layout", "causal", "N", "density", "mma.sync", "Hopper", "Flex", "cuDNN", "Hopper TF/s",
                  "vs mma.sync", "vs Flex", "vs cuDNN", "target"], rows, raw, list(sources))


def target_table(targets: Sequence[dict], sources: Sequence[Path]) -> Table:
    rows, raw = [], []
    for t in targets:
        raw.append({k: v for k, v in t.items() if k != "cell"})
        if t.get("cell") is None:
            rows.append([fmt(t["N"]), fmt_pct(t["density"]), fmt_x(t["speedup"]), "missing", "missing", "missing",
                         "missing"])
            continue
        verdict = []
        for d, name in (("sdpa_flash", "flash"), ("sdpa_cudnn", "cuDNN")):
            s = t.get(f"vs_{d}")
            if s is not None:
                verdict.append(f"{name}: met" if s >= t["speedup"] else f"{name}: missed by {fmt_pct(1 - s / t['speedup'])}")
        kernel = t.get("kernel", "–") + (f" ({t['device']})" if t.get("device") else "")
        rows.append([fmt(t["N"]), fmt_pct(t["density"]), fmt_x(t["speedup"]), kernel,
                     fmt_x(t.get("vs_sdpa_flash")), fmt_x(t.get("vs_sdpa_cudnn")), "; ".join(verdict)])
    return Table("targets", "Project C speed-up targets against dense attention and the measured speed-up of the "
                 "spattern forward kernel at the nearest benchmarked density, on the GPU named: the Hopper kernel "
                 "where a cell timed it (what auto runs on the H200), else the mma.sync kernel.",
                 ["N", "density", "target", "kernel", "vs flash", "vs cuDNN", "verdict"], rows, raw, list(sources))


MEMORY_CELLS = ((4096, 0.5), (8192, 0.25), (16384, 0.1))  # the Project C cells; the largest N is added


def memory_rows(rows: Sequence[dict]) -> list[dict]:
    """The non-causal rows of a ``spattern bench memory`` file at the Project C cells and at its largest
    N (lowest density there), per layout family."""
    out = []
    for fam in sorted({str(r.get("family")) for r in rows}):
        fr = [r for r in rows if str(r.get("family")) == fam and not r.get("causal")]
        if not fr:
            continue
        big = max(r["N"] for r in fr)
        want = [*MEMORY_CELLS, (big, min(r["density_target"] for r in fr if r["N"] == big))]
        for n, d in dict.fromkeys(want):
            out += [r for r in fr if r["N"] == n and abs(r["density_target"] - d) < 1e-9]
    return out


def memory_table(rows_in: Sequence[dict], sources: Sequence[Path]) -> Table:
    rows, raw = [], []
    for r in memory_rows(rows_in):
        b = r["bytes"]
        b = {**b, "flex": b["flex_blockmask"] + b.get("flex_mask_mod", 0)}  # Flex: BlockMask + its mask_mod's tables
        fam = family_name(r["family"])
        raw.append({k: v for k, v in r.items() if k != "bytes"} | {"family": fam} | {f"bytes_{k}": v for k, v in b.items()})
        kib = lambda k: fmt(b[k] / 1024) if isinstance(b.get(k), (int, float)) else "–"  # noqa: E731
        rows.append([LAYOUT_NAMES.get(fam, fam), fmt(r["N"]), fmt_pct(r["density"]), kib("mma_sync"), kib("hopper"),
                     kib("backward"), kib("flex"), fmt(b["dense_bool_mask"] / 2**20)])
    return Table("memory", "State kept on the device per layout (KiB; 16 heads share one layout; the kernel "
                 "benchmark's non-causal layouts), counted from the tensors built: spattern's metadata and work "
                 "order per kernel, what its backward adds, Flex's BlockMask with its mask_mod's tables, and a "
                 "dense boolean mask (MiB).",
                 ["layout", "N", "density", "mma.sync", "Hopper", "+ backward", "Flex", "bool mask MiB"],
                 rows, raw, list(sources))


def cost_table(rows_in: Sequence[dict], sources: Sequence[Path]) -> Table:
    rows, raw = [], []
    for r in rows_in:
        raw.append(dict(r))
        closed = "–" if r["pairs_closed"] is None else fmt(r["pairs_closed"]) + ("" if r["pairs_exact"] else " (bound)")
        rows.append([r["key"], fmt(r["N"]), fmt_pct(r["density"]), fmt_pct(r["block_density"]), fmt(r["pairs"]),
                     closed, r["asymptotic"], fmt(r["flops_fwd"] / 1e9)])
    return Table("cost", "Cost of each pattern: exact attended pairs from the compiled layout against the closed "
                 "form (exact, or an upper bound), densities, growth class and forward GFLOP per head "
                 "(head dim 64).",
                 ["pattern", "N", "density", "block density", "pairs (exact)", "pairs (closed form)", "growth",
                  "GFLOP fwd"], rows, raw, list(sources))


def quality_table(points: Sequence[dict], experiment: str, sources: Sequence[Path]) -> Table:
    metrics = [m for m in ("ppl", "kl", "top1_agreement", "recall", "passkey_correct")
               if any(p["metric"] == m for p in points)]
    by: dict[tuple, dict] = {}
    for p in points:
        by.setdefault((p["key"] != "dense", -p["density"], p.get("series", p["key"])), {})[p["metric"]] = p
    rows, raw = [], []
    for (_, negd, key), ms in sorted(by.items()):  # key: the series (family, and context when several)
        rows.append([key, fmt_pct(-negd)] + [fmt_ci(ms[m]["value"], ms[m]["lo"], ms[m]["hi"]) if m in ms else "–"
                                             for m in metrics])
        raw.append({"key": key, "density": -negd, **{m: ms[m]["value"] for m in metrics if m in ms},
                    **{f"{m}_ci": [ms[m]["lo"], ms[m]["hi"]] for m in metrics if m in ms}})
    names = {"ppl": "perplexity", "kl": "KL", "top1_agreement": "top-1 agr.", "recall": "mass recall",
             "passkey_correct": "passkey"}
    return Table(f"quality_{experiment}", f"Quality of each pattern against dense attention in {experiment} "
                 "(value with 95% CI).",
                 ["pattern", "block density" if points and points[0].get("measure") == "block_density" else "density"]
                 + [names[m] for m in metrics], rows, raw,
                 list(sources))


def quality_summary_table(rows_in: Sequence[dict], sources: Sequence[Path]) -> Table:
    """One row per experiment (``numbers.quality_row``, formatted): at its lowest cost, the pattern with
    the lowest mean KL to dense and those whose intervals overlap it, the one with the highest, the
    oracle bound and dense perplexity."""
    def density(where: str) -> str:  # "matched to 12.5%, achieved 11.8%-16.6%" -> "12.5% (11.8%-16.6%)"
        return where.replace("matched to ", "").replace(", achieved ", " (") + (")" if ", achieved " in where else "")

    rows = [[r["name"], density(r.get("lowest_density", "–")), f"{r['best_key']} {r['best_kl']}" if "best_key" in r else "–",
             r.get("best_overlap", "–"), f"{r['worst_key']} {r['worst_kl']}" if "worst_key" in r else "–",
             f"{r['bound_kl']} ({r['bound_density']})" if "bound_kl" in r else "–", r.get("dense_ppl", "–")]
            for r in rows_in]
    return Table("quality_summary", "Quality at each experiment's lowest cost: the pattern with the lowest mean KL to "
                 "dense attention [95% CI over documents], the patterns whose intervals overlap it (no paired test "
                 "ranks them against it), the one with the highest, the oracle top-k bound (exact block scores) "
                 "and dense perplexity; density: the target block density (the range achieved). Every pattern: "
                 "tables/quality_<experiment>.csv.",
                 ["experiment", "density", "lowest KL", "overlapping", "highest KL", "oracle bound", "dense ppl"],
                 rows, [dict(r) for r in rows_in], list(sources))


def training_table(rows_in: Sequence[dict], sources: Sequence[Path]) -> Table:
    """``collect.collect_training_cost``: quality and cost of each trained pattern, side by side; with
    a same-call throughput file (``collect.same_call_ratio``), the caption gives each pattern's tokens/s
    relative to its baseline trained in the same device call (a column would not fit the report's)."""
    # series timed only beside other runs (``spattern run --jobs N``: device "<gpu> xN") measured a share of
    # a device, not a training cost: the CSV keeps them, the PDF's rows leave them out and say so
    shared = [r for r in rows_in if re.search(r" x\d+$", r["device"])]
    rows = [[r["experiment"].removeprefix("study_"), r["key"], r["device"] + ("*" if r.get("untimed") else ""), fmt(r["seeds"]),
             fmt_ci(r["loss"], *r["loss_ci"]),
             "{} [{}, {}]".format(*(fmt(v / 1e3) for v in (r["tokens_per_s"], *r["tokens_per_s_range"]))),
             fmt(r["step_ms"])] for r in rows_in if r not in shared]
    elsewhere = sorted({d for r in rows_in if r not in shared for d in r.get("untimed") or {}})  # rows shown only
    star = (f" *: some seeds trained on another device ({', '.join(elsewhere)}); they count in the loss, not in the "
            "timing." if elsewhere else "")
    note = (f" Not shown (in the CSV): {', '.join(dict.fromkeys(r['experiment'] for r in shared))}, trained "
            "several runs at a time (spattern run --jobs)." if shared else "")
    for exp in sorted({r["experiment"] for r in rows_in if r.get("same_call_ratio")}):
        same = [r for r in rows_in if r["experiment"] == exp and r.get("same_call_ratio")
                and r["key"] != r["same_call_baseline"]]
        base = "/".join(sorted({r["same_call_baseline"] for r in same}))
        after = "/".join(sorted({str(r.get("same_call_from_step")) for r in same}))
        calls = max(r.get("same_call_calls", 1) for r in same)
        where = "in one device call" if calls == 1 else f"in {fmt(calls)} device calls, each run against {base}'s of its call"
        note += (f" {exp} {where} (scripts/profile_train.sh; medians after step {after}; min-max over "
                 f"its runs), tokens/s relative to {base}: "
                 + ", ".join(f"{r['key']} {fmt_range(r['same_call_ratio'])}" for r in same)
                 + ". Between calls one pattern's ktok/s varies more than static patterns differ.")
    return Table("training_cost", "Training runs (experiments without their study_ prefix): final validation "
                 "loss (mean over seeds, 95% t interval); ktok/s "
                 "over each run's wall clock, start-up, evaluations and checkpoints included (median [min, max] "
                 "over seeds); ms per step (median over logged intervals, then seeds)." + note + star,
                 ["experiment", "pattern", "device", "seeds", "val. loss [95% CI]", "ktok/s [range]", "ms/step"],
                 rows, [dict(r) for r in rows_in], list(sources))


def file_loss_table(items: Sequence[dict], experiment: str, sources: Sequence[Path]) -> Table:
    """``collect.collect_file_losses``: validation loss per file, one column per series (mean over its
    seeds), and a last row with the mean over files (what ``spattern compare --metric file_loss`` pairs)."""
    seeds = items[0]["seeds"]
    keys = sorted(seeds, key=lambda k: (k != "dense", k))
    rows = [[it["row"]["file"].split(":", 1)[-1], fmt(it["row"]["tokens"])]
            + [fmt(it["row"]["loss"].get(k)) for k in keys] for it in items]
    per = {k: [it["row"]["loss"][k] for it in items if k in it["row"]["loss"]] for k in keys}
    means = {k: sum(v) / len(v) for k, v in per.items()}
    rows.append(["mean over files", "–"] + [fmt(means[k]) for k in keys])
    return Table(f"file_loss_{experiment}", f"Validation loss per file in {experiment} (nats/token over the file's "
                 "scored tokens; mean over the seeds that recorded it, n in each column's header). Sequences are "
                 "packed, so a file's first tokens may attend to the end of the file before it.",
                 ["file", "tokens"] + [f"{k} (n={seeds[k]})" for k in keys], rows,
                 [{"file": it["row"]["file"], "tokens": it["row"]["tokens"], **it["row"]["loss"]} for it in items]
                 + [{"file": "mean over files", "tokens": None, **means}], list(sources))


def fmt_range(r) -> str:
    """[lo, hi] -> "lo-hi" with two decimals (one value when equal); "–" for none."""
    if not r:
        return "–"
    lo, hi = (f"{float(v):.2f}" for v in r)
    return lo if lo == hi else f"{lo}-{hi}"


def headline_table(heads: Sequence[tuple[dict, Path]]) -> Table:
    """Each significance file's primary comparison (``numbers.headline``): the best run and outline
    attention's row against the baseline, difference [95% CI] and Holm p, and the smallest Holm p
    the exact paired test can reach with n pairs over the metric's comparisons."""
    cols = ["experiment", "metric", "baseline", "n", "best", "difference [95% CI]", "Holm p",
            "outline: difference", "Holm p", "min Holm p"]
    rows, raw = [], []
    for h, _ in heads:
        o = h.get("outline", {})
        rows.append([h["experiment"], f"{h['metric']} ({h['direction']})", h["baseline"], h["n"], h["best"]["run"],
                     h["best"]["diff"], h["best"]["p_holm"], o.get("diff", "–"), o.get("p_holm", "–"),
                     h.get("min_p", "–")])
        raw.append(dict(zip(["experiment", "metric", "baseline", "n", "best", "best_diff", "best_p_holm",
                             "outline_diff", "outline_p_holm", "min_p"], rows[-1]), test=h.get("test")))
    flagged = any(DISAGREE in str(v) for r in rows for v in r)
    return Table("headline", "Each experiment's primary comparison: the best contender and outline attention against "
                 "the baseline (paired by document or seed; Holm over the experiment's m comparisons of that "
                 "metric); min Holm p: the least an exact test (Wilcoxon, permutation) reaches with n pairs, m * 2 / 2^n."
                 + (" " + DISAGREE_NOTE if flagged else ""),
                 cols, rows, raw, [p for _, p in heads])


def checks_table(rows_in: Sequence[dict], sources: Sequence[Path]) -> Table:
    """One row per comparison of each check experiment (``numbers.check_row``): the check, the experiment
    it checks a setting of, the metric (in the caption when every check has the same), the run compared
    against, each run's paired difference and the range of their Holm-adjusted p."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows_in))
    one = len(metrics) == 1
    rows = [[r["name"] if i == 0 else "", r["parent"] if i == 0 else "", *([] if one else [r["metric"] if i == 0 else ""]),
             c["baseline"], c["runs"], c["p_holm"]]
            for r in rows_in for i, c in enumerate(r["comparisons"])]
    return Table("checks", "Check experiments: each varies one setting of another, or two (the device, the "
                 "indexer's warm-up, a random draw, more seeds), on the same documents. Per run, the mean paired difference"
                 + (f" in {metrics[0]}" if one else "") + " from the run it is compared against (x:run: a run of "
                 "experiment x, paired document by document; mean of n: per document, the mean of n runs, the indexer's warm-up "
                 "seeds); Holm p: the range over the table's runs. CIs and "
                 "effect sizes: tables/significance.csv.",
                 ["check", "of", *([] if one else ["metric"]), "against", "difference per run", "Holm p"],
                 rows, [dict(r) for r in rows_in], list(sources))


def env_table(envs: Sequence[tuple[dict, Path]]) -> Table:
    """Hardware and software of the results: one row per distinct (device, Python, torch, git)."""
    seen: dict[tuple, list[Path]] = {}
    for env, path in envs:
        pk = env.get("packages") or {}
        dev = env.get("name") or (env.get("device") if env.get("device") not in ("cpu", "cuda") else None) \
            or ("CPU" if env.get("device") == "cpu" else str(env.get("device")))
        git = env.get("git") or {}
        rev = (git.get("revision") or "")[:10] + (" (dirty)" if git.get("dirty") else "")
        cupy = next((str(v) for k, v in sorted(pk.items()) if k.startswith("cupy")), "–")  # cupy-cuda13x: 14.2.0
        key = (str(dev), str(env.get("python", "–")), str(pk.get("torch", env.get("torch", "–"))),
               str(env.get("cuda") or "–"), cupy, str(pk.get("numpy", "–")), str(pk.get("spattern", "–")), rev or "–")
        seen.setdefault(key, []).append(path)
    # the PDF: one row per machine and software; the revisions counted (each is in the CSV / HTML)
    revs: dict[tuple, list[str]] = {}
    for k in sorted(seen):
        revs.setdefault(k[:-1], []).append(k[-1])
    rows = [[*k, v[0] if len(v) == 1 else f"{len(v)} revisions"] for k, v in revs.items()]
    names = ["device", "python", "torch", "cuda", "cupy", "numpy", "spattern", "git"]
    raw = [dict(zip(names, k), files=len(seen[k])) for k in sorted(seen)]
    return Table("environment", "Hardware and software the results were produced with (from each result's env.json; "
                 "CUDA: the runtime torch was built for, on GPU runs; the git revision of each result is in "
                 "tables/environment.csv).",
                 ["device", "Python", "torch", "CUDA", "CuPy", "numpy", "spattern", "git revision"], rows, raw,
                 [p for k in sorted(seen) for p in seen[k]])


def distance_label(p: dict) -> str:
    """A retrieval point's distance: the value, or its bucket's range ("1 024-2 047"); a whole number of
    tokens (or pairs) as an integer."""
    def num(x):
        return fmt(int(x)) if isinstance(x, float) and x.is_integer() else fmt(x)

    return f"{num(p['distance'])}-{num(p['distance_to'])}" if "distance_to" in p else num(p["distance"])


def synthetic_table(points: Sequence[tuple[str, list[dict], str]], sources: Sequence[Path]) -> Table:
    """(experiment, points, x) from ``collect.collect_synthetic`` (x: distance or depth) and
    ``collect.collect_mqar_pairs`` (x: pairs): accuracy [95% CI] of every pattern at every value of x,
    what the synthetic figure draws."""
    rows, raw = [], []
    for e, pts, xname in points:
        for p in sorted(pts, key=lambda p: (p["key"] != "dense", p["key"], p["distance"])):
            rows.append([e, str(p["key"]), xname, distance_label(p), fmt_ci(p["value"], p["lo"], p["hi"]),
                         fmt(p["n_runs"])])
            raw.append({"experiment": e, "x": xname, **p})
    return Table("synthetic", "Long-range retrieval: accuracy of each pattern at each distance between key "
                 "and query (MQAR), number of key-value pairs (MQAR, x = pairs) or passkey depth, mean with 95% CI "
                 "over seeds (trained) or examples (pretrained); n = runs.",
                 ["experiment", "pattern", "x", "at", "accuracy [95% CI]", "n"], rows, raw, list(sources))
