"""From a ``Study`` to the points each figure and table draws, and the files they came from.

Every ``collect_*`` function returns ``(data, sources)``; ``sources`` is the list of results
files the data was computed from (the manifest records them with their hashes). Confidence
intervals (95%, t interval of a mean): over seeds when a series has several runs, else over the
run's per-example values; perplexity bands are the NLL interval carried through exp, around the
run's reported perplexity. The significance table (``compare``) has its own bootstrap intervals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from spattern.report.data import QUALITY_METRICS, Curve, Run, Study, mean_ci

FIT_METRICS = ("kl", "top1_agreement", "recall")  # a training-free comparison against dense logs one of these
SYNTH_X = ("distance", "depth")
SYNTH_Y = ("correct", "accuracy")


def _is_ablation(name: str) -> bool:
    return name.lower().startswith("ablation")


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


def quality_experiments(study: Study) -> list[str]:
    """Experiments that compare patterns against dense without training (they log KL, top-1
    agreement or recall against dense), ablations excluded."""
    return [e for e in study.experiments() if not _is_ablation(e)
            and any(r.experiment == e and any(_finite(r.metrics.get(m)) for m in FIT_METRICS) for r in study.runs)]


def collect_quality(study: Study, experiment: str) -> tuple[list[dict], list[Path]]:
    runs = [r for r in study.runs if r.experiment == experiment and r.density is not None]
    groups: dict[tuple[str, float], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.key, r.density), []).append(r)
    points = []
    for (key, dens), rs in sorted(groups.items()):
        for m in QUALITY_METRICS:
            if any(_finite(r.metrics.get(m)) for r in rs):
                v, lo, hi = run_metric_ci(rs, m)
                points.append({"key": key, "density": dens, "metric": m, "value": v, "lo": lo, "hi": hi,
                               "n_runs": len(rs)})
    return points, _sources(runs)


def patterns_of(study: Study, target_density: float = 0.25, limit: int = 5) -> tuple[list[tuple[str, str]], list[Path], int]:
    """One static pattern per family (the one whose run density is nearest ``target_density``),
    the metrics files naming them, and the study's sequence length (``params.seq_len``, else 4096)."""
    from spattern.compiler.compile import compile as compile_pattern

    best: dict[str, tuple[float, str, Run]] = {}
    for r in study.runs:
        if not r.pattern or r.key == "dense":
            continue
        score = abs((r.density if r.density is not None else 1.0) - target_density)
        cur = best.get(r.key)
        if cur is None or (score, r.pattern) < (cur[0], cur[1]):
            try:
                compile_pattern(r.pattern, 64)  # static patterns only (content-dependent ones need context)
            except Exception:  # noqa: BLE001 - any pattern that cannot compile alone is not drawn
                continue
            best[r.key] = (score, r.pattern, r)
    keys = sorted(best)[:limit]
    seqs = [r.params.get("seq_len") for r in study.runs if _finite(r.params.get("seq_len"))]
    n = int(max(set(seqs), key=seqs.count)) if seqs else 4096
    return [(k, best[k][1]) for k in keys], [best[k][2].dir / "metrics.json" for k in keys], n


def collect_synthetic(study: Study) -> tuple[list[dict], list[Path], str]:
    runs = [r for r in study.runs if any(any(x in e for x in SYNTH_X) and any(y in e for y in SYNTH_Y)
                                        for e in r.per_example[:1])]
    if not runs:
        return [], [], "distance"
    xname = next(x for x in SYNTH_X if x in runs[0].per_example[0])
    points = []
    for key in sorted({r.key for r in runs}):
        rs = [r for r in runs if r.key == key]
        per_run: dict[float, list[float]] = {}
        pooled: dict[float, list[float]] = {}
        for r in rs:
            by: dict[float, list[float]] = {}
            for e in r.per_example:
                yname = next((y for y in SYNTH_Y if y in e), None)
                if _finite(e.get(xname)) and yname is not None and isinstance(e[yname], (int, float)):
                    by.setdefault(float(e[xname]), []).append(float(e[yname]))
            for x, ys in by.items():
                per_run.setdefault(x, []).append(float(np.mean(ys)))
                pooled.setdefault(x, []).extend(ys)
        for x in sorted(per_run):
            m, lo, hi = mean_ci(per_run[x]) if len(per_run[x]) > 1 else mean_ci(pooled[x])
            lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy interval stays within [0, 1] (NaN stays NaN)
            points.append({"key": key, "distance": x, "value": m, "lo": lo, "hi": hi, "n_runs": len(per_run[x])})
    return points, _sources(runs), xname


def training_curves(study: Study) -> tuple[list[Curve], list[Path], str | None]:
    """The curves of the experiment with the most training curves (indexer runs excluded)."""
    curves = [c for c in study.curves if not any("indexer_mass_recall" in r for r in c.records)]
    if not curves:
        return [], [], None
    counts: dict[str, int] = {}
    for c in curves:
        counts[str(c.experiment)] = counts.get(str(c.experiment), 0) + 1
    exp = max(sorted(counts), key=lambda e: counts[e])
    chosen = [c for c in curves if str(c.experiment) == exp]
    return chosen, [p for c in chosen for p in c.sources], exp


def collect_ablation(study: Study) -> tuple[list[dict], list[Path]]:
    points, sources = [], []
    for exp in [e for e in study.experiments() if _is_ablation(e)]:
        runs = [r for r in study.runs if r.experiment == exp]
        metric = next((m for m in ("ppl", "nll", "val_loss", "accuracy", "kl") if any(_finite(r.metrics.get(m)) for r in runs)), None)
        if metric is None:
            continue
        keys = sorted({k for r in runs for k in r.params if k != "seed"})
        varied = [k for k in keys if len({repr(r.params.get(k)) for r in runs}) > 1 and k != "density"]
        for p in varied:
            groups: dict[str, list[Run]] = {}
            for r in runs:
                groups.setdefault(repr(r.params.get(p)), []).append(r)
            for rs in groups.values():
                v, lo, hi = run_metric_ci(rs, metric)
                points.append({"experiment": exp, "param": p, "value": rs[0].params.get(p), "key": rs[0].key,
                               "metric": metric, "mean": v, "lo": lo, "hi": hi, "n_runs": len(rs)})
        sources += _sources(runs)
    return points, sources


def collect_indexer(study: Study) -> tuple[dict | None, list[Curve], list[Path]]:
    snap = study.snapshots[0] if study.snapshots else None
    curves = [c for c in study.curves if any("indexer_mass_recall" in r for r in c.records)]
    sources = ([snap.path] if snap else []) + [p for c in curves for p in c.sources]
    return (snap.data if snap else None), curves, sources
