"""The oracle top-k is a bound, not a contender: the headline names the best pattern, and the quality
sentence reports the bound beside it."""
from __future__ import annotations

from spattern.report.numbers import headline


def _row(run, diff, p=0.01):
    return {"run": run, "metric": "nll", "diff": diff, "diff_ci_low": diff - 0.01, "diff_ci_high": diff + 0.01,
            "p_holm": p, "significant": p < 0.05, "n": 10, "test": "wilcoxon", "higher_is_better": False}


def test_headline_best_skips_the_oracle_bound():
    doc = {"experiment": "e", "baseline": "dense",
           "rows": [_row("window", 0.6), _row("oracle", 0.05), _row("fitted", 0.3), _row("outline", 0.4)]}
    h = headline(doc)
    assert h["best"]["run"] == "fitted" and h["outline"]["run"] == "outline"
    assert headline({"experiment": "e", "baseline": "dense", "rows": [_row("oracle", 0.05)]})["best"]["run"] == "oracle"
