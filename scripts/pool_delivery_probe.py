"""Does a process pool's delivery of results slow a launch-bound thread beyond its own cost?

    python scripts/pool_delivery_probe.py [--workers 1] [--ops 9000] [--iters 20] [--rounds 8]

The thread runs a loop of tiny in-place torch ops on one CPU thread (each a dispatch, like a kernel
launch) for about as long as a training step; before each iteration it takes one result from a
``ProcessPoolExecutor`` (spawned workers, ``--workers + 1`` jobs queued ahead, as the training loop's
context pool) whose workers sleep ``--sleep`` seconds and return a 0.64 MB dict of int32 arrays (the
size of one batch's outline contexts) read from a file: the delivery without the workers' CPU load.
Plain and pool blocks alternate; prints the median ms per iteration and the thread's CPU ms of each.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import statistics
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch


def echo(path: str, sleep_s: float) -> dict:
    time.sleep(sleep_s)
    with open(path, "rb") as f:
        return pickle.load(f)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--ops", type=int, default=9000, help="torch ops per iteration (about 44 ms on a 2-core CPU)")
    ap.add_argument("--iters", type=int, default=20, help="iterations per block")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=0.02, help="a worker's seconds per result")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    payload = {f"a{i}": rng.integers(0, 1 << 30, size=20000, dtype=np.int32) for i in range(8)}  # 0.64 MB
    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
        pickle.dump(payload, f)
    x = torch.zeros(64)
    ex = ProcessPoolExecutor(a.workers, mp_context=multiprocessing.get_context("spawn"))
    queue: deque = deque()

    def block(pool: bool) -> tuple[float, float]:
        t, tt = time.perf_counter(), time.thread_time()
        for _ in range(a.iters):
            if pool:
                while len(queue) < a.workers + 1:
                    queue.append(ex.submit(echo, f.name, a.sleep))
                queue.popleft().result()
            for _ in range(a.ops):
                x.mul_(1.0).add_(0.0)
        return 1e3 * (time.perf_counter() - t) / a.iters, 1e3 * (time.thread_time() - tt) / a.iters

    try:
        block(True), block(False)  # warm-up: workers spawned
        res: dict[str, list] = {"plain": [], "pool": []}
        for r in range(a.rounds):
            for mode in (("plain", "pool") if r % 2 == 0 else ("pool", "plain")):
                res[mode].append(block(mode == "pool"))
    finally:
        ex.shutdown(cancel_futures=True)
        os.unlink(f.name)
    out = {m: {"ms_per_iter": statistics.median(w for w, _ in v), "thread_cpu_ms": statistics.median(c for _, c in v)}
           for m, v in res.items()}
    for m, v in out.items():
        print(f"{m:>5}: {v['ms_per_iter']:.2f} ms/iteration, thread CPU {v['thread_cpu_ms']:.2f} ms")
    return out


if __name__ == "__main__":
    main()
