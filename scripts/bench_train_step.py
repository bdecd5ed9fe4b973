"""Where outline's training step loses time against a window of the same density, in one process
on a GPU (study scenario 2), free of the run-to-run drift of whole training runs.

    python scripts/bench_train_step.py [--steps 20] [--rounds 7] [--batches 8] [--json out.json]

The study's model, data and step (experiments/study_code_gpu_train.toml: forward under bf16 autocast,
backward, gradient clipping, fused AdamW), timed in blocks of ``--steps`` steps (synchronized at the
block's ends only, so that the host may run ahead as in training) in these modes, rotated each round:
  window        local(386) & causal: one static layout, on the GPU from the first step;
  outline_warm  outline(window=258) over ``--batches`` real batches whose layouts are already on the
                GPU (what the kernels and masks cost, with no per-step setup);
  outline_new   a new copy of a batch's layouts every step, uploaded as the training loop now does
                (``SequenceContexts.to_device``: one pinned, non-blocking copy each, backward included);
  outline_sync  the same copies uploaded as before this change (each array its own synchronous
                ``.to(device)`` from pageable memory);
  window_busy, outline_new_busy   window and outline_new while ``--busy`` processes spin on the CPU
                (the load of the training loop's context workers: about 5 cores for outline at 4K, whose
                batches take 0.2 s of one core each while a step takes 0.05 s);
  outline_pool  as in training: each step a new batch (its rows uploaded through pinned memory) whose
                contexts come from the loop's ``ContextPrefetch`` (``--workers`` spawned workers, queued
                ``prefetch_depth`` batches ahead): the workers' load, their results' transfer and the
                pool's threads in this process, all at once;
  outline_pool_si  outline_pool with the interpreter's thread switch interval at 0.2 ms (5 ms by default):
                if the pool's threads in this process delay the launching thread through the GIL, this is faster;
  window_fresh  window with a new batch of rows each step, uploaded through pinned memory (as in training);
  dense_fresh   window_fresh with dense causal attention (torch SDPA, no spattern kernel): how much of
                window's host work per step (the launching thread's CPU, the other threads') is spattern's;
  window_poolload  window_fresh while the pool builds and delivers outline contexts for every step (received,
                uploaded and not used): the pool's cost without outline's kernels;
  window_poolnoup  window_poolload without the upload of the delivered layouts;
  window_workload  window_fresh while the pool's workers build a batch's contexts per step and keep them
                (only the build's seconds come back): the workers' load without the transfer;
  window_echo   window_fresh while the workers send a built batch's contexts per step without building them
                (read from a file): the transfer and this process's part of it without the workers' load;
  window_membusy  window while ``--busy`` processes stream memory (256 MB copies): memory-bandwidth and
                cache pressure, which ``_busy`` (a spinning loop) does not exert;
  window_poolfile, outline_poolfile  window_poolload and outline_pool with the pool's results spooled to
                files (``train.context_transport = "file"``): the workers send a path, and this thread reads
                the batch when it needs it, so the pool's thread here receives and unpickles nothing;
  window_poolspare, outline_poolspare  window_poolload and outline_pool with the workers kept off the
                launching thread's CPUs (``train.context_cpus = "spare"``): this thread on two CPUs
                (``contexts.split_cpus``, during these modes' blocks only) and the workers on the rest.
``--modes a,b,..`` runs a subset (window is always among them: the ratios are to it).
``--probe N`` also runs a fixed pure-Python loop of N iterations in the launching thread after each step's
launches (while the GPU runs the step and the workers build) and reports its CPU time per call
(``probe``): if it grows in a mode as the launching thread's CPU time does, that thread's core runs the
same instructions slower there (clock, shared caches); if it stays flat, the thread does more work. Each
block also reports the launching thread's minor page faults and voluntary/involuntary context switches
per step (``getrusage(RUSAGE_THREAD)``) and the kernel's MHz for its CPU at the block's end; the whole
machine's share of CPU time busy and stolen by the hypervisor during the block (``/proc/stat``;
``machine_cpu_share``: ``busy``, ``steal``); and every thread of this process's CPU ms per step
(``/proc/self/task/*/schedstat``; ``threads_cpu_ms_per_step``): the launching thread's, the others' sum and
the busiest others', which shows how many threads burn CPU while the step runs and how much (not which:
torch's OpenMP pool, autograd's device thread and the context pool's threads are unnamed there).
``--pin torch`` uploads each new batch as the training loop did before 2026-12-06 (``t.pin_memory()``: a
copy by torch's CPU thread pool, whose OpenMP threads then spin), ``--pin numpy`` (default) as it does now
(``loop.to_device``: numpy's copy into a pinned buffer on this thread); the modes ``window_fresh_tpin``,
``window_workload_tpin`` and ``outline_pool_tpin`` are their modes with torch's copy whatever ``--pin`` says,
so that one process compares the two uploads round by round; ``--threads N`` sets torch's CPU
threads (``torch.set_num_threads``) before anything runs. ``--static NAME=PATTERN`` (repeatable) adds a mode
``NAME_fresh``: window_fresh with another static pattern (one layout, uploaded once; a new batch each step), to
compare static patterns' steps in one process (e.g. longformer's extra blocks against window's). ``--gpu-time``
runs one more block of every mode under torch's profiler after the rounds and records the GPU's time per step
(``gpu_ms_per_step``: every kernel, copy and fill on the device summed; ``attention_kernels``: spattern's CUDA
kernels alone; ``top``: the longest kernels by name): against the step's wall time it says whether the GPU
or the host sets the pace. ``--cprofile MODES`` runs one more block of each of
those modes under cProfile after the rounds (the launching thread's Python and the C calls it makes; the
autograd engine's thread, which runs the backward, is not seen) and writes the functions by own time.
Also the host cost of receiving a batch's contexts from a worker process (pickle round trip).
Prints one line per mode (median ms/step over rounds, and its ratio to window within each round).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

WINDOW = "local(386) & causal"
OUTLINE = "outline(window=258) & causal"
MODES = ("window", "outline_warm", "outline_new", "outline_sync", "window_busy", "outline_new_busy", "outline_pool",
         "outline_pool_si", "window_fresh", "window_poolload", "window_poolnoup", "window_workload", "window_echo", "window_membusy",
         "window_poolfile", "outline_poolfile", "window_poolspare", "outline_poolspare", "window_fresh_tpin",
         "window_workload_tpin", "outline_pool_tpin", "dense_fresh")
SPATTERN_KERNELS = ("sp_",)  # the entry points of spattern/runtime/kernels/*.cu (sp_block_sparse_fwd, sp_bwd_dq, ...)
SPIN = "while True: pass"
STREAM = "import numpy as np\na = np.ones(1 << 25); b = np.empty_like(a)\nwhile True: np.copyto(b, a)"


def this_cpu() -> int:
    """The CPU this thread last ran on (field 39 of /proc/thread-self/stat)."""
    with open("/proc/thread-self/stat") as f:
        return int(f.read().rpartition(")")[2].split()[36])


def cpu_mhz(cpu: int) -> float | None:
    """The kernel's current MHz for ``cpu`` (cpufreq, else /proc/cpuinfo; virtual machines often give a
    fixed nominal value there), None where neither says."""
    try:
        with open(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq") as f:
            return int(f.read()) / 1e3
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        return mhz[cpu] if cpu < len(mhz) else None
    except (OSError, ValueError, IndexError):
        return None


def machine_ticks() -> dict[str, int]:
    """The machine's CPU time so far by kind, in clock ticks summed over its CPUs (/proc/stat's first line:
    user, nice, system, idle, iowait, irq, softirq, steal); empty where there is no /proc/stat. ``steal`` is
    time a virtual machine's CPUs were ready to run but the hypervisor ran something else."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return {}
    return {n: int(v) for n, v in zip(names, fields[1:])} if fields and fields[0] == "cpu" else {}


