"""Give back the early metric lines of runs that resumed without their results folder:

    python scripts/merge_partial_curves.py <older copy of results/<name>> results/<name> [--dry-run]

A run stopped in one device call resumes in the next from its checkpoint (in the cache), but if the
next call's copy of the repository lacks the stopped run's folder (its ``results.tar.gz`` was not
unpacked here in between), the resumed run starts a new ``metrics.jsonl`` at the checkpoint: its final
metrics are whole, its curve lacks the steps before. For each run folder of the second argument whose
``metrics.jsonl`` begins later than the older copy's, this prepends the older copy's lines that come
before the first line here, as the training loop keeps the lines up to the checkpoint it resumes
(``spattern.train.loop._restore_metrics``). Runs that need nothing are left alone."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _steps(lines: list[str]) -> list[int]:
    return [int(json.loads(x).get("step", 0)) for x in lines]


def merge(old: Path, new: Path, dry_run: bool = False) -> list[dict]:
    """One record per run folder changed: ``{run, first_step, added}``."""
    changed = []
    for path in sorted(new.glob("*/metrics.jsonl")):
        before = old / path.parent.name / "metrics.jsonl"
        if not before.is_file():
            continue
        here = path.read_text().splitlines(keepends=True)
        there = before.read_text().splitlines(keepends=True)
        if not here or not there:
            continue
        first = _steps(here)[0]
        early = [x for x, s in zip(there, _steps(there)) if s < first]
        if not early:  # the older copy has nothing before this curve's first step
            continue
        if not dry_run:
            path.write_text("".join(early + here))
        changed.append({"run": path.parent.name, "first_step": first, "added": len(early)})
    return changed


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    for c in merge(a.old, a.new, a.dry_run):
        print(f"{c['run']}: {c['added']} lines before step {c['first_step']}" + (" (dry run)" if a.dry_run else ""))
