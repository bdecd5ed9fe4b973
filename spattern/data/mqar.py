"""Multi-query associative recall (MQAR; Arora, Eyuboglu et al. 2023, "Zoology"): the data, own implementation.

One sequence of length T with n key-value pairs and Q <= n queries::

    k_0 v_0 k_1 v_1 ... k_{n-1} v_{n-1} | f f k_a f f f k_b f ...        (f: filler)
    targets: -100 everywhere except at each query position q, where targets[q] = the value of k at q

- keys are n distinct tokens of [1, V/2), values n distinct tokens of [V/2, V); the pair i sits
  at positions (2i, 2i + 1);
- the query region (positions 2n .. T-1) has ``S = (T - 2n) // 2`` slots at even offsets; the Q
  queried pairs (a random subset) take Q distinct slots drawn without replacement with
  ``P(slot g) ~ (g + 1)^(a - 1)`` (``power_a = a``; a -> 0 crowds queries near the context, a = 1 or
  None is uniform), by the Efraimidis-Spirakis rule (the Q largest ``log(u_g) / P(g)``);
- filler: random tokens of the value range ``[V/2, V)`` (never a key, so a key in the query
  region is always a query), or 0 when ``random_fill=False``;
- ``distance = q - 2i``: tokens from the key to its query.

Batch ``index`` of ``seed`` draws from ``numpy.random.default_rng([seed, index])``, so
``mqar_batches`` is an infinite deterministic stream that can resume at any index, and
``mqar_train_batch`` (a training batch whose rows mix several numbers of pairs, as Zoology trains)
is a pure function of (seed, index) too. Scoring: the argmax of ``logits[b, q]`` must equal
``targets[b, q]`` (the model is trained on ``(input_ids, targets)`` as they are, no shift).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from pydantic import model_validator

from spattern.utils.config import Section

IGNORE = -100  # torch's cross_entropy ignore_index; spattern.evaluation.tasks.registry.IGNORE is the same


class MQARConfig(Section):
    vocab_size: int = 8192
    seq_len: int = 256
    n_pairs: int = 16
    n_queries: int | None = None  # None: every pair is queried
    power_a: float | None = 0.01  # None: uniform slots
    batch_size: int = 64
    random_fill: bool = True

    @model_validator(mode="after")
    def _fits(self) -> "MQARConfig":
        q = self.queries
        if self.n_pairs < 1 or not 1 <= q <= self.n_pairs:
            raise ValueError(f"n_pairs, n_queries: expected 1 <= n_queries <= n_pairs, got {self.n_pairs}, {q}")
        if self.vocab_size // 2 - 1 < self.n_pairs:
            raise ValueError(f"vocab_size: expected at least {2 * self.n_pairs + 2} for {self.n_pairs} distinct keys "
                             f"and values, got {self.vocab_size}")
        if (self.seq_len - 2 * self.n_pairs) // 2 < q:
            raise ValueError(f"seq_len: expected at least {2 * self.n_pairs + 2 * q} for {self.n_pairs} pairs and "
                             f"{q} queries, got {self.seq_len}")
        if self.power_a is not None and self.power_a <= 0:
            raise ValueError(f"power_a: expected a positive number or None, got {self.power_a}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        return self

    @property
    def queries(self) -> int:
        return self.n_pairs if self.n_queries is None else self.n_queries


@dataclass(frozen=True)
class MQARBatch:
    input_ids: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64, IGNORE except at query positions
    query_pos: torch.Tensor  # (B, Q) int64, sorted per row
    key_pos: torch.Tensor  # (B, Q) int64, position of the queried key in the context
    n_pairs: int
    seed: int
    index: int

    @property
    def distance(self) -> torch.Tensor:  # (B, Q)
        return self.query_pos - self.key_pos

    def ids(self) -> list[str]:
        return [f"mqar/n{self.n_pairs}/s{self.seed}/b{self.index}/{r}" for r in range(self.input_ids.shape[0])]


def _distinct(rng: np.random.Generator, B: int, lo: int, hi: int, k: int) -> np.ndarray:
    """(B, k): k distinct integers of [lo, hi) per row, in random order: the positions of the k
    smallest of hi - lo uniform draws, smallest first (``argsort(u)[:, :k]``, found by a partial
    sort: O(hi - lo) per row, which matters at vocab_size 8192)."""
    u = rng.random((B, hi - lo))
    if k >= hi - lo:
        return u.argsort(axis=1)[:, :k] + lo
    idx = np.argpartition(u, k - 1, axis=1)[:, :k]  # (B, k) the k smallest, unordered
    return np.take_along_axis(idx, np.take_along_axis(u, idx, 1).argsort(axis=1), 1) + lo


def mqar_batch(cfg: MQARConfig, seed: int, index: int = 0) -> MQARBatch:
    """Batch ``index`` of the stream ``seed`` (see the module docstring)."""
    rng = np.random.default_rng([seed, index])
    B, T, V, n, Q = cfg.batch_size, cfg.seq_len, cfg.vocab_size, cfg.n_pairs, cfg.queries
    keys = _distinct(rng, B, 1, V // 2, n)  # (B, n)
    values = _distinct(rng, B, V // 2, V, n)  # (B, n)
    which = rng.random((B, n)).argsort(axis=1)[:, :Q]  # (B, Q) queried pair indices
    S = (T - 2 * n) // 2
    a = 1.0 if cfg.power_a is None else cfg.power_a
    p = np.arange(1, S + 1, dtype=np.float64) ** (a - 1)
    p /= p.sum()
    slots = np.argsort(-(np.log1p(-rng.random((B, S))) / p), axis=1)[:, :Q]  # (B, Q) distinct slots
    fill = rng.integers(V // 2, V, size=(B, T)) if cfg.random_fill else np.zeros((B, T), dtype=np.int64)
    ids = fill.astype(np.int64)
    ids[:, 0:2 * n:2], ids[:, 1:2 * n:2] = keys, values
    qpos = 2 * n + 2 * slots  # (B, Q)
    rows = np.arange(B)[:, None]
    ids[rows, qpos] = keys[rows, which]
    targets = np.full((B, T), IGNORE, dtype=np.int64)
    targets[rows, qpos] = values[rows, which]
    order = np.argsort(qpos, axis=1)
    qpos, kpos = np.take_along_axis(qpos, order, 1), np.take_along_axis(2 * which, order, 1)
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))  # noqa: E731
    return MQARBatch(t(ids), t(targets), t(qpos), t(kpos), n, seed, index)


def mqar_batches(cfg: MQARConfig, seed: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Infinite ``(input_ids (B, T), targets (B, T))`` stream: batch i = ``mqar_batch(cfg, seed, i)``."""
    i = start
    while True:
        b = mqar_batch(cfg, seed, i)
        yield b.input_ids, b.targets
        i += 1


