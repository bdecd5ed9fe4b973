"""Building blocks shared by the decoders: self-attention with a pattern, MLPs, RMSNorm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attend, indexer_contexts, indexer_scored, pattern_block
from .rotary import Rotary


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class SelfAttention(nn.Module):
    """Projections, optional rotary, one `attend` call with this layer's pattern and backend.

    `observer` (default None, then free): a callable run after attention as observer(q, k, v, y)
    with q (B, H, N, D) and k (B, Hkv, T, D) after rotary, v (B, Hkv, T, D), y (B, H, N, D) before
    o_proj (T = N, or past + N with a cache). Evaluation reads the layer through it (e.g.
    `spattern.evaluation.infoloss`); it must not modify the tensors.

    `indexer` (default None): a lightning indexer (`spattern.indexer.LightningIndexer`) that scores
    this layer's input for an `indexed(...)` pattern (`DecoderLM.set_indexers`)."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, bias: bool, rotary: Rotary | None,
                 pattern: str | None, backend: str, block: tuple[int, int]) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        self.rotary = rotary
        self.pattern, self.backend, self.block = pattern, backend, block
        self.observer = None
        self.cp = None  # a ContextParallel while training with context parallelism (spattern.train)
        self.contexts = None  # one per sequence of the batch, for a content-dependent pattern (set_contexts)
        self.indexer = None   # scores x for an indexed(...) pattern (set_indexers)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """x (B, N, C) -> (B, N, C). `cache` (dense layers, generation): a dict holding this layer's
        past keys/values; x is then the N tokens after them."""
        B, N, _ = x.shape                                                          # (B, N, C)
        past = 0 if cache is None or "k" not in cache else cache["k"].shape[2]
        q = self.q_proj(x).view(B, N, self.n_heads, self.head_dim).transpose(1, 2)     # (B, H, N, D)
        k = self.k_proj(x).view(B, N, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, N, D)
        v = self.v_proj(x).view(B, N, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, N, D)
        if self.cp is not None:  # x holds this rank's shard of the sequence (ContextParallel)
            if cache is not None:
                raise ValueError("cache: expected None under context parallelism (training only)")
            if self.rotary is not None:
                q, k = self.rotary(q, positions=self.cp.positions), self.rotary(k, positions=self.cp.positions)
            y = self.cp.attend(q, k, v, self.pattern, self.backend, self.block)     # (B, H, N, D)
        else:
            if self.rotary is not None:
                q, k = self.rotary(q, past), self.rotary(k, past)
            if cache is None:
                contexts = self.contexts
                if indexer_scored(self.pattern):  # the selection of this call, from this layer's indexer
                    if self.indexer is None:
                        raise ValueError(f"pattern {str(self.pattern)!r}: expected a lightning indexer on the "
                                         "layer (model.set_indexers), got none")
                    contexts = indexer_contexts(self.indexer, x, pattern_block(self.pattern))
                y = attend(q, k, v, self.pattern, self.backend, self.block, contexts)  # (B, H, N, D)
            else:
                if self.pattern is not None:
                    raise ValueError(f"cache: expected a dense layer, got pattern {self.pattern!r} "
                                     "(patterned layers recompute the context instead)")
                if past:
                    k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)  # (B, Hkv, past+N, D)
                cache["k"], cache["v"] = k, v
                y = _attend_after(q, k, v, past)                                   # (B, H, N, D)
        if self.observer is not None:
            self.observer(q, k, v, y)
        return self.o_proj(y.transpose(1, 2).reshape(B, N, -1))                   # (B, N, C)


def _attend_after(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
    """Causal attention of N queries at positions past..past+N-1 over all past+N keys."""
    if past == 0:
        return attend(q, k, v, None)
    H, Hkv = q.shape[1], k.shape[1]
    if H != Hkv:  # (B, Hkv, T, D) -> (B, H, T, D)
        k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    N, T = q.shape[2], k.shape[2]
    mask = torch.ones(N, T, dtype=torch.bool, device=q.device).tril(diagonal=past)  # (N, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class ContextParallel:
    """What an attention layer needs to run on its rank's shard of the sequence: the cp process
    group, the ``Sharding`` of the full length ``n_tokens``, and the shard's global positions int64
    (n_r,) (for rotary). Patterned layers use their pattern's layout of the full sequence; dense
    layers the layout of ``causal`` (both compiled at n_tokens with the layer's block)."""

    def __init__(self, group, sharding, positions: torch.Tensor) -> None:
        self.group, self.sharding, self.positions = group, sharding, positions

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: str | None, backend: str,
               block: tuple[int, int]) -> torch.Tensor:
        """q (B, H, n_r, D), k/v (B, Hkv, n_r, D) of this rank's tokens -> (B, H, n_r, D)."""
        from spattern.distributed.context_parallel import context_parallel_attention  # noqa: PLC0415

        from .attention import compiled_layout, is_dense  # noqa: PLC0415

        n = self.sharding.n_tokens
        layout = compiled_layout("causal" if is_dense(pattern) else pattern, n, n, block)
        return context_parallel_attention(q, k, v, layout, self.sharding, group=self.group, backend=backend)


class MLP(nn.Module):
    """act in {"gelu", "relu"}: fc2(act(fc1(x))); "swiglu": down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_ff: int, act: str, bias: bool) -> None:
        super().__init__()
        self.act = act
        if act == "swiglu":
            self.gate = nn.Linear(d_model, d_ff, bias=bias)
            self.up = nn.Linear(d_model, d_ff, bias=bias)
            self.down = nn.Linear(d_ff, d_model, bias=bias)
        else:
            self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
            self.fc2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act == "swiglu":
            return self.down(F.silu(self.gate(x)) * self.up(x))
        h = self.fc1(x)
        return self.fc2(F.gelu(h) if self.act == "gelu" else F.relu(h))
