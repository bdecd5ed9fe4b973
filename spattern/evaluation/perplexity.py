"""Perplexity over long-document windows, with per-document NLL kept for paired comparisons."""
from __future__ import annotations

import math

import numpy as np
import torch

from spattern.data.packing import eval_windows, window_tokens


@torch.no_grad()
def window_perplexity(model: torch.nn.Module, stream: np.ndarray, offsets: np.ndarray, window: int,
                      stride: int | None = None, max_windows: int | None = None,
                      device: str | torch.device = "cpu") -> dict:
    """Score documents of at least window + 1 tokens with sliding windows (`eval_windows`).

    Returns {"ppl", "nll", "tokens", "windows", "docs": {doc index: [nll sum, tokens]}}: every target
    token of a scored document is counted once, with up to `window` tokens of context.
    """
    wins = eval_windows(offsets, window, stride)
    if max_windows is not None:
        wins = wins[:max_windows]
    if not wins:
        raise ValueError(f"window_perplexity: no document has more than window={window} tokens")
    was_training = model.training
    model.eval()
    docs: dict[int, list[float]] = {}
    for w in wins:
        toks = torch.from_numpy(window_tokens(stream, offsets, w, window)).to(device)[None]   # (1, n+1)
        _, nll = model(toks[:, :-1], toks[:, 1:], reduction="none")                          # (1, n)
        scored = nll[0, w.score_from:].double()
        acc = docs.setdefault(w.doc, [0.0, 0])
        acc[0] += float(scored.sum())
        acc[1] += int(scored.numel())
    model.train(was_training)
    total = sum(v[0] for v in docs.values())
    count = sum(v[1] for v in docs.values())
    return {"ppl": math.exp(total / count), "nll": total / count, "tokens": count, "windows": len(wins),
            "docs": docs}
