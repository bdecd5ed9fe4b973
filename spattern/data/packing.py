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


class DocumentLosses:
    """Next-token losses of scored chunks of a ``PackedSequences`` stream, summed per document.

    Target j of chunk i is stream position ``i * L + 1 + j``; it belongs to the document whose span
    in ``offsets`` (n_docs + 1 starts, the last one the stream's end) holds that position (a
    document's closing EOS is its own). ``add(indices, nll)`` takes one batch: chunk indices (B,)
    and their losses (B, L). ``records(ids)``: one dict per document with a scored token, in stream
    order: ``{"id": ids[d], "file_loss": mean loss over its scored tokens, "file_tokens": how many}``.
    A document cut by the last scored chunk counts the tokens scored; the context a token saw may
    reach back into the previous document (the chunks are packed, not aligned to documents)."""

    def __init__(self, offsets: np.ndarray, seq_len: int) -> None:
        self.offsets = np.asarray(offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or self.offsets.size < 2:
            raise ValueError(f"offsets: expected n_docs + 1 >= 2 document starts, got shape {self.offsets.shape}")
        self.seq_len = int(seq_len)
        n = self.offsets.size - 1
        self.sums, self.counts = np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.int64)

    def add(self, indices: np.ndarray, nll: np.ndarray) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        nll = np.asarray(nll, dtype=np.float64)
        if nll.shape != (idx.size, self.seq_len):
            raise ValueError(f"nll: expected ({idx.size}, {self.seq_len}) losses, got {nll.shape}")
        pos = idx[:, None] * self.seq_len + 1 + np.arange(self.seq_len)[None, :]     # (B, L)
        doc = np.searchsorted(self.offsets, pos, side="right").ravel() - 1
        n = self.sums.size
        self.sums += np.bincount(doc, weights=nll.ravel(), minlength=n)[:n]
        self.counts += np.bincount(doc, minlength=n)[:n]

    def records(self, ids) -> list[dict]:
        if len(ids) != self.sums.size:
            raise ValueError(f"ids: expected one per document ({self.sums.size}), got {len(ids)}")
        return [{"id": ids[d], "file_loss": float(self.sums[d] / self.counts[d]), "file_tokens": int(self.counts[d])}
                for d in np.flatnonzero(self.counts)]


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
