"""Distributed-training pieces on gloo: FSDP2 on the project's DecoderLM resumes exactly from a
checkpoint, the checkpoint loads on 1 and 4 ranks, and context parallelism composed with data
parallelism (a (dp, cp) mesh) gives the one-process gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spattern.distributed import make_sharding
from spattern.distributed.training import (
    context_parallel_loss,
    load_checkpoint,
    shard_batch,
)
from tests.distributed import train_workers as tw


def _final_params_one_process(ckpt) -> dict:
    model = tw.tiny_lm(2)
    opt = torch.optim.AdamW(model.parameters(), lr=tw.LR)
    step = load_checkpoint(ckpt, model, opt)  # no process group: DCP reads every shard
    assert step == 2
    tw.train_steps(model, opt, range(step, 4), 0, 1)
    return {n: p.detach().numpy() for n, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # the 1-process load, on purpose
def test_fsdp2_checkpoint_resumes_exactly_and_on_1_and_4_ranks(spawn, tmp_path):
    ckpt = tmp_path / "ckpt"
    recs = spawn(tw.fsdp_write_and_resume, 2, str(ckpt))
    assert all(r["sharded"] and r["step"] == 2 for r in recs)
    assert all(r["diff"] == 0.0 for r in recs)  # same ranks: bit-exact resume
    a = dict(np.load(next(tmp_path.glob("w2-*/a.npz"))))
    one = _final_params_one_process(ckpt)
    four_dir = spawn(tw.fsdp_resume, 4, str(ckpt))
    four = dict(np.load(next(tmp_path.glob("w4-*/resumed.npz"))))
    assert all(r["step"] == 2 for r in four_dir)
    for n in a:  # other rank counts: the same training up to the order of float32 reductions
        assert np.allclose(one[n], a[n], atol=2e-5, rtol=0), n
        assert np.allclose(four[n], a[n], atol=2e-5, rtol=0), n
    moved = max(float(np.abs(a[n] - tw.tiny_lm(0).state_dict()[n].numpy()).max()) for n in a)
    assert moved > 1e-3  # training changed the weights (the comparison is not vacuous)


@pytest.mark.slow
def test_context_parallel_composed_with_data_parallel_gives_the_one_process_gradients(spawn):
    recs = spawn(tw.dp_cp_gradients, 4, 2, 2)
    assert sorted((r["dp"], r["cp"]) for r in recs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in recs:
        assert r["diff"] <= 1e-12 * max(1.0, r["scale"]), r


def test_shard_batch_and_loss_scale():
    sh = make_sharding(96, 2, (16, 16), "zigzag")
    idx = torch.arange(2 * 96).view(2, 96)
    x, y, pos = shard_batch(idx, idx + 1, sh, 1)
    assert torch.equal(pos, torch.from_numpy(sh.token_index(1))) and torch.equal(x[0], pos) and torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="n_tokens"):
        shard_batch(idx[:, :90], idx[:, :90], sh, 0)
    assert float(context_parallel_loss(torch.tensor(6.0), tokens_per_replica=12, cp=2)) == 1.0
