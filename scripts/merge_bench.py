"""Merge repeated runs of one attention benchmark into one file of per-cell medians
(``spattern.evaluation.bench_attention.merge_repeats``).

    python scripts/merge_bench.py OUT.json RUN1.json RUN2.json [...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from spattern.evaluation.bench_attention import merge_repeats
from spattern.utils.io import write_json


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, runs = Path(argv[1]), [Path(a) for a in argv[2:]]
    write_json(out, merge_repeats([json.loads(p.read_text()) for p in runs], [p.name for p in runs]))
    print(f"wrote {out} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