def with_pairs(cfg: MQARConfig, n_pairs: int, batch_size: int | None = None) -> MQARConfig:
    """``cfg`` with another number of pairs (and batch size), validated."""
    return MQARConfig(**{**cfg.model_dump(), "n_pairs": n_pairs, "batch_size": batch_size or cfg.batch_size})


def mqar_train_batch(cfg: MQARConfig, pairs: Sequence[int], seed: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids (B, T), targets (B, T))``, B = ``cfg.batch_size``, rows mixing the numbers of pairs.

    Row r holds ``pairs[(r + index) % P]`` pairs (P = len(pairs); the rotation gives every size the
    same share over consecutive batches when P does not divide B); the rows of size ``pairs[j]`` are
    ``mqar_batch(., seed, index * P + j)`` (one stream per (index, j): batches never share draws).
    Rows are kept in order of r, so the result depends only on (cfg, pairs, seed, index)."""
    P, B = len(pairs), cfg.batch_size
    if P < 1:
        raise ValueError(f"pairs: expected at least one number of pairs, got {list(pairs)}")
    size = [(r + index) % P for r in range(B)]  # which entry of pairs each row takes
    ids = torch.empty((B, cfg.seq_len), dtype=torch.int64)
    tgt = torch.empty((B, cfg.seq_len), dtype=torch.int64)
    for j, n in enumerate(pairs):
        rows = [r for r in range(B) if size[r] == j]
        if rows:
            b = mqar_batch(with_pairs(cfg, n, len(rows)), seed, index * P + j)
            ids[rows], tgt[rows] = b.input_ids, b.targets
    return ids, tgt


def distance_bucket(d: int) -> str:
    """Powers of two: ``"[2^k, 2^(k+1))"`` containing d >= 1."""
    lo = 1 << (int(d).bit_length() - 1)
    return f"[{lo}, {2 * lo})"


def bucket_lo(bucket: str) -> int:
    """The lower edge of a ``"[lo, hi)"`` distance bucket (``distance_bucket``'s inverse on its edge)."""
    return int(bucket[1:].split(",")[0])


def mqar_accuracy(records: list[dict]) -> list[dict]:
    """Rows ``{n_pairs, distance_bucket, n, accuracy}`` grouped by n_pairs and power-of-two distance
    bucket, from per-query records ``{n_pairs, distance, correct}``."""
    groups: dict[tuple, list[bool]] = {}
    for r in records:
        groups.setdefault((r["n_pairs"], int(r["distance"]).bit_length()), []).append(bool(r["correct"]))
    return [{"n_pairs": n, "distance_bucket": distance_bucket(1 << (k - 1)), "n": len(v), "accuracy": sum(v) / len(v)}
            for (n, k), v in sorted(groups.items())]


__all__ = ["IGNORE", "MQARBatch", "MQARConfig", "bucket_lo", "distance_bucket", "mqar_accuracy", "mqar_batch", "mqar_batches",
           "mqar_train_batch", "with_pairs"]
