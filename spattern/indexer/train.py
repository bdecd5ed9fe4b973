"""Training the lightning indexer (DeepSeek-V3.2-Exp, Sec. 2.1, "continued pre-training").

1. Dense warm-up: the model keeps dense attention and stays frozen; only the indexer learns, by
   KL(p_t || softmax(I_t)) where p_t is the dense attention distribution of query t summed over
   the layer's heads and L1-normalized.
2. Sparse training: attention runs on the indexer's top-k selection; the indexer keeps a KL
   objective on the selected set only (both distributions renormalized over it); its input is
   detached, so it learns from that KL alone while the model learns from the LM loss.

``IndexedAttention`` wraps a model's attention layer (one with q_proj/k_proj/v_proj/o_proj and
optional rotary, as in ``spattern.models``) with an indexer and exposes ``aux_loss`` (the KL) and
``stats`` after each call: ``density`` (selected causal pairs / causal pairs), ``mass_recall`` (the
indexer's recall of dense attention mass: for each query and head, the share of the dense causal
softmax that falls in the selected top-k blocks, forced sink/local blocks included, averaged over
batch, heads and queries) and ``top_mass_overlap``. ``stats`` is computed when read (a training
loop reads it only at its logging steps); ``collect_stats(model)`` averages it over every forward
inside the block (e.g. the validation batches).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from spattern.indexer.lightning import LightningIndexer
from spattern.indexer.select import block_scores, selection_token_mask, topk_block_layout


def dense_attention_target(q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """q (B, H, N, D), k (B, Hkv, N, D) -> p (B, N, N): attention summed over heads, rows sum to 1."""
    H = q.shape[1]
    if k.shape[1] != H:
        k = k.repeat_interleave(H // k.shape[1], dim=1)
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, N, N)
    if causal:
        N = q.shape[2]
        s = s.masked_fill(torch.ones(N, N, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    p = torch.softmax(s, dim=-1).sum(dim=1)
    return p / p.sum(dim=-1, keepdim=True)


def indexer_kl(scores: torch.Tensor, target: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over queries of KL(target || softmax(scores)), both restricted to ``select`` if given."""
    if select is not None:
        target = target * select
        target = target / target.sum(dim=-1, keepdim=True).clamp(min=1e-12)
        scores = scores.masked_fill(~select, float("-inf"))
    logq = torch.log_softmax(scores.float(), dim=-1)
    pos = target > 0
    kl = torch.where(pos, target * (torch.log(target.clamp(min=1e-30)) - logq), torch.zeros_like(target))
    return kl.sum(dim=-1).mean()


@torch.no_grad()
def selection_stats(target: torch.Tensor, select: torch.Tensor, top_mass: float = 0.9) -> dict:
    """density of the selection (over causal pairs); mass_recall = dense attention mass inside it;
    top_mass_overlap = fraction of the smallest key set holding ``top_mass`` of each query's dense
    mass that the selection contains."""
    causal_pairs = (target.shape[-1] * (target.shape[-1] + 1)) / 2
    density = select.float().sum(dim=(-1, -2)).mean().item() / causal_pairs
    recall = (target * select).sum(dim=-1).mean().item()
    sp, order = torch.sort(target, dim=-1, descending=True)
    keep = (torch.cumsum(sp, dim=-1) - sp) < top_mass  # the smallest prefix reaching top_mass
    top = torch.zeros_like(select).scatter(-1, order, keep)
    overlap = ((top & select).sum(-1).float() / top.sum(-1).clamp(min=1).float()).mean().item()
    return {"density": density, "mass_recall": recall, "top_mass_overlap": overlap}


class IndexedAttention(nn.Module):
    """An attention layer plus a lightning indexer; ``mode`` is "dense" (warm-up) or "sparse"."""

    def __init__(self, attn: nn.Module, d_model: int, k: int, block: tuple[int, int] = (64, 64),
                 n_heads: int = 4, head_dim: int = 32, sink: int = 1, local: int = 1, mode: str = "dense",
                 backend: str = "auto", indexer: LightningIndexer | None = None):
        super().__init__()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "n_heads", "n_kv_heads", "head_dim"):
            if not hasattr(attn, name):
                raise TypeError(f"IndexedAttention: the wrapped layer needs .{name} (a spattern.models SelfAttention)")
        self.attn = attn
        if indexer is not None and (indexer.wq.in_features, indexer.n_heads, indexer.head_dim) != (d_model, n_heads, head_dim):
            raise ValueError(f"IndexedAttention: expected an indexer of d_model={d_model}, n_heads={n_heads}, "
                             f"head_dim={head_dim}, got {indexer.wq.in_features}, {indexer.n_heads}, {indexer.head_dim}")
        self.indexer = indexer if indexer is not None else LightningIndexer(d_model, n_heads, head_dim)
        self.k, self.block, self.sink, self.local = k, tuple(block), sink, local
        self.mode, self.backend = mode, backend
        self.aux_loss: torch.Tensor | None = None
        self.collect: list[dict] | None = None  # set by collect_stats: every forward's stats
        self._stats: dict = {}
        self._pending: tuple | None = None  # (target, select or a function making it) not yet measured

    @property
    def stats(self) -> dict:
        """The last forward's selection statistics (computed on first read)."""
        if self._pending is not None:
            target, select = self._pending
            self._stats, self._pending = selection_stats(target, select() if callable(select) else select), None
        return self._stats

    def _qkv(self, x):
        a = self.attn
        B, N, _ = x.shape
        q = a.q_proj(x).view(B, N, a.n_heads, a.head_dim).transpose(1, 2)  # (B, H, N, D)
        k = a.k_proj(x).view(B, N, a.n_kv_heads, a.head_dim).transpose(1, 2)  # (B, Hkv, N, D)
        v = a.v_proj(x).view(B, N, a.n_kv_heads, a.head_dim).transpose(1, 2)
        if getattr(a, "rotary", None) is not None:
            q, k = a.rotary(q), a.rotary(k)
        return q, k, v

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        from spattern.runtime.api import attention

        if cache is not None:  # incremental decoding (generation)
            if self.mode == "dense":
                return self.attn(x, cache)  # the warm-up keeps the layer's dense attention
            raise ValueError("IndexedAttention: incremental decoding (a KV cache) is not supported in "
                             "sparse mode; generate with mode='dense' or without a cache")
        B, N, _ = x.shape
        self._pending, self._stats = None, {}
        q, k, v = self._qkv(x)
        with torch.no_grad():
            target = dense_attention_target(q, k)  # (B, N, N)
        scores = self.indexer(x.detach())  # (B, N, N), -inf in the future
        bs = block_scores(scores.detach(), *self.block)

        def selection():
            return selection_token_mask(bs, self.k, N, N, self.block, True, self.sink, self.local)

        if self.mode == "dense":  # the selection only for the statistics, made when they are read
            H, Hkv = q.shape[1], k.shape[1]
            kk, vv = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
            y = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
            self.aux_loss = indexer_kl(scores, target)
            self._pending = (target, selection)
        elif self.mode == "sparse":
            select = selection()
            layout = topk_block_layout(bs, self.k, N, N, self.block, True, self.sink, self.local)
            y = attention(q, k, v, layout, backend=self.backend, trusted=True)
            self.aux_loss = indexer_kl(scores, target, select)
            self._pending = (target, select)
        else:
            raise ValueError(f"mode: expected 'dense' or 'sparse', got {self.mode!r}")
        if self.collect is not None:
            self.collect.append(self.stats)
        return self.attn.o_proj(y.transpose(1, 2).reshape(B, N, -1))


