"""Summarise Nsight Compute's per-instruction stall samples (``ncu --import X --page source --print-source
sass --csv``, as ``hopper_gpu_check.sh``'s ``ncu_src`` stage writes them): samples by stall reason, by
opcode, and the most sampled instructions with their three main reasons.

    python scripts/ncu_source_summary.py ncu_4096_sass.csv [--top 30] [--json out.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from pathlib import Path

SAMPLES = "Warp Stall Sampling (All Samples)"  # the column of each instruction's stall samples


def summarise(path: str, top: int = 30) -> dict:
    rows = list(csv.reader(open(path, newline="")))
    head = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    cols, data = rows[head], [r for r in rows[head + 1:] if len(r) > 3]
    reasons = [c for c in cols if c.startswith("stall_") and "Not Issued" not in c]
    idx = {c: cols.index(c) for c in reasons + ["Source", SAMPLES, "Instructions Executed"]}
    num = lambda r, c: float(r[idx[c]] or 0)  # noqa: E731
    total = sum(num(r, SAMPLES) for r in data)
    by_reason, by_op = Counter(), Counter()
    for r in data:
        for c in reasons:
            by_reason[c[len("stall_"):]] += num(r, c)
        m = re.match(r"\s*(?:@!?U?P\w+\s+)?([A-Z0-9_]+)", r[idx["Source"]])
        by_op[m.group(1) if m else "?"] += num(r, SAMPLES)
    hot = sorted(data, key=lambda r: -num(r, SAMPLES))[:top]
    pct = lambda v: round(100.0 * v / total, 2) if total else 0.0  # noqa: E731
    return {
        "source": str(path), "samples": total, "instructions": len(data),
        "by_reason_pct": {k: pct(v) for k, v in by_reason.most_common() if v},
        "by_opcode_pct": {k: pct(v) for k, v in by_op.most_common(25)},
        "hottest": [{"address": r[0], "sass": r[idx["Source"]].strip(), "pct": pct(num(r, SAMPLES)),
                     "executed": num(r, "Instructions Executed"),
                     "reasons": {c[len("stall_"):]: num(r, c) for c in sorted(reasons, key=lambda c: -num(r, c))[:3]
                                 if num(r, c)}} for r in hot],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = summarise(a.csv, a.top)
    print(f"{out['samples']:.0f} samples over {out['instructions']} instructions")
    print("by reason:", ", ".join(f"{k} {v}%" for k, v in out["by_reason_pct"].items()))
    for h in out["hottest"][:15]:
        print(f"  {h['pct']:5.2f}%  {h['sass'][:70]:70s} {h['reasons']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
