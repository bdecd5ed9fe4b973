"""Information loss of a sparse pattern against dense attention, on the same model and text, no training.

Three views, each kept per document (and per token at the output) so comparisons can be paired:

- recall (per layer and head): how much of the dense attention distribution the pattern keeps,
  r_i = sum_{j in A(i)} p_ij with p_ij = softmax_{j <= i}(q_i . k_j * scale) from the dense run's
  (post-rotary) q and k, and A(i) the keys the compiled layout allows query i.
- relative output error (per layer and head): ||Y_pattern - Y_dense||_F / ||Y_dense||_F on the same
  dense-run q, k, v of the layer, so each layer's approximation is isolated from the error the
  layers below it would have propagated.
- model output (per token): KL(P_dense || P_sparse) of the next-token distributions of the dense
  model and the same model with `set_pattern(pattern)`, and top-1 agreement [argmax P_dense ==
  argmax P_sparse].

Queries are processed `q_chunk` at a time (scores of shape (B, H, q_chunk, N) at most, one layer at
a time), so an 8K context fits in CPU memory. Windows follow `window_perplexity`: every position
of a scored document is counted once (positions >= `score_from` of its window).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spattern.compiler.layout import BlockLayout
from spattern.data.packing import eval_windows, window_tokens
from spattern.models.attention import (compiled_layout, indexer_contexts, indexer_scored, oracle_layout,
                                       pattern_block, per_layer_patterns, self_scored)
from spattern.runtime.api import attention


def layout_token_mask(layout: BlockLayout, group: int, q0: int, q1: int) -> np.ndarray:
    """bool (q1 - q0, kv_len): the token mask of queries q0..q1-1 of one layout group, expanded from
    only the stored blocks of the block rows those queries fall in (exact on partial blocks; equals
    `layout.to_dense(group)[q0:q1]` without building N x N)."""
    if not 0 <= q0 < q1 <= layout.q_len:
        raise ValueError(f"query range: expected 0 <= q0 < q1 <= q_len={layout.q_len}, got [{q0}, {q1})")
    bq, bk = layout.block_q, layout.block_k
    r0, r1 = q0 // bq, -(-q1 // bq)
    rp = layout.row_ptr[group].astype(np.int64)
    idx = np.arange(rp[r0], rp[r1])
    out = np.zeros((r1 - r0, bq, layout.n_cols, bk), dtype=bool)                  # (rows, bq, C, bk)
    if idx.size:
        rows = layout.block_rows()[idx] - r0
        out[rows, :, layout.col_idx[idx].astype(np.int64), :] = layout.block_masks(idx)  # (n, bq, bk)
    out = out.reshape((r1 - r0) * bq, layout.n_cols * bk)
    return out[q0 - r0 * bq: q1 - r0 * bq, : layout.kv_len]


@dataclass
class LayerLoss:
    """Per-query values of one layer (float64): recall[b, h, i] = sum_{j in A(i)} p_ij;
    err_sq[b, h, i] = ||y_pattern_i - y_dense_i||^2; ref_sq[b, h, i] = ||y_dense_i||^2.
    The relative error over any set S of queries is sqrt(sum_S err_sq / sum_S ref_sq)."""

    recall: torch.Tensor   # (B, H, N)
    err_sq: torch.Tensor   # (B, H, N)
    ref_sq: torch.Tensor   # (B, H, N)

    def rel_error(self) -> torch.Tensor:
        """(B, H): ||Y_pattern - Y_dense||_F / ||Y_dense||_F over all queries of each head."""
        return (self.err_sq.sum(-1) / self.ref_sq.sum(-1)).sqrt()


def dense_prob_chunks(q: torch.Tensor, k: torch.Tensor, q_chunk: int, scale: float, cd: torch.dtype,
                      start: int = 0):
    """Causal dense attention probabilities ``q_chunk`` queries at a time: yields (i0, i1, p) with
    p (B, H, i1 - i0, i1) = softmax_{j <= i}(q_i . k_j * scale) in dtype ``cd`` for queries
    i0 .. i1 - 1 (never (H, N, N) at once). q (B, H, N, D), k (B, Hkv, N, D), H % Hkv == 0: query
    head h reads kv head h // (H / Hkv). Chunks that end at or before ``start`` are skipped."""
    B, H, N, D = q.shape
    Hkv = k.shape[1]
    kc, rep = k.to(cd)[:, :, None], H // Hkv                                      # (B, Hkv, 1, N, D)
    pos = torch.arange(N, device=q.device)
    for i0 in range(0, N, q_chunk):
        i1 = min(N, i0 + q_chunk)
        if i1 <= start:
            continue
        qc = q[:, :, i0:i1].to(cd).reshape(B, Hkv, rep, i1 - i0, D)               # (B, Hkv, rep, n, D)
        s = (qc @ kc[..., :i1, :].transpose(-1, -2)).reshape(B, H, i1 - i0, i1) * scale  # (B, H, n, i1)
        s[..., i0:].masked_fill_(pos[i0:i1, None] < pos[None, i0:i1], float("-inf"))  # causal (diagonal part)
        yield i0, i1, torch.softmax(s, dim=-1)