def attach_indexers(model: nn.Module, k: int, layers=None, indexers=None, **kwargs) -> list[IndexedAttention]:
    """Wrap the attention of ``model.layers[i].attn`` (all layers by default) with indexers: new ones, or
    ``indexers``, one per wrapped layer in order (e.g. seeded ones, with rotary). A layer wrapped already
    keeps its wrapper and indexer."""
    chosen = [i for i in range(len(model.layers)) if layers is None or i in layers]
    if indexers is not None and len(indexers) != len(chosen):
        raise ValueError(f"attach_indexers: expected one indexer per wrapped layer ({len(chosen)}), got {len(indexers)}")
    out = []
    d_model = model.cfg.d_model
    for j, i in enumerate(chosen):
        layer = model.layers[i]
        if not isinstance(layer.attn, IndexedAttention):
            given = None if indexers is None else indexers[j]
            layer.attn = IndexedAttention(layer.attn, d_model, k, indexer=given, **kwargs)
        out.append(layer.attn)
    return out


def detach_indexers(model: nn.Module) -> list[LightningIndexer]:
    """Undo ``attach_indexers``: each wrapped layer gets its own attention back; returns the
    indexers, one per layer that had one (e.g. for ``DecoderLM.set_indexers`` after a warm-up)."""
    out = []
    for layer in model.layers:
        if isinstance(layer.attn, IndexedAttention):
            out.append(layer.attn.indexer)
            layer.attn = layer.attn.attn
    return out


def indexer_modules(model: nn.Module) -> list[IndexedAttention]:
    return [m for m in model.modules() if isinstance(m, IndexedAttention)]


def aux_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the indexers' KL losses from the last forward pass (add it to the LM loss)."""
    losses = [m.aux_loss for m in indexer_modules(model) if m.aux_loss is not None]
    return torch.stack(losses).sum() if losses else None


def set_mode(model: nn.Module, mode: str) -> None:
    for m in indexer_modules(model):
        m.mode = mode


def mean_stats(model: nn.Module) -> dict:
    mods = [m.stats for m in indexer_modules(model) if m.stats]
    return {key: sum(s[key] for s in mods) / len(mods) for key in mods[0]} if mods else {}


@contextmanager
def collect_stats(model: nn.Module):
    """``with collect_stats(model) as s: <forwards>``: afterwards ``s`` holds each statistic's mean
    over every indexed layer and every forward inside the block (empty without indexers)."""
    mods = indexer_modules(model)
    for m in mods:
        m.collect = []
    out: dict = {}
    try:
        yield out
        recs = [r for m in mods for r in m.collect]
        if recs:
            out.update({key: sum(r[key] for r in recs) / len(recs) for key in recs[0]})
    finally:
        for m in mods:
            m.collect = None


def warmup_indexers(model: nn.Module, batches, steps: int, lr: float = 1e-3, log=None,
                    stats: bool = True) -> list[dict]:
    """Dense warm-up: the model frozen with dense attention, only the indexers learn (KL).

    ``batches``: an iterable of (B, N) token tensors. Returns one record per step:
    {step, kl, density, mass_recall, top_mass_overlap} (``stats=False``: {step, kl}, without the
    selection statistics, which cost a sort of every layer's (N, N) target at each step).
    """
    mods = indexer_modules(model)
    if not mods:
        raise ValueError("warmup_indexers: the model has no indexers; call attach_indexers first")
    set_mode(model, "dense")
    params = [p for m in mods for p in m.indexer.parameters()]
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    history = []
    it = iter(batches)
    try:
        for step in range(steps):
            idx = next(it)
            model(idx)
            loss = aux_loss(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rec = {"step": step, "kl": float(loss.detach()), **(mean_stats(model) if stats else {})}
            history.append(rec)
            if log:
                log(rec)
    finally:
        for p, req in frozen:
            p.requires_grad_(req)
    return history
