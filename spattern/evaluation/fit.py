"""Pattern fitting: per layer and head, the DSL pattern from a search space that keeps the most dense
attention mass at a target block density.

Search space: families, each a template with integer fields (``"(local({w}) | sink({s})) & causal"``)
and a grid of values for all of its fields but at most one. The free field is matched to the target
block density with ``matching.match`` (exact compiled counts) for every grid combination; when the cost
is monotone the largest parameter of that same cost is a candidate too (more keys inside the blocks the
kernel computes anyway). A family with every field on the grid gives one candidate per combination.
A candidate is eligible when ``block_density <= target * (1 + tolerance)``.

Score, for layer l, head h, candidate c, over the scored positions T of the fit windows:
    recall[l, c, h] = (1/|T|) sum_{i in T} sum_{j <= i, j in A_c(i)} p^l_hij,
    p^l_hij = softmax_{j <= i}(q_i . k_j / sqrt(D)) from the dense run's post-rotary q, k
(the recall of ``spattern.evaluation.infoloss``). The probabilities of a layer are computed once per
window, ``q_chunk`` queries at a time, and every candidate's token mask is applied to them.
Choice: c*(l, h) = argmax over eligible c of recall[l, c, h] (ties: lower block density, then the
search-space order); layer l's pattern is ``heads(c*(l, 0), ..., c*(l, H-1))``. The global baseline is
the one eligible candidate with the highest mean_{l,h} recall[l, c, h].
"""
from __future__ import annotations

import functools
import itertools
import math
import string
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from spattern.data import eval_windows, iter_documents, split_of, window_tokens
from spattern.evaluation.infoloss import dense_prob_chunks, information_loss, layout_token_mask
from spattern.evaluation.matching import family_fn, match, measure_cost
from spattern.models.attention import compiled_layout
from spattern.patterns import heads, parse
from spattern.utils.errors import UserError

MASK_CACHE_BYTES = 1 << 29  # keep every candidate's token masks when they fit in this (bool bytes)


@dataclass(frozen=True)
class Family:
    """A template with integer fields; ``grid`` gives values for all fields but at most one (the free
    field, matched to the target)."""

    template: str
    grid: dict = field(default_factory=dict)

    def fields(self) -> list[str]:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
        except ValueError as e:
            raise UserError(f"family {self.template!r}: not a template ({e})") from None
        return list(dict.fromkeys(names))

    def free(self) -> str | None:
        names = self.fields()
        if any(not n.isidentifier() for n in names):
            raise UserError(f"family {self.template!r}: expected named fields like {{w}}, got {names}")
        unknown = sorted(set(self.grid) - set(names))
        if unknown:
            raise UserError(f"family {self.template!r}: grid names fields it does not have: {unknown}")
        for k, vals in self.grid.items():
            if not vals or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in vals):
                raise UserError(f"family {self.template!r}: grid {k!r}: expected a non-empty list of integers "
                                f">= 0, got {vals!r}")
        free = [n for n in names if n not in self.grid]
        if len(free) > 1:
            raise UserError(f"family {self.template!r}: fields {free} have no grid; give a grid for all but one")
        return free[0] if free else None


@dataclass(frozen=True)
class Candidate:
    family: str
    params: dict
    pattern: str
    block_density: float
    density: float
    how: str  # "matched", "matched-fill" (largest parameter of the matched cost) or "grid"

    def as_dict(self) -> dict:
        return asdict(self)


def _candidate(family: str, params: dict, pattern: str, N: int, block, how: str) -> Candidate:
    layout = compiled_layout(pattern, N, N, block)
    return Candidate(family, params, pattern, layout.nnz / (layout.n_groups * layout.n_rows * layout.n_cols),
                     float(layout.stats()["density"]), how)


