"""Packing token streams into fixed-length training sequences, and long-document windows.

A split is one token stream: the documents in order, each followed by EOS, with `offsets`
(int64, n_docs + 1) marking where each document starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class PackedSequences:
    """Chunk i is stream[i*L : i*L + L + 1] (inputs [:-1], targets [1:]); neighbours share one token,
    so every token of the stream is a target exactly once. The last incomplete chunk is dropped."""

    def __init__(self, stream: np.ndarray, seq_len: int) -> None:
        if stream.ndim != 1:
            raise ValueError(f"stream: expected a 1-D token array, got shape {stream.shape}")
        if seq_len < 1:
            raise ValueError(f"seq_len: expected >= 1, got {seq_len}")
        self.stream, self.seq_len = stream, int(seq_len)
        self.n = max(0, (len(stream) - 1) // self.seq_len)
        if self.n == 0:
            raise ValueError(f"stream: expected more than seq_len={seq_len} tokens, got {len(stream)}")

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: np.ndarray) -> np.ndarray:
        """(B, L + 1) int64 for chunk indices (B,)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"indices: expected in [0, {self.n}), got range [{idx.min()}, {idx.max()}]")
        starts = idx * self.seq_len                                          # (B,)
        gather = starts[:, None] + np.arange(self.seq_len + 1)[None, :]      # (B, L+1)
        return np.asarray(self.stream[gather], dtype=np.int64)


def sample_indices(step: int, micro: int, n_micro: int, rank: int, world: int, batch: int,
                   n_chunks: int, seed: int) -> np.ndarray:
    """Chunk indices of one micro-batch, a pure function of its position in training.

    Global sample g = ((step * n_micro + micro) * world + rank) * batch + i walks a fresh seeded
    permutation of the chunks each epoch, so a resumed run sees exactly the batches it would have.
    """
    g = ((step * n_micro + micro) * world + rank) * batch + np.arange(batch, dtype=np.int64)
    out = np.empty(batch, dtype=np.int64)
    epochs = g // n_chunks
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n_chunks)
        sel = epochs == e
        out[sel] = perm[g[sel] % n_chunks]
    return out


@dataclass(frozen=True)
class Window:
    doc: int         # document index within the split
    start: int       # token offset of the window inside the document
    score_from: int  # targets at positions >= score_from (within the window) are scored


def eval_windows(offsets: np.ndarray, window: int, stride: int | None = None,
                 min_doc_len: int | None = None) -> list[Window]:
    """Sliding windows over long documents for perplexity.

    Each window is `window` input tokens plus one for the last target. The first window of a
    document scores every target; later ones move by `stride` and score only the targets no earlier
    window scored; the last is aligned to the document's end. Documents shorter than `min_doc_len`
    tokens (default window + 1: at least one full window) are skipped.
    Document lengths include their trailing EOS.
    """
    stride = window if stride is None else stride
    if not 0 < stride <= window:
        raise ValueError(f"stride: expected 0 < stride <= window={window}, got {stride}")
    min_doc_len = window + 1 if min_doc_len is None else min_doc_len
    out: list[Window] = []
    lengths = np.diff(np.asarray(offsets))
    for d, n in enumerate(lengths.tolist()):
        if n < max(min_doc_len, 2):
            continue
        if n <= window + 1:
            out.append(Window(d, 0, 0))
            continue
        scored_to = window  # targets 1..window (as positions 0..window-1 of the window) are scored
        out.append(Window(d, 0, 0))
        while scored_to < n - 1:
            start = min(scored_to + stride - window, n - 1 - window)
            out.append(Window(d, start, scored_to - start))
            scored_to = start + window
    return out


def window_tokens(stream: np.ndarray, offsets: np.ndarray, w: Window, window: int) -> np.ndarray:
    """Tokens of a window: (min(window, doc_len - 1 - start) + 1,) int64."""
    begin = int(offsets[w.doc]) + w.start
    end = min(begin + window + 1, int(offsets[w.doc + 1]))
    return np.asarray(stream[begin:end], dtype=np.int64)
