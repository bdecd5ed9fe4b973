"""How far each pattern of a trained MQAR experiment lets information travel, against the accuracy its
runs reached, by key-query distance:

    python scripts/mqar_reach.py results/study_mqar_long [--json <folder>/reach_by_distance.json]

For each run label, the pattern its runs trained with, compiled at their context and blocks (the run's
config.toml), gives the exact token-level fraction of (query, key) pairs in each power-of-two distance
bucket that one layer attends directly and that the model's layers (``model.n_layers``) connect
(``spattern.compiler.analysis.reach_by_distance``); beside it, the MQAR accuracy in that bucket (mean over
seeds, ``spattern.report.collect.collect_synthetic``, as the report draws it). A 2-layer model can only
recall a key beyond its 2-layer reach by other means (e.g. ruling out values already seen)."""
from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

from spattern import compile as compile_pattern
from spattern.compiler.analysis import reach_by_distance
from spattern.report.collect import collect_synthetic
from spattern.report.data import load_study


def mqar_reach(folder: Path) -> dict:
    runs = {}  # label -> (pattern, context, block, layers) of its runs (one each: the seeds share them)
    for f in sorted(folder.glob("*/metrics.json")):
        label = json.loads(f.read_text())["label"]
        c = tomllib.loads((f.parent / "config.toml").read_text())
        runs.setdefault(label, set()).add((c["model"]["pattern"], c["data"]["seq_len"], tuple(c["model"]["block"]),
                                           c["model"]["n_layers"]))
    if not runs or any(len(v) != 1 for v in runs.values()):
        raise SystemExit(f"{folder}: expected runs whose seeds share pattern, context, blocks and layers; got {runs}")
    (context, layers), = {(v[1], v[3]) for (v,) in runs.values()}
    edges = [1 << k for k in range(context.bit_length())]  # [1, 2), [2, 4), ..., [context/2, context)
    study = load_study([folder])
    points, _, _ = collect_synthetic(study, folder.name)
    accuracy = {(p["key"], int(p["distance"])): p["value"] for p in points}
    rows = []
    for label, ((text, _, block, _),) in runs.items():
        layout = compile_pattern("causal" if text == "dense" else text, context, block=block)
        one = reach_by_distance(layout, 1, edges)
        many = reach_by_distance(layout, layers, edges)
        for a, b in zip(one, many):
            rows.append({"label": label, "pattern": text, "lo": a["lo"], "hi": a["hi"], "pairs": a["pairs"],
                         "attended": a["fraction"], f"reach_{layers}": b["fraction"],
                         "accuracy": accuracy.get((label, a["lo"]))})
    return {"experiment": folder.name, "context": context, "layers": layers, "rows": rows}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    out = mqar_reach(a.folder)
    path = a.json or a.folder / "reach_by_distance.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    reach = f"reach_{out['layers']}"
    for r in out["rows"]:
        if r["accuracy"] is not None:
            print(f"{r['label']:>11} [{r['lo']:>3}, {r['hi']:>3})  attended {r['attended']:.2f}  "
                  f"reach {r[reach]:.2f}  accuracy {r['accuracy']:.2f}")
    print(f"wrote {path}")