def _fill(fn, k: int, cost: float, hi: int, N: int, block) -> int:
    """The largest k' in [k, hi] with cost(k') == cost, for a cost monotone in k (galloping + bisection)."""
    same = lambda j: measure_cost(fn(j), N, block) == cost  # noqa: E731
    step, good = 1, k
    while good + step <= hi and same(good + step):
        good, step = good + step, step * 2
    bad = min(good + step, hi + 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if same(mid) else (good, mid)
    return good


def expand_space(families: list[Family], target: float, N: int, block=(64, 64), tolerance: float = 0.05,
                 lo: int = 1, hi: int | None = None) -> tuple[list[Candidate], list[str]]:
    """Every candidate of the search space at context N: (eligible candidates, notes on the rest)."""
    if not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise UserError(f"target: expected a block density in (0, 1], got {target!r}")
    if not families:
        raise UserError("families: expected at least one family template, got none")
    block = (block, block) if isinstance(block, int) else tuple(block)
    hi = N if hi is None else hi
    out: dict[str, Candidate] = {}
    notes: list[str] = []
    for fam in families:
        free, names = fam.free(), sorted(fam.grid)
        for combo in itertools.product(*(fam.grid[n] for n in names)):
            params = dict(zip(names, combo))
            if free is None:
                pattern = str(parse(fam.template.format(**params)))
                found = [_candidate(fam.template, params, pattern, N, block, "grid")]
            else:
                partial = fam.template.format(**params, **{free: "{" + free + "}"})
                m = match(partial, target, N, block, lo=lo, hi=hi)
                fn, _ = family_fn(partial)
                found = [_candidate(fam.template, {**params, free: m.param}, m.pattern, N, block, "matched")]
                if m.method == "bisection":
                    k2 = _fill(fn, m.param, m.achieved, hi, N, block)
                    if k2 != m.param:
                        found.append(_candidate(fam.template, {**params, free: k2}, str(fn(k2)), N, block,
                                                "matched-fill"))
            for c in found:
                if c.block_density > target * (1 + tolerance):
                    notes.append(f"{c.pattern}: block density {c.block_density:.4g} is above the target "
                                 f"{target:.4g} (+{tolerance:.0%})")
                elif c.pattern not in out:
                    out[c.pattern] = c
    if not out:
        raise UserError(f"no candidate of the search space reaches block density <= {target:.4g} "
                        f"(+{tolerance:.0%}) at N={N}, block={block}: " + "; ".join(notes[:4]))
    return list(out.values()), notes


class CandidateMasks:
    """The token masks of candidate patterns at length N, per query chunk: (C, n, i1) bool, kept when
    all of them fit in MASK_CACHE_BYTES, rebuilt from the compiled layouts otherwise."""

    def __init__(self, patterns: list[str], N: int, block=(64, 64)) -> None:
        self.layouts = [compiled_layout(p, N, N, tuple(block)) for p in patterns]
        for p, lay in zip(patterns, self.layouts):
            if lay.n_groups != 1:
                raise UserError(f"candidate {p!r}: expected one mask for every head, got {lay.n_groups} groups")
        self.keep = len(patterns) * N * N <= MASK_CACHE_BYTES
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def chunk(self, i0: int, i1: int) -> torch.Tensor:
        key = (i0, i1)
        if key in self._cache:
            return self._cache[key]
        m = torch.from_numpy(np.stack([layout_token_mask(l, 0, i0, i1)[:, :i1] for l in self.layouts]))
        if self.keep:
            self._cache[key] = m
        return m                                                                  # (C, n, i1)


@torch.no_grad()
def candidate_recall(q: torch.Tensor, k: torch.Tensor, masks: CandidateMasks, q_chunk: int = 256,
                     score_from: int = 0, scale: float | None = None) -> torch.Tensor:
    """(C, B, H) float64: sum over queries i >= score_from of sum_{j <= i, j in A_c(i)} p_ij, with
    p_ij = softmax_{j <= i}(q_i . k_j * scale). q (B, H, N, D), k (B, Hkv, N, D), H % Hkv == 0."""
    B, H, N, D = q.shape
    Hkv = k.shape[1]
    if k.dim() != 4 or H % Hkv or k.shape[2] != N:
        raise ValueError(f"q, k: expected (B, H, N, D) and (B, Hkv, N, D) with H % Hkv == 0, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    cd = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.zeros(len(masks.layouts), B, H, dtype=torch.float64, device=q.device)
    for i0, i1, p in dense_prob_chunks(q, k, q_chunk, scale, cd, start=score_from):  # p (B, H, n, i1)
        r0 = max(0, score_from - i0)
        m = masks.chunk(i0, i1)[:, r0:].to(device=q.device, dtype=cd)              # (C, n', i1)
        out += torch.einsum("bhnk,cnk->cbh", p[:, :, r0:], m).double()
    return out


@torch.no_grad()
def fit_patterns(model, stream: np.ndarray, offsets: np.ndarray, window: int, candidates: list[Candidate],
                 block=None, stride: int | None = None, max_windows: int | None = None, q_chunk: int = 256,
                 device="cpu", doc_ids: list[str] | None = None) -> dict:
    """Score every candidate for every layer and head on the model's dense attention over the windows
    of ``eval_windows(offsets, window, stride)``, and choose per head (see the module docstring).

    Returns {"docs" (doc_ids), "window", "block", "windows", "tokens", "candidates": [Candidate dicts],
             "recall": (L, C, H) nested lists, "patterns": [one heads(...) string per layer],
             "layers": [{"pattern", "recall", "block_density", "heads": [{"pattern", "family", "params",
                         "recall", "block_density", "density"}]}],
             "fitted": {"recall", "block_density"}, "global": {"pattern", "recall", "block_density"}}.
    """
    layers = list(model.layers)
    if not layers or not all(hasattr(l, "attn") and hasattr(l.attn, "observer") for l in layers):
        raise TypeError(f"model: expected a spattern DecoderLM, got {type(model).__name__}")
    block = tuple(model.cfg.block if block is None else block)
    wins = eval_windows(offsets, window, stride)[:max_windows]
    if not wins:
        raise UserError(f"fit: no document has more than window={window} tokens")
    masks = CandidateMasks([c.pattern for c in candidates], window, block)
    L, C, H = len(layers), len(candidates), layers[0].attn.n_heads
    sums, tokens = torch.zeros(L, C, H, dtype=torch.float64), 0
    if doc_ids is not None and len(doc_ids) != len(offsets) - 1:
        raise ValueError(f"doc_ids: expected one per document ({len(offsets) - 1}), got {len(doc_ids)}")
    saved = ([l.attn.pattern for l in layers], model.cfg.pattern, model.training)

    def observe(i, sf, q, k, v, y):
        sums[i] += candidate_recall(q, k, masks, q_chunk, sf).sum(1).cpu()

    model.eval()
    try:
        model.set_pattern(None)
        for w in wins:
            toks = torch.from_numpy(window_tokens(stream, offsets, w, window)[:-1]).to(device)[None]  # (1, n)
            if toks.shape[1] != window:
                raise ValueError(f"window: expected {window} tokens, got {toks.shape[1]}")
            for i, layer in enumerate(layers):
                layer.attn.observer = functools.partial(observe, i, w.score_from)
            model(toks)
            tokens += window - w.score_from
    finally:
        for layer, p in zip(layers, saved[0]):
            layer.attn.observer, layer.attn.pattern = None, p
        model.cfg.pattern = saved[1]
        model.train(saved[2])
    recall = (sums / tokens).numpy()                                               # (L, C, H)
    return {"docs": list(doc_ids or []), "window": window, "block": list(block), "windows": len(wins), "tokens": tokens,
            "candidates": [c.as_dict() for c in candidates], "recall": recall.tolist(),
            **choose(recall, candidates)}


def choose(recall: np.ndarray, candidates: list[Candidate]) -> dict:
    """Per (layer, head) the candidate of highest recall (ties: lower block density, then order), and the
    best single candidate for all layers and heads. recall (L, C, H)."""
    recall = np.asarray(recall, dtype=np.float64)
    L, C, H = recall.shape
    if C != len(candidates):
        raise ValueError(f"recall: expected {len(candidates)} candidates on axis 1, got {C}")
    bd = np.array([c.block_density for c in candidates])
    # lexsort: the last key is the primary one; argmax of -recall first, then density, then index
    order = [np.lexsort((np.arange(C), bd, -recall[l, :, h])) for l in range(L) for h in range(H)]
    best = np.array([o[0] for o in order]).reshape(L, H)
    layers = []
    for l in range(L):
        hs = [{"pattern": candidates[c].pattern, "family": candidates[c].family, "params": candidates[c].params,
               "recall": float(recall[l, c, h]), "block_density": candidates[c].block_density,
               "density": candidates[c].density} for h, c in enumerate(best[l])]
        layers.append({"pattern": str(heads(*[parse(h["pattern"]) for h in hs])),
                       "recall": float(np.mean([h["recall"] for h in hs])),
                       "block_density": float(np.mean([h["block_density"] for h in hs])), "heads": hs})
    g = int(np.lexsort((np.arange(C), bd, -recall.mean(axis=(0, 2))))[0])
    return {"patterns": [x["pattern"] for x in layers], "layers": layers,
            "fitted": {"recall": float(np.mean([x["recall"] for x in layers])),
                       "block_density": float(np.mean([x["block_density"] for x in layers]))},
            "global": {"pattern": candidates[g].pattern, "recall": float(recall[:, g].mean()),
                       "block_density": candidates[g].block_density}}


def load_documents(corpus: str, split: str, tokenizer, window: int, docs: int, obtain: bool = False,
                   exclude: set[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The first ``docs`` documents of ``split`` with more than ``window`` tokens (text + EOS), each cut
    to its first window + 1 tokens: (ids, stream, offsets)."""
    ids, toks = [], []
    for d in iter_documents(corpus, obtain=obtain):
        if split_of(d.id) != split or (exclude and d.id in exclude):
            continue
        x = tokenizer.encode(d.text) + [tokenizer.eos_id]
        if len(x) > window:
            ids.append(d.id)
            toks.append(np.asarray(x[: window + 1], dtype=np.int64))
        if len(ids) == docs:
            break
    if not ids:
        raise UserError(f"corpus {corpus!r}: no {split} document has more than {window} tokens")
    return ids, np.concatenate(toks), np.concatenate([[0], np.cumsum([len(t) for t in toks])])


def evaluate_fitted(model, fit: dict, stream: np.ndarray, offsets: np.ndarray, doc_ids: list[str],
                    q_chunk: int = 256, backend: str = "auto", device="cpu") -> dict:
    """The fitted per-layer patterns and the global baseline on held-out documents (``doc_ids`` must be
    disjoint from ``fit["docs"]``), through ``information_loss``, with a paired comparison over the
    documents of their mean recall (fitted - global) and KL (fitted - global)."""
    from spattern.evaluation.stats import paired_compare

    overlap = sorted(set(doc_ids) & set(fit.get("docs", [])))
    if overlap:
        raise UserError(f"held-out documents: expected none of the fit documents, got {len(overlap)} shared "
                        f"({overlap[:3]})")
    if len(doc_ids) != len(offsets) - 1:
        raise ValueError(f"doc_ids: expected one per document ({len(offsets) - 1}), got {len(doc_ids)}")
    kw = dict(block=tuple(fit["block"]), q_chunk=q_chunk, backend=backend, device=device)
    runs = {"fitted": information_loss(model, stream, offsets, fit["window"], fit["patterns"], **kw),
            "global": information_loss(model, stream, offsets, fit["window"], fit["global"]["pattern"], **kw)}
    out = {"docs": doc_ids, "tokens": runs["fitted"]["tokens"]}
    for name, r in runs.items():
        out[name] = {"recall": r["recall"]["mean"], "kl": r["kl"], "top1_agreement": r["top1_agreement"],
                     "rel_error": r["rel_error"]["mean"], "recall_per_layer_head": r["recall"]["per_layer_head"],
                     "per_doc": {doc_ids[d]: {k: v[k] for k in ("recall", "kl", "top1", "tokens")}
                                 for d, v in r["docs"].items()}}
    keys = sorted(runs["fitted"]["docs"])
    for metric in ("recall", "kl"):
        x = [runs["fitted"]["docs"][d][metric] for d in keys]
        y = [runs["global"]["docs"][d][metric] for d in keys]
        out[f"compare_{metric}"] = paired_compare(x, y).as_dict()
    return out
