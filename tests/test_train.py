"""Training: loss falls (dense and patterned), exact resume, configs, DDP over gloo, generation CLI."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spattern.train import load_train_config as load_config, lr_at, train
from spattern.train.loop import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "train_tiny_cpu.toml"
HAS_API = importlib.util.find_spec("spattern.runtime.api") is not None  # kept for older checkouts


def _cfg(tmp_path, name, *over):
    return load_config(TINY, [f'name="{name}"', f'train.out_dir="{tmp_path / name}"',
                              f'train.ckpt_dir="{tmp_path / name / "ckpt"}"', "train.progress=false", *over])


def _metrics(path):
    return [json.loads(ln) for ln in Path(path).read_text().splitlines()]


def _check_learns(summary, out_dir):
    recs = _metrics(Path(out_dir) / "metrics.jsonl")
    train_losses = [r["loss"] for r in recs if "loss" in r]
    val = [r["val_loss"] for r in recs if "val_loss" in r]
    assert summary["step"] == 40
    assert train_losses[-1] < train_losses[0] - 0.8, train_losses   # from ~ln(1024) = 6.93
    assert val[-1] < val[0], val
    assert all(r["tok_per_s"] > 0 for r in recs if "loss" in r)


@pytest.mark.slow
def test_tiny_model_learns_dense(cache, tmp_path):
    cfg = _cfg(tmp_path, "dense")
    s = train(cfg, log=lambda *a: None)
    _check_learns(s, tmp_path / "dense")
    run = json.loads((tmp_path / "dense" / "env.json").read_text())["run"]
    assert run["backend"] == "sdpa" and run["seed"] == 0 and run["world_size"] == 1
    assert run["data"]["corpus"] == "stdlib"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_API, reason="spattern.runtime.api (the attention API) is not there yet")
@pytest.mark.parametrize("pattern", ["local(64) & causal", "(local(32) | strided(16)) & causal"])
def test_tiny_model_learns_with_a_pattern(cache, tmp_path, pattern):
    cfg = _cfg(tmp_path, "sparse", f'model.pattern="{pattern}"', "model.block=[32, 32]")
    s = train(cfg, log=lambda *a: None)
    _check_learns(s, tmp_path / "sparse")
    run = json.loads((tmp_path / "sparse" / "env.json").read_text())["run"]
    assert run["backend"] == "auto" and run["patterns"] == [pattern] * 2


def test_resume_is_exact(cache, tmp_path):
    train(_cfg(tmp_path, "a", "train.steps=12", "train.eval_every=0"), log=lambda *a: None)
    first = train(_cfg(tmp_path, "b", "train.steps=12", "train.eval_every=0", "train.max_seconds=1e-9"),
                  log=lambda *a: None)
    assert first["step"] == 1  # stopped early, checkpoint written
    resumed = train(_cfg(tmp_path, "b", "train.steps=12", "train.eval_every=0"), log=lambda *a: None)
    assert resumed["step"] == 12
    a = load_checkpoint(tmp_path / "a" / "ckpt" / "ckpt.pt")
    b = load_checkpoint(tmp_path / "b" / "ckpt" / "ckpt.pt")
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n
    steps = [r["step"] for r in _metrics(tmp_path / "b" / "metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps))  # no duplicated lines after the resume


def test_a_relative_run_directory_resumes_in_another_checkout(cache, tmp_path, monkeypatch):
    """A run stopped in one checkout (a relative train.out_dir, as an experiment's results/<exp>/<run>; its
    checkpoint in the cache) resumes in a copy of the project elsewhere once its folder is there (as
    scripts/study_gpu.sh brings a run and its checkpoint to a fresh machine): the checkpoint is keyed by the
    run directory as written. Absolute run directories keep one key each."""
    import shutil

    from spattern.train.loop import run_paths

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    over = ['name="moved"', 'train.out_dir="results/x/run"', "train.progress=false", "train.steps=12",
            "train.eval_every=0"]
    monkeypatch.chdir(a)
    here = run_paths(load_config(TINY, over))[1]
    first = train(load_config(TINY, [*over, "train.max_seconds=1e-9"]), log=lambda *x: None)
    assert first["step"] == 1 and here.is_file()
    shutil.copytree(a / "results", b / "results")
    monkeypatch.chdir(b)
    assert run_paths(load_config(TINY, over))[1] == here
    logs = []
    resumed = train(load_config(TINY, over), log=logs.append)
    assert resumed["step"] == 12 and any("resumed moved at step 1 " in str(x) for x in logs), logs
    steps = [r["step"] for r in _metrics(b / "results" / "x" / "run" / "metrics.jsonl") if "loss" in r]
    assert steps[0] == 1 and steps == sorted(set(steps))  # the first segment's lines kept, none twice
    one, two = (run_paths(load_config(TINY, ['name="n"', f'train.out_dir="{d / "r"}"']))[1] for d in (a, b))
    assert one != two


def test_schedule_and_config_errors(tmp_path):
    assert lr_at(0, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert lr_at(55, 100, 10, 1.0, 0.1) == pytest.approx(0.55)
    cfg = load_config(ROOT / "experiments" / "train_tiny_cpu_local.toml", ["train.steps=7"])
    assert cfg.model.pattern == "local(64) & causal" and cfg.data.seq_len == 128
    assert cfg.train.steps == 7 and cfg.name == "train_tiny_cpu_local"
    with pytest.raises(ValueError, match=r"train.stpes': unknown key"):
        load_config(TINY, ["train.stpes=3"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_config(TINY, ["train.steps"])


@pytest.mark.slow
def test_ddp_two_cpu_processes_over_gloo_match_one_process(cache, tmp_path):
    """torchrun, 2 ranks x batch 4 == 1 process x batch 8 (same samples, averaged gradients)."""
    common = ["--set", "train.steps=6", "--set", "train.eval_every=0", "--set", "train.progress=false",
              "--set", "train.device=\"cpu\""]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    ddp = ["--set", f'train.out_dir="{tmp_path / "ddp"}"', "--set", f'train.ckpt_dir="{tmp_path / "ddp"}"',
           "--set", "train.batch_size=4"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "spattern.cli", "train", str(TINY), *common, *ddp]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "ddp" / "env.json").read_text())["run"]
    assert run["world_size"] == 2 and run["dist_backend"] == "gloo" and run["tokens_per_step"] == 8 * 128
    single = train(load_config(TINY, [f'train.out_dir="{tmp_path / "one"}"', f'train.ckpt_dir="{tmp_path / "one"}"',
                                      "train.steps=6", "train.eval_every=0", "train.progress=false",
                                      "train.batch_size=8"]), log=lambda *a: None)
    a, b = load_checkpoint(tmp_path / "ddp" / "ckpt.pt"), load_checkpoint(tmp_path / "one" / "ckpt.pt")
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-4), n
    assert single["step"] == 6


def test_generate_cli_from_a_checkpoint(cache, tmp_path, capsys):
    from spattern.cli import main

    train(_cfg(tmp_path, "g", "train.steps=3", "train.eval_every=0", 'model.pattern="local(16) & causal"'),
          log=lambda *a: None)
    assert main(["generate", "--checkpoint", str(tmp_path / "g" / "ckpt" / "ckpt.pt"), "--prompt", "def ",
                 "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("def ")
    assert main(["perplexity", "--checkpoint", str(tmp_path / "g" / "ckpt" / "ckpt.pt"), "--corpus", "stdlib",
                 "--window", "64", "--docs", "2"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["docs"] == 2 and rec["tokens"] == 128 and 1 < rec["ppl"] < 2048
    assert rec["pattern"] == "local(16) & causal"  # the pattern the checkpoint was trained with


@pytest.mark.gpu
@pytest.mark.parametrize("pattern", ["dense", "local(64) & causal"])
def test_tiny_model_learns_on_cuda_with_bf16_and_flex(cache, tmp_path, pattern):
    """CUDA: bf16 autocast; a patterned model trains through FlexAttention (backend auto -> flex)."""
    name = "cuda_" + ("dense" if pattern == "dense" else "sparse")
    cfg = _cfg(tmp_path, name, f'model.pattern="{pattern}"', "model.block=[128, 128]", "data.seq_len=256",
               'train.device="cuda"')
    s = train(cfg, log=lambda *a: None)
    _check_learns(s, tmp_path / name)
    run = json.loads((tmp_path / name / "env.json").read_text())["run"]
    assert run["autocast_bf16"] and run["backend"] == ("sdpa" if pattern == "dense" else "auto")


@pytest.mark.slow
def test_indexer_two_stages_through_the_training_loop(cache, tmp_path):
    """[indexer] in a config: a dense warm-up where only the indexers learn (KL), then sparse
    training on their top-k selection; the stage and the selection statistics are logged."""
    cfg = _cfg(tmp_path, "idx", "train.steps=12", "train.log_every=1", "train.eval_every=0",
               "indexer.k=3", "indexer.block=[32, 32]", "indexer.warmup_steps=6", "indexer.n_heads=2",
               "indexer.head_dim=16")
    lines = []
    s = train(cfg, log=lambda *a: lines.append(" ".join(map(str, a))))
    # the LM is frozen in this warm-up (warmup_train_lm unset) while it starts from scratch: said once
    assert sum("warm-up of 6 steps with the LM frozen" in line for line in lines) == 1
    recs = [r for r in _metrics(tmp_path / "idx" / "metrics.jsonl") if "loss" in r]
    stages = [r["indexer_stage"] for r in recs]
    assert stages[:6] == ["dense-warmup"] * 6 and stages[6:] == ["sparse"] * 6
    for r in recs:
        assert 0 < r["indexer_density"] <= 1 and 0 <= r["indexer_mass_recall"] <= 1
        assert r["indexer_kl"] >= 0
    run = json.loads((tmp_path / "idx" / "env.json").read_text())["run"]
    assert run["backend"].startswith("indexer-topk") and s["step"] == 12
    with pytest.raises(ValueError, match=r"indexer.kk': unknown key"):
        load_config(TINY, ["indexer.kk=3"])
