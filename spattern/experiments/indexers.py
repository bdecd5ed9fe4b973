"""Lightning indexers for an evaluate run's model, warmed up once per machine and cached: what an
``indexed(k, ..., seed=s)`` pattern selects its blocks with (the trained counterpart of ``oracle``).

The warm-up is the first stage of DeepSeek-V3.2-Exp's training (``spattern.indexer.train``): the
model frozen with dense attention, one indexer per layer learns KL(the layer's dense attention summed
over heads || softmax(its scores)). It reads windows of ``[setup.indexer] context`` tokens from the
``[setup.indexer] split`` of the setup's corpus, never the scored split, at most ``per_doc`` windows
from one document, in an order drawn from the pattern's ``seed`` (which also draws the indexers'
initial weights). The trained weights go to the cache (``$SPATTERN_CACHE/indexers/<key>.pt``, never to
results/) under a key of everything they depend on, so a machine without them makes them again, the
same up to floating point; each run writes the warm-up's record (settings, documents, the KL at
each step, the time it took) to ``indexer_warmup.json`` beside its metrics.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from spattern.experiments.config import IndexerWarmup, Setup
from spattern.utils.errors import UserError

RECORD = "indexer_warmup.json"


def warmup_key(setup: Setup, seed: int) -> dict:
    """Everything the warmed-up weights depend on."""
    return {"model": setup.model, "dtype": setup.dtype, "corpus": setup.corpus, "exclude": list(setup.exclude),
            "warmup": setup.indexer.model_dump(mode="json"), "seed": int(seed)}


def _cache_path(key: dict) -> Path:
    from spattern.data.cache import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("indexers") / f"{digest}.pt"


def warmup_windows(setup: Setup, tokenizer, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """(n, context) int64 token windows of the warm-up split, in the seed's order (cycled when the split
    has fewer), and the ids of the documents they come from."""
    from spattern.data import iter_documents, split_of

    w = setup.indexer
    if w.split == setup.split:
        raise UserError(f"setup.indexer.split: expected a split other than the scored one ({setup.split!r}), so "
                        f"that the indexers never see the documents they are scored on, got {w.split!r}")
    windows, docs = [], []
    for d in iter_documents(setup.corpus, obtain=setup.obtain):
        if split_of(d.id) != w.split or any(fnmatch.fnmatchcase(d.id, g) for g in setup.exclude):
            continue
        ids = tokenizer.encode(d.text)
        got = [ids[i:i + w.context] for i in range(0, len(ids) - w.context + 1, w.context)][: w.per_doc]
        if got:
            windows += got
            docs.append(d.id)
        if len(windows) >= n:
            break
    if not windows:
        raise UserError(f"setup.indexer: no {w.split} document of {setup.corpus!r} has {w.context} tokens "
                        f"(a warm-up window); lower setup.indexer.context or choose another split")
    order = np.random.default_rng(seed).permutation(len(windows))
    order = np.resize(order, n)  # cycled: a small split is read more than once
    return torch.tensor(np.asarray(windows, dtype=np.int64)[order]), docs


def make_indexers(model, w: IndexerWarmup, seed: int) -> list[torch.nn.Module]:
    """One untrained lightning indexer per layer of ``model`` (float32; initial weights from ``seed``),
    with rotary on ``rope_dim`` of its index dimensions at the model's rotary base."""
    from spattern.indexer.lightning import LightningIndexer
    from spattern.models.rotary import Rotary

    base = next((layer.attn.rotary.base for layer in model.layers if layer.attn.rotary is not None), 10000.0)
    rotary = Rotary(w.head_dim, w.rope_dim, base) if w.rope_dim else None
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        return [LightningIndexer(model.cfg.d_model, w.heads, w.head_dim, rotary=rotary) for _ in model.layers]


def train_indexers(model, tokenizer, setup: Setup, seed: int, log=None) -> tuple[list[torch.nn.Module], dict]:
    """Warm up one indexer per layer of ``model`` (frozen, dense); returns them and the warm-up record."""
    from spattern.indexer.train import attach_indexers, detach_indexers, warmup_indexers

    w = setup.indexer
    t0 = time.perf_counter()
    x, docs = warmup_windows(setup, tokenizer, w.steps * w.batch, seed)
    fresh = make_indexers(model, w, seed)
    device = next(model.parameters()).device
    # the wrapper's selection settings only shape statistics the warm-up does not read
    attach_indexers(model, k=1, block=(64, 64), sink=0, local=1, n_heads=w.heads, head_dim=w.head_dim,
                    indexers=[ix.to(device) for ix in fresh])
    try:
        batches = (x[i * w.batch:(i + 1) * w.batch].to(device) for i in range(w.steps))
        history = warmup_indexers(model, batches, w.steps, lr=w.lr, log=log, stats=False)
    finally:
        indexers = detach_indexers(model)
    record = {"key": warmup_key(setup, seed), "documents": docs, "windows": int(x.shape[0]),
              "kl": [round(h["kl"], 6) for h in history], "seconds": round(time.perf_counter() - t0, 1),
              "device": str(device)}
    return [ix.eval() for ix in indexers], record


def warmed_indexers(model, tokenizer, setup: Setup, seed: int, log=None) -> tuple[list[torch.nn.Module], dict, bool]:
    """The warmed-up indexers of (setup, seed) for ``model``: from the cache, or trained now and cached.
    Returns (indexers, record, whether they were trained now)."""
    key = warmup_key(setup, seed)
    path = _cache_path(key)
    device = next(model.parameters()).device
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("record", {}).get("key") == key:
            indexers = make_indexers(model, setup.indexer, seed)
            for ix, state in zip(indexers, saved["state"]):
                ix.load_state_dict(state)
            return [ix.to(device).eval() for ix in indexers], saved["record"], False
    indexers, record = train_indexers(model, tokenizer, setup, seed, log)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state": [ix.state_dict() for ix in indexers], "record": record}, tmp)
    os.replace(tmp, path)
    return indexers, record, True
