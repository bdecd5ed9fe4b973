"""`spattern bench train`: training-step throughput of a small causal decoder, dense SDPA vs a pattern.

The model is a pre-LN GPT-style decoder kept here so the two runs differ only in attention:
byte vocabulary (256), ``layers`` blocks of (LayerNorm, fused QKV, attention, projection,
LayerNorm, 4x GELU MLP), tied output head, bf16 weights, AdamW (foreach). A step is forward, loss
(cross-entropy on random tokens), backward and the optimizer step; tokens/s = batch * N / median
step time (``evaluation/timing.py``).

- ``dense``: ``F.scaled_dot_product_attention(is_causal=True)`` (the backend torch picks);
- ``sparse``: ``spattern.attention`` on ``(local(w) | sink(128)) & causal`` (``--pattern``)
  with w bisected so that the layout computes ``--fraction`` of the causal blocks, through the CUDA
  forward and backward kernels (``backend="cupy"``).

Ideal speedup from FLOP counts: with F_other = 6 * (matmul parameters) * tokens and attention
F_attn = 3.5 * 4 * d_model * (attended pairs at block granularity) * batch * layers (forward plus a
2.5x backward), ideal = (F_other + F_attn(dense causal)) / (F_other + F_attn(layout)), where the dense
causal count is N^2 / 2 and the layout's is nnz_blocks * block_q * block_k.
"""
from __future__ import annotations

import argparse
import sys
import time

BLOCK = (128, 128)


