"""The lightning indexer of DeepSeek-V3.2 (DeepSeek-AI, 2025, "DeepSeek-V3.2-Exp", Sec. 2.1):

    I(t, s) = sum_{j=1..H_I} w(t, j) * ReLU(q(t, j) . k(s))

with few index heads H_I and a small dimension d_I: a query t has H_I index queries q(t, j) and
weights w(t, j), a key s has one index key k(s) shared by all index heads. ReLU (rather than a
softmax) keeps it cheap; the indexer costs O(N^2 * H_I * d_I), small next to attention's
O(N^2 * H * D) for H_I * d_I << H * D, and it can run in low precision.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LightningIndexer(nn.Module):
    def __init__(self, d_model: int, n_heads: int = 4, head_dim: int = 32, rotary=None):
        super().__init__()
        if d_model < 1 or n_heads < 1 or head_dim < 1:
            raise ValueError(f"LightningIndexer: expected positive sizes, got d_model={d_model}, "
                             f"n_heads={n_heads}, head_dim={head_dim}")
        self.n_heads, self.head_dim = n_heads, head_dim
        self.wq = nn.Linear(d_model, n_heads * head_dim, bias=False)
        self.wk = nn.Linear(d_model, head_dim, bias=False)
        self.ww = nn.Linear(d_model, n_heads, bias=False)
        self.rotary = rotary  # optional: a module applied to (B, h, N, d) queries/keys
        nn.init.normal_(self.ww.weight, std=1.0 / math.sqrt(d_model))

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """x (B, N, C) -> index scores (B, N, N); future keys get -inf when causal."""
        if x.dim() != 3:
            raise ValueError(f"x: expected (batch, seq, d_model), got {tuple(x.shape)}")
        B, N, _ = x.shape
        x = x.to(self.wq.weight.dtype)  # a float32 indexer on a bfloat16 model's hidden states
        q = self.wq(x).view(B, N, self.n_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        k = self.wk(x)[:, None]  # (B, 1, N, d)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        w = self.ww(x).transpose(1, 2) / math.sqrt(self.n_heads)  # (B, h, N)
        logits = torch.relu(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim))  # (B, h, N, N)
        scores = (w[..., None] * logits).sum(dim=1)  # (B, N, N)
        if causal:
            future = torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        return scores
