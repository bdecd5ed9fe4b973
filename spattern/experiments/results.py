"""Reading an experiment's results and comparing its runs against a baseline.

The unit of a paired comparison is the example (document, sequence, task example) when each
label has one run, and the seed when a label has several runs (training: seeds are the unit;
each run's mean is its value)."""

from __future__ import annotations

import json
import re

import tomllib
from pathlib import Path

import numpy as np

from spattern.evaluation.trials import unique_trials
from spattern.experiments.rundir import RunDir
from spattern.utils.errors import UserError
from spattern.utils.io import write_json

# per-example metric -> higher is better (the one declaration: summaries and comparisons use it)
DIRECTION = {"nll": False, "kl": False, "rel_error": False, "loss": False, "file_loss": False, "top1": True,
             "recall": True, "passkey_correct": True, "passkey_logprob": True, "mqar_accuracy": True}
# metric families named <prefix><setting>, one metric per setting: mqar_accuracy_n16 (MQAR with 16 pairs)
DIRECTION_PREFIX = {"mqar_accuracy_n": True}


def direction(metric: str) -> bool | None:
    """Whether higher is better for ``metric`` (DIRECTION, then DIRECTION_PREFIX); None: not a metric."""
    if metric in DIRECTION:
        return DIRECTION[metric]
    return next((v for p, v in DIRECTION_PREFIX.items() if metric.startswith(p) and metric[len(p):].isdigit()), None)


