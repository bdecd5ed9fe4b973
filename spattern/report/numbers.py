"""``numbers.json``: every number the report's prose shows, formatted once, from the study.

A value that the results do not provide is left out (the typst ``val`` helper then shows a
``missing: <key>`` box); ``missing`` lists the figures and tables that could not be built.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from spattern.report.collect import unreachable_matches
from spattern.report.figures.kernels import KERNEL_LABELS  # spattern's two forward kernels
from spattern.report.figures.quality import BOUNDS  # oracle top-k: a bound, not a contender
from spattern.report.figures.quality import REFERENCE as CONTROLS  # dense and full causal: not contenders
from spattern.report.tables import distance_label, fmt, fmt_ci, fmt_p, fmt_pct, fmt_x


# scripts and modules that ran a benchmark, and the `spattern` command that runs it now
_ENTRY = (("spattern/cli/__main__.py", "spattern"), ("-m spattern.cli", "spattern"),
          ("benchmarks/compile_bench.py", "spattern bench compile"))
_BENCH_MODULE = re.compile(r"(?:spattern/evaluation/bench_|-m spattern\.evaluation\.bench_)(\w+?)(?:\.py)?$")


def bench_command(words: list[str], result: Path) -> str:
    """The command that writes the benchmark file ``result``, from the command words it recorded (its
    ``argv``, or its ``command`` split): the script or module as the ``spattern`` command that runs it
    now, and ``--json`` pointing at the file itself (the device machine's output path, or "...", is
    not where the result lives). Commands of other programs (a shell script with its settings) stay."""
    words = list(words)
    if words[:1] in (["python"], ["python3"]):
        start = 3 if words[1:2] == ["-m"] else 2
        head = " ".join(words[1:start])
    else:
        start, head = 1, (words[0] if words else "")
    cmd = "spattern" if head == "spattern" else next((c for k, c in _ENTRY if head.endswith(k)), None)
    if cmd is None and (m := _BENCH_MODULE.search(head)):
        cmd = f"spattern bench {m.group(1)}"
    if cmd is None:
        return shlex.join(words)
    rest = words[start:]
    if "--json" in rest and rest.index("--json") + 1 < len(rest):
        rest[rest.index("--json") + 1] = _disp(result)
    return " ".join([cmd, shlex.join(rest)]).strip()


def _file_commands(d: dict, path: Path) -> list[str]:
    """A benchmark file's commands: its own (``bench_command``), its runs', and for a file merged from
    repeats (``merged_from``: files in ``raw/`` beside it) each repeat's and the merge."""
    cmds = []
    if isinstance(d.get("argv"), list) and not isinstance(d.get("command"), str):
        cmds.append(bench_command([str(a) for a in d["argv"]], path))
    if isinstance(d.get("command"), str):  # one that starts with settings (VAR=...) runs a script: as recorded
        cmds.append(bench_command(shlex.split(d["command"]), path) if "=" not in d["command"].split()[0]
                     else d["command"])
    for run in (d.get("runs") or {}).values():
        if isinstance(run, dict) and isinstance(run.get("command"), str):
            cmds.append(run["command"])
    merged = [path.parent / "raw" / str(n) for n in d.get("merged_from") or []]
    if merged:
        for m in merged:
            try:
                argv = json.loads(m.read_text()).get("argv")
            except (OSError, json.JSONDecodeError):
                argv = None
            if isinstance(argv, list):
                cmds.append(bench_command([str(a) for a in argv], m))
        cmds.append(shlex.join(["python", "scripts/merge_bench.py", _disp(path), *map(_disp, merged)]))
    return cmds


def _commands(study) -> list[str]:
    cmds: list[str] = []
    for r in study.runs:
        env = r.env or {}
        c = env.get("command") or (shlex.join(env["argv"]) if isinstance(env.get("argv"), list) else None)
        cmds.append(c or f"spattern run experiments/{r.experiment}.toml")
    for f in study.bench + study.topk + study.compile_bench + study.memory:
        cmds += _file_commands(f.data, f.path)
    # the tables against a second baseline, each from the runs and settings it records
    cwd = Path.cwd().resolve()
    extra = sorted(p.resolve() for root in study.roots for p in Path(root).glob("*/compare_vs_*.json"))
    default = sorted((cwd / "results").glob("*/compare_vs_*.json"))  # what the script takes by default
    if extra:
        cmds.append("python scripts/recompute_comparisons.py"
                    + ("" if extra == default else " " + " ".join(_arg_path(p) for p in extra)))
    for f in study.throughput:  # a training-cost table's same-call ratios: the device logs, then the summary
        if f.path.parent.name in study.experiments():
            cmds += [c for c in f.data.get("logged_by") or [] if isinstance(c, str)]
            if isinstance(f.data.get("command"), str):
                cmds.append(f.data["command"])
    cmds += [c for root in study.roots for c in fit_commands(Path(root))]
    for f in study.reach:  # MQAR's reach at its queries, from the runs (and the draws it records)
        d = f.data.get("draws")
        cmds.append(shlex.join(["python", "scripts/mqar_reach.py", _arg_path(Path(f.path).parent)]
                               + (["--draws", d["template"], "--draws-label", d["label"], "--seeds", str(d["seeds"])]
                                  if d else [])))
    return collapse_repeats(sorted(set(cmds)))


_REPEAT = re.compile(r"_r(\d+)\.json\b")