@torch.no_grad()
def layer_information_loss(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout,
                           q_chunk: int = 256, backend: str = "auto",
                           scale: float | None = None) -> LayerLoss:
    """Recall and output error of `layout` against causal dense attention on one layer's q, k, v.

    q (B, H, N, D), k/v (B, Hkv, N, D) with H % Hkv == 0 (query head h reads kv head h // (H/Hkv)).
    Dense: p_ij = exp(s_ij) / sum_{l <= i} exp(s_il), s_ij = q_i . k_j * scale (scale = 1/sqrt(D)),
    Y_dense_i = sum_{j <= i} p_ij v_j, computed `q_chunk` queries at a time (never (H, N, N));
    recall_i = sum_{j <= i, j in A(i)} p_ij with A from the layout (per layout group);
    Y_pattern = spattern.attention(q, k, v, layout) (softmax over A(i) only, zeros if A(i) is empty).
    Both sides run in float32 (float64 for float64 inputs), whatever the inputs' dtype.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v: expected 4-D (B, H, N, D), got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    B, H, N, D = q.shape
    Hkv = k.shape[1]
    if H % Hkv or k.shape[2] != N or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"q, k, v: expected k/v (B, Hkv, N, .) with H % Hkv == 0 and N = {N}, got "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if layout.q_len < N or layout.kv_len < N:
        raise ValueError(f"layout: expected q_len and kv_len >= N={N}, got {layout.q_len}, {layout.kv_len}")
    if not isinstance(q_chunk, int) or q_chunk < 1:
        raise ValueError(f"q_chunk: expected a positive int, got {q_chunk!r}")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    cd = torch.float64 if q.dtype == torch.float64 else torch.float32
    rep, Dv, Bg, Hg = H // Hkv, v.shape[-1], *layout.group_shape
    vc = v.to(cd)[:, :, None]                                                    # (B, Hkv, 1, N, D)
    recall = torch.empty(B, H, N, dtype=torch.float64, device=q.device)
    y_dense = torch.empty(B, H, N, Dv, dtype=cd, device=q.device)
    for i0, i1, p in dense_prob_chunks(q, k, q_chunk, scale, cd):                 # p (B, H, n, i1)
        masks = np.stack([layout_token_mask(layout, g, i0, i1)[:, :i1] for g in range(Bg * Hg)])  # (G, n, i1)
        used = torch.from_numpy(np.flatnonzero(masks.any(axis=(0, 1)))).to(q.device)  # (u,) keys any query keeps
        allowed = torch.from_numpy(masks).to(q.device)[..., used].reshape(Bg, Hg, i1 - i0, -1)  # (Bg, Hg, n, u)
        recall[:, :, i0:i1] = (p.index_select(-1, used) * allowed).sum(-1).double()
        y_dense[:, :, i0:i1] = (p.reshape(B, Hkv, rep, i1 - i0, i1) @ vc[..., :i1, :]).reshape(B, H, i1 - i0, Dv)
    # in the compute dtype: a bf16 model's error is the pattern's, not bf16 rounding of one side
    y_pat = attention(q.to(cd), k.to(cd), v.to(cd), layout, scale=scale, backend=backend)  # (B, H, N, Dv)
    err_sq = (y_pat - y_dense).double().pow(2).sum(-1)
    ref_sq = y_dense.double().pow(2).sum(-1)
    return LayerLoss(recall, err_sq, ref_sq)


@torch.no_grad()
def token_kl_top1(logits_dense: torch.Tensor, logits_sparse: torch.Tensor,
                  chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token (N,) float64: KL(P_d || P_s) = sum_v P_d(v) (log P_d(v) - log P_s(v)) with P =
    softmax(logits) over the vocabulary, and top-1 agreement [argmax P_d == argmax P_s] (0/1).
    logits (N, V), processed `chunk` tokens at a time (one float32 (chunk, V) copy each)."""
    if logits_dense.shape != logits_sparse.shape or logits_dense.dim() != 2:
        raise ValueError(f"logits: expected two (N, V) tensors of one shape, got {tuple(logits_dense.shape)} "
                         f"and {tuple(logits_sparse.shape)}")
    kls, agree = [], []
    for i0 in range(0, logits_dense.shape[0], chunk):
        ld = torch.log_softmax(logits_dense[i0:i0 + chunk].float(), -1)          # (n, V)
        ls = torch.log_softmax(logits_sparse[i0:i0 + chunk].float(), -1)
        kls.append(F.kl_div(ls, ld, reduction="none", log_target=True).sum(-1).double())
        agree.append((ld.max(-1).indices == ls.max(-1).indices).double())
    return torch.cat(kls), torch.cat(agree)


