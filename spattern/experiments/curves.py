"""What a training run's curve (its ``metrics.jsonl``) says beyond the loop's summary: the time of
a training step, per indexer stage, and the indexer's statistics over training and on validation.

The loop logs ``tok_per_s`` over each logging interval (evaluation excluded), so an interval's
time per step is ``tokens_per_step / tok_per_s``. The step-1 record (start-up, kernel compilation)
is left out and the median over intervals is taken, so a checkpoint write or a resume's first
interval does not move it. With an indexer, ``step_ms_<stage>`` is the median over the intervals
logged in that stage (``indexer_stage``: dense-warmup, sparse).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from spattern.utils.io import read_jsonl

STATS = ("mass_recall", "density", "top_mass_overlap")


def _step_ms(recs: list[dict]) -> float | None:
    ms = [1000.0 * (r["tokens"] / r["step"]) / r["tok_per_s"] for r in recs
          if r.get("step", 0) > 1 and r.get("tok_per_s") and r.get("tokens")]
    return statistics.median(ms) if ms else None


def train_curves(path: str | Path) -> tuple[dict, dict]:
    """(metrics, curves) of a run's ``metrics.jsonl``: metrics are scalars for ``metrics.json``
    (``step_ms``, per-stage ``step_ms_<stage>``, the last logged and last validation indexer
    statistics); curves are per-step lists (train and validation indexer statistics)."""
    recs = read_jsonl(Path(path)) if Path(path).is_file() else []
    steps = [r for r in recs if "loss" in r]
    vals = [r for r in recs if "val_loss" in r]
    metrics: dict = {"step_ms": _step_ms(steps)}
    curves: dict = {}
    for stage in sorted({r["indexer_stage"] for r in steps if "indexer_stage" in r}):
        metrics[f"step_ms_{stage.replace('-', '_')}"] = _step_ms([r for r in steps if r.get("indexer_stage") == stage])
    indexed = [r for r in steps if "indexer_mass_recall" in r]
    if indexed:
        curves["indexer"] = [{"step": r["step"], "stage": r["indexer_stage"], "kl": r.get("indexer_kl"),
                              **{k: r.get(f"indexer_{k}") for k in STATS}} for r in indexed]
        metrics.update({f"indexer_{k}": indexed[-1].get(f"indexer_{k}") for k in STATS})
    val_indexed = [r for r in vals if "val_indexer_mass_recall" in r]
    if val_indexed:
        curves["val_indexer"] = [{"step": r["step"], **{k: r.get(f"val_indexer_{k}") for k in STATS}}
                                 for r in val_indexed]
        metrics.update({f"val_indexer_{k}": val_indexed[-1].get(f"val_indexer_{k}") for k in STATS})
    return metrics, curves
