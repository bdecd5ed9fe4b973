"""From a ``Study`` to the points each figure and table draws, and the files they came from.

Every ``collect_*`` function returns ``(data, sources)``; ``sources`` is the list of results
files the data was computed from (the manifest records them with their hashes). Confidence
intervals (95%, t interval of a mean): over seeds when a series has several runs, else over the
run's per-example values; perplexity bands are the NLL interval carried through exp, around the
run's reported perplexity. The significance table (``compare``) has its own bootstrap intervals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from spattern.report.data import QUALITY_METRICS, Curve, Run, Study, gpu_name, mean_ci

FIT_METRICS = ("kl", "top1_agreement", "top1", "recall")  # a training-free comparison against dense logs one of these
SYNTH_X = ("distance", "depth")
SYNTH_Y = ("correct", "accuracy", "passkey_correct")


def _is_ablation(name: str) -> bool:
    return "ablation" in name.lower()


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_metric_ci(runs: Sequence[Run], metric: str) -> tuple[float, float, float]:
    """(value, low, high) of ``metric`` for one series point. Several runs (seeds): t interval over
    their ``metrics[metric]``. One run: the reported value with a t interval from its
    per-example values (``ppl``: from ``nll``, exp-transformed relative to the reported value)."""
    vals = [r.metrics.get(metric) for r in runs if _finite(r.metrics.get(metric))]
    if len(runs) > 1 and len(vals) > 1:
        return mean_ci(vals, method="t")
    if not vals:
        return math.nan, math.nan, math.nan
    value, run = float(vals[0]), runs[0]
    src = "nll" if metric == "ppl" else metric
    x = run.values(src)
    if x.size < 2:
        return value, math.nan, math.nan
    m, lo, hi = mean_ci(x)
    if metric == "ppl":
        return value, value * math.exp(lo - m), value * math.exp(hi - m)
    return value, value + (lo - m), value + (hi - m)


def _sources(runs: Sequence[Run], per_example: bool = True) -> list[Path]:
    out: list[Path] = []
    for r in runs:
        out += r.sources
        if per_example and r.per_example_path is not None:
            out.append(r.per_example_path)
    return out


def density_group(experiment: str) -> str:
    """The density sweep an experiment belongs to: its name without a ``_d<NN>`` suffix
    (``study_x_d50`` is ``study_x`` at another target density)."""
    return re.sub(r"_d\d+$", "", experiment)


def member_of(experiment: str, experiments: Sequence[str], check_of: dict[str, str] | None = None) -> str | None:
    """The experiment among ``experiments`` that ``experiment`` is part of, else None: the sweep of a
    density-sweep member (``study_x_d50`` beside ``study_x``: drawn in the sweep's figure), or the
    experiment it checks one setting of (``check_of`` in its config, ``Study.check_of()``: BigBird's
    random draws). A member's retrieval repeats its parent's setup: no panel of its own (the tables
    keep it)."""
    group = density_group(experiment)
    if group != experiment and group in experiments:
        return group
    parent = (check_of or {}).get(experiment)
    return parent if parent in experiments and parent != experiment else None


def quality_experiments(study: Study) -> list[str]:
    """Experiments that compare patterns against dense without training (they log KL, top-1
    agreement or recall against dense), ablations excluded; the experiments of one density sweep
    (``density_group``) are one entry, named by the group."""
    names = [e for e in study.experiments() if not _is_ablation(e)
             and any(r.experiment == e and any(_finite(r.metrics.get(m)) for m in FIT_METRICS) for r in study.runs)]
    return list(dict.fromkeys(density_group(e) for e in names))


def collect_quality(study: Study, experiment: str) -> tuple[list[dict], list[Path]]:
    """Points (key, density, target, metric, value, lo, hi) per (family, density, context) over the
    experiments of one density group; several runs of one point (seeds) give a t interval over
    runs. Dense is taken from one experiment of the group (the others score the same documents).
    ``label`` names the context when the experiment has more than one."""
    members = sorted({r.experiment for r in study.runs if density_group(r.experiment) == experiment},
                     key=lambda e: (e != experiment, e))
    runs = [r for r in study.runs if r.experiment in members and r.density is not None
            and (r.key != "dense" or r.experiment == members[0])]
    # the matched runs' measure (causal, the numerical control, is not matched and records token density)
    measures = {r.density_measure for r in runs if r.key != "dense" and r.target is not None} \
        or {r.density_measure for r in runs if r.key != "dense"}
    if len(measures) > 1:  # mixed matching: compare on token density, which every run records
        runs = [r for r in runs if isinstance(r.metrics.get("density"), (int, float))]
    measure = next(iter(measures)) if len(measures) == 1 else "density"
    contexts = sorted({r.context for r in runs if r.context is not None})
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        x = float(r.metrics[measure]) if _finite(r.metrics.get(measure)) else r.density  # one measure for all
        groups.setdefault((r.key, r.context or 0, x, r.target), []).append(r)
    points = []
    for (key, ctx, dens, target), rs in sorted(groups.items(), key=lambda kv: kv[0][:3]):
        for m in QUALITY_METRICS:
            if any(_finite(r.metrics.get(m)) for r in rs):
                v, lo, hi = run_metric_ci(rs, m)
                points.append({"key": key, "context": ctx or None, "density": dens, "target": target,
                               "measure": measure,
                               "metric": "top1_agreement" if m == "top1" else m, "value": v, "lo": lo, "hi": hi,
                               "n_runs": len(rs), "series": f"{key} (N={ctx})" if len(contexts) > 1 else key})
    return points, _sources(runs)


def patterns_of(study: Study, target_density: float = 0.25, limit: int = 5,
                highlight: Sequence[str] = (), skip: Sequence[str] = ("dense", "causal")
                ) -> tuple[list[tuple[str, str]], list[Path], int]:
    """One static pattern per family: of the runs at the study's most common sequence length
    (``Run.context``, else 4096) where a family has any, the one whose run density is nearest
    ``target_density``; the ``highlight`` families first, then the rest by how many experiments ran them
    (most first; ties by name), at most
    ``limit``. ``skip``: dense and the causal control are not pattern families to draw, nor the runs of
    a check experiment (``Study.check_of``: BigBird's other draws). Patterns that
    need a document (outline, the oracle) or one per layer (fitted) are not static and not drawn.
    Returns the patterns, the metrics files naming them and that sequence length."""
    from spattern.compiler.compile import compile as compile_pattern

    seqs = [r.context for r in study.runs if r.context is not None]
    n = int(max(sorted(set(seqs)), key=seqs.count)) if seqs else 4096
    best: dict[str, tuple[tuple, str, Run]] = {}
    checks = study.check_of()
    for r in study.runs:
        if not r.pattern or r.key in skip or r.experiment in checks:  # a check's variants are not families
            continue
        score = (r.context != n, abs((r.density if r.density is not None else 1.0) - target_density))
        cur = best.get(r.key)
        if cur is None or (score, r.pattern) < (cur[0], cur[1]):
            try:
                compile_pattern(r.pattern, 64)  # static patterns only (content-dependent ones need context)
            except Exception:  # noqa: BLE001, S112 - a pattern that cannot compile alone (needs context) is not drawn
                continue
            best[r.key] = (score, r.pattern, r)
    # the families most experiments ran first (the study's main baselines over its variants), ties by name
    n_exp = {k: len({r.experiment for r in study.runs if r.key == k}) for k in best}
    rest = sorted((k for k in best if k not in highlight), key=lambda k: (-n_exp[k], k))
    keys = ([k for k in highlight if k in best] + rest)[:limit]
    return [(k, best[k][1]) for k in keys], [best[k][2].dir / "metrics.json" for k in keys], n


def block_of(study: Study, default: int = 64) -> int:
    """The most common block size of the runs (``setup.block`` of their config.toml), else ``default``."""
    blocks = [r.block for r in study.runs if r.block is not None]
    return int(max(sorted(set(blocks)), key=blocks.count)) if blocks else default


_BUCKET = re.compile(r"^\[(\d+), (\d+)\)$")  # spattern.data.mqar.distance_bucket's "[lo, hi)"


def _bucket(x: float) -> float:
    """Power-of-two bucket of a distance (the lower edge), as the MQAR task reports them."""
    return float(1 << (int(x).bit_length() - 1)) if x >= 1 else float(x)


def _xy(e: dict) -> tuple[str | None, str | None]:
    yname = next((y for y in SYNTH_Y if isinstance(e.get(y), (int, float))), None)
    xname = next((x for x in SYNTH_X if _finite(e.get(x))), None)
    return xname, yname


def synthetic_experiments(study: Study) -> list[str]:
    """Experiments with per-example (distance or depth, correct or accuracy) records."""
    return [e for e in study.experiments()
            if any(r.experiment == e and any(all(_xy(x)) for x in r.per_example) for r in study.runs)]


def collect_synthetic(study: Study, experiment: str | None = None) -> tuple[list[dict], list[Path], str]:
    """Accuracy against distance (or depth) from per-example records that carry both, per family:
    over seeds (t interval of the per-run accuracies) or, with one run, over examples. Distances
    with more than a dozen distinct values are grouped in power-of-two buckets: such a point's
    ``distance`` is its bucket's first distance and ``distance_to`` its last. Records that name their
    own bucket (``distance_bucket`` "[lo, hi)", as MQAR's do) carry its last distance the same way."""
    xy = _xy
    runs = [r for r in study.runs if (experiment is None or r.experiment == experiment)
            and any(all(xy(e)) for e in r.per_example)]
    if not runs:
        return [], [], "distance"
    xnames = [xy(e)[0] for r in runs for e in r.per_example if all(xy(e))]
    xname = "distance" if "distance" in xnames else xnames[0]
    distinct = {e[xname] for r in runs for e in r.per_example if _finite(e.get(xname))}
    bucket = _bucket if len(distinct) > 12 else float
    points = []
    for key in sorted({r.key for r in runs}):
        rs = [r for r in runs if r.key == key]
        per_run: dict[float, list[float]] = {}
        pooled: dict[float, list[float]] = {}
        last: dict[float, float] = {}  # a bucket's last distance, where the records name their bucket
        for r in rs:
            by: dict[float, list[float]] = {}
            for e in r.per_example:
                _, yname = xy(e)
                if _finite(e.get(xname)) and yname is not None:
                    by.setdefault(bucket(e[xname]), []).append(float(e[yname]))
                    if (m := _BUCKET.match(str(e.get("distance_bucket", "")))) and int(m.group(2)) - 1 > e[xname]:
                        last[bucket(e[xname])] = float(int(m.group(2)) - 1)
            for x, ys in by.items():
                per_run.setdefault(x, []).append(float(np.mean(ys)))
                pooled.setdefault(x, []).extend(ys)
        for x in sorted(per_run):
            m, lo, hi = mean_ci(per_run[x]) if len(per_run[x]) > 1 else mean_ci(pooled[x])
            lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy interval stays within [0, 1] (NaN stays NaN)
            point = {"key": key, "distance": x, "value": m, "lo": lo, "hi": hi, "n_runs": len(per_run[x])}
            if bucket is _bucket and x >= 1:  # the bucket's last distance: it holds [x, 2x - 1]
                point["distance_to"] = 2 * x - 1
            elif x in last:
                point["distance_to"] = last[x]
            points.append(point)
    return points, _sources(runs), xname


_PAIRS = re.compile(r"^mqar_accuracy_n(\d+)$")


def collect_mqar_pairs(study: Study) -> dict[str, tuple[list[dict], list[Path]]]:
    """MQAR accuracy against the number of key-value pairs, per experiment whose runs record
    ``mqar_accuracy_n<N>``: per family and N, the mean over seeds with its t interval (one run: no
    interval). Points as ``collect_synthetic``'s, the number of pairs in ``distance``."""
    out: dict[str, tuple[list[dict], list[Path]]] = {}
    for e in study.experiments():
        runs = [r for r in study.runs if r.experiment == e and any(_PAIRS.match(k) for k in r.metrics)]
        if not runs:
            continue
        points = []
        for key in sorted({r.key for r in runs}):
            by: dict[int, list[float]] = {}
            for r in runs:
                if r.key == key:
                    for k, v in r.metrics.items():
                        if (m := _PAIRS.match(k)) and _finite(v):
                            by.setdefault(int(m.group(1)), []).append(float(v))
            for n in sorted(by):
                v, lo, hi = mean_ci(by[n])
                points.append({"key": key, "distance": float(n), "value": v, "lo": max(lo, 0.0), "hi": min(hi, 1.0),
                               "n_runs": len(by[n])})
        out[e] = (points, _sources(runs))
    return out


def training_experiments(study: Study) -> list[str]:
    """The experiments with training curves, the one with the most curves first."""
    counts: dict[str, int] = {}
    for c in study.curves:
        counts[str(c.experiment)] = counts.get(str(c.experiment), 0) + 1
    return sorted(counts, key=lambda e: (-counts[e], e))


def training_curves(study: Study, experiment: str | None = None) -> tuple[list[Curve], list[Path], str | None]:
    """The curves of ``experiment`` (default: the one with the most training curves; indexer runs
    included: their loss is compared with dense training, their recall has its own figure)."""
    exps = training_experiments(study)
    if not exps:
        return [], [], None
    exp = experiment if experiment is not None else exps[0]
    chosen = [c for c in study.curves if str(c.experiment) == exp]
    return chosen, [p for c in chosen for p in c.sources], exp


def _train_device(r: Run) -> str:
    """Where a run trained: the loop's summary (``train.device``; a ``--runtime`` override can move a run
    off the machine its env.json describes), else the machine; "H200" for a CUDA device, "CPU" else;
    " xN" when ``spattern run --jobs N`` trained it with N - 1 others at once (its timing is not a solo one)."""
    env, summary = r.env or {}, r.raw.get("train") if isinstance(r.raw.get("train"), dict) else {}
    device = str(summary.get("device") or env.get("device") or "cpu")
    name = gpu_name(env) if device.startswith("cuda") else "CPU"
    jobs = r.raw.get("jobs")
    return f"{name} x{jobs}" if isinstance(jobs, int) and jobs > 1 else name


def collect_training_cost(study: Study, exclude: Sequence[str] = ()) -> tuple[list[dict], list[Path]]:
    """Per trained (experiment, series): seeds, final validation loss (mean with a t interval over
    seeds), and the training cost the loop measured, tokens/s (median and range over seeds) and ms per
    step (median over seeds), on the device most of the runs trained on (``device``); runs on another
    device count in the loss but not in the timing (``untimed``: device -> runs). Runs without
    ``metrics.tokens_per_s`` are not training runs; the experiments in ``exclude`` are left out."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in study.runs:
        if _finite(r.metrics.get("tokens_per_s")) and r.experiment not in exclude:
            groups.setdefault((r.experiment, r.key), []).append(r)
    rows = []
    for (exp, key), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "dense", kv[0][1])):
        devices = [_train_device(r) for r in runs]
        main = max(sorted(set(devices)), key=devices.count)
        timed = [r for r, d in zip(runs, devices) if d == main]
        untimed = {d: devices.count(d) for d in sorted(set(devices) - {main})}
        loss, lo, hi = run_metric_ci(runs, "loss")
        tps = [r.metrics["tokens_per_s"] for r in timed]
        rows.append({"experiment": exp, "key": key, "seeds": len(runs), "device": main, "untimed": untimed,
                     "timed_seeds": len(timed), "loss": loss, "loss_ci": [lo, hi],
                     "tokens_per_s": float(np.median(tps)), "tokens_per_s_range": [float(min(tps)), float(max(tps))],
                     "step_ms": float(np.median([r.metrics["step_ms"] for r in timed if _finite(r.metrics.get("step_ms"))]
                                                or [math.nan])),
                     **same_call_ratio(study, exp, runs)})
    used = sorted({str(f.path) for f in study.throughput if any(r.get("same_call_source") == str(f.path) for r in rows)})
    return rows, _sources([r for rs in groups.values() for r in rs], per_example=False) + [Path(u) for u in used]


def same_call_ratio(study: Study, experiment: str, runs: list[Run]) -> dict:
    """Tokens/s of the runs' pattern relative to a baseline pattern trained in the same device call
    (``scripts/throughput_summary.py``'s JSON in the experiment's results folder, of one call or several,
    each ratio within one call and order; min and max over the file's runs of the pattern): throughput drifts between calls more than it differs between static
    patterns, so only a same-call ratio compares patterns. {} when there is none."""
    pattern = runs[0].pattern
    for f in study.throughput:
        if f.path.parent.name != experiment:
            continue
        ratios = [r["ratio_to_baseline"] for r in f.data["runs"] if r.get("pattern") == pattern
                  and _finite(r.get("ratio_to_baseline"))]
        if ratios:
            base = f.data.get("baseline")
            name = next((r.key for r in study.runs if r.experiment == experiment and r.pattern == base), base)
            return {"same_call_ratio": [float(min(ratios)), float(max(ratios))], "same_call_baseline": name,
                    "same_call_from_step": f.data.get("from_step"), "same_call_source": str(f.path),
                    "same_call_calls": len(f.data.get("calls") or [None])}  # a file of several calls names them
    return {}


def collect_file_losses(study: Study) -> dict[str, tuple[list[dict], list[Path]]]:
    """Per trained experiment whose runs recorded it (``per_example.jsonl`` rows with ``file_loss``, the
    training loop's ``DocumentLosses``): one row per validation file, with its scored tokens and, per
    series, the mean over seeds of the file's loss (``loss``: key -> value, ``seeds``: key -> n).
    Files are ordered by tokens, largest first; only runs with per-file rows count."""
    out: dict[str, tuple[list[dict], list[Path]]] = {}
    for exp in study.experiments():
        per: dict[str, dict[str, list[float]]] = {}  # key -> file -> losses over seeds
        tokens: dict[str, int] = {}
        seeds: dict[str, int] = {}
        used: list[Run] = []
        for r in study.runs:
            if r.experiment != exp or not _finite(r.metrics.get("tokens_per_s")):  # trained runs only: no
                continue                                                            # evaluate run's file is read
            rows = [e for e in r.per_example if "file_loss" in e and _finite(e.get("file_loss"))]
            if not rows:
                continue
            used.append(r)
            seeds[r.key] = seeds.get(r.key, 0) + 1
            for e in rows:
                per.setdefault(r.key, {}).setdefault(str(e["id"]), []).append(float(e["file_loss"]))
                tokens[str(e["id"])] = int(e.get("file_tokens", 0))
        if not per:
            continue
        files = sorted(tokens, key=lambda f: (-tokens[f], f))
        rows_out = [{"file": f, "tokens": tokens[f],
                     "loss": {k: float(np.mean(v[f])) for k, v in per.items() if f in v}} for f in files]
        out[exp] = ([{"row": r, "seeds": seeds} for r in rows_out], _sources(used))
    return out


def collect_ablation(study: Study, hidden: Collection[str] = ()) -> tuple[list[dict], list[Path]]:
    """The ablation figure's points: every experiment named ``*ablation*`` but those ``hidden`` (a check
    of another ablation, ``check_of``: its tables only)."""
    points, sources = [], []
    for exp in [e for e in study.experiments() if _is_ablation(e) and e not in hidden]:
        runs = [r for r in study.runs if r.experiment == exp]
        metric = next((m for m in ("ppl", "nll", "val_ppl", "loss", "val_loss", "accuracy", "kl")
                       if any(_finite(r.metrics.get(m)) for r in runs)), None)
        if metric is None:
            continue
        # the runner's matching info (target, measure, the family's own free parameter) is not an ablation axis
        keys = sorted({k for r in runs for k in r.params
                       if k not in ("seed", "density", "achieved", "target", "measure", "param")})
        varied = [k for k in keys if len({repr(r.params.get(k)) for r in runs}) > 1]
        value = {k: (lambda r, k=k: r.params.get(k)) for k in varied}
        if not varied and len({r.context for r in runs}) > 1:
            value = {"context": lambda r: r.context}
        if not value and (other := block_companion(study, exp)) is not None:  # the block-size ablation
            pts, src = _block_points(exp, runs, other)
            points += pts
            sources += src
            continue
        if not value:  # the runner's ablations differ by pattern: one category per run label
            value = {"variant": lambda r: r.label}
        for p, get in value.items():
            groups: dict[str, list[Run]] = {}
            for r in runs:
                groups.setdefault(repr(get(r)), []).append(r)
            for rs in groups.values():
                v, lo, hi = run_metric_ci(rs, metric)
                points.append({"experiment": exp, "param": p, "value": get(rs[0]), "key": rs[0].key,
                               "metric": metric, "mean": v, "lo": lo, "hi": hi, "n_runs": len(rs)})
        sources += _sources(runs)
    return points, sources


def unreachable_matches(study: Study) -> list[dict]:
    """The matched runs whose family could not reach its target (the matching's ``note`` in the
    experiment's ``matches.json``: the family's fixed structure alone costs more, so it ran at the
    cheapest setting it has, a window of one token, say): per family label and target, the cost achieved
    in each experiment (``achieved``: experiment -> costs); runs not in the study are left out."""
    keys = {(r.experiment, r.pattern, r.target): r.key for r in study.runs  # the runs a match can name
            if isinstance(r.pattern, str)}
    found: dict[tuple[str, float], dict] = {}
    for f in sorted(study.matches, key=lambda f: str(f.path)):
        exp = f.path.parent.name
        for v in f.data.values():
            m = v["match"]
            if not m.get("note") or not _finite(m.get("achieved")) or not _finite(m.get("target")):
                continue
            target = float(m["target"])
            if (key := keys.get((exp, m["pattern"], target))) is None:
                continue
            g = found.setdefault((key, target), {"key": key, "target": target, "achieved": {}})
            g["achieved"].setdefault(exp, []).append(float(m["achieved"]))
    return list(found.values())


def _doc_nll(r: Run) -> dict[str, float]:
    return {str(e["id"]): float(e["nll"]) for e in r.per_example if "id" in e and _finite(e.get("nll"))}


def block_companion(study: Study, experiment: str) -> list[Run] | None:
    """For an ablation whose runs all use one block size and differ only by pattern: the runs of the
    experiment that has the same patterns (labels) at the same context with another block size and
    shares documents with it (the one with the most labels, then documents, in common), else None.
    ``study_block_ablation`` is ``study_pretrained_code`` at 128 x 128 blocks, on its first 8 documents."""
    runs = [r for r in study.runs if r.experiment == experiment]
    blocks, contexts = {r.block for r in runs}, {r.context for r in runs}
    if len(blocks) != 1 or None in blocks or len(contexts) != 1:
        return None
    docs = set.intersection(*(set(_doc_nll(r)) for r in runs)) if runs else set()
    best, score = None, (1, 0)  # at least two labels in common
    for e in study.experiments():
        if e == experiment or _is_ablation(e):
            continue
        other = [r for r in study.runs if r.experiment == e and r.label in {q.label for q in runs}
                 and r.context in contexts and r.block is not None and r.block not in blocks]
        shared = docs & set.intersection(*(set(_doc_nll(r)) for r in other)) if other else set()
        labels = {r.label for r in other}
        if len(shared) >= 2 and (len(labels), len(shared)) > score:
            best, score = other, (len(labels), len(shared))
    return best


def _block_points(experiment: str, runs: list[Run], other: list[Run]) -> tuple[list[dict], list[Path]]:
    """Perplexity of each pattern at both block sizes on the documents every run of both scored
    (exp of the mean per-document NLL, t interval over documents): param "block", one line per label."""
    labels = sorted({r.label for r in runs} & {r.label for r in other})
    both = [r for r in runs + other if r.label in labels]
    shared = set.intersection(*(set(_doc_nll(r)) for r in both))
    points = []
    for r in both:
        nll = _doc_nll(r)
        m, lo, hi = mean_ci([nll[d] for d in sorted(shared)])
        points.append({"experiment": experiment, "param": "block", "value": r.block, "key": r.key, "metric": "ppl",
                       "mean": math.exp(m), "lo": math.exp(lo), "hi": math.exp(hi), "n_runs": 1,
                       "n_docs": len(shared)})
    return points, _sources(both)


def collect_indexer(study: Study) -> tuple[dict | None, list[Curve], list[Path]]:
    snap = study.snapshots[0] if study.snapshots else None
    curves = [c for c in study.curves if any("indexer_mass_recall" in r for r in c.records)]
    sources = ([snap.path] if snap else []) + [p for c in curves for p in c.sources]
    return (snap.data if snap else None), curves, sources
