"""Distributed training in the one loop (`spattern train` under torchrun, gloo on the CPU):
FSDP2 (`train.parallel="fsdp"`), checkpoints that resume on another number of ranks
(torch.distributed.checkpoint), and context parallelism (`train.context_parallel`), each against the
same run in one process.

All runs use the config's warm-up, then a constant learning rate (min_lr_ratio 1), so that a run
of 3 steps is the first half of a run of 6: its checkpoint, copied into a 6-step run's checkpoint
folder, is resumed there. Layer 0 is patterned (`local(32) & causal`), layer 1 dense, so that context parallelism goes
through both a pattern's layout and the dense layers' causal layout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spattern.train.config import load_train_config as load_config
from spattern.train.loop import load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "train_tiny_cpu.toml"
COMMON = ["train.eval_every=0", "train.progress=false", 'train.device="cpu"', "train.log_every=1",
          "train.min_lr_ratio=1.0", "model.block=[32, 32]",
          'model.pattern=["local(32) & causal", "dense"]']
ATOL = 1e-4  # float32, gradients summed in another order (as the DDP test)


def _over(d: Path, *extra: str) -> list[str]:
    return [*COMMON, f'train.out_dir="{d}"', f'train.ckpt_dir="{d / "ckpt"}"', *extra]


def _torchrun(d: Path, *extra: str, nproc: int = 2) -> None:
    args = [a for o in _over(d, *extra) for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "spattern.cli", "train", str(TINY), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _one(d: Path, *extra: str) -> dict:
    return train(load_config(TINY, _over(d, *extra)), log=lambda *a: None)


def _losses(d: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def _assert_same_params(a: Path, b: Path) -> None:
    ma, mb = load_checkpoint(a / "ckpt" / "ckpt.pt"), load_checkpoint(b / "ckpt" / "ckpt.pt")
    for (n, p), q in zip(ma.named_parameters(), mb.parameters()):
        assert torch.allclose(p, q, atol=ATOL), (n, float((p - q).abs().max()))


def _carry_checkpoint(src: Path, dst: Path) -> None:
    """The 3-step run's sharded checkpoint into the 6-step run's checkpoint folder."""
    (dst / "ckpt").mkdir(parents=True)
    shutil.copytree(src / "ckpt" / "dcp", dst / "ckpt" / "dcp")
    shutil.copy(src / "ckpt" / "dcp.json", dst / "ckpt" / "dcp.json")


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory) -> Path:
    """One process, batch 8, 6 steps, plain (no distributed wrapper)."""
    d = tmp_path_factory.mktemp("ref") / "one"
    s = _one(d, "train.steps=6", "train.batch_size=8")
    assert s["step"] == 6 and s["checkpoint"].endswith("ckpt.pt")
    return d


@pytest.mark.slow
def test_fsdp_two_ranks_match_one_process(reference, tmp_path):
    d = tmp_path / "fsdp"
    _torchrun(d, "train.steps=6", "train.batch_size=4", 'train.parallel="fsdp"')
    run = json.loads((d / "env.json").read_text())["run"]
    assert run["world_size"] == 2 and run["parallel"] == "fsdp" and run["dp"] == 2
    assert run["tokens_per_step"] == 8 * 128  # 2 ranks x batch 4 = the reference's batch 8
    assert (d / "ckpt" / "dcp" / ".metadata").is_file() and not (d / "ckpt" / "dcp.partial").exists()
    assert _losses(d) == pytest.approx(_losses(reference), abs=ATOL)
    _assert_same_params(d, reference)


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_on_another_number_of_ranks(reference, tmp_path):
    """2 ranks -> 1 process, and 1 process -> 2 ranks (from ``dcp.old``, the previous checkpoint a
    kill during the swap leaves): 3 steps, then resume to 6 = the 6-step run."""
    _torchrun(tmp_path / "a2", "train.steps=3", "train.batch_size=4", 'train.parallel="fsdp"')
    _carry_checkpoint(tmp_path / "a2", tmp_path / "b1")
    s = _one(tmp_path / "b1", "train.steps=6", "train.batch_size=8", 'train.parallel="fsdp"')
    assert s["step"] == 6 and s["status"] == "finished"
    assert json.loads((tmp_path / "b1" / "ckpt" / "dcp.json").read_text())["world_size"] == 1
    steps = [json.loads(x)["step"] for x in (tmp_path / "b1" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 4  # resumed after step 3, not trained from scratch
    assert _losses(tmp_path / "b1") == pytest.approx(_losses(reference)[3:], abs=ATOL)
    _assert_same_params(tmp_path / "b1", reference)

    _one(tmp_path / "c1", "train.steps=3", "train.batch_size=8", 'train.parallel="fsdp"')
    _carry_checkpoint(tmp_path / "c1", tmp_path / "d2")
    # as if killed between the two renames of a checkpoint swap: only dcp.old is complete
    (tmp_path / "d2" / "ckpt" / "dcp").rename(tmp_path / "d2" / "ckpt" / "dcp.old")
    _torchrun(tmp_path / "d2", "train.steps=6", "train.batch_size=4", 'train.parallel="fsdp"')
    assert _losses(tmp_path / "d2") == pytest.approx(_losses(reference)[3:], abs=ATOL)
    _assert_same_params(tmp_path / "d2", reference)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_context_parallel_two_ranks_match_one_process(reference, tmp_path, parallel):
    """cp = 2, dp = 1: each rank holds half of every sequence (zigzag), the whole batch of 8."""
    d = tmp_path / "cp"
    _torchrun(d, "train.steps=6", "train.batch_size=8", "train.context_parallel=2", f'train.parallel="{parallel}"')
    run = json.loads((d / "env.json").read_text())["run"]
    assert (run["dp"], run["context_parallel"], run["cp_sharding"]) == (1, 2, "zigzag")
    assert _losses(d) == pytest.approx(_losses(reference), abs=ATOL)
    _assert_same_params(d, reference)


def test_context_parallel_must_divide_the_world(cache, tmp_path):
    from spattern.utils.errors import UserError

    with pytest.raises(UserError, match="divisor of the number of processes 1, got 2"):
        _one(tmp_path / "bad", "train.steps=1", "train.context_parallel=2")


def test_rotary_at_global_positions_equals_the_full_sequence():
    """A shard's rotary at its global positions = the full sequence's rotary at those rows."""
    from spattern.models.rotary import Rotary

    rot = Rotary(16, 8)
    x = torch.randn(2, 3, 40, 16)
    pos = torch.tensor([0, 1, 2, 30, 31, 39])
    assert torch.equal(rot(x[:, :, pos], positions=pos), rot(x)[:, :, pos])
    with pytest.raises(ValueError, match="positions"):
        rot(x, positions=pos)


@pytest.mark.slow
def test_context_parallel_composed_with_fsdp_data_parallel_on_four_ranks(reference, tmp_path):
    """dp = 2 x cp = 2: each dp group reads batch 4 by its dp rank, each cp rank half of every sequence."""
    d = tmp_path / "dp2cp2"
    _torchrun(d, "train.steps=6", "train.batch_size=4", "train.context_parallel=2", 'train.parallel="fsdp"',
              nproc=4)
    run = json.loads((d / "env.json").read_text())["run"]
    assert (run["world_size"], run["dp"], run["context_parallel"]) == (4, 2, 2)
    assert run["tokens_per_step"] == 8 * 128
    assert _losses(d) == pytest.approx(_losses(reference), abs=ATOL)
    _assert_same_params(d, reference)
