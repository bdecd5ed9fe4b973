"""Summarise an A/B of two kernel methods timed in the same processes (scripts/hopper_ab.sh): per cell,
each repeat's ratio B/A (the two timed minutes apart at most, in one process), the median ratio and its
range, and each method's median ms against cuDNN and native FlexAttention.

    python scripts/hopper_ab_summary.py OUT.json A B RUN1.json RUN2.json [...]

A ratio below 1 means B is faster. The verdict counts a cell as a win (loss) only when every repeat's
ratio is below (above) 1.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from spattern.evaluation.bench_attention import merge_repeats
from spattern.utils.io import write_json


def summarise(runs: list[dict], a: str, b: str) -> dict:
    merged = merge_repeats(runs)
    cells = []
    for row in merged["results"]:
        ta, tb = row["ms_runs"].get(a, []), row["ms_runs"].get(b, [])
        ratios = [y / x for x, y in zip(ta, tb) if x and y]
        if not ratios:
            raise ValueError(f"cell N={row['N']} causal={row['causal']}: no repeat timed both {a} and {b}")
        verdict = "B faster" if max(ratios) < 1 else "A faster" if min(ratios) > 1 else "mixed"
        cells.append(dict(N=row["N"], causal=row["causal"], density=row["density"], ms_a=row["ms"][a],
                          ms_b=row["ms"][b], ratio_b_over_a=statistics.median(ratios), ratios=ratios,
                          verdict=verdict, vs_cudnn={m: row.get("vs_cudnn", {}).get(m) for m in (a, b)},
                          vs_flex_native={m: row.get("vs_flex_native", {}).get(m) for m in (a, b)}))
    return dict(a=a, b=b, repeats=len(runs), env=merged.get("env"), config=merged["config"], cells=cells)


def main(argv: list[str]) -> int:
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    out, a, b, paths = Path(argv[1]), argv[2], argv[3], [Path(p) for p in argv[4:]]
    s = summarise([json.loads(p.read_text()) for p in paths], a, b)
    s["merged_from"] = [p.name for p in paths]
    write_json(out, s)
    print(f"{'N':>6} {'causal':>6} {'dens':>5} | {a:>22} {b:>22} | B/A median [min, max]  verdict")
    for c in s["cells"]:
        print(f"{c['N']:>6} {str(c['causal']):>6} {c['density']:5.2f} | {c['ms_a']:22.4f} {c['ms_b']:22.4f} | "
              f"{c['ratio_b_over_a']:.3f} [{min(c['ratios']):.3f}, {max(c['ratios']):.3f}]  {c['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
