"""Process bodies for the distributed-training tests (FSDP2, checkpoints across rank counts,
context parallelism composed with data parallelism), run under ``torch.multiprocessing.spawn``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tests.distributed.workers import finish, init

BATCH, SEQ, VOCAB, LR = 4, 32, 64, 1e-2


def tiny_lm(seed: int):
    from spattern.models import DecoderLM
    from spattern.models.config import ModelConfig

    torch.manual_seed(seed)
    return DecoderLM(ModelConfig(arch="neox", vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=2, max_seq_len=64))


def batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    seq = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=g)
    return seq[:, :-1], seq[:, 1:]


def train_steps(model, opt, steps, rank: int, world: int) -> None:
    """Global batch BATCH split over the ranks; FSDP2 averages the ranks' gradients (= full-batch mean)."""
    per = BATCH // world
    for s in steps:
        x, y = batch(s)
        _, loss = model(x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per])
        opt.zero_grad()
        loss.backward()
        opt.step()


def fsdp_model(seed: int, world: int):
    from torch.distributed.device_mesh import init_device_mesh

    from spattern.distributed.training import fully_shard_model

    model = fully_shard_model(tiny_lm(seed), mesh=init_device_mesh("cpu", (world,)))
    return model, torch.optim.AdamW(model.parameters(), lr=LR)


def fsdp_write_and_resume(rank: int, world: int, port: int, out_dir: str, ckpt: str) -> None:
    """Train 2 steps, checkpoint, 2 more (run A); a fresh model (other seed) loads the checkpoint
    and trains the same 2 steps (run B). Rank 0 writes A (npz) and the largest |A - B|."""
    from spattern.distributed.training import (
        full_state,
        load_checkpoint,
        save_checkpoint,
    )

    init(rank, world, port)
    try:
        model, opt = fsdp_model(0, world)
        sharded = all(type(p).__name__ == "DTensor" for p in model.parameters())
        train_steps(model, opt, [0, 1], rank, world)
        save_checkpoint(ckpt, model, opt, step=2)
        train_steps(model, opt, [2, 3], rank, world)
        a = full_state(model)
        model_b, opt_b = fsdp_model(1, world)
        step = load_checkpoint(ckpt, model_b, opt_b)
        train_steps(model_b, opt_b, range(step, 4), rank, world)
        b = full_state(model_b)
        if rank == 0:
            np.savez(Path(out_dir, "a.npz"), **a)
        rec = {"step": step, "sharded": sharded, "diff": max(float(np.abs(a[n] - b[n]).max()) for n in a)}
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rec if "rec" in locals() else {}))
        finish("rec" in locals())


def fsdp_resume(rank: int, world: int, port: int, out_dir: str, ckpt: str) -> None:
    """Load the 2-rank checkpoint on ``world`` ranks and train steps 2, 3; rank 0 writes the params."""
    from spattern.distributed.training import full_state, load_checkpoint

    init(rank, world, port)
    try:
        model, opt = fsdp_model(1, world)
        step = load_checkpoint(ckpt, model, opt)
        train_steps(model, opt, range(step, 4), rank, world)
        state = full_state(model)
        if rank == 0:
            np.savez(Path(out_dir, "resumed.npz"), **state)
        rec = {"step": step}
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rec if "rec" in locals() else {}))
        finish("rec" in locals())


class TinyAttention(nn.Module):
    """x (B, n, C) -> o(attention(q(x), k(x), v(x))) with GQA; attention is context-parallel when a
    sharding is given (no position-dependent parts, so a shard needs only its tokens)."""

    def __init__(self, C: int = 32, H: int = 4, Hkv: int = 2) -> None:
        super().__init__()
        self.H, self.Hkv, self.D = H, Hkv, C // H
        self.q, self.kv, self.o = nn.Linear(C, C), nn.Linear(C, 2 * Hkv * (C // H)), nn.Linear(C, C)

    def forward(self, x, layout, sharding=None, group=None):
        import spattern
        from spattern.distributed import context_parallel_attention

        B, n, C = x.shape
        q = self.q(x).view(B, n, self.H, self.D).transpose(1, 2)              # (B, H, n, D)
        k, v = self.kv(x).view(B, n, 2, self.Hkv, self.D).permute(2, 0, 3, 1, 4)  # (B, Hkv, n, D) each
        if sharding is None:
            out = spattern.attention(q, k, v, layout, backend="reference")
        else:
            out = context_parallel_attention(q, k, v, layout, sharding, group=group, backend="reference")
        return self.o(out.transpose(1, 2).reshape(B, n, C))


def dp_cp_gradients(rank: int, world: int, port: int, out_dir: str, dp: int, cp: int) -> None:
    """A (dp, cp) mesh: dp replicas take different sequences, the cp ranks of a replica split each
    sequence (zig-zag) and run context-parallel attention; FSDP2 over the flattened mesh. The
    gradients must equal one process's on the whole batch (float64)."""
    import spattern
    from spattern.distributed import make_sharding
    from spattern.distributed.training import (
        context_parallel_loss,
        fully_shard_model,
        make_mesh,
    )

    init(rank, world, port)
    try:
        torch.set_default_dtype(torch.float64)
        N, B = 320, 2 * dp
        layout = spattern.compile("(local(48) | sink(16) | strided(100)) & causal", N, block=(32, 32))
        torch.manual_seed(0)
        ref_model = TinyAttention()
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(B, N, 32, generator=g), torch.randn(B, N, 32, generator=g)
        ((ref_model(x, layout) - y) ** 2).sum().div(N * (B // dp) * dp).backward()  # mean over replicas
        mesh, flat = make_mesh(dp, cp)
        di, ci = mesh.get_local_rank("dp"), mesh.get_local_rank("cp")
        sh = make_sharding(N, cp, (32, 32), "zigzag")
        pos = torch.from_numpy(sh.token_index(ci))
        torch.manual_seed(0)
        model = fully_shard_model(TinyAttention(), mesh=flat, blocks=[])
        rows = slice(di * (B // dp), (di + 1) * (B // dp))
        xl, yl = x[rows][:, pos], y[rows][:, pos]
        local_sum = ((model(xl, layout, sh, mesh.get_group("cp")) - yl) ** 2).sum()
        context_parallel_loss(local_sum, N * (B // dp), cp).backward()
        diff = max(float((p.grad.full_tensor() - r.grad).abs().max())
                   for p, r in zip(model.parameters(), ref_model.parameters()))
        scale = max(float(r.grad.abs().max()) for r in ref_model.parameters())
        rec = {"dp": di, "cp": ci, "diff": diff, "scale": scale}
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rec if "rec" in locals() else {}))
        finish("rec" in locals())
