"""Training throughput of the plain runs of scripts/profile_train.sh, one row per run.

    python scripts/throughput_summary.py DIR [DIR ...] [--from-step 20] [--baseline PATTERN] [--json OUT]
                                         [--logged-by "CMD" ...]

Each DIR (one device call's output) holds the runs' logs (<tag>plain_<i>.jsonl, each line a 10-step interval of the training loop) and
run.log (which names the pattern of each). Per run: the median and quartiles of the intervals' tokens/s
after ``--from-step`` (the workers' start and the first compiles excluded), the same as ms per step,
the trainer's total wait for contexts up to that step and after it, and the ratio of each median to
the baseline's of the same tag (measured in the same call): the run of ``--baseline``, else the tag's first run.
With several DIRs each run's tag is prefixed by its DIR's name (``call77_h100/fwd_``), so that a ratio never
mixes calls, and the JSON lists the DIRs' names under ``calls``.

Also the 90th percentile of the intervals' tokens/s and its ratio to the baseline's (``ratio_p90_to_baseline``):
on a host whose other load slows some intervals (the study's device calls 71, 77 and 79: one run's intervals
spread over 435-841K tokens/s) the disturbance only ever slows a step, so the fast end of a run's intervals
estimates its undisturbed rate; the 90th percentile rather than the maximum, so that no single interval decides.

The JSON records its own command (``command``, without its ``--logged-by``) and, with ``--logged-by`` (repeatable), the commands that wrote
the folders' logs on the device (``logged_by``: e.g. profile_train.sh with its settings), which the report lists
among the commands that reproduce its tables.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np


def patterns(run_log: Path) -> dict[str, str]:
    """'<tag><i>' -> pattern, from run.log's '=== <tag><i>: <pattern>' lines."""
    out = {}
    for line in run_log.read_text().splitlines():
        m = re.match(r"=== (\S+?): (.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def summarize(path: Path, from_step: int) -> dict:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if "tok_per_s" in r]
    prev = 0
    for r in recs:  # ctx_wait_ms is a per-step mean over the interval: weight it by the interval's steps
        r["waited_ms"], prev = r.get("ctx_wait_ms", 0.0) * (r["step"] - prev), r["step"]
    late = [r for r in recs if r["step"] > from_step]
    if not late:
        raise SystemExit(f"{path}: no interval after step {from_step}")
    tps = np.array([r["tok_per_s"] for r in late])
    tokens_per_step = recs[-1]["tokens"] / recs[-1]["step"]
    q1, med, q3, p90 = np.percentile(tps, [25, 50, 75, 90])
    return {"steps": recs[-1]["step"], "intervals": len(late), "tokens_per_step": tokens_per_step,
            "tok_per_s_median": round(float(med), 1), "tok_per_s_q1": round(float(q1), 1),
            "tok_per_s_q3": round(float(q3), 1), "tok_per_s_p90": round(float(p90), 1),
            "ms_per_step_median": round(1000 * tokens_per_step / med, 2),
            "ctx_wait_ms_early": round(sum(r["waited_ms"] for r in recs if r["step"] <= from_step), 1),
            "ctx_wait_ms_late": round(sum(r["waited_ms"] for r in late), 2)}


def without_logged_by(argv: list[str]) -> list[str]:
    """The arguments without ``--logged-by CMD`` (recorded apart: the command stays readable)."""
    out, skip = [], False
    for w in argv:
        if skip:
            skip = False
        elif w == "--logged-by":
            skip = True
        elif not w.startswith("--logged-by="):
            out.append(w)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, nargs="+", help="one folder per device call")
    ap.add_argument("--from-step", type=int, default=20)
    ap.add_argument("--baseline", default=None, help="the pattern whose run of each tag the others are divided by")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--logged-by", action="append", default=[], metavar="CMD",
                    help="a command that wrote the folders' logs on the device (recorded in the JSON)")
    argv = sys.argv[1:] if argv is None else argv
    a = ap.parse_args(argv)
    if len({d.name for d in a.dir}) != len(a.dir):
        ap.error(f"DIR: expected folders of distinct names (a run's tag names its call), got {[str(d) for d in a.dir]}")
    rows = []
    for d in a.dir:
        names = patterns(d / "run.log")
        call = f"{d.name}/" if len(a.dir) > 1 else ""
        for f in sorted(d.glob("*plain_*.jsonl"), key=lambda p: (p.name.split("plain_")[0], int(p.stem.split("_")[-1]))):
            tag, i = f.name.split("plain_")[0], f.stem.split("_")[-1]
            rows.append({"run": f"{call}{tag}{i}", "tag": f"{call}{tag}", "pattern": names.get(f"{tag}{i}", "?"),
                         **summarize(f, a.from_step)})
    for tag in {r["tag"] for r in rows}:
        mine = [r for r in rows if r["tag"] == tag]
        base = next((r for r in mine if r["pattern"] == a.baseline), mine[0] if a.baseline is None else None)
        for r in mine:
            r["ratio_to_baseline"] = round(r["tok_per_s_median"] / base["tok_per_s_median"], 3) if base else None
            r["ratio_p90_to_baseline"] = round(r["tok_per_s_p90"] / base["tok_per_s_p90"], 3) if base else None
    for r in rows:
        print(f"{r['run']:>8} {r['tok_per_s_median'] / 1e3:8.1f}K tok/s [{r['tok_per_s_q1'] / 1e3:.0f}-"
              f"{r['tok_per_s_q3'] / 1e3:.0f}K] {r['ms_per_step_median']:6.1f} ms/step x{r['ratio_to_baseline'] or float('nan'):.3f} "
              f"p90 {r['tok_per_s_p90'] / 1e3:.0f}K x{r['ratio_p90_to_baseline'] or float('nan'):.3f} "
              f"wait {r['ctx_wait_ms_early']:.0f}/{r['ctx_wait_ms_late']:.1f} ms  {r['pattern']}")
    if a.json:
        a.json.write_text(json.dumps({"from_step": a.from_step, "baseline": a.baseline,
                                      "calls": [d.name for d in a.dir], "runs": rows,
                                      "command": shlex.join(["python", "scripts/throughput_summary.py",
                                                             *without_logged_by(argv)]),
                                      "logged_by": a.logged_by}, indent=1) + "\n")


if __name__ == "__main__":
    main()
