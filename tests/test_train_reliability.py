"""Training results are never lost or corrupted (issue 9, items 1-4): a run killed with SIGKILL
(mid-step, and with a torn last metrics line) resumes to the results of an uninterrupted run; a
finished run started again changes nothing on disk; every JSON output is strict JSON."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from spattern.train import load_train_config, train
from spattern.utils.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "train_tiny_cpu.toml"
COMMON = ["train.steps=12", "train.log_every=1", "train.eval_every=4", "train.ckpt_every=3",
          "train.progress=false", "data.max_docs=120"]


def _over(run_dir: Path) -> list[str]:
    return [*COMMON, f'train.out_dir="{run_dir}"', f'train.ckpt_dir="{run_dir / "ckpt"}"', 'name="rel"']


def _strict(path: Path):
    """Parse with NaN/Infinity forbidden (what allow_nan=False writers guarantee)."""
    def bad(token):
        raise ValueError(f"{path}: non-strict JSON token {token}")
    return json.loads(path.read_text(), parse_constant=bad)


def _curve(path: Path) -> list[tuple]:
    return [(r["step"], r.get("loss"), r.get("grad_norm"), r.get("val_loss")) for r in read_jsonl(path)]


def _cmd(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "spattern.cli", "train", str(TINY), *sum((["--set", o] for o in _over(run_dir)), [])]


def _env() -> dict:  # one thread: bit-identical runs; the test's data cache
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def test_sigkill_then_resume_equals_an_uninterrupted_run(cache, tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref), cwd=ROOT, env=_env(), check=True, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(run), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill between checkpoints (after step 4 or 5)
        if metrics.is_file() and sum(1 for r in read_jsonl(metrics) if "loss" in r) >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _strict(run / "metrics.json")["status"] in ("running", "stopped"), "killed after it finished"
    with open(metrics, "ab") as f:  # a kill during a write leaves a torn last line
        f.write(b'{"step": 99, "lo')
    out = subprocess.run(_cmd(run), cwd=ROOT, env=_env(), check=True, capture_output=True, text=True)
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed["status"] == "finished" and resumed["step"] == 12
    assert _curve(metrics) == _curve(ref / "metrics.jsonl")  # same losses, no duplicated or lost lines
    a, b = _strict(ref / "metrics.json"), _strict(run / "metrics.json")
    assert a["first_loss"] == b["first_loss"] and a["final_loss"] == b["final_loss"] and a["val_loss"] == b["val_loss"]
    assert b["seconds"] >= resumed["seconds"] > 0  # the whole run's time, not the resumed part's
    assert read_jsonl(run / "per_example.jsonl") == read_jsonl(ref / "per_example.jsonl")
    for name in ("env.json", "metrics.json"):
        _strict(run / name)


def test_a_finished_run_started_again_changes_nothing(cache, tmp_path):
    run = tmp_path / "done"
    first = train(load_train_config(TINY, _over(run)), log=lambda *a: None)
    digest = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
              for p in sorted(run.rglob("*")) if p.is_file()}
    again = train(load_train_config(TINY, _over(run)), log=lambda *a: None)
    assert again == _strict(run / "metrics.json") and again["final_loss"] == first["final_loss"]
    assert digest == {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
                      for p in sorted(run.rglob("*")) if p.is_file()}
    # asked to train again: a new run directory, the finished one untouched
    third = train(load_train_config(TINY, _over(run)), log=lambda *a: None, new_run=True)
    assert third["out_dir"] == f"{run}-2" and third["status"] == "finished"
    assert digest == {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
                      for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_run_without_a_checkpoint_keeps_its_earlier_metrics(cache, tmp_path):
    run = tmp_path / "nockpt"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 7.0}\n')
    train(load_train_config(TINY, [*_over(run), "train.steps=2"]), log=lambda *a: None)
    assert read_jsonl(run / "metrics.jsonl.stale-1") == [{"step": 1, "loss": 7.0}]
