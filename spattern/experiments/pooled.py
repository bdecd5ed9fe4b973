"""One comparison pooled over experiments that scored different data (each a stratum: a corpus, a context).

``spattern compare`` pairs runs on the same examples, so it cannot ask whether a pattern beats another
across corpora. ``pool_experiments`` does: within each experiment a run and the baseline are paired
example by example (or seed by seed), and ``stats.stratified_compare`` pools the experiments' mean
differences, each experiment weighted equally, with a stratified bootstrap CI and a sign-flip
permutation test; Holm over the runs of each metric. The table is a significance table (``rows``,
``correction``) whose rows have the keys of ``compare.Row`` plus ``strata`` (each experiment's n, means and
mean difference), and it records what it pooled, so that ``recompute_pooled`` can compute it again.

    table = pool_experiments(["results/a", "results/b"], "streaming", ["nll"], runs=["indexed"])
"""

from __future__ import annotations

import json
from pathlib import Path

from spattern.evaluation import stats
from spattern.evaluation.compare import Row, apply_holm
from spattern.experiments.results import direction, load_runs, metric_values
from spattern.utils.errors import UserError
from spattern.utils.io import write_json

TEST = "stratified_permutation"


def _strata(per: dict, metric: str, run: str, baseline: str) -> dict[str, tuple[list, list]]:
    out = {}
    for exp, values in per.items():
        by_label = values.get(metric, {})
        for label in (run, baseline):
            if label not in by_label:
                raise UserError(f"{exp}: expected a run {label!r} with {metric!r} values, got runs "
                                f"{sorted(by_label)}")
        x, y = by_label[run], by_label[baseline]
        if set(x) != set(y):
            raise UserError(f"{exp}: {run!r} and {baseline!r} did not score the same {metric!r} examples "
                            f"({len(set(x) ^ set(y))} ids differ); runs must be evaluated on the same data")
        ids = sorted(x, key=str)
        out[exp] = ([x[i] for i in ids], [y[i] for i in ids])
    return out


def pool_experiments(folders: list[str | Path], baseline: str, metrics: list[str], runs: list[str],
                     alpha: float = 0.05, out: str | Path | None = None, write: bool = True,
                     name: str | None = None) -> dict:
    """Each of ``runs`` against ``baseline`` (labels every experiment has), pooled over the experiments in
    ``folders`` (two or more, each a stratum); Holm over the runs of each metric. Written to ``out`` when
    given and ``write``."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise UserError(f"pool: expected two or more experiment folders, got {len(folders)}")
    if len({f.resolve() for f in folders}) != len(folders):
        raise UserError(f"pool: expected distinct experiments, got {[f.name for f in folders]}")
    if not runs or baseline in runs:
        raise UserError(f"--runs: expected one or more labels other than the baseline {baseline!r}, got {runs}")
    unknown = sorted(m for m in metrics if direction(m) is None)
    if not metrics or unknown:
        raise UserError(f"--metric: expected one or more metrics of spattern.experiments.results.DIRECTION, "
                        f"got {metrics}")
    per = {f.name: metric_values(load_runs(f), metrics) for f in folders}
    rows = []
    for m in metrics:
        pooled = {run: stats.stratified_compare(_strata(per, m, run, baseline), 1 - alpha) for run in runs}
        family = [Row(m, run, baseline, c.n, c.mean_x, None, None, c.mean_y, c.diff.estimate, c.diff.low,
                      c.diff.high, c.test.p, c.test.p, None, "none", TEST, bool(direction(m)), False,
                      "; ".join(c.notes) or None) for run, c in pooled.items()]
        rows += [{**r.as_dict(), "strata": pooled[r.run].strata} for r in apply_holm(family, alpha)]
    table = {"experiment": name or "pooled", "baseline": baseline, "alpha": alpha, "correction": "holm",
             "family": "metric", "pooled": [f.name for f in folders], "weighting": "each experiment equally",
             "rows": rows}
    if write and out is not None:
        write_json(Path(out), table)
    return table


def recompute_pooled(path: str | Path, write: bool = True) -> dict:
    """A committed pooled table computed again from the experiments it names (folders beside the one that
    holds it, under the same results/), with the settings it records."""
    path = Path(path)
    old = json.loads(path.read_text())
    if not old.get("pooled") or not old.get("rows"):
        raise UserError(f"{path}: expected a pooled table (spattern pool), got keys {sorted(old)}")
    root = path.parent.parent
    metrics = list(dict.fromkeys(r["metric"] for r in old["rows"]))
    runs = list(dict.fromkeys(r["run"] for r in old["rows"]))
    return pool_experiments([root / e for e in old["pooled"]], old["baseline"], metrics, runs,
                            alpha=float(old.get("alpha", 0.05)), out=path, write=write, name=old.get("experiment"))
