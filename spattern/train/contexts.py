"""The contexts of a content-dependent model's batches (outline attention), built ahead of the
step that needs them.

A content-dependent layer compiles one layout per sequence from that sequence's structure
(``spattern.data.structure``): about 27 ms for a batch of 8 x 4K at block 64 on one core of a
2-core CPU (``scripts/bench_contexts.py``; each key of outline's tree is seen by one interval of
queries, ``Outline.key_intervals``, so its blocks and distinct bitmasks come from N numbers),
against about 42 ms for the study's 20M model's whole training step on an H100. Training batches are a pure function of the step
(``sample_indices``) and validation batches are fixed, so their contexts can be built before they
are needed: ``ContextPrefetch`` builds each batch's ``SequenceContexts`` (the trees and every
layout the model's layers will ask for) in worker processes, ``depth`` micro-batches ahead, and
keeps the validation batches' contexts for every later evaluation. With ``workers = 0`` it builds
them in the calling process, on demand: the slow twin the workers are tested against. The workers
are spawned and run ``spattern.data.batch_contexts.build_job``, which imports no torch, so they
start in a fraction of a second (with torch, about 2 s each, measured on a 2-core CPU, which the
trainer spent waiting for its first batches).

How a worker's result comes back (``transport``): ``"pipe"``, the pool's own way (the pool's thread in
this process receives the pickled contexts, about 0.6 MB per 8 x 4K batch, and unpickles them), or
``"file"``: the worker pickles them into a file in a spool folder (``/dev/shm`` where there is one) and
sends its path, and ``get`` reads it in the caller's thread (``batch_contexts.build_job``). Either way
the token table goes to each worker once, when it starts.

Where the workers run (``cpus``): ``"shared"``, anywhere (the scheduler places them and the trainer), or
``"spare"``: the thread that makes the prefetch (the trainer's, which launches the GPU's work) is confined
to one CPU of each of the ``SPARE_RESERVED`` lowest-numbered cores it may use, the pool's threads it starts
with it, and the workers to the other cores (``split_cpus``; the trainer's cores' other hardware threads stay
idle), so that they never take its core; ``close()`` gives the thread its CPUs back. Measured on an H100
machine, before it split by core, it did not make the training step faster (notes/study.md). Where there are too few
CPUs to split, ``"spare"`` is ``"shared"``.

``stats()`` says what the training batches' contexts cost: the seconds the caller waited in ``get``
and the seconds their builds took (in a worker or in the caller). The training loop logs both per
interval (``ctx_wait_ms`` per step, ``ctx_build_ms`` per batch), so a run shows whether its workers keep
up. Kept batches (validation) are not counted: their time is not training time.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

# the workers run build_job from the data layer, so that they start without importing torch
from spattern.data.batch_contexts import (SequenceContexts, TokenBytes, build_contexts, build_job, build_timed,
                                          init_worker, read_spooled)
from spattern.models.attention import needs_context

__all__ = ["PLACEMENTS", "TRANSPORTS", "ContextPrefetch", "SequenceContexts", "TokenBytes", "build_contexts", "build_timed"]

# The workers' scheduling priority (``os.nice`` increment): below the trainer, whose host thread
# launches the GPU's work and is the limit of a small model's step, so that it is not the one
# descheduled when the workers and the trainer want more cores than there are.
WORKER_NICE = 10
TRANSPORTS = ("pipe", "file")
PLACEMENTS = ("shared", "spare")
SPARE_RESERVED = 2  # CPUs kept for the trainer under "spare": its launching thread and the pool's own thread


def thread_siblings(cpu: int) -> frozenset[int]:
    """The CPUs that share ``cpu``'s core (its SMT siblings, itself included), from Linux's sysfs; just
    ``{cpu}`` where the file is absent or unreadable."""
    try:
        with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
            text = f.read().strip()
    except OSError:
        return frozenset({cpu})
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(out | {cpu})


def split_cpus(cpus: set[int], reserved: int = SPARE_RESERVED,
               siblings=thread_siblings) -> tuple[frozenset[int], frozenset[int]] | None:
    """``cpus`` split into (the trainer's, the workers') by core: the trainer takes one CPU of each of the
    ``reserved`` cores with the lowest-numbered CPUs, the workers the CPUs of the other cores, and the
    trainer's cores' other hardware threads (``siblings``: cpu -> the CPUs of its core) go to neither, so
    that no worker shares a core with the trainer. None when that leaves the workers fewer than two CPUs."""
    cpus = frozenset(cpus)
    order = sorted({frozenset(siblings(c)) & cpus for c in cpus}, key=min)  # the cores, lowest CPU first
    workers = frozenset(c for core in order[reserved:] for c in core)
    if len(workers) < 2:
        return None
    return frozenset(min(core) for core in order[:reserved]), workers


def _key(rows: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest() + str(rows.shape)


class ContextPrefetch:
    """``ahead(rows)`` queues a batch's contexts; ``get(rows)`` returns them (waiting if needed,
    building them now if they were never queued). ``keep=True`` keeps the result for later calls
    (validation batches, scored at every evaluation)."""

    def __init__(self, model, tokenizer, workers: int = 0, transport: str = "pipe", cpus: str = "shared") -> None:
        if workers < 0:
            raise ValueError(f"workers: expected >= 0, got {workers}")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport: expected one of {', '.join(TRANSPORTS)}, got {transport!r}")
        if cpus not in PLACEMENTS:
            raise ValueError(f"cpus: expected one of {', '.join(PLACEMENTS)}, got {cpus!r}")
        split = split_cpus(os.sched_getaffinity(0)) if workers and cpus == "spare" else None
        self.table = TokenBytes(tokenizer)
        self.jobs = tuple(sorted({(str(layer.attn.pattern), tuple(layer.attn.block)) for layer in model.layers
                                  if needs_context(layer.attn.pattern)}))
        # spawn: the trainer may hold CUDA and threads that a fork would copy half-way
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=init_worker,
                                        initargs=(WORKER_NICE, self.table, split[1] if split else None)) \
            if workers else None
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.spool = tempfile.mkdtemp(prefix="spattern-contexts-", dir=shm) \
            if workers and transport == "file" else None
        # "spare": this thread on the reserved CPUs (last, so that a failure above leaves it as it was;
        # the pool's processes and threads start with its first job, from this thread), restored by close()
        self.restore: set[int] | None = os.sched_getaffinity(0) if split is not None else None
        if split is not None:
            os.sched_setaffinity(0, split[0])
        self.pending: dict[str, Future] = {}
        self.kept: dict[str, SequenceContexts] = {}
        self.waited = 0.0  # seconds spent in get() for batches not kept
        self.built = 0.0   # seconds their builds took (worker or caller)
        self.batches = 0   # how many

    def ahead(self, rows: np.ndarray) -> None:
        key = _key(rows)
        if self.pool is not None and key not in self.pending and key not in self.kept:
            self.pending[key] = self.pool.submit(build_job, self.jobs, np.asarray(rows), self.spool)

    def get(self, rows: np.ndarray, keep: bool = False) -> SequenceContexts:
        key = _key(rows)
        if key in self.kept:
            return self.kept[key]
        t0 = time.perf_counter()
        fut = self.pending.pop(key, None)
        ctx, built = fut.result() if fut is not None else build_timed(self.table, self.jobs, np.asarray(rows))
        if isinstance(ctx, str):  # transport "file": the worker's spool file
            ctx = read_spooled(ctx)
        if keep:
            self.kept[key] = ctx
        else:
            self.waited += time.perf_counter() - t0
            self.built += built
            self.batches += 1
        return ctx

    def stats(self) -> tuple[float, float, int]:
        """(seconds waited in get, seconds of building, batches) over the batches not kept so far."""
        return self.waited, self.built, self.batches

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        self.pending.clear()
        if self.spool is not None:  # the files of batches never taken
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None
        if self.restore is not None:
            os.sched_setaffinity(0, self.restore)
            self.restore = None
