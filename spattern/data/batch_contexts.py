"""A batch's structure contexts and the layouts compiled from them, without torch.

``build_contexts(table, jobs, rows)`` turns a batch of token ids (B, L) into ``SequenceContexts``:
one structure context per row (``structure_context``: the outline tree of the text the ids spell)
and every layout the model's content-dependent layers will ask for (``jobs``: (pattern, block)
pairs, compiled at L x L). The training loop's context workers (``spattern.train.contexts``) run
it in spawned processes; it lives here, below the models, so that a worker imports the tokenizer
table, the patterns and the compiler only (about 0.2 s) and never torch (about 2 s more on each
worker's start, while the trainer waits for its first batches).
"""
from __future__ import annotations

import time

import numpy as np

from spattern.data.structure import structure_context


class TokenBytes:
    """A tokenizer's id -> bytes table (what ``structure_context`` reads), picklable for workers."""

    def __init__(self, tokenizer) -> None:
        self.table = tokenizer.token_bytes(list(range(tokenizer.vocab_size)))

    def token_bytes(self, ids) -> list[bytes]:
        return [self.table[i] for i in ids]


def contexts_layout(pattern, q_len: int, kv_len: int, block, contexts) -> object:
    """The BlockLayout of a content-dependent ``pattern`` over ``contexts`` (one per sequence: a layout
    group each), validated once here; compiled on every call, since the sequences change."""
    from spattern.compiler.compile import compile as compile_pattern  # noqa: PLC0415

    layout = compile_pattern(pattern, int(q_len), int(kv_len), block=tuple(block), context=list(contexts))
    layout.validate()
    layout.mark_validated()
    return layout


class SequenceContexts(list):
    """One context per sequence of a batch, shared by every layer of a model; the layouts compiled
    from it are kept here (per pattern, lengths and block), so a forward compiles each once."""

    def __init__(self, contexts) -> None:
        super().__init__(contexts)
        self.layouts: dict = {}

    def layout(self, pattern, q_len: int, kv_len: int, block) -> object:
        """The BlockLayout of ``pattern`` over these sequences (``contexts_layout``), compiled once."""
        key = (str(pattern), q_len, kv_len, tuple(block))
        if key not in self.layouts:
            self.layouts[key] = contexts_layout(pattern, q_len, kv_len, block, self)
        return self.layouts[key]

    def to_device(self, device, csc: bool = False) -> None:
        """Start the copy of every layout compiled so far to ``device`` (``BlockLayout.to_device``: one
        pinned, non-blocking copy each; ``csc``: the backward's arrays too), so that the forward that
        reads them finds them there and the host never waits on the GPU for them."""
        for layout in self.layouts.values():
            layout.to_device(device, csc=csc)


def build_contexts(table: TokenBytes, jobs: tuple, rows: np.ndarray) -> SequenceContexts:
    """rows (B, L) int token ids -> one context per row, with the layout of every (pattern, block)
    in ``jobs`` compiled at L x L (the keys ``SequenceContexts.layout`` is asked for in the forward)."""
    ctx = SequenceContexts([structure_context(table, r) for r in rows.tolist()])
    L = rows.shape[1]
    for pattern, block in jobs:
        ctx.layout(pattern, L, L, block)
    return ctx


def build_timed(table: TokenBytes, jobs: tuple, rows: np.ndarray) -> tuple[SequenceContexts, float]:
    """build_contexts, and the seconds it took where it ran."""
    t0 = time.perf_counter()
    ctx = build_contexts(table, jobs, rows)
    return ctx, time.perf_counter() - t0


def read_pickled(path: str) -> object:
    """The object pickled in the file ``path``: a worker's delivery of a result it did not build
    (``scripts/bench_train_step.py``)."""
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f)


# --- a context worker's side (``spattern.train.contexts.ContextPrefetch``) ---------------------------
_TABLE: TokenBytes | None = None  # a worker's token table, sent once when it starts (``init_worker``)


def init_worker(nice: int, table: TokenBytes, cpus: frozenset[int] | None = None) -> None:
    """A context worker's start: lower its priority by ``nice``, confine it to ``cpus`` (None: where it
    was started) and keep the token table, so that each job carries only its rows (the table is about
    58 KB pickled at 8K tokens, once per worker, not per batch)."""
    import os

    global _TABLE
    os.nice(nice)
    if cpus:
        os.sched_setaffinity(0, cpus)
    _TABLE = table


def build_job(jobs: tuple, rows: np.ndarray, spool: str | None = None) -> tuple:
    """One batch built in a worker (``build_timed`` with the worker's table) -> ``(contexts, seconds)``;
    with ``spool`` (a folder) the contexts are pickled into a file there instead, and the result is
    ``(path, seconds)``: what the worker sends back through the pool is then a few bytes, and the
    trainer reads the file when it needs the batch (``read_spooled``), in its own thread, rather than
    the pool's thread receiving and unpickling about 0.6 MB per batch while the trainer launches work."""
    if _TABLE is None:
        raise RuntimeError("build_job runs in a worker started with init_worker")
    ctx, seconds = build_timed(_TABLE, jobs, rows)
    if spool is None:
        return ctx, seconds
    import os
    import pickle
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".pkl", dir=spool)
    with os.fdopen(fd, "wb") as f:
        pickle.dump(ctx, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path, seconds


def read_spooled(path: str) -> SequenceContexts:
    """The contexts ``build_job`` spooled to ``path``; the file is removed."""
    import os
    import pickle

    with open(path, "rb") as f:
        ctx = pickle.load(f)
    os.unlink(path)
    return ctx


def build_seconds(jobs: tuple, rows: np.ndarray) -> float:
    """``build_job``'s seconds only, the contexts dropped where they were built: a worker's load without
    the transfer of its result (``scripts/bench_train_step.py`` takes the pool's cost apart with it)."""
    return build_job(jobs, rows)[1]
