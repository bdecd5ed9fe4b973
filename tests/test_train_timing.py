"""The loop's tokens/s is training throughput: evaluation and checkpoint writes are left out of the
interval they fall in, and the summary says how long the checkpoints took. In call 29's 600-step
profile on the H200 (results/study_device_logs), the intervals holding a checkpoint of the 20M
model ran at about 60% of the others' tokens/s: 270-390K against a median of 573K."""

from __future__ import annotations

import json
import time
from pathlib import Path

import spattern.train.loop as loop
from spattern.train import load_train_config, train

TINY = Path(__file__).resolve().parents[1] / "experiments" / "train_tiny_cpu.toml"
PAUSE = 1.5  # seconds added to every checkpoint write; a tiny CPU step takes about 0.1-0.3 s


def test_checkpoint_and_evaluation_time_stay_out_of_tokens_per_second(cache, tmp_path, monkeypatch):
    real = loop.atomic_save

    def slow_save(*a, **k):
        time.sleep(PAUSE)
        return real(*a, **k)

    monkeypatch.setattr(loop, "atomic_save", slow_save)
    run = tmp_path / "run"
    cfg = load_train_config(TINY, ["train.steps=4", "train.log_every=2", "train.eval_every=2", "train.ckpt_every=1",
                                   "train.progress=false", "data.max_docs=120", f'train.out_dir="{run}"',
                                   f'train.ckpt_dir="{run / "ckpt"}"'])
    summary = train(cfg, log=lambda *a, **k: None)
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    per_step = [r["tokens"] / r["step"] / r["tok_per_s"] for r in recs if "tok_per_s" in r and r["step"] > 1]
    assert len(per_step) == 2
    assert max(per_step) < PAUSE / 2, per_step        # with the writes inside, each step would take > PAUSE
    assert summary["checkpoint_s"] >= 4 * PAUSE       # four writes, each at least the pause
