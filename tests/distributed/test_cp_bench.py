"""scripts/cp_bench.py on the CPU: argument checks, the dry run (plan + cost model, JSON), and one
2-rank gloo run of its measuring path (float32, wall clock) whose bytes equal the model."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--seq-lens", "2048", "--density", "0.1", "--family", "lrs", "--heads", "2", "--kv-heads", "1",
         "--head-dim", "16", "--block", "64", "64"]


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch):
    """Importing the script sets the no-multicast variables; undo that after each test."""
    for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS"):
        monkeypatch.setenv(k, os.environ.get(k, "")) if k in os.environ else monkeypatch.delenv(k, raising=False)


def _bench():
    spec = importlib.util.spec_from_file_location("cp_bench", ROOT / "scripts" / "cp_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arguments_and_multicast_off():
    bench = _bench()
    a = bench.parse_args([])
    assert a.seq_lens == [131072, 262144] and a.density == [0.10, 0.05] and a.heads == 16 and a.head_dim == 128
    for k, v in bench.NO_MULTICAST.items():
        assert os.environ[k] == v
    for bad in (["--density", "1.5"], ["--heads", "16", "--kv-heads", "3"], ["--seq-lens", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_dry_run_prints_the_plan_and_writes_the_cost_model(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "plan.json"
    assert bench.main(["--dry-run", *SMALL, "--worlds", "2", "4", "--out", str(out)]) == 0
    assert "cp_bench plan" in capsys.readouterr().out
    plan = json.loads(out.read_text())["plan"]
    assert {(p["world"], p["strategy"]) for p in plan} == {(2, "contiguous"), (2, "zigzag"), (4, "contiguous"),
                                                          (4, "zigzag")}
    for p in plan:
        assert len(p["cost"]) == p["world"]
        assert sum(r["fwd_recv_bytes"] for r in p["cost"]) == sum(r["fwd_send_bytes"] for r in p["cost"])


def test_measuring_path_runs_on_two_cpu_ranks(tmp_path):
    out = tmp_path / "w2.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "scripts" / "cp_bench.py"), "--device", "cpu", *SMALL, "--iters", "1", "--warmup", "0",
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["world"] == 2 and res["multicast_env"] == {"NCCL_NVLS_ENABLE": "0",
                                                          "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                                                          "NVSHMEM_DISABLE_NVLS": "1"}
    assert [r["strategy"] for r in res["records"]] == ["contiguous", "zigzag"]
    for r in res["records"]:
        assert r["bytes_vs_model_worst_rank"] == 1.0 and r["cp_fwd_ms"] > 0 and r["one_gpu"]["fwd_ms"] > 0
        for rank in r["ranks"]:
            m = rank["model"]
            assert (rank["fwd_sent"], rank["fwd_recv"], rank["bwd_sent"], rank["bwd_recv"]) == (
                m["fwd_send_bytes"], m["fwd_recv_bytes"], m["bwd_send_bytes"], m["bwd_recv_bytes"])