def thread_ns() -> dict[int, int]:
    """tid -> nanoseconds on a CPU so far, for every thread of this process (``schedstat``'s first field;
    empty where the kernel has no schedstat)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def sync_upload(layout, device) -> None:
    """The former ``BlockLayout.to_device`` + the backward's CSC: one synchronous copy per array."""
    host = {**layout._host_arrays(), **layout.csc()}
    t = {n: torch.from_numpy(np.array(a)).to(device) for n, a in host.items()}
    layout._device_cache[(str(device), "arrays+csc")] = t


def fresh(ctx):
    from spattern.compiler.layout import replace
    from spattern.data.batch_contexts import SequenceContexts

    c = SequenceContexts(ctx)
    c.layouts = {k: replace(v) for k, v in ctx.layouts.items()}
    return c


def gpu_block(block, mode: str, steps: int) -> tuple[float, dict]:
    """One ``block(mode)`` under torch's profiler: its wall ms per step and the device's time per step: every
    device event summed (kernels, copies, fills), spattern's own kernels (the ``.cu`` files' entry points,
    named ``sp_*``: launched through CuPy, seen by the profiler's CUPTI tracing) and the
    12 longest kernels by name. On a machine without CUDA the device times are 0."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        ms = block(mode)
    by_name: dict[str, list[float]] = {}
    for e in prof.events():
        if str(e.device_type).endswith("CUDA"):
            t = by_name.setdefault(e.name, [0.0, 0])
            t[0] += e.device_time_total / 1e3  # µs -> ms over the block
            t[1] += 1
    ours = {n: t for n, t in by_name.items() if n.startswith(SPATTERN_KERNELS)}
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:12]
    return ms, {"gpu_ms_per_step": round(sum(t[0] for t in by_name.values()) / steps, 3),
                "attention_kernels": {"ms_per_step": round(sum(t[0] for t in ours.values()) / steps, 3),
                                      "launches_per_step": sum(t[1] for t in ours.values()) / steps},
                "top": [{"name": n[:90], "ms_per_step": round(t[0] / steps, 3), "calls_per_step": t[1] / steps}
                        for n, t in top]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="experiments/study_code_gpu_train.toml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--busy", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None, help="outline_pool's workers (default: the loop's)")
    ap.add_argument("--set", action="append", default=[], help="config overrides (a small smoke test)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    ap.add_argument("--probe", type=int, default=0, help="iterations of a pure-Python loop timed after each step")
    ap.add_argument("--pin", choices=("numpy", "torch"), default="numpy",
                    help="how a new batch reaches pinned memory: loop.to_device (numpy) or t.pin_memory() (torch)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads(N) first (0: torch's default)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    ap.add_argument("--cprofile", default=None, metavar="MODES",
                    help="after the rounds, one more block of each of these modes under cProfile (the launching "
                         "thread only); the functions by own time, ms per step, go to --cprofile-out")
    ap.add_argument("--cprofile-out", default="cprofile.txt")
    ap.add_argument("--static", action="append", default=[], metavar="NAME=PATTERN",
                    help="a mode NAME_fresh: window_fresh with this static pattern instead of the window")
    ap.add_argument("--gpu-time", action="store_true",
                    help="after the rounds, one block of each mode under torch's profiler: the GPU's ms per step")
    a = ap.parse_args(argv)
    static = {}  # mode -> pattern
    for spec in a.static:
        name, eq, pattern = spec.partition("=")
        if not eq or not name.isidentifier() or not pattern.strip():
            ap.error(f"--static: expected NAME=PATTERN with NAME an identifier, got {spec!r}")
        if f"{name}_fresh" in MODES or f"{name}_fresh" in static:
            ap.error(f"--static: the mode {name}_fresh exists already; choose another NAME")
        static[f"{name}_fresh"] = pattern.strip()
    if a.threads:
        torch.set_num_threads(a.threads)
    modes = tuple(dict.fromkeys(["window", *a.modes.split(","), *static]))
    profiled = tuple(a.cprofile.split(",")) if a.cprofile else ()
    if unknown := [m for m in (*modes, *profiled) if m not in MODES and m not in static]:
        ap.error(f"--modes: unknown {unknown}; expected some of {', '.join(MODES)}")

    from spattern.data.packing import PackedSequences
    from spattern.train.config import load_train_config
    from spattern.data.batch_contexts import build_seconds, init_worker, read_pickled
    from spattern.train.contexts import WORKER_NICE, ContextPrefetch, split_cpus
    from spattern.train.loop import build_from_config, context_workers, load_data, prefetch_depth
    from spattern.train.loop import to_device as numpy_pin

    def torch_pin(t, device):  # the loop's upload before 2026-12-06
        return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)

    pin = {"now": a.pin}  # this block's: --pin, or torch in a mode ending in _tpin

    def to_device(t, device):
        return (torch_pin if pin["now"] == "torch" else numpy_pin)(t, device)

    cuda = a.device == "cuda"
    dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device(a.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = load_train_config(a.config, [f'model.pattern="{OUTLINE}"', *a.set])
    data = load_data(cfg)
    seqs = PackedSequences(data.stream("train"), cfg.data.seq_len)
    B = cfg.train.batch_size
    rng = np.random.default_rng(0)
    rows = [seqs.batch(rng.choice(len(seqs), B, replace=False)) for _ in range(a.batches)]  # (B, L+1) each
    torch.manual_seed(0)
    model = build_from_config(cfg, data.vocab_size).to(dev)
    backend = "cupy" if cuda else "reference"
    model.set_pattern(OUTLINE, backend)
    pre = ContextPrefetch(model, data.tokenizer(), 0)
    t0 = time.perf_counter()
    ctxs = [pre.get(r[:, :-1]) for r in rows]
    build_ms = 1e3 * (time.perf_counter() - t0) / len(ctxs)
    pickled = [pickle.dumps(c) for c in ctxs]
    t0 = time.perf_counter()
    for p in pickled:
        pickle.loads(p)
    unpickle_ms = 1e3 * (time.perf_counter() - t0) / len(pickled)
    batches = [torch.from_numpy(r).to(dev) for r in rows]
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-4, fused=cuda)
    workers = context_workers(a.workers, dev)
    pool = ContextPrefetch(model, data.tokenizer(), workers)
    # the file transport's pool, only when a mode uses it (its workers would load the machine otherwise)
    spooled = ContextPrefetch(model, data.tokenizer(), workers, "file") \
        if {"window_poolfile", "outline_poolfile"} & set(modes) else None
    # the spare placement's pool: made (which pins this thread) then this thread freed again; the blocks of
    # its modes pin it (and the pool's threads here, started by its first jobs, inherit that)
    everywhere = os.sched_getaffinity(0)
    split = split_cpus(everywhere)
    spare = None
    if {"window_poolspare", "outline_poolspare"} & set(modes):
        if split is None:
            ap.error(f"the spare modes need at least 4 CPUs to split; this process may use {len(everywhere)}")
        spare = ContextPrefetch(model, data.tokenizer(), workers, cpus="spare")
        os.sched_setaffinity(0, everywhere)
    depth = prefetch_depth(workers)
    stream = np.random.default_rng(1)
    queued: dict[int, list[np.ndarray]] = {}  # per pool: the batches queued in it, oldest first

    host: dict[str, float] = {}  # this block's host seconds in the pool's parts (pool modes)
    aux = echo = None  # window_workload / window_echo: the pool's processes alone, and the batch they send
    if {"window_workload", "window_echo"} & {m.removesuffix("_tpin") for m in modes}:
        aux = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
                                  initargs=(WORKER_NICE, pool.table))
        with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as echo:
            echo.write(pickled[0])
    aux_queue: deque = deque()

    def aux_batch(mode: str) -> torch.Tensor:
        """One job submitted (queued ``depth`` steps ahead, as the pool's) and the oldest one's result taken."""
        t0 = time.perf_counter()
        while len(aux_queue) < depth + 1:
            r = seqs.batch(stream.choice(len(seqs), B, replace=False))
            aux_queue.append(aux.submit(build_seconds, pool.jobs, r[:, :-1]) if mode == "window_workload"
                             else aux.submit(read_pickled, echo.name))
        t1 = time.perf_counter()
        aux_queue.popleft().result()
        t2 = time.perf_counter()
        for k, v in (("ahead", t1 - t0), ("get", t2 - t1)):
            host[k] = host.get(k, 0.0) + v
        return fresh_batch()

    def pool_batch(upload: bool = True, source=None) -> tuple:
        source = source or pool
        pool_rows = queued.setdefault(id(source), [])
        t0 = time.perf_counter()
        while len(pool_rows) < depth + 1:
            r = seqs.batch(stream.choice(len(seqs), B, replace=False))
            source.ahead(r[:, :-1])
            pool_rows.append(r)
        r = pool_rows.pop(0)
        t1 = time.perf_counter()
        ctx = source.get(r[:, :-1])
        t2 = time.perf_counter()
        if cuda and upload:
            ctx.to_device(dev, csc=True)
        t3 = time.perf_counter()
        for k, v in (("ahead", t1 - t0), ("get", t2 - t1), ("upload", t3 - t2)):
            host[k] = host.get(k, 0.0) + v
        return ctx, to_device(torch.from_numpy(r), dev)

    def fresh_batch() -> torch.Tensor:
        return to_device(torch.from_numpy(seqs.batch(stream.choice(len(seqs), B, replace=False))), dev)

    def step(i: int, mode: str) -> None:
        mode = mode.removesuffix("_tpin")
        j = i % len(batches)
        batch = batches[j]
        source = {"file": spooled, "spare": spare}.get(mode.removeprefix("window_pool").removeprefix("outline_pool"), pool)
        if mode in ("outline_pool", "outline_pool_si", "outline_poolfile", "outline_poolspare"):
            ctx, batch = pool_batch(source=source)
            model.set_contexts(ctx)
        elif mode in ("window_poolload", "window_poolnoup", "window_poolfile", "window_poolspare"):
            _, batch = pool_batch(upload=mode != "window_poolnoup", source=source)
        elif mode in ("window_workload", "window_echo"):
            batch = aux_batch(mode)
        elif mode in ("window_fresh", "dense_fresh") or mode in static:
            batch = fresh_batch()
        elif not mode.startswith("window"):
            ctx = ctxs[j]
            if mode in ("outline_new", "outline_sync", "outline_new_busy"):
                ctx = fresh(ctx)
                if mode != "outline_sync":
                    ctx.to_device(dev, csc=True)
                else:
                    for lay in ctx.layouts.values():
                        sync_upload(lay, dev)
            model.set_contexts(ctx)
        x, y = batch[:, :-1], batch[:, 1:]
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    parts: dict[str, dict[str, list[float]]] = {}  # mode -> pool part -> ms per step, per block
    counts: dict[str, dict[str, list[float]]] = {}  # mode -> page faults / context switches per step, MHz
    threads: dict[str, list[dict]] = {}  # mode -> per block: this process's threads' CPU ms per step
    machine: dict[str, dict[str, list[float]]] = {}  # mode -> the machine's busy and stolen CPU share, per block

    def probe() -> None:
        t0, s = time.thread_time(), 0
        for k in range(a.probe):
            s += k * k
        host["probe"] = host.get("probe", 0.0) + time.thread_time() - t0

    def block(mode: str) -> float:
        pin["now"] = "torch" if mode.endswith("_tpin") else a.pin
        model.set_pattern(static.get(mode) or ("dense" if mode.startswith("dense") else WINDOW if mode.startswith("window")
                                               else OUTLINE), backend)
        code = SPIN if mode.endswith("_busy") else STREAM if mode.endswith("_membusy") else None
        spin = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(a.busy if code else 0)]
        switch = sys.getswitchinterval()
        if mode.endswith("_si"):
            sys.setswitchinterval(2e-4)
        if mode.endswith("_poolspare"):
            os.sched_setaffinity(0, split[0])
        try:
            time.sleep(0.5 if spin else 0)
            sync()
            host.clear()
            t, tt, tp = time.perf_counter(), time.thread_time(), time.process_time()
            ru = resource.getrusage(resource.RUSAGE_THREAD)
            me, before, ticks = threading.get_native_id(), thread_ns(), machine_ticks()
            for i in range(a.steps):
                step(i, mode)
                if a.probe:
                    probe()
            sync()
            host["cpu_main_thread"] = time.thread_time() - tt   # this thread's CPU time (launches, Python)
            host["cpu_process"] = time.process_time() - tp      # every thread of this process
            end = resource.getrusage(resource.RUSAGE_THREAD)
            after, ticks_end = thread_ns(), machine_ticks()
            total = sum(ticks_end.values()) - sum(ticks.values())
            if total > 0:  # the whole machine during the block: busy share of its CPUs, and steal's
                idle = sum(ticks_end[k] - ticks[k] for k in ("idle", "iowait"))
                machine.setdefault(mode, {}).setdefault("busy", []).append(1 - idle / total)
                machine[mode].setdefault("steal", []).append((ticks_end["steal"] - ticks["steal"]) / total)
            spent = sorted(((after[t] - before.get(t, 0)) / 1e6 / a.steps for t in after if t != me), reverse=True)
            threads.setdefault(mode, []).append({"main": (after.get(me, 0) - before.get(me, 0)) / 1e6 / a.steps,
                                                 "others": sum(spent), "busy_over_1ms": sum(v > 1 for v in spent),
                                                 "top": spent[:8]})
            for k, v in host.items():
                parts.setdefault(mode, {}).setdefault(k, []).append(1e3 * v / a.steps)
            for k, f in (("minflt", "ru_minflt"), ("nvcsw", "ru_nvcsw"), ("nivcsw", "ru_nivcsw")):
                counts.setdefault(mode, {}).setdefault(k, []).append((getattr(end, f) - getattr(ru, f)) / a.steps)
            counts[mode].setdefault("mhz", []).append(cpu_mhz(this_cpu()))
            return 1e3 * (time.perf_counter() - t) / a.steps
        finally:
            sys.setswitchinterval(switch)
            os.sched_setaffinity(0, everywhere)
            for proc in spin:
                proc.kill()
                proc.wait()

    for mode in modes:  # warm-up: kernels compiled, warm layouts uploaded, allocator grown
        block(mode)
    parts.clear()
    counts.clear()
    threads.clear()
    machine.clear()
    per: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(a.rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for mode in order:
            per[mode].append(block(mode))
    out = {"config": a.config, "steps_per_block": a.steps, "rounds": a.rounds, "batches": a.batches, "busy": a.busy,
           "tokens_per_step": B * cfg.data.seq_len, "workers": workers, "cpus": len(everywhere),
           "pin": a.pin, "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "spare_split": [sorted(c) for c in split] if split and spare is not None else None,
           "device": torch.cuda.get_device_name(dev) if cuda else a.device,
           "contexts_build_ms": round(build_ms, 2), "contexts_unpickle_ms": round(unpickle_ms, 2),
           "contexts_pickled_bytes": int(np.median([len(p) for p in pickled])), "static": static, "modes": {}}
    for mode in modes:
        ratios = [m / w for m, w in zip(per[mode], per["window"])]
        out["modes"][mode] = {"ms_per_step": [round(v, 3) for v in per[mode]],
                              "median_ms": round(statistics.median(per[mode]), 3),
                              "median_ratio_to_window": round(statistics.median(ratios), 4),
                              "host_ms_per_step": {k: round(statistics.median(v), 3) for k, v in parts[mode].items()},
                              "launching_thread_per_step": {k: statistics.median(v) for k, v in counts[mode].items()
                                                            if None not in v},
                              "machine_cpu_share": {k: statistics.median(v) for k, v in machine.get(mode, {}).items()},
                              "threads_cpu_ms_per_step": {
                                  "main": round(statistics.median(b["main"] for b in threads[mode]), 3),
                                  "others": round(statistics.median(b["others"] for b in threads[mode]), 3),
                                  "busy_over_1ms": statistics.median(b["busy_over_1ms"] for b in threads[mode]),
                                  "top": [round(statistics.median(b["top"][i] for b in threads[mode]), 3)
                                          for i in range(min(len(b["top"]) for b in threads[mode]))]}}
        print(f"{mode:>13} {statistics.median(per[mode]):7.2f} ms/step  x{statistics.median(ratios):.3f} of window"
              f"  [{min(per[mode]):.2f}-{max(per[mode]):.2f}]"
              + "".join(f"  {k} {v:.2f}" for k, v in out["modes"][mode]["host_ms_per_step"].items())
              + "".join(f"  {k} {v:.3g}" for k, v in out["modes"][mode]["launching_thread_per_step"].items())
              + "".join(f"  machine_{k} {v:.3g}" for k, v in out["modes"][mode]["machine_cpu_share"].items())
              + "  threads " + " ".join(f"{k}={v}" for k, v in out["modes"][mode]["threads_cpu_ms_per_step"].items()))
    print(f"contexts: built {build_ms:.1f} ms/batch here, unpickled {unpickle_ms:.2f} ms "
          f"({out['contexts_pickled_bytes'] / 1e6:.2f} MB)")
    if a.gpu_time:
        out["gpu_time"] = {}
        for mode in modes:
            ms, gpu = gpu_block(block, mode, a.steps)
            out["gpu_time"][mode] = {"ms_per_step": round(ms, 3), **gpu}
            print(f"{mode:>13} under the profiler {ms:7.2f} ms/step: GPU busy {gpu['gpu_ms_per_step']:.2f} ms/step, "
                  f"spattern's kernels {gpu['attention_kernels']['ms_per_step']:.2f} ms in "
                  f"{gpu['attention_kernels']['launches_per_step']:.0f} launches")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    if profiled:
        import cProfile
        import io
        import pstats

        with open(a.cprofile_out, "w") as f:
            for mode in profiled:
                prof = cProfile.Profile()
                prof.enable()
                ms = block(mode)
                prof.disable()
                text = io.StringIO()
                st = pstats.Stats(prof, stream=text).strip_dirs().sort_stats("tottime")
                st.print_stats(45)
                total = sum(v[2] for v in st.stats.values())  # tottime over every function: the profiled CPU time
                f.write(f"=== {mode}: {a.steps} steps at {ms:.2f} ms/step under the profiler; functions' own time "
                        f"{1e3 * total / a.steps:.2f} ms/step (divide the table's seconds by {a.steps} for per step)\n")
                f.write(text.getvalue())
    pool.close()
    for extra in (spooled, spare):
        if extra is not None:
            extra.close()
    if aux is not None:
        aux.shutdown(wait=False, cancel_futures=True)
        os.unlink(echo.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