def load_runs(folder: str | Path) -> list[dict]:
    """[{dir, config, metrics, examples}] of every finished run under ``folder``; ``examples`` holds one
    record per trial (``spattern.evaluation.trials``: two ids with the same input count once)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"results: expected an experiment folder (results/<experiment>), got {folder} (no such folder)")
    runs = []
    for p in sorted(folder.iterdir()):
        rd = RunDir(p)
        if not p.is_dir() or not rd.metrics_path.is_file():
            continue
        m = rd.metrics()
        if m.get("status") != "finished":
            continue
        cfg = tomllib.loads(rd.config_path.read_text()) if rd.config_path.is_file() else {}
        runs.append({"dir": p, "config": cfg, "metrics": m, "examples": unique_trials(rd.examples())})
    if not runs:
        raise UserError(f"results: no finished run under {folder} (run `spattern run <config>` first)")
    return runs


def _same_data(runs: list[dict]) -> None:
    """Runs compared must have scored the same data: equal setups except pattern, label, seed (and an
    indexed run's indexer warm-up, which is how its pattern was made, not what it scored)."""
    def key(r):
        c = dict(r["config"])
        if "setup" in c:  # an evaluate run: its resolved experiment config
            setup = sorted((k, v) for k, v in c["setup"].items() if k != "indexer")
            return repr((c.get("kind"), c.get("context"), setup, c.get("train")))
        # a train run: the training loop's config.toml; its validation data decide the examples
        return repr(("train", sorted(c.get("data", {}).items()), c.get("train", {}).get("eval_batches")))

    keys = {}
    for r in runs:
        keys.setdefault(key(r), []).append(r["metrics"].get("label"))
    if len(keys) > 1:
        groups = "; ".join(f"{sorted(set(v))}" for v in keys.values())
        raise UserError(f"results: the runs did not score the same data (different setups: {groups}); "
                        f"compare runs of one setup at a time")


def metric_values(runs: list[dict], metrics: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """``values[metric][label][unit] = value`` (unit: example id, or ``seed<N>`` with several seeds)."""
    by_label: dict[str, list[dict]] = {}
    for r in runs:
        by_label.setdefault(r["metrics"]["label"], []).append(r)
    for label, rs in by_label.items():  # two runs of one label and seed (a stale run beside its re-made twin)
        seeds = [r["metrics"].get("seed") for r in rs]
        dup = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        if dup:
            dirs = ", ".join(sorted(Path(r["dir"]).name for r in rs if str(r["metrics"].get("seed")) in dup))
            raise UserError(f"results: expected one run per label and seed, got several of {label!r} with seed "
                            f"{', '.join(dup)} ({dirs}); remove the stale one")
    per_seed = any(len(v) > 1 for v in by_label.values())
    found = sorted({k for r in runs for e in r["examples"] for k in e if direction(k) is not None})
    wanted = metrics or found
    unknown = sorted(m for m in wanted if direction(m) is None)
    if unknown:
        raise UserError(f"--metric: expected some of {sorted(DIRECTION)} or {sorted(DIRECTION_PREFIX)}<N>, "
                        f"got {unknown}")
    out: dict = {}
    for m in wanted:
        for label, rs in by_label.items():
            if per_seed:
                vals = {f"seed{r['metrics']['seed']}": float(np.mean([e[m] for e in r["examples"]
                                                                      if e.get(m) is not None]))
                        for r in rs if any(e.get(m) is not None for e in r["examples"])}
            else:
                vals = {e["id"]: float(e[m]) for e in rs[0]["examples"] if e.get(m) is not None}
            if vals:
                out.setdefault(m, {})[label] = vals
    if not out:
        raise UserError(f"results: none of the metrics {wanted} has values in these runs")
    return out


def common_seeds(values: dict[str, dict[str, dict[str, float]]]) -> tuple[dict, dict[str, dict[str, list[str]]]]:
    """Per metric whose units are seeds (``seed<N>``), the seeds every run of it has: a family trained on
    more seeds than another (seeds added later, or a metric recorded from some seed on) is paired on the
    seeds they share. Returns the values kept and ``{metric: {label: [seeds left out]}}`` (empty when
    nothing was). Metrics with per-example units are returned as they are (their runs must match)."""
    kept, left = {}, {}
    for m, by_label in values.items():
        units = [set(v) for v in by_label.values()]
        if not all(u and all(re.fullmatch(r"seed-?\d+", str(i)) for i in u) for u in units):
            kept[m] = by_label
            continue
        shared = set.intersection(*units)
        if not shared:  # nothing to pair: left to the comparison's own error, which names the seeds
            kept[m] = by_label
            continue
        kept[m] = {lb: {i: x for i, x in v.items() if i in shared} for lb, v in by_label.items()}
        extra = {lb: sorted(set(v) - shared, key=lambda i: int(i[4:])) for lb, v in by_label.items()}
        if any(extra.values()):
            left[m] = {lb: e for lb, e in extra.items() if e}
    return kept, left


def compare_experiment(folder: str | Path, baseline: str | None = None, metrics: list[str] | None = None,
                       test: str = "wilcoxon", alpha: float = 0.05, out: str | Path | None = None,
                       family: str = "metric", only: list[str] | None = None, write: bool = True,
                       also: list[str] | None = None, average: dict[str, list[str]] | None = None) -> dict:
    """The significance table of an experiment's runs against ``baseline`` (default: the config's),
    Holm-corrected over the runs of each metric (``family="metric"``, the default) or over every
    (run, metric) comparison (``"all"``); written to ``<folder>/compare.json``. ``only``: compare
    these run labels (and the baseline) and no other; the table records the labels it left out
    (``runs_left_out``), e.g. runs whose seeds are not all finished. ``write=False``: return it only.
    ``also``: other experiments' folders beside ``folder`` (their names) whose runs join the table as
    ``<experiment>:<label>``, when they scored the same data (``_same_data``: e.g. the same documents with
    another indexer warm-up); the table records them (``also``). ``average``: ``{name: [label, ...]}``, a
    run named ``name`` whose value on each example is the mean of those runs' (e.g. one pattern's indexer
    warm-up seeds, so that the example stays the unit and the seeds' noise averages out); it can be the
    baseline or one of ``only``, its runs are compared only when named themselves, and the table records it
    (``average``)."""
    from spattern.evaluation.compare import compare_many, to_json

    runs = load_runs(folder)
    for name in also or []:
        other = Path(folder).parent / name
        if Path(name).name != name or other.resolve() == Path(folder).resolve():
            raise UserError(f"--also: expected the name of another experiment's folder beside {folder}, got {name!r}")
        runs += [{**r, "metrics": {**r["metrics"], "label": f"{name}:{r['metrics']['label']}"}} for r in load_runs(other)]
    _same_data(runs)
    labels = sorted({r["metrics"]["label"] for r in runs})
    average = {str(k): list(v) for k, v in (average or {}).items()}
    for name, members in average.items():
        if name in labels or len(members) < 2 or len(set(members)) != len(members) or not set(members) <= set(labels):
            raise UserError(f"--average: expected a new name (not one of the runs' labels) and two or more distinct "
                            f"labels among {labels}, got {name}={','.join(members)}")
    labels = sorted(set(labels) | set(average))
    meta = Path(folder) / "experiment.json"  # written by spattern run: the config's baseline
    baseline = baseline or (json.loads(meta.read_text()).get("baseline") if meta.is_file() else None) or "dense"
    if baseline not in labels:
        raise UserError(f"--baseline: expected one of the runs' labels {labels}, got {baseline!r}")
    left_out = []
    if only is not None:
        unknown = sorted(set(only) - set(labels))
        if unknown:
            raise UserError(f"--runs: expected labels among {labels}, got {unknown}")
        left_out = [lb for lb in labels if lb not in only and lb != baseline]
    wanted = {lb for lb in labels if lb not in left_out}
    averaged = sorted(wanted & set(average))  # the averages this table compares (or takes as its baseline)
    needed = wanted | {lb for name in averaged for lb in average[name]}
    runs = [r for r in runs if r["metrics"]["label"] in needed]
    values = metric_values(runs, metrics)
    for name in averaged:
        for m, by_label in values.items():
            if not all(lb in by_label for lb in average[name]):
                continue
            units = [by_label[lb] for lb in average[name]]
            if any(set(u) != set(units[0]) for u in units):
                raise UserError(f"--average {name}: expected runs {average[name]} to have {m!r} values on the same "
                                f"examples, got {sorted(len(u) for u in units)} examples")
            by_label[name] = {i: float(np.mean([u[i] for u in units])) for i in units[0]}
    values = {m: {lb: v for lb, v in by.items() if lb in wanted} for m, by in values.items()}
    values = {m: v for m, v in values.items() if baseline in v and len(v) > 1}
    values, seeds_left_out = common_seeds(values)
    if not values:
        raise UserError(f"results: no metric has values for the baseline {baseline!r} and another run")
    rows = compare_many(values, baseline, {m: direction(m) for m in values}, test=test, alpha=alpha, family=family)
    table = to_json(rows, Path(folder).name, alpha, family)
    table["runs"] = {r["metrics"]["label"]: {"pattern": r["metrics"].get("pattern"),
                                             "density": r["metrics"].get("metrics", {}).get("density"),
                                             "block_density": r["metrics"].get("metrics", {}).get("block_density")}
                     for r in runs if r["metrics"]["label"] in wanted}
    for name in averaged:
        patterns = [r["metrics"].get("pattern") for lb in average[name] for r in runs if r["metrics"]["label"] == lb]
        table["runs"][name] = {"pattern": " / ".join(dict.fromkeys(map(str, patterns))), "mean_of": average[name]}
    if left_out:
        table["runs_left_out"] = left_out
    if also:
        table["also"] = list(also)
    if average:
        table["average"] = {name: average[name] for name in sorted(average)}
    if seeds_left_out:
        table["seeds_left_out"] = seeds_left_out
    if write:
        write_json(Path(out) if out else Path(folder) / "compare.json", table)
    return table


def comparison_settings(table: dict) -> dict:
    """What a significance table compared (baseline, Holm family, tests, metrics, runs left out): two
    tables with equal settings differ only where the results under them changed."""
    rows = table.get("rows", [])
    return {"baseline": table.get("baseline"), "family": table.get("family"),
            "tests": sorted({str(r.get("test")) for r in rows if r.get("run") != r.get("baseline")}),
            "metrics": sorted({str(r.get("metric")) for r in rows}),
            "runs_left_out": sorted(table.get("runs_left_out", [])), "also": list(table.get("also", [])),
            "average": dict(table.get("average", {}))}


def recompute_comparison(path: str | Path, write: bool = True) -> dict:
    """A committed significance table (``compare.json``, ``compare_vs_<run>.json``) computed again from
    the runs in its folder with the settings it records (baseline, metrics, test, Holm family, runs left
    out, alpha): what it says now, with the current runs and statistics code. ``write``: replace it."""
    path = Path(path)
    old = json.loads(path.read_text())
    s = comparison_settings(old)
    if not old.get("rows"):
        raise UserError(f"{path}: expected a table with rows, got none")
    if len(s["tests"]) > 1:
        raise UserError(f"{path}: expected one test for every row, got {s['tests']}")
    compared = set(old.get("runs") or {r["run"] for r in old["rows"]})  # runs added since are not its
    present = {r["metrics"]["label"] for r in load_runs(path.parent)}
    present |= {f"{name}:{r['metrics']['label']}" for name in s["also"] for r in load_runs(path.parent.parent / name)}
    present |= {name for name, members in s["average"].items() if set(members) <= present}
    if missing := sorted(compared - present):
        raise UserError(f"{path}: the table compared runs that are no longer in its folder: {missing}")
    new = compare_experiment(path.parent, s["baseline"], s["metrics"], test=(s["tests"] or ["wilcoxon"])[0],
                             alpha=float(old.get("alpha", 0.05)), family=s["family"] or "metric",
                             only=sorted(compared - {s["baseline"]}), write=False, also=s["also"] or None,
                             average=s["average"] or None)
    pairs = {(r["metric"], r["run"]) for r in old["rows"]}
    if (got := {(r["metric"], r["run"]) for r in new["rows"]}) != pairs:
        raise UserError(f"{path}: the runs now give other (metric, run) pairs: lost {sorted(pairs - got)}, "
                        f"gained {sorted(got - pairs)}")
    if write:
        write_json(path, new)
    return new
