"""scripts/bench_contexts.py end to end at a tiny size: an A/B of this checkout against itself finds
the same layouts and reports every pattern's times."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ab_against_itself_reports_equal_layouts(tmp_path):
    out = tmp_path / "bench.json"
    pats = ["outline(window=16) & causal", "outline(window=32, recent=0) & causal"]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_contexts.py"), "--rounds", "1", "--batches", "2",
                    "--batch", "2", "--seq", "256", "--max-docs", "30", "--vocab", "300", "--against", str(ROOT),
                    "--json", str(out), "--patterns", *pats], check=True, capture_output=True, cwd=tmp_path)
    d = json.loads(out.read_text())
    assert d["same_layouts"] is True
    assert set(d["ratio_against_over_this"]) == set(pats)
    for side in ("this", "against"):
        for p in pats:
            r = d[side][p]
            assert r["total_ms"] >= r["layout_ms"] > 0 and r["contexts_ms"] > 0 and r["blocks"] > 0


def test_against_must_be_a_checkout(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_contexts.py"), "--against", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "expected a checkout's root" in res.stderr