class _Doc:
    """Sums over a document's scored positions (each position once across its windows)."""

    def __init__(self, L: int, H: int) -> None:
        self.tokens, self.kl, self.top1, self.nll, self.nll_dense = 0, 0.0, 0.0, 0.0, 0.0
        self.recall, self.err_sq, self.ref_sq = (np.zeros((L, H)) for _ in range(3))
        self.kl_tokens: list[float] = []
        self.top1_tokens: list[int] = []

    def summary(self, per_token: bool) -> dict:
        recall = self.recall / self.tokens
        rel = np.sqrt(self.err_sq / self.ref_sq)
        out = {"tokens": self.tokens, "kl": self.kl / self.tokens, "top1": self.top1 / self.tokens,
               "nll": self.nll / self.tokens, "nll_dense": self.nll_dense / self.tokens,
               "recall": float(recall.mean()), "rel_error": float(rel.mean()),
               "recall_per_layer_head": recall.tolist(), "rel_error_per_layer_head": rel.tolist()}
        if per_token:
            out["kl_tokens"], out["top1_tokens"] = self.kl_tokens, self.top1_tokens
        return out


def _check_model(model) -> None:
    layers = getattr(model, "layers", None)
    if layers is None or not hasattr(model, "set_pattern") or not all(hasattr(l, "attn") and
                                                                      hasattr(l.attn, "observer") for l in layers):
        raise TypeError(f"model: expected a spattern DecoderLM (layers with .attn.observer, set_pattern), "
                        f"got {type(model).__name__}")


@torch.no_grad()
def information_loss(model: torch.nn.Module, stream: np.ndarray, offsets: np.ndarray, window: int, pattern,
                     block: tuple[int, int] | None = None, stride: int | None = None,
                     max_windows: int | None = None, q_chunk: int = 256, backend: str = "auto",
                     per_token: bool = False, device: str | torch.device = "cpu") -> dict:
    """Information loss of `pattern` (one string, or one per layer; None/"dense" layers lose nothing)
    against the same model run dense, over the windows of `window_perplexity`.

    Per document d with scored positions T_d (every position once across its windows), layer l, head h:
      recall[d, l, h]    = mean_{i in T_d} sum_{j in A_l(i)} p^l_hij      (dense-run probabilities)
      rel_error[d, l, h] = sqrt(sum_{i in T_d} ||y^pat_hi - y^dense_hi||^2 / sum_{i in T_d} ||y^dense_hi||^2)
      kl[d]   = mean_{i in T_d} KL(P_dense(. | x_<=i) || P_sparse(. | x_<=i))
      top1[d] = mean_{i in T_d} [argmax P_dense == argmax P_sparse]
    Overall values pool all scored positions (recall and KL/top-1: the token-weighted mean; rel_error:
    the ratio of summed squares); "mean" of recall/rel_error averages the layer-head values.
    The layouts are compiled at each window's length with `block` (default: the model's), and the
    sparse run uses that block too. The model's patterns, blocks and training mode are restored.

    Returns {"pattern", "window", "windows", "tokens", "kl", "top1_agreement",
             "recall": {"mean", "per_layer_head"}, "rel_error": {"mean", "per_layer_head"},
             "docs": {doc index: {"tokens", "kl", "top1", "recall", "rel_error", "nll", "nll_dense",
                                  "recall_per_layer_head", "rel_error_per_layer_head"
                                  (+ "kl_tokens", "top1_tokens" with per_token)}}}.
    """
    _check_model(model)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window: expected a positive int, got {window!r}")
    layers = list(model.layers)
    L, H = len(layers), layers[0].attn.n_heads
    pats = per_layer_patterns(pattern, L)
    block = tuple(model.cfg.block if block is None else block)
    wins = eval_windows(offsets, window, stride)
    if max_windows is not None:
        wins = wins[:max_windows]
    if not wins:
        raise ValueError(f"information_loss: no document has more than window={window} tokens")
    saved = ([(l.attn.pattern, l.attn.block) for l in layers], model.cfg.pattern, model.training)
    docs: dict[int, _Doc] = {}
    held: dict[int, torch.Tensor] = {}  # an indexed layer's input in the dense run
    hooks = [layer.attn.register_forward_pre_hook(functools.partial(_hold_input, held, i))
             for i, (layer, p) in enumerate(zip(layers, pats)) if indexer_scored(p)]
    model.eval()
    try:
        for w in wins:
            full = torch.from_numpy(window_tokens(stream, offsets, w, window)).to(device)[None]  # (1, n+1)
            toks, tgt = full[:, :-1], full[0, 1 + w.score_from:]                  # (1, n), (n - score_from,)
            n, acc = toks.shape[1], docs.setdefault(w.doc, _Doc(L, H))
            # a self-scored layer's layout is chosen in the dense run (in _observe): the oracle's from its q, k,
            # an indexed layer's from its indexer's scores of its input (held by a hook)
            layouts = [_layout_of(p, layers[i].attn, held, i, n, block) for i, p in enumerate(pats)]
            model.set_pattern(None)
            for i, layer in enumerate(layers):
                layer.attn.observer = functools.partial(_observe, acc, layouts[i], i, w.score_from,
                                                        q_chunk, backend, block)
            dense = model(toks)[0][0]                                            # (n, V)
            for layer in layers:
                layer.attn.observer, layer.attn.block = None, block
            model.set_pattern(pats)
            sparse = model(toks)[0][0]                                           # (n, V)
            kl, top1 = token_kl_top1(dense[w.score_from:], sparse[w.score_from:])
            acc.tokens += n - w.score_from
            acc.kl += float(kl.sum())
            acc.top1 += float(top1.sum())
            # the same windows' next-token NLL, sparse and dense (perplexity without another pass)
            acc.nll += float(F.cross_entropy(sparse[w.score_from:].float(), tgt, reduction="sum"))
            acc.nll_dense += float(F.cross_entropy(dense[w.score_from:].float(), tgt, reduction="sum"))
            if per_token:
                acc.kl_tokens += kl.tolist()
                acc.top1_tokens += [int(a) for a in top1.tolist()]
    finally:
        for h in hooks:
            h.remove()
        for layer, (p, b) in zip(layers, saved[0]):
            layer.attn.pattern, layer.attn.block, layer.attn.observer = p, b, None
        model.cfg.pattern = saved[1]
        model.train(saved[2])
    tokens = sum(d.tokens for d in docs.values())
    recall = sum(d.recall for d in docs.values()) / tokens
    rel = np.sqrt(sum(d.err_sq for d in docs.values()) / sum(d.ref_sq for d in docs.values()))
    return {"pattern": pattern, "window": window, "windows": len(wins), "tokens": tokens,
            "kl": sum(d.kl for d in docs.values()) / tokens,
            "top1_agreement": sum(d.top1 for d in docs.values()) / tokens,
            "recall": {"mean": float(recall.mean()), "per_layer_head": recall.tolist()},
            "rel_error": {"mean": float(rel.mean()), "per_layer_head": rel.tolist()},
            "docs": {d: acc.summary(per_token) for d, acc in docs.items()}}


