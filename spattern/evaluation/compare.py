"""Comparison tables: each run against a baseline on the same examples, per metric.

``values[run][example_id] = value`` for one metric. For each run r != baseline b, on the shared
example ids (they must be the same set):

- ``mean``, ``ci_low``/``ci_high``: mean of r and its BCa bootstrap CI (``stats.mean_ci``);
- ``diff = mean(r) - mean(b)`` with its paired BCa CI (``stats.paired_diff_ci``);
- ``p``: Wilcoxon signed-rank or paired permutation test (``stats.paired_test``);
- ``p_holm``: Holm over the family of comparisons (the runs of one metric in ``compare``; every
  (run, metric) pair in ``compare_many``, or the runs of each metric with ``family="metric"``);
  ``significant = p_holm <= alpha`` (Holm's rejection rule, as statsmodels applies it);
- ``effect_size``: Cohen's d_z = mean(d) / sd(d).

The baseline gets its own row first (``run == baseline``, diff 0, p = 1, a note starting "baseline")
so its mean and CI are in the table; it is not part of the Holm family. ``note`` collects the degenerate-case reasons.
JSON (``to_json``) is what the report reads: ``{"experiment", "baseline", "alpha", "correction": "holm",
"rows": [Row...]}`` with the keys of ``Row``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping

from spattern.evaluation import stats
from spattern.utils.errors import UserError


@dataclass
class Row:
    metric: str
    run: str
    baseline: str
    n: int
    mean: float
    ci_low: float | None
    ci_high: float | None
    baseline_mean: float
    diff: float
    diff_ci_low: float | None
    diff_ci_high: float | None
    p: float
    p_holm: float
    effect_size: float | None
    effect_size_name: str
    test: str
    higher_is_better: bool
    significant: bool
    note: str | None

    def as_dict(self) -> dict:
        return asdict(self)


ROW_KEYS = tuple(f.name for f in fields(Row))


def _paired(values: Mapping[str, Mapping[str, float]], baseline: str, metric: str) -> list[str]:
    """The baseline's example ids (sorted) after checking every run has exactly those."""
    if not values:
        raise UserError(f"metric {metric!r}: expected at least one run, got none")
    if baseline not in values:
        raise UserError(f"baseline {baseline!r}: not among the runs of metric {metric!r}; "
                        f"available: {', '.join(sorted(values))}")
    ids = set(values[baseline])
    if not ids:
        raise UserError(f"metric {metric!r}: baseline {baseline!r} has no examples")
    for run, per_ex in values.items():
        other = set(per_ex)
        if other != ids:
            missing, extra = ids - other, other - ids
            show = sorted(map(str, missing or extra))[:3]
            raise UserError(f"metric {metric!r}: run {run!r} and baseline {baseline!r} are not on the same "
                            f"examples: {len(missing)} baseline id(s) missing from the run, {len(extra)} "
                            f"extra (e.g. {', '.join(show)}); runs must be evaluated on the same data")
    return sorted(ids, key=str)


def _row(metric, run, baseline, x, y, higher_is_better, test, alpha, n_resamples, seed) -> Row:
    ci = stats.mean_ci(x, 1 - alpha, n_resamples, seed, name=f"{run}/{metric}")
    if run == baseline:
        return Row(metric, run, baseline, len(x), ci.estimate, ci.low, ci.high, ci.estimate, 0.0, 0.0, 0.0,
                   1.0, 1.0, None, "cohen_dz", test, higher_is_better, False,
                   "; ".join(s for s in ("baseline", ci.reason) if s))
    c = stats.paired_compare(x, y, test, 1 - alpha, n_resamples, seed)
    notes = [s for s in (ci.reason and f"mean CI: {ci.reason}", *c.notes) if s]
    return Row(metric, run, baseline, c.n, c.mean_x, ci.low, ci.high, c.mean_y, c.diff.estimate, c.diff.low,
               c.diff.high, c.test.p, c.test.p, c.cohen_dz, "cohen_dz", test, higher_is_better, False,
               "; ".join(notes) or None)


def _rows_for_metric(values, baseline, metric, higher_is_better, test, alpha, n_resamples, seed) -> list[Row]:
    if test not in stats.TESTS:
        raise UserError(f"test: expected one of {stats.TESTS}, got {test!r}")
    if not 0 < alpha < 1:
        raise UserError(f"alpha: expected a number in (0, 1), got {alpha!r}")
    ids = _paired(values, baseline, metric)
    y = [values[baseline][i] for i in ids]
    runs = [baseline] + sorted(r for r in values if r != baseline)
    return [_row(metric, r, baseline, [values[r][i] for i in ids], y, higher_is_better, test, alpha,
                 n_resamples, seed) for r in runs]