def collapse_repeats(cmds: list[str]) -> list[str]:
    """Commands that differ only in a repeat's number in an output file (``..._r<k>.json``, the files a
    merged benchmark is made of) as one shell loop over the numbers, where the first of them was; the
    others as they are."""
    groups: dict[str, list[tuple[str, str]]] = {}  # the command with $r -> (number, command) of its repeats
    slots: list[str] = []  # each command, or a group's key at its first command's place
    for c in cmds:
        found = set(_REPEAT.findall(c))
        key = _REPEAT.sub("_r$r.json", c) if len(found) == 1 else None
        if key is None or key not in groups:
            slots.append(key or c)
        if key is not None:
            groups.setdefault(key, []).append((found.pop(), c))
    return [s if s not in groups else groups[s][0][1] if len(groups[s]) == 1
            else f"for r in {' '.join(n for n, _ in groups[s])}; do {s}; done" for s in slots]


def fit_commands(root: Path, configs: Path = Path("experiments")) -> list[str]:
    """The ``spattern fit`` command of each fitted pattern under ``root``/fit (what the study's ``fitted``
    runs read): the one it records, else ``--config`` of the fit configuration in ``configs`` whose ``out``
    is that file (fits written before the record had its command)."""
    import tomllib

    outs = {}
    for c in sorted(Path(configs).glob("fit_*.toml")):
        try:
            out = tomllib.loads(c.read_text()).get("out")
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if isinstance(out, str):
            outs[Path(out).resolve()] = c
    cmds = []
    for f in sorted((Path(root) / "fit").glob("*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not (isinstance(d, dict) and "fit" in d):
            continue
        if isinstance(d.get("command"), str):
            cmds.append(d["command"])
        elif (c := outs.get(f.resolve())) is not None:
            cmds.append(f"spattern fit --config {_arg_path(c)}")
    return cmds


def _arg_path(p: Path) -> str:
    """A path as a command's argument: relative to the working directory where it lies below it, else whole."""
    p, cwd = Path(p).resolve(), Path.cwd().resolve()
    return str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(p)


def _env(study) -> dict:
    out: dict = {}
    envs = study.envs()
    if not envs:
        return out
    devs = sorted({str(e.get("name") or (e.get("device") if e.get("device") not in ("cpu", "cuda") else None)
                       or ("CPU" if e.get("device") == "cpu" else e.get("device"))) for e, _ in envs})
    out["devices"] = ", ".join(devs)
    for key, getter in (("python", lambda e: e.get("python")),
                        ("torch", lambda e: (e.get("packages") or {}).get("torch", e.get("torch"))),
                        ("numpy", lambda e: (e.get("packages") or {}).get("numpy")),
                        ("cupy", lambda e: e.get("cupy") or (e.get("packages") or {}).get("cupy-cuda12x")
                         or (e.get("packages") or {}).get("cupy-cuda13x"))):
        vals = sorted({str(getter(e)) for e, _ in envs if getter(e)})
        if vals:
            out[key] = ", ".join(vals)
    revs = sorted({(e.get("git") or {}).get("revision", "")[:10] + (" (dirty)" if (e.get("git") or {}).get("dirty") else "")
                   for e, _ in envs if (e.get("git") or {}).get("revision")})
    if revs:  # each result's own revision is in the environment table's CSV; the prose counts them
        out["git"] = f"revision {revs[0]}" if len(revs) == 1 else f"{len(revs)} git revisions"
    return out


def quality_row(name: str, pts: list[dict]) -> dict:
    """The quality sentence of one experiment (``collect.collect_quality`` points): at its lowest cost,
    the pattern with the lowest mean KL to dense (and the patterns whose intervals overlap its: they
    are not ranked against it, no paired test compares them) and the one that loses the most, the oracle
    bound beside them, dense perplexity. Matched runs are compared at the lowest target they were matched
    to, whatever density each achieved; an experiment without matching, at its lowest density. Dense,
    the bound and runs outside the matching (causal, the numerical control) are not contenders."""
    sparse = [p for p in pts if p["key"] != "dense" and p["key"] not in BOUNDS and p["metric"] == "kl"]
    row = {"name": name}
    bound = [p for p in pts if p["key"] in BOUNDS and p["metric"] == "kl"]
    if bound:  # the oracle's KL, beside the patterns' (a bound: what exact block scores reach)
        row.update(bound_key=bound[0]["key"], bound_kl=fmt_ci(bound[0]["value"], bound[0]["lo"], bound[0]["hi"]),
                   bound_density=fmt_pct(bound[0]["density"]))
    matched = [p for p in sparse if p.get("target") is not None]
    if matched:
        low = min(p["target"] for p in matched)
        at = [p for p in matched if p["target"] == low]
        lo_d, hi_d = fmt_pct(min(p["density"] for p in at)), fmt_pct(max(p["density"] for p in at))
        where = f"matched to {fmt_pct(low)}, achieved {lo_d if lo_d == hi_d else f'{lo_d}-{hi_d}'}"
    else:
        low = min((p["density"] for p in sparse), default=None)
        at = [p for p in sparse if p["density"] == low]
        where = fmt_pct(low) if low is not None else None
    if at:
        bestp = min(at, key=lambda p: p["value"])
        worst = max(at, key=lambda p: p["value"])
        # families (keys, not the series labels a multi-context experiment shows) for quality_summary
        row["contenders"] = sorted({str(p["key"]) for p in at})
        row["best_family"] = str(bestp["key"])
        row["overlap_families"] = sorted({str(p["key"]) for p in at if p is not bestp
                                          and p["lo"] <= bestp["hi"] and bestp["lo"] <= p["hi"]})
        row.update(lowest_density=where, best_key=bestp.get("series", bestp["key"]),
                   best_kl=fmt_ci(bestp["value"], bestp["lo"], bestp["hi"]), worst_key=worst.get("series", worst["key"]),
                   worst_kl=fmt_ci(worst["value"], worst["lo"], worst["hi"]))
        # contenders whose interval overlaps the lowest one's: no paired test between them, so not ranked
        near = [p.get("series", p["key"]) for p in sorted(at, key=lambda p: p["value"])
                if p is not bestp and p["lo"] <= bestp["hi"] and bestp["lo"] <= p["hi"]]
        if near:
            row["best_overlap"] = ", ".join(str(k) for k in near)
    dense = [p for p in pts if p["key"] == "dense" and p["metric"] == "ppl"]
    if dense:
        row["dense_ppl"] = fmt(dense[0]["value"])
    return row


def quality_summary(rows: list[dict], pattern: str = "outline") -> dict | None:
    """The quality rows (``quality_row``) in one sentence's numbers: how often each family had the lowest
    KL at its experiment's lowest cost ("streaming in 6, fitted in 2"), and in how many of the experiments
    that ran ``pattern`` at that cost it was the lowest or within the lowest's interval (not ranked).
    None without a ranked row; no ``pattern_*`` keys where no experiment ran ``pattern`` at its lowest cost."""
    ranked = [r for r in rows if r.get("best_family") is not None]
    if not ranked:
        return None
    counts = Counter(r["best_family"] for r in ranked)
    out = {"n": str(len(ranked)), "experiments": "experiment" if len(ranked) == 1 else "experiments",
           "best": ", ".join(f"{k} in {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))}
    ran = [r for r in ranked if pattern in r.get("contenders", ())]
    if ran:
        top = [r for r in ran if r["best_family"] == pattern or pattern in r.get("overlap_families", ())]
        out.update(pattern=pattern, pattern_top=str(len(top)), pattern_ran=str(len(ran)))
        if top:
            out["pattern_top_names"] = ", ".join(r["name"] for r in top)
    return out


def synthetic_row(name: str, pts: list[dict], xname: str) -> dict:
    """The retrieval sentence of one experiment (``collect.collect_synthetic`` points): at the largest
    distance (or depth) tested, dense's accuracy and the best sparse pattern's (ties named together,
    "every sparse pattern" when all tie); causal and the oracle bound are not contenders."""
    far = max(p["distance"] for p in pts)
    at_far = [p for p in pts if p["distance"] == far]
    dense = [p for p in at_far if p["key"] == "dense"]
    rivals = [p for p in at_far if p["key"] not in ("dense", "causal") and p["key"] not in BOUNDS]
    row = {"name": name, "x": xname, "distance": distance_label(at_far[0])}
    if dense:
        row["dense"] = fmt_ci(dense[0]["value"], dense[0]["lo"], dense[0]["hi"])
    if rivals:
        top = max(p["value"] for p in rivals)
        best = [p for p in rivals if p["value"] == top]
        row.update(best_key="every sparse pattern" if len(best) == len(rivals) > 1 else ", ".join(str(p["key"]) for p in best),
                   best=fmt_ci(best[0]["value"], best[0]["lo"], best[0]["hi"]))
    return row


def synthetic_groups(rows: list[dict]) -> list[dict]:
    """``synthetic_row`` rows with the same sparse outcome (axis, best pattern, its value) in one clause,
    and within it the experiments with the same dense value together: "every sparse pattern 0 [0, 0]
    against dense 1.00 [...] (a, 2 048-4 095; b, ...), 0.5 [...] (c, ...)". Each group: x, best_key and
    best where the rows have them; ``dense``: a list of {"dense" (absent where the rows have none),
    "names": [{"name", "distance"}]}, in the rows' order; ``single``: the group is one experiment."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        g = groups.setdefault((r["x"], r.get("best_key"), r.get("best")),
                              {k: r[k] for k in ("x", "best_key", "best") if k in r} | {"dense": []})
        sub = next((d for d in g["dense"] if d.get("dense") == r.get("dense")), None)
        if sub is None:
            sub = ({"dense": r["dense"]} if "dense" in r else {}) | {"names": []}
            g["dense"].append(sub)
        sub["names"].append({"name": r["name"], "distance": r["distance"]})
    return [g | {"single": len(g["dense"]) == 1 and len(g["dense"][0]["names"]) == 1} for g in groups.values()]


LEARNT = 0.9  # MQAR accuracy above which a dense run has learnt the task (a run on the plateau scores 0.20-0.25)


def mqar_learnt(study) -> list[dict]:
    """Per experiment with MQAR runs, how many seeds of each dense series (pattern "dense": the
    baseline, or a schedule variant of it) learnt the task, accuracy >= LEARNT: MQAR is learnt in an
    abrupt transition after a plateau, and whether a seed makes it decides its comparisons."""
    out = []
    for e in study.experiments():
        runs = [r for r in study.runs if r.experiment == e and r.pattern == "dense"
                and isinstance(r.metrics.get("mqar_accuracy"), (int, float)) and math.isfinite(r.metrics["mqar_accuracy"])]
        series = {}
        for r in runs:
            series.setdefault(r.key, []).append(r.metrics["mqar_accuracy"] >= LEARNT)
        if series:
            out.append({"name": e, "series": ", ".join(f"{k} {sum(v)} of {len(v)}" for k, v in sorted(series.items()))})
    return out


def _count(x: float) -> str:
    """A median count: whole as a whole number, a midpoint with its one decimal."""
    return fmt(int(x)) if float(x).is_integer() else fmt(float(x), 2)


def mqar_reach_rows(study, hidden: set[str] = frozenset()) -> list[dict]:
    """Per MQAR experiment the report shows with a ``reach_by_distance.json`` (scripts/mqar_reach.py),
    its largest distance bucket: per pattern, the share of the held-out queries whose value the
    model's layers connect to the query, the median number of routes, and the accuracy there (means
    over the numbers of pairs, as the accuracy figure averages), the patterns by accuracy, best first."""
    out = []
    for f in sorted(study.reach, key=lambda f: str(f.data.get("experiment"))):
        if f.data["experiment"] in hidden or not f.data["by_distance"]:
            continue
        layers = f.data["layers"]
        far = max(r["lo"] for r in f.data["by_distance"])
        rows = sorted((r for r in f.data["by_distance"] if r["lo"] == far and r.get("accuracy") is not None),
                      key=lambda r: (-r["accuracy"], r["label"]))
        if rows:
            out.append({"name": f.data["experiment"], "bucket": rows[0]["bucket"], "layers": fmt(int(layers)),
                        "source": _disp(f.path),
                        "patterns": [{"key": r["label"], "reach": f"{r[f'reach_{layers}']:.2f}",
                                      "routes": _count(r[f"routes_{layers}"]),
                                      "accuracy": f"{r['accuracy']:.2f}"} for r in rows],
                        **_draws(f.data, far, layers), **_per_run(f.data, far, layers)})
    return out


def _per_run(data: dict, far: int, layers: int) -> dict:
    """The reach file's ``per_run`` (a run label with a random draw per run): over its runs, Spearman's
    correlation of accuracy at the far bucket with the routes of each run's own draw, and the paired
    comparison by seed with a label that trained one of the draws in every run; {} without it."""
    out = []
    for e in data.get("per_run") or []:
        c = e.get("spearman", {}).get(f"routes_{layers}")
        if e.get("lo") != far or not c:
            continue
        row = {"label": e["label"], "n": fmt(int(c["n"])), "rho": f"{c['rho']:+.2f}", "p": fmt_p(c["p"])}
        if e.get("against_fixed"):  # mqar_reach lists only the comparisons it could make
            a = e["against_fixed"][0]
            row["fixed"] = {"baseline": a["baseline"], "diff": fmt_ci(a["diff"], *a["diff_ci"], sig=2),
                            "p": fmt_p(a["p"]), "mean": f"{a['mean']:.2f}", "mean_baseline": f"{a['mean_baseline']:.2f}"}
        out.append(row)
    return {"per_run": out} if out else {}


def _draws(data: dict, far: int, layers: int) -> dict:
    """The reach file's ``draws`` (scripts/mqar_reach.py --draws): over the draws of one random pattern, each
    in every layer, the range of median routes at the far bucket; {} without it (or for another bucket)."""
    d = data.get("draws")
    single = [r[f"routes_{layers}"] for r in (d or {}).get("rows", []) if len(set(r["draws"])) == 1]
    if not d or d.get("lo") != far or not single:
        return {}
    return {"draws": {"label": d["label"], "n": fmt(len(single)), "lo": _count(min(single)),
                      "hi": _count(max(single))}}


def numbers(study, b, targets, kernel_slice, q_points, syn, abl, out: Path, title: str,
            checks: dict[str, str] | None = None, hidden: set[str] | None = None) -> dict:
    """The report's numbers (data/numbers.json). ``checks``: the quality check experiments (their rows:
    the checks table, ``check_row``); ``hidden``: every check experiment (no headline row; default: those
    of ``checks``)."""
    hidden = set(checks or {}) if hidden is None else hidden
    n: dict = {"title": title}
    runs = study.runs
    # the series of a trained check are settings of its parent's (MQAR's schedules), not pattern families
    trained_checks = hidden - set(checks or {})
    keys = sorted({r.key for r in runs if r.experiment not in trained_checks}
                  | {c.key for c in study.curves if str(c.experiment) not in trained_checks})
    n_exp = len(study.experiments())
    n["study"] = {"experiments": fmt(n_exp), "experiment_list": ", ".join(study.experiments()),
                  "experiments_phrase": f"{fmt(n_exp)} experiment{'s' if n_exp != 1 else ''}",
                  "runs_phrase": f"{fmt(len(runs))} run{'s' if len(runs) != 1 else ''}",
                  "runs": fmt(len(runs)), "finished": fmt(sum(r.status == "finished" for r in runs)),
                  "families": ", ".join(keys), "n_families": fmt(len(keys)),
                  "results": ", ".join(r.name for r in study.roots)}
    n["env"] = _env(study)
    n["commands"] = _commands(study)
    n["report_command"] = "spattern report " + " ".join(_disp(r) for r in study.roots) + f" --out {_disp(out)}"

    cost = b.tables.get("cost")
    if cost is not None:
        n["pattern"] = {"N": fmt(cost.raw[0]["N"]),
                        "list": [{"key": r["key"], "pattern": r["pattern"], "density": fmt_pct(r["density"]),
                                  "block_density": fmt_pct(r["block_density"]), "growth": r["asymptotic"]}
                                 for r in cost.raw]}

    if "kernels" in b.tables:
        k: dict = {"slice": f"{'forward+backward' if kernel_slice['backward'] else 'forward'}, head dim "
                            f"{kernel_slice['D']}, {'causal' if kernel_slice['causal'] else 'non-causal'}, "
                            f"{kernel_slice['family']} layouts, "
                            f"{' and '.join(sorted({str(r.get('device')) for r in b.tables['kernels'].raw}))}",
                   "targets": [], "met": fmt(0), "n_targets": fmt(len(targets))}
        met = 0
        for t in targets:
            row = {"N": fmt(t["N"]), "density": fmt_pct(t["density"]), "target": fmt_x(t["speedup"])}
            if t.get("cell") is not None:
                row.update(vs_flash=fmt_x(t.get("vs_sdpa_flash")), vs_cudnn=fmt_x(t.get("vs_sdpa_cudnn")),
                           verdict=b.tables["targets"].rows[targets.index(t)][-1])
                met += bool(t.get("met_sdpa_flash") and t.get("met_sdpa_cudnn"))
            k["targets"].append(row)
        k["met"] = fmt(met)
        # the best of either spattern kernel on any GPU of the slice, named with both
        best = max(((r["ms_sdpa_flash"] / r[f"ms_{m}"], m, r) for r in b.tables["kernels"].raw for m in KERNEL_LABELS
                    if r.get(f"ms_{m}") and r.get("ms_sdpa_flash") and (r.get("density") or 1) < 1),
                   key=lambda t: t[0], default=None)
        if best is not None:
            x, m, r = best
            k["best"] = {"speedup": fmt_x(x), "N": fmt(r["N"]), "density": fmt_pct(r["density"]),
                         "kernel": KERNEL_LABELS[m], "device": str(r.get("device") or "–")}
        n["kernel"] = k
    if "kernels_hopper" in b.tables:  # the sm_90a kernel beside the mma.sync one (tables.hopper_table)
        n["hopper"] = hopper_numbers(b.tables["kernels_hopper"].raw,
                                     b.tables.get("kernels_hopper_main", b.tables["kernels_hopper"]).raw)
    if "memory" in b.tables:  # bytes kept per layout (tables.memory_table), at the largest N per family
        raw = b.tables["memory"].raw
        big = max(r["N"] for r in raw)
        kib = lambda r, k: fmt(r[f"bytes_{k}"] / 1024) if isinstance(r.get(f"bytes_{k}"), (int, float)) else "–"  # noqa: E731
        n["memory"] = {"N": fmt(big), "rows": [
            {"layout": r["family"], "density": fmt_pct(r["density"]),
             "mma_sync": kib(r, "mma_sync"), "hopper": kib(r, "hopper"), "flex": kib(r, "flex"),
             "bool_mib": fmt(r["bytes_dense_bool_mask"] / 2**20)} for r in raw if r["N"] == big]}
    if study.topk:  # head dim 128 (the kernel targets') where a file has it, else the last file read
        d = next((f.data for f in study.topk if f.data.get("head_dim") == 128), study.topk[-1].data)
        if isinstance(d.get("build_graph_ms"), (int, float)) and isinstance(d.get("attention_ms"), (int, float)):
            n["topk"] = {"build_graph_us": fmt(1e3 * d["build_graph_ms"]), "attention_ms": fmt(d["attention_ms"]),
                         "fraction": fmt_pct(d["build_graph_ms"] / d["attention_ms"]), "N": fmt(d.get("n")),
                         "k": fmt(d.get("k")), "device": str(d.get("device", "–")), "D": fmt(d.get("head_dim")),
                         "heads": fmt(d.get("heads"))}

    if study.compile_bench:
        d = study.compile_bench[-1].data
        h, ag, m = d.get("headline") or {}, d.get("analytic_vs_generic") or {}, d.get("machine") or {}
        c = {}
        if isinstance(h.get("median_ms"), (int, float)):
            c.update(pattern=str(h.get("pattern")), N=fmt(h.get("n")), median_ms=fmt(h["median_ms"]),
                     repeats=fmt(h.get("repeats")), blocks=fmt(h.get("nnz")))
        if isinstance(ag.get("ratio"), (int, float)):
            c.update(ratio=fmt(ag["ratio"]), ratio_N=fmt(ag.get("n")))
        if m.get("cpus"):
            c["machine"] = f"{m['cpus']} CPU cores, Python {m.get('python', '–')}"
        if c:
            n["compile"] = c

    qs = [quality_row(e, pts) for e, pts in q_points.items()]
    if qs:
        n["quality"] = {"experiments": qs}
        if (summary := quality_summary(qs)) is not None:
            n["quality"]["summary"] = summary

    if study.significance:
        rows = distinct_comparisons(study.significance)
        sig = [r for r in rows if r.get("significant")]
        alphas = sorted({f.data.get("alpha") for f in study.significance if f.data.get("alpha") is not None})
        n["significance"] = {"rows": fmt(len(rows)), "significant": fmt(len(sig)), "not_significant": fmt(len(rows) - len(sig)),
                             "alpha": ", ".join(f"{a:g}" for a in alphas), "correction": ", ".join(sorted({str(f.data.get("correction")) for f in study.significance}))}
        finite = [r for r in rows if isinstance(r.get("effect_size"), (int, float)) and math.isfinite(r["effect_size"])]
        if finite:
            top = max(finite, key=lambda r: abs(r["effect_size"]))
            n["significance"]["largest"] = {"comparison": f"{top.get('run')} vs {top.get('baseline')}",
                                            "metric": str(top.get("metric")), "experiment": top["experiment"],
                                            "n": fmt(top.get("n")),
                                            "diff": fmt_ci(top.get("diff"), top.get("diff_ci_low"), top.get("diff_ci_high")),
                                            "p_holm": fmt_p(top.get("p_holm")), "effect": fmt(top["effect_size"], 2)}

    heads = [h for f in study.significance if f.path.parent.name not in hidden and (h := headline(f.data))]
    if heads:
        n["headline"] = heads
    if verdict := pattern_verdict([(f.data, f.path) for f in study.significance if f.path.parent.name not in hidden]):
        n["verdict"] = verdict

    syn_rows = [synthetic_row(e, pts, xname) for e, (pts, xname) in syn.items()]
    if syn_rows:
        n["synthetic"] = {"experiments": syn_rows, "groups": synthetic_groups(syn_rows)}
    if learnt := mqar_learnt(study):
        n["mqar_learnt"] = {"threshold": str(LEARNT), "experiments": learnt}
    if reach := mqar_reach_rows(study, hidden):
        n["mqar_reach"] = reach
    if abl:
        n["ablation"] = {"params": ", ".join(dict.fromkeys(p["param"] for p in abl)),
                         "experiments": ", ".join(dict.fromkeys(p["experiment"] for p in abl))}
    if unreach := unreachable_rows(study, hidden):
        n["unreachable"] = unreach
    if unfinished := unfinished_rows(study):
        n["unfinished"] = unfinished
    n["missing"] = [f"{m['kind']} {m['name']}: {m['what']}" for m in b.manifest.missing]
    return n


def pattern_verdict(docs: list[tuple[dict, Path]], run: str = "outline") -> dict | None:
    """The study's own pattern (``run``, and its variants ``run_*``) in one place: the experiments whose
    primary comparison against their baseline (``compare.json``'s ``headline``) has it, those where it is the
    best contender, and each direct comparison with another sparse pattern (a ``compare_vs_<baseline>.json``
    row of ``run`` on the primary metric; not a table pooled over experiments, whose own rows count):
    difference [CI], Holm p and the verdict, better, worse or null (not significant)."""
    from spattern.report.tables import primary_metric

    mine = lambda name: name == run or str(name).startswith(run + "_")  # noqa: E731
    docs = sorted(docs, key=lambda d: str(d[1]))
    heads = [h for doc, path in docs if path.name == "compare.json" and (h := headline(doc))]
    present = [h["experiment"] for h in heads if mine(h["best"]["run"]) or run in h]
    if not present:
        return None
    best = [f"{h['experiment']} ({h['best']['run']})" for h in heads if mine(h["best"]["run"])]
    direct = []
    for doc, path in docs:
        base = str(doc.get("baseline"))
        if path.name == "compare.json" or base == "dense" or mine(base) or doc.get("pooled"):
            continue  # (a table pooled over experiments, spattern pool, repeats their own comparisons)
        metric = primary_metric(doc)
        for r in doc.get("rows", []):
            if r.get("run") != run or r.get("metric") != metric or not isinstance(r.get("diff"), (int, float)):
                continue
            good = r["diff"] > 0 if r.get("higher_is_better") else r["diff"] < 0
            direct.append({"experiment": str(doc.get("experiment") or path.parent.name), "baseline": base,
                           "metric": str(metric), "diff": fmt_ci(r["diff"], r.get("diff_ci_low"), r.get("diff_ci_high")),
                           "p_holm": fmt_p(r.get("p_holm")), "n": fmt(r.get("n")),
                           "verdict": ("better" if good else "worse") if r.get("significant") else "null"})
    return {"run": run, "experiments": fmt(len(present)), "best": best, "direct": direct,
            "counts": {v: fmt(sum(d["verdict"] == v for d in direct)) for v in ("better", "worse", "null")}}


def unreachable_rows(study, hidden: set[str] = frozenset()) -> list[dict]:
    """``collect.unreachable_matches`` for the sentence: per family, the experiments (checks left out;
    ``where``: the one, or how many), the cost achieved (a range when several) and the target, as percentages."""
    rows = []
    for g in unreachable_matches(study):
        costs = {e: v for e, v in g["achieved"].items() if e not in hidden}
        if costs:
            exps, every = list(costs), [c for v in costs.values() for c in v]
            lo, hi = fmt_pct(min(every)), fmt_pct(max(every))
            rows.append({"key": g["key"], "experiments": ", ".join(exps), "target": fmt_pct(g["target"]),
                         "where": exps[0] if len(exps) == 1 else f"{len(exps)} experiments",
                         "achieved": lo if lo == hi else f"{lo}-{hi}"})
    return rows


_RUN_HASH = re.compile(r"-[0-9a-f]{10}$")


def unfinished_rows(study) -> list[dict]:
    """Per experiment, its runs that are left out because they have not finished: the run folders its
    config expands to (``experiment.json``'s ``runs``) without a finished run, and every run folder found
    with another status (keyed by its metrics' ``run_id``: a folder being adopted under a grown id,
    ``grow.adopt``, stands for that id). Each run named by its folder without the id's hash (kept where
    two names would read alike), with how far it got: "stopped after k examples" (distinct example ids
    of a run in progress), "status <s>" (one that failed, say), "not started", or, where a finished run of
    the same label and seed under another id is shown instead (the config changed since, or a run not yet
        grown), "not run; an earlier version is shown". In the experiments' order; experiments whose runs read
    alike (a family added to several configs, not yet run) share one row, their names joined by commas."""
    finished = {(r.experiment, r.dir.name) for r in study.runs}
    stopped: dict[tuple[str, str], str] = {}
    for d, m in study.unfinished:
        ex = d / "per_example.jsonl"
        ids = set()
        if m.get("status") == "running" and ex.is_file():
            for line in ex.read_text().splitlines():
                try:
                    ids.add(str(json.loads(line).get("id", line)))
                except (json.JSONDecodeError, AttributeError):
                    continue
        stopped[(str(m["experiment"]), str(m.get("run_id") or d.name))] = (
            f"stopped after {len(ids)} examples" if ids else f"status {m.get('status')}")
    shown = {(e, _RUN_HASH.sub("", name)) for e, name in finished}
    out: dict[str, dict[str, str]] = {}
    for f in study.meta:
        e, planned = str(f.data.get("experiment")), f.data.get("runs")
        for name in planned if isinstance(planned, list) else ():
            if (e, name) not in finished:
                earlier = (e, _RUN_HASH.sub("", name)) in shown
                out.setdefault(e, {})[name] = stopped.get(
                    (e, name), "not run; an earlier version is shown" if earlier else "not started")
    for (e, name), how in stopped.items():
        out.setdefault(e, {}).setdefault(name, how)
    said: dict[str, list[str]] = {}  # what is said -> the experiments it is said of (one row each)
    for e, runs in sorted(out.items()):
        short = [_RUN_HASH.sub("", name) for name in runs]
        named = [s if short.count(s) == 1 else name for s, name in zip(short, runs)]
        said.setdefault(", ".join(_seed_groups(list(zip(named, runs.values())))), []).append(e)
    return [{"experiment": ", ".join(es), "runs": runs} for runs, es in said.items()]


_SEEDED = re.compile(r"^(?P<label>.+)-s(?P<seed>\d+)$")


def _seed_groups(runs: list[tuple[str, str]]) -> list[str]:
    """"name (how)" per run, where the runs of one label (``<label>-s<seed>``) that got equally far are one
    entry, "label seeds 0-8 (how)", at the first one's place."""
    groups: dict[tuple[str, str], list[int]] = {}
    order: list[tuple[str, str] | str] = []
    for name, how in runs:
        m = _SEEDED.match(name)
        if m is None:
            order.append(f"{name} ({how})")
            continue
        key = (m["label"], how)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(int(m["seed"]))
    out = []
    for item in order:
        if isinstance(item, str):
            out.append(item)
            continue
        seeds = sorted(groups[item])
        label, how = item
        out.append(f"{label}-s{seeds[0]} ({how})" if len(seeds) == 1 else f"{label} seeds {_seed_spans(seeds)} ({how})")
    return out


def _seed_spans(xs: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    spans: list[list[int]] = []
    for x in xs:
        if spans and x == spans[-1][1] + 1:
            spans[-1][1] = x
        else:
            spans.append([x, x])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)


def distinct_comparisons(files) -> list[dict]:
    """The comparison rows of the significance files, each (experiment, metric, pair of runs) once: a
    pair compared in its experiment's own table (``compare.json``) and again, the other way round,
    against a second baseline (``compare_vs_<run>.json``) counts once, as its own table has it."""
    ordered = sorted(files, key=lambda f: (str(f.path.parent), f.path.name != "compare.json", f.path.name))
    seen, out = set(), []
    for f in ordered:
        for r in f.data.get("rows", []):
            if r.get("run") == r.get("baseline"):  # the baseline's own row (its note may add reasons)
                continue
            key = (str(f.path.parent), r.get("metric"), frozenset((str(r.get("run")), str(r.get("baseline")))))
            if key not in seen:
                seen.add(key)
                out.append({"experiment": str(f.data.get("experiment") or f.path.parent.name), **r})
    return out


def check_row(experiment: str, parent: str, docs: list[tuple[dict, Path]]) -> dict | None:
    """A check experiment's row (``check_of`` in its config: ``x_draws`` checks ``x``), from its comparison
    files: on the primary metric of its own table (``compare.json``), each run's difference from its
    baseline and the range of their Holm p; then, for each further table against one of its runs
    (``compare_vs_<run>.json``, another experiment's run with ``--also``), the same against that run (the own
    baseline left out). Names without the ``study_`` prefix. None without a comparison."""
    from spattern.report.tables import primary_metric

    own = next((d for d, p in docs if p.name == "compare.json"), None)
    metric = primary_metric(own) if own else None
    if metric is None:
        return None
    short = lambda name: str(name).removeprefix("study_")  # noqa: E731  (x:label keeps its experiment's name)

    def against(doc, skip=()):
        rows = sorted((r for r in doc.get("rows", []) if r.get("metric") == metric and r.get("run") != r.get("baseline")
                       and r.get("run") not in CONTROLS and r.get("run") not in skip
                       and isinstance(r.get("diff"), (int, float))), key=lambda r: str(r["run"]))
        if not rows:
            return None
        ps = sorted((r["p_holm"] for r in rows if isinstance(r.get("p_holm"), (int, float))))
        p = "–" if not ps else fmt_p(ps[0]) if fmt_p(ps[0]) == fmt_p(ps[-1]) else f"{fmt_p(ps[0])} to {fmt_p(ps[-1])}"
        mean_of = doc.get("average") or {}  # compare --average: a run that is the mean of several (seeds)
        name = lambda x: short(x) + (f" (mean of {len(mean_of[x])})" if x in mean_of else "")  # noqa: E731
        return {"baseline": name(doc.get("baseline")), "runs": ", ".join(f"{name(r['run'])} {r['diff']:+.3f}" for r in rows),
                "p_holm": p}

    first = against(own)
    if first is None:
        return None
    more = [c for d, p in sorted(docs, key=lambda dp: dp[1].name) if p.name.startswith("compare_vs_")
            if (c := against(d, skip=(own.get("baseline"),))) is not None]
    return {"name": short(experiment), "parent": short(parent), "metric": metric, "comparisons": [first, *more]}


def headline(doc: dict) -> dict | None:
    """An experiment's primary comparison: the best run against the baseline and, when present,
    outline attention's row (difference [CI], Holm p); the smallest Holm-adjusted p an exact paired
    test can reach with n pairs over the m comparisons of the metric (m * 2 / 2^n, at most 1) tells
    whether n could show significance after correction."""
    from spattern.report.tables import DISAGREE, disagrees, primary_metric

    metric = primary_metric(doc)
    rows = [r for r in doc.get("rows", []) if r.get("metric") == metric and r.get("run") != r.get("baseline")
            and isinstance(r.get("diff"), (int, float))]
    if not rows:
        return None
    sign = 1 if rows[0].get("higher_is_better") else -1
    contenders = [r for r in rows if r.get("run") not in CONTROLS and r.get("run") not in BOUNDS] or rows
    best = max(contenders, key=lambda r: sign * r["diff"])
    row = lambda r: {"run": str(r.get("run")), "diff": fmt_ci(r["diff"], r.get("diff_ci_low"), r.get("diff_ci_high")),  # noqa: E731
                     "p_holm": fmt_p(r.get("p_holm")) + DISAGREE * disagrees(r), "effect": fmt(r.get("effect_size"), 2),
                     "significant": "significant" if r.get("significant") else "not significant"}
    n_pairs = max(int(r.get("n") or 0) for r in rows)
    out = {"experiment": str(doc.get("experiment")), "metric": metric, "baseline": str(doc.get("baseline")),
           "n": fmt(n_pairs), "comparisons": fmt(len(rows)), "best": row(best),
           "test": str(rows[0].get("test", "")),
           "direction": "higher" if sign > 0 else "lower"}
    if rows[0].get("test") in ("wilcoxon", "permutation") and n_pairs:  # exact: p >= 2 / 2^n, Holm: x m
        out["min_p"] = fmt_p(min(1.0, len(rows) * 2.0 / 2 ** n_pairs))
    outl = [r for r in rows if r.get("run") == "outline"]
    if outl and outl[0] is not best:
        out["outline"] = row(outl[0])
    return out


def _disp(p: Path) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def _ranges(rows: Sequence[dict], fill: bool = False) -> dict:
    """min-max of the Hopper kernel's ratios and TFLOP/s over ``rows`` (``tables.hopper_table``'s raw);
    ``fill``: "–" for a value no row has (the prose reads every key)."""
    dash = {"min": "–", "max": "–"}
    out = {"vs_mma_sync": dash, "vs_flex": dash, "vs_cudnn": dash, "tflops": dash} if fill else {}
    for key, name in (("hopper_vs_mma_sync", "vs_mma_sync"), ("hopper_vs_flex_native", "vs_flex"),
                      ("hopper_vs_cudnn", "vs_cudnn"), ("tflops_hopper", "tflops")):
        v = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if v:
            lo, hi = (fmt(min(v), 3), fmt(max(v), 3)) if key == "tflops_hopper" else (fmt_x(min(v)), fmt_x(max(v)))
            out[name] = {"min": lo, "max": hi}
    return out


def hopper_numbers(raw: Sequence[dict], shown: Sequence[dict]) -> dict:
    """The Hopper kernel's sentence: over every cell (``raw``: tables.hopper_table's rows, any GPU) and per
    GPU (``by_device``: the kernels and the baselines differ between GPUs, so ranges are per GPU; ``in_table``
    where ``shown``, the PDF's table, has its cells), and the Project C targets it missed, furthest first."""
    targeted = lambda r: bool(r.get("target_vs_cudnn") and r.get("hopper_vs_cudnn"))  # noqa: E731
    with_t = [r for r in raw if targeted(r)]
    met = lambda rows: fmt(sum(r["hopper_vs_cudnn"] >= r["target_vs_cudnn"] for r in rows))  # noqa: E731
    dims = lambda rows: ", ".join(sorted({fmt(r["D"]) for r in rows}))  # noqa: E731
    gpu = lambda r: str(r.get("device") or "–")  # noqa: E731
    h = {"cells": fmt(len(raw)), "D": dims(raw), "table_D": dims(shown), "n_targets": fmt(len(with_t)),
         "met": met(with_t), **_ranges(raw)}
    shown_gpus = {gpu(r) for r in shown}
    h["by_device"] = []
    for g in sorted({gpu(r) for r in raw}):
        rows = [r for r in raw if gpu(r) == g]
        tg = [r for r in rows if targeted(r)]
        h["by_device"].append({"device": g, "cells": fmt(len(rows)), "D": dims(rows), "in_table": g in shown_gpus,
                               "n_targets": fmt(len(tg)), "met": met(tg), **_ranges(rows, fill=True)})
    h["missed"] = [{"device": gpu(r), "D": fmt(r["D"]), "layout": str(r.get("family")),
                    "causal": "causal" if r["causal"] else "non-causal", "N": fmt(r["N"]),
                    "density": fmt_pct(r["density"]), "measured": fmt_x(r["hopper_vs_cudnn"]),
                    "target": fmt_x(r["target_vs_cudnn"])}
                   for r in sorted(with_t, key=lambda r: r["hopper_vs_cudnn"] / r["target_vs_cudnn"])
                   if r["hopper_vs_cudnn"] < r["target_vs_cudnn"]]  # furthest from its target first
    h["missed_count"] = fmt(len(h["missed"]))
    h["missed_worst"] = h["missed"][:2]  # the prose names these; every cell is in tables/kernels_hopper.csv
    return h