def _model(d_model, layers, heads, attn, device, dtype):
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
            self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
            self.fc1, self.fc2 = nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, d_model)

        def forward(self, x):  # x (B, N, d)
            B, N, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, N, Dh) each
            a = attn(q, k, v).transpose(1, 2).reshape(B, N, d_model)
            x = x + self.proj(a)
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(256, d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln = nn.LayerNorm(d_model)

        def forward(self, tok):
            x = self.emb(tok)
            for b in self.blocks:
                x = b(x)
            return self.ln(x) @ self.emb.weight.t()  # tied head, (B, N, 256)

    return Decoder().to(device=device, dtype=dtype)


PATTERN = "(local({w}) | sink(128)) & causal"


def pattern_layout(n: int, fraction: float, template: str = PATTERN):
    """The pattern ``template`` (``{w}``: window) computing ~`fraction` of the causal blocks."""
    from spattern.compiler.compile import compile as compile_pattern

    R = -(-n // BLOCK[0])
    causal_blocks = R * (R + 1) // 2
    best, lo, hi = None, 1, n
    while lo <= hi:
        w = (lo + hi) // 2
        lay = compile_pattern(template.format(w=w), n, block=BLOCK)
        f = lay.nnz / causal_blocks
        if best is None or abs(f - fraction) < abs(best[1] - fraction):
            best = (lay, f)
        lo, hi = (w + 1, hi) if f < fraction else (lo, w - 1)
    return best


def flop_counts(n, batch, d_model, layers, nnz_blocks) -> dict:
    params = layers * 12 * d_model * d_model + 256 * d_model  # matmul weights (QKV, proj, MLP) + head
    other = 6.0 * params * batch * n
    dense = 3.5 * 4 * d_model * (n * n / 2) * batch * layers
    sparse = 3.5 * 4 * d_model * (nnz_blocks * BLOCK[0] * BLOCK[1]) * batch * layers
    return dict(other=other, attn_dense=dense, attn_layout=sparse, ideal_speedup=(other + dense) / (other + sparse))


def _profile(step, tok, name, log) -> None:
    """torch.profiler over 3 steps: the ops with the most CUDA and CPU time (where a step's time goes)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step(tok)
        torch.cuda.synchronize()
    ka = prof.key_averages()
    log(f"--- profile of 3 {name} steps, by CUDA time")
    log(ka.table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=48))
    log(f"--- profile of 3 {name} steps, by CPU time")
    log(ka.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=48))


def run_config(n, batch, d_model, layers, heads, fraction, warmup, iters, log=print, template=PATTERN,
               profile=False) -> dict:
    import torch
    import torch.nn.functional as F

    from spattern.evaluation.timing import median_ms
    from spattern.runtime.api import attention

    dev, dtype = torch.device("cuda"), torch.bfloat16
    lay, frac = pattern_layout(n, fraction, template)
    attns = {"dense": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
             "sparse": lambda q, k, v: attention(q, k, v, lay, backend="cupy", trusted=True)}
    g = torch.Generator(device="cuda").manual_seed(0)
    toks = [torch.randint(0, 256, (batch, n + 1), device=dev, generator=g) for _ in range(2)]
    row = dict(N=n, batch=batch, d_model=d_model, layers=layers, heads=heads, head_dim=d_model // heads,
               pattern=lay.pattern, causal_block_fraction=frac, nnz_blocks=lay.nnz, step_ms={}, tokens_per_s={},
               loss_after={})
    for name, attn in attns.items():
        torch.manual_seed(0)
        model = _model(d_model, layers, heads, attn, dev, dtype)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)

        def step(tok, model=model, opt=opt):
            logits = model(tok[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, 256), tok[:, 1:].reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
        t = median_ms(step, [(x,) for x in toks], warmup, iters)
        if profile:
            _profile(step, toks[0], name, log)
        row["step_ms"][name] = t
        row["tokens_per_s"][name] = batch * n / (t * 1e-3)
        row["loss_after"][name] = float(step(toks[0]).detach())
        log(f"{name:6s} N={n} batch={batch} d={d_model} L={layers} H={heads}: {t:.2f} ms/step, "
            f"{row['tokens_per_s'][name]:.0f} tokens/s")
        del model, opt
        torch.cuda.empty_cache()
    fc = flop_counts(n, batch, d_model, layers, lay.nnz)
    row["flops"] = fc
    row["speedup"] = row["step_ms"]["dense"] / row["step_ms"]["sparse"]
    row["ideal_speedup"] = fc["ideal_speedup"]
    row["fraction_of_ideal"] = row["speedup"] / fc["ideal_speedup"]
    log(f"speedup {row['speedup']:.2f}x, ideal {fc['ideal_speedup']:.2f}x ({100 * row['fraction_of_ideal']:.0f}% of ideal), "
        f"layout {frac:.3f} of causal blocks")
    return row


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--seq", type=int, default=8192, help="context length")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--configs", nargs="+", default=["256:4:4", "512:4:4"],
                    help="model configs d_model:layers:heads (head dim = d_model / heads, 64 or 128)")
    ap.add_argument("--fraction", type=float, default=0.10, help="fraction of the causal blocks the pattern computes")
    ap.add_argument("--pattern", default=PATTERN, help="pattern template; {w} is the bisected window")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps")
    ap.add_argument("--iters", type=int, default=10, help="timed steps (median)")
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler table per model")
    ap.add_argument("--json", default="bench_train.json", help="output JSON path")


def run(a) -> int:
    from spattern.evaluation.timing import timing_method
    from spattern.utils.env import capture_env
    from spattern.utils.io import write_json

    rows, t0 = [], time.time()
    for c in a.configs:
        d, L, H = (int(x) for x in c.split(":"))
        rows.append(run_config(a.seq, a.batch, d, L, H, a.fraction, a.warmup, a.iters,
                               log=lambda s: print(s, flush=True), template=a.pattern, profile=a.profile))
        write_json(a.json, dict(env=capture_env(), timing=timing_method(), argv=list(sys.argv), results=rows,
                                partial=True))
    write_json(a.json, dict(env=capture_env(), timing=timing_method(), argv=list(sys.argv), results=rows,
                            wall_s=time.time() - t0))
    print(f"wrote {a.json}")
    return 0
