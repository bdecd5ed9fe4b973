"""Recompute committed significance tables from their runs, with the settings each records:

    python scripts/recompute_comparisons.py [results/<experiment>/compare_vs_<run>.json ...]

(default: every ``results/*/compare_vs_*.json``; a config's own ``compare.json`` is rewritten by
``spattern run <config>``). Prints each row whose Holm-corrected significance changed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from spattern.experiments.results import recompute_comparison


def main(paths: list[str]) -> None:
    files = [Path(p) for p in paths] or sorted(Path("results").glob("*/compare_vs_*.json"))
    for f in files:
        old = {(r["metric"], r["run"]): r for r in json.loads(f.read_text())["rows"]}
        new = recompute_comparison(f)
        moved = [(k, old[k]["p_holm"], r["p_holm"]) for r in new["rows"]
                 if (k := (r["metric"], r["run"])) in old and old[k].get("significant") != r.get("significant")]
        print(f"{f}: {len(new['rows'])} rows" + "".join(f"\n  {m} {run}: Holm p {a} -> {b}" for (m, run), a, b in moved))


if __name__ == "__main__":
    main(sys.argv[1:])