def _hold_input(held: dict, layer: int, module, args) -> None:
    held[layer] = args[0]


def _layout_of(pattern, attn, held: dict, layer: int, n: int, block):
    """A layer's layout at n tokens: None (dense), a BlockLayout, or for a self-scored pattern a function
    of the dense run's (q, k) that chooses it there: the oracle from q and k, ``indexed`` from the layer's
    indexer's scores of the layer's input."""
    if pattern is None:
        return None
    if indexer_scored(pattern):
        if getattr(attn, "indexer", None) is None:
            raise ValueError(f"pattern {str(pattern)!r}: expected a lightning indexer on layer {layer} "
                             "(model.set_indexers), got none")
        return lambda q, k: compiled_layout(pattern, n, n, block, context=indexer_contexts(
            attn.indexer, held[layer], pattern_block(pattern)))
    if self_scored(pattern):
        return lambda q, k: oracle_layout(pattern, q, k, block)
    return compiled_layout(pattern, n, n, block)


def _observe(acc: _Doc, layout, layer: int, score_from: int, q_chunk: int, backend: str, block,
             q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, y: torch.Tensor) -> None:
    """Observer of one layer in the dense run: adds its scored positions to the document's sums.
    ``layout``: a BlockLayout, None (a dense layer), or for a self-scored pattern (``oracle``, ``indexed``)
    a function choosing it here from the dense run (``_layout_of``): its recall is the dense mass that
    choice keeps (the sparse run chooses from its own states, which differ from layer two on)."""
    if layout is not None and not isinstance(layout, BlockLayout):
        layout = layout(q, k)
    if layout is None:  # a dense layer of a per-layer pattern: everything kept, no error
        acc.recall[layer] += y.shape[2] - score_from
        acc.ref_sq[layer] += y[0, :, score_from:].double().pow(2).sum((-1, -2)).cpu().numpy()
        return
    loss = layer_information_loss(q, k, v, layout, q_chunk, backend)
    acc.recall[layer] += loss.recall[0, :, score_from:].sum(-1).cpu().numpy()
    acc.err_sq[layer] += loss.err_sq[0, :, score_from:].sum(-1).cpu().numpy()
    acc.ref_sq[layer] += loss.ref_sq[0, :, score_from:].sum(-1).cpu().numpy()