def apply_holm(rows: list[Row], alpha: float) -> list[Row]:
    """Holm over the rows that are not the baseline's own (``p_holm``, ``significant`` set in place)."""
    family = [r for r in rows if r.run != r.baseline]
    adj, reject = stats.holm([r.p for r in family], alpha)
    for r, pa, rej in zip(family, adj, reject):
        r.p_holm, r.significant = pa, rej
    return rows


def compare(values: Mapping[str, Mapping[str, float]], baseline: str, metric: str, higher_is_better: bool,
            test: str = "wilcoxon", alpha: float = 0.05, n_resamples: int = stats.N_RESAMPLES,
            seed: int = 0) -> list[Row]:
    """Rows for one metric: the baseline first, then each run (sorted), Holm over the runs."""
    rows = _rows_for_metric(values, baseline, metric, higher_is_better, test, alpha, n_resamples, seed)
    return apply_holm(rows, alpha)


def compare_many(metrics: Mapping[str, Mapping[str, Mapping[str, float]]], baseline: str,
                 higher_is_better: Mapping[str, bool], test: str = "wilcoxon", alpha: float = 0.05,
                 n_resamples: int = stats.N_RESAMPLES, seed: int = 0, family: str = "all") -> list[Row]:
    """``metrics[metric][run][example] = value``: rows of every metric, Holm over every
    (run, metric) comparison together (``family="all"``, one family) or over the runs of each
    metric separately (``family="metric"``: one family per question asked of the data)."""
    if family not in FAMILIES:
        raise UserError(f"family: expected one of {FAMILIES}, got {family!r}")
    missing = sorted(set(metrics) - set(higher_is_better))
    if missing:
        raise UserError(f"higher_is_better: expected a direction for every metric, missing {missing}")
    per_metric = [_rows_for_metric(metrics[m], baseline, m, bool(higher_is_better[m]), test, alpha, n_resamples,
                                   seed) for m in metrics]
    if family == "metric":
        return [r for rows in per_metric for r in apply_holm(rows, alpha)]
    return apply_holm([r for rows in per_metric for r in rows], alpha)


FAMILIES = ("all", "metric")


def to_json(rows: list[Row], experiment: str, alpha: float = 0.05, family: str = "all") -> dict:
    """The table as the report reads it (write it with ``spattern.utils.io.write_json``)."""
    baselines = sorted({r.baseline for r in rows})
    if len(baselines) > 1:
        raise UserError(f"rows: expected one baseline, got {baselines}")
    return {"experiment": experiment, "baseline": baselines[0] if baselines else None, "alpha": alpha,
            "correction": "holm", "family": family, "rows": [r.as_dict() for r in rows]}


def to_rows(table: Mapping) -> list[Row]:
    """``to_json``'s dict back to rows; a row with missing or unknown keys is a ``UserError``."""
    out = []
    for i, d in enumerate(table.get("rows", [])):
        if set(d) != set(ROW_KEYS):
            raise UserError(f"rows[{i}]: expected keys {sorted(ROW_KEYS)}, missing {sorted(set(ROW_KEYS) - set(d))}, "
                            f"unknown {sorted(set(d) - set(ROW_KEYS))}")
        out.append(Row(**d))
    return out


def _fmt(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def _p(v: float) -> str:
    return f"{v:.2e}" if v < 1e-3 else f"{v:.3f}"


def render_table(rows: list[Row], title: str | None = None, level: float = 0.95):
    """A ``rich.table.Table``: mean [CI], diff [CI] (green when significantly better, red when
    significantly worse, given each metric's direction), p, p (Holm), d_z, n, note."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title)
    pct = f"{100 * level:g}%"
    for col in ("metric", "run", f"mean [{pct} CI]", "diff vs baseline [CI]", "p", "p (Holm)", "d_z", "n", "note"):
        t.add_column(col, justify="left" if col in ("metric", "run", "note") else "right")
    for r in rows:
        base = r.run == r.baseline
        style = ""
        if r.significant:
            style = "green" if (r.diff > 0) == r.higher_is_better else "red"
        mean = f"{_fmt(r.mean)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
        diff = "" if base else f"{r.diff:+.4g} [{_fmt(r.diff_ci_low)}, {_fmt(r.diff_ci_high)}]"
        cells = (r.metric, r.run, mean, diff, "" if base else _p(r.p), "" if base else _p(r.p_holm),
                 _fmt(r.effect_size, 3), str(r.n), r.note or "")
        t.add_row(*(Text(c, style=style if i == 3 else "") for i, c in enumerate(cells)))
    return t
