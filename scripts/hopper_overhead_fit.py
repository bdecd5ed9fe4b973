"""Where a short row's time goes in the Hopper forward kernel (issue 13): fit the times of
``hopper_gpu_check.sh``'s ``overhead`` stage (N 4096, lrs layouts at several densities, 16 / 64 / 256
heads) to

    time = F + (items / SMs) * o + (tiles / SMs) * t

items = heads x block rows (one work item each), tiles = heads x computed blocks; F is the launch and
ramp, o the cost of one work item beyond its tiles (the first QK alone, the last PV alone, the
epilogue, the hand-over between items), t the cost of one tile in steady state. The fit uses the
rows with at least ``--min-heads`` heads, where the last partial round of the persistent grid is a
small part of the time; the rows below it are compared with the fit's prediction (their excess is
the tail: SMs idle while the last items finish). Ordinary least squares (statsmodels), 95% CIs.

    python scripts/hopper_overhead_fit.py results/hopper/overhead/overhead_h*.json [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import statsmodels.api as sm


def rows_of(paths: list[str]) -> list[dict]:
    out = []
    for p in paths:
        doc = json.loads(Path(p).read_text())
        H = doc["config"]["heads"] * doc["config"]["batch"]
        for r in doc["results"]:
            ms = r["ms"].get("spattern_hopper")
            if not ms:
                continue
            R = math.ceil(r["N"] / r["block"][0])
            out.append(dict(heads=H, N=r["N"], density=r["density"], items=H * R, tiles=H * r["nnz_blocks"],
                            us=1e3 * ms, cudnn_us=1e3 * r["ms"]["sdpa_cudnn"] if r["ms"].get("sdpa_cudnn") else None))
    return out


def fit(rows: list[dict], sms: int, min_heads: int) -> dict:
    use = [r for r in rows if r["heads"] >= min_heads]
    X = np.array([[1.0, r["items"] / sms, r["tiles"] / sms] for r in use])
    y = np.array([r["us"] for r in use])
    res = sm.OLS(y, X).fit()
    ci = res.conf_int(0.05)
    names = ("launch_us", "per_item_us", "per_tile_us")
    coef = {n: dict(value=float(res.params[i]), lo=float(ci[i][0]), hi=float(ci[i][1])) for i, n in enumerate(names)}
    for r in rows:
        pred = float(res.params @ np.array([1.0, r["items"] / sms, r["tiles"] / sms]))
        r["predicted_us"] = pred
        r["excess"] = r["us"] / pred - 1.0
        r["tiles_per_item"] = r["tiles"] / r["items"]
        r["item_share"] = res.params[1] * r["items"] / sms / r["us"]   # the per-item cost's share of the time
        r["vs_cudnn"] = r["cudnn_us"] / r["us"] if r["cudnn_us"] else None
    return dict(model="us = F + items/SMs * o + tiles/SMs * t", sms=sms, fitted_on_heads_at_least=min_heads,
                n_rows=len(use), r2=float(res.rsquared), coef=coef, rows=rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--sms", type=int, default=132, help="SMs (persistent CTAs) of the GPU")
    ap.add_argument("--min-heads", type=int, default=64, help="fit on rows with at least this many heads")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = fit(rows_of(a.files), a.sms, a.min_heads)
    c = out["coef"]
    print(f"fit on {out['n_rows']} rows (heads >= {a.min_heads}), R^2 {out['r2']:.4f}")
    for k, v in c.items():
        print(f"  {k:12s} {v['value']:8.3f}  [{v['lo']:.3f}, {v['hi']:.3f}]")
    print(f"{'heads':>5} {'density':>7} {'tiles/item':>10} {'us':>9} {'pred':>9} {'excess':>7} {'item share':>10} {'x cudnn':>7}")
    for r in out["rows"]:
        vc = f"{r['vs_cudnn']:7.2f}" if r["vs_cudnn"] else "      -"
        print(f"{r['heads']:5d} {r['density']:7.3f} {r['tiles_per_item']:10.2f} {r['us']:9.1f} {r['predicted_us']:9.1f} "
              f"{100 * r['excess']:6.1f}% {100 * r['item_share']:9.1f}% {vc}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
