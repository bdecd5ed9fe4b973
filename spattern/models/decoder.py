"""Decoder-only language models with pluggable attention: GPT-NeoX (Pythia), OPT and Llama.

One `DecoderLM` class; the architecture picks the block and the position scheme:
- neox:  LayerNorm, rotary on `rotary_pct` of each head, parallel residual
         x + attn(ln1(x)) + mlp(ln2(x)), GELU, untied output.
- opt:   LayerNorm (pre-norm), learned positions (offset 2 as in OPT checkpoints), sequential
         residual, ReLU, tied output.
- llama: RMSNorm, rotary on all dims, grouped-query attention, SwiGLU, sequential residual.
Each layer's attention uses its own pattern (`config.pattern`: one string or one per layer).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SequenceContexts, needs_context, per_layer_patterns
from .config import ModelConfig
from .layers import MLP, RMSNorm, SelfAttention
from .rotary import Rotary

OPT_POS_OFFSET = 2


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, pattern: str | None, rotary: Rotary | None) -> None:
        super().__init__()
        self.arch = cfg.arch
        bias = cfg.bias and cfg.arch != "llama"
        Norm = (lambda d: RMSNorm(d, cfg.norm_eps)) if cfg.arch == "llama" else \
            (lambda d: nn.LayerNorm(d, eps=cfg.norm_eps))
        self.ln1, self.ln2 = Norm(cfg.d_model), Norm(cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.kv_heads, bias, rotary, pattern,
                                  cfg.backend, cfg.block)
        act = {"neox": "gelu", "opt": "relu", "llama": "swiglu"}[cfg.arch]
        self.mlp = MLP(cfg.d_model, cfg.ff, act, bias)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:   # (B, N, C)
        if self.arch == "neox":
            return x + self.attn(self.ln1(x), cache) + self.mlp(self.ln2(x))
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class DecoderLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = None
        if cfg.arch == "opt":
            self.pos_embed = nn.Embedding(cfg.max_seq_len + OPT_POS_OFFSET, cfg.d_model)
        patterns = per_layer_patterns(cfg.pattern, cfg.n_layers)
        self.layers = nn.ModuleList()
        for p in patterns:
            rotary = None
            if cfg.arch in ("neox", "llama"):
                pct = cfg.rotary_pct if cfg.arch == "neox" else 1.0
                rot = int(cfg.head_dim * pct) // 2 * 2
                rotary = Rotary(cfg.head_dim, rot, cfg.rope_theta, cfg.rope_style)
            self.layers.append(Block(cfg, p, rotary))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps) if cfg.arch == "llama" else \
            nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of residual projections
            if name.endswith(("o_proj.weight", "fc2.weight", "down.weight")):
                nn.init.normal_(p, 0.0, cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, self.cfg.init_std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def set_pattern(self, pattern, backend: str | None = None) -> None:
        """Swap every layer's attention pattern (one string or one per layer), e.g. on a pretrained model."""
        for layer, p in zip(self.layers, per_layer_patterns(pattern, len(self.layers))):
            layer.attn.pattern = p
            if backend is not None:
                layer.attn.backend = backend
        self.cfg.pattern = pattern
        if backend is not None:
            self.cfg.backend = backend

    @property
    def needs_contexts(self) -> bool:
        """True when a layer's pattern is content-dependent (outline): every forward then needs
        ``set_contexts`` with one context per sequence of the batch."""
        return any(needs_context(layer.attn.pattern) for layer in self.layers)

    def set_contexts(self, contexts) -> None:
        """The contexts of the next forward's sequences (a list, one per batch row; None clears)."""
        shared = None if contexts is None else (  # layouts compiled once per forward (or given, built ahead)
            contexts if isinstance(contexts, SequenceContexts) else SequenceContexts(contexts))
        for layer in self.layers:
            layer.attn.contexts = shared

    def set_indexers(self, indexers) -> None:
        """Give each layer's attention a lightning indexer (a list, one module per layer; None removes
        them): an ``indexed(...)`` pattern selects its blocks from their scores. They become submodules
        (they follow ``.to()``; ``state_dict`` holds them while set)."""
        mods = [None] * len(self.layers) if indexers is None else list(indexers)
        if len(mods) != len(self.layers):
            raise ValueError(f"indexers: expected one per layer ({len(self.layers)}), got {len(mods)}")
        for layer, m in zip(self.layers, mods):
            layer.attn.indexer = m

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed.weight.numel()
            if self.pos_embed is not None:
                n -= self.pos_embed.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean",
                cache: list[dict] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, N) int64 -> logits (B, N, V); loss (mean, or (B, N) with reduction="none").

        `cache`: a list with one dict per layer (start with `[{} for _ in model.layers]`); keys and
        values are kept there and idx holds only the tokens after them (dense layers only)."""
        if idx.dim() != 2:
            raise ValueError(f"idx: expected (batch, seq) token ids, got shape {tuple(idx.shape)}")
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(f"cache: expected one dict per layer ({len(self.layers)}), got {len(cache)}")
        B, N = idx.shape
        past = cache[0]["k"].shape[2] if cache is not None and "k" in cache[0] else 0
        if self.pos_embed is not None and past + N > self.cfg.max_seq_len:
            raise ValueError(f"idx: expected at most max_seq_len={self.cfg.max_seq_len} tokens, got {past + N}")
        x = self.embed(idx)                                                        # (B, N, C)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(past, past + N, device=idx.device) + OPT_POS_OFFSET)
        for i, layer in enumerate(self.layers):
            x = layer(x, None if cache is None else cache[i])
        logits = self.lm_head(self.norm(x))                                        # (B, N, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   reduction=reduction)
            if reduction == "none":
                loss = loss.view(B, N)
        return logits, loss


def build_model(cfg: ModelConfig) -> DecoderLM:
    return DecoderLM(cfg)


def materialize(cfg: ModelConfig, sd: dict[str, torch.Tensor], dtype: torch.dtype) -> DecoderLM:
    """A DecoderLM built on the meta device and filled from a state dict (loaders of checkpoints)."""
    with torch.device("meta"):
        model = DecoderLM(cfg)
    if cfg.tie_embeddings:
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"checkpoint: missing {missing[:8]}, unexpected {unexpected[:8]}")
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    return model.to(dtype).eval()
