"""Recompute committed significance tables from their runs, with the settings each records:

    python scripts/recompute_comparisons.py [results/<experiment>/compare_vs_<run>.json ... results/pooled/<x>.json ...]

(default: every ``results/*/compare_vs_*.json`` and pooled table ``results/pooled/*.json`` (``spattern pool``)
of this checkout; a config's own ``compare.json`` is rewritten by ``spattern run <config>``). Each table keeps the runs it compared (runs added to the folder
since are left out) and is refused if they no longer give its (metric, run) pairs. Prints how many
rows' Holm p moved, and each row whose significance changed."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from spattern.experiments.pooled import recompute_pooled
from spattern.experiments.results import recompute_comparison


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs="*", help="compare_vs_<run>.json files and pooled tables (default: every one "
                                              "under results/)")
    a = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    files = [Path(p) for p in a.tables] or sorted((root / "results").glob("*/compare_vs_*.json")) + sorted(
        (root / "results" / "pooled").glob("*.json"))
    if missing := [str(f) for f in files if not f.is_file()]:
        ap.error(f"no such table: {', '.join(missing)}")
    for f in files:
        old = {(r["metric"], r["run"]): r for r in json.loads(f.read_text())["rows"]}
        new = recompute_pooled(f) if f.parent.name == "pooled" else recompute_comparison(f)
        pairs = [(old[k], r) for r in new["rows"] if (k := (r["metric"], r["run"])) in old]
        moved = sum(1 for a, b in pairs if a["p_holm"] != b["p_holm"])
        flips = [(b["metric"], b["run"], a["p_holm"], b["p_holm"]) for a, b in pairs if a["significant"] != b["significant"]]
        print(f"{f}: {len(new['rows'])} rows, Holm p moved in {moved}"
              + "".join(f"\n  {m} {run}: Holm p {a} -> {b}" for m, run, a, b in flips))


if __name__ == "__main__":
    main()
