"""A train run's per_example.jsonl holds the final validation loss of each validation sequence and of
each validation file the scored sequences hold (``file_loss``); the files' losses weighted by their
scored tokens give back the run's validation loss, and compare reads ``file_loss`` as a metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from spattern.data.prepare import PreparedData
from spattern.experiments.results import direction
from spattern.train import load_train_config, train
from spattern.utils.io import read_jsonl

TINY = Path(__file__).resolve().parents[1] / "experiments" / "train_tiny_cpu.toml"


def test_validation_loss_per_file(cache, tmp_path):
    run = tmp_path / "run"
    cfg = load_train_config(TINY, ["train.steps=2", "train.eval_every=2", "train.progress=false",
                                   "data.max_docs=120", f'train.out_dir="{run}"', f'train.ckpt_dir="{run / "ckpt"}"'])
    summary = train(cfg, log=lambda *a, **k: None)
    recs = read_jsonl(run / "per_example.jsonl")
    seqs = [r for r in recs if "loss" in r]
    files = [r for r in recs if "file_loss" in r]
    assert seqs and files and len(seqs) + len(files) == len(recs)
    L = cfg.data.seq_len
    assert sum(r["file_tokens"] for r in files) == len(seqs) * L           # every scored target, once
    weighted = sum(r["file_loss"] * r["file_tokens"] for r in files) / (len(seqs) * L)
    assert weighted == pytest.approx(summary["val_loss"], rel=1e-5)
    ids = [r["id"] for r in files]                                         # the split's first files, in order
    folder = next(Path(p) for p in (cache / "data").iterdir() if (p / "validation_ids.json").is_file())
    assert ids == PreparedData(folder).doc_ids("validation")[: len(ids)]
    assert direction("file_loss") is False                                # lower is better, for compare
