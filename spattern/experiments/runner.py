"""Running an experiment: every run of the sweep, finished ones skipped, interrupted ones resumed,
with a progress bar per run and for the whole sweep (rich, with an ETA)."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from spattern.experiments.config import ExperimentConfig
from spattern.experiments.grow import adopt, describe, grown_from, prune_grown
from spattern.experiments.runs import RunSpec, corpus_of, expand, python_structure_off_code
from spattern.utils.errors import UserError

# training-config keys that say where and how long a run executes, not what it computes: `--runtime`
# sets them without changing the run's id (a GPU config's run finished on a CPU lands in its own folder;
# its metrics.json records the overrides, "runtime", and the device it trained on, "train.device")
RUNTIME_KEYS = ("train.device", "train.max_seconds")


def check_runtime(items: list[str], cfg: ExperimentConfig) -> list[str]:
    """``--runtime KEY=VALUE`` items for ``cfg``'s runs: each KEY one of RUNTIME_KEYS, a ``train`` experiment."""
    if items and cfg.kind != "train":
        raise UserError(f"--runtime applies to kind = \"train\" experiments; {cfg.name} is {cfg.kind!r}")
    for item in items:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or key not in RUNTIME_KEYS:
            raise UserError(f"--runtime expects KEY=VALUE with KEY one of {', '.join(RUNTIME_KEYS)}, got {item!r}")
    return list(items)


def _progress():
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn())


def run_one(cfg: ExperimentConfig, spec: RunSpec, progress=None, log=print, runtime: list[str] = (),
            jobs: int = 1) -> dict:
    """One run: start (config, env, status running) unless resuming, execute, finish. ``runtime``:
    checked ``--runtime`` overrides (``train`` runs only); ``jobs``: how many runs shared the machine
    (``run_experiment``'s ``jobs``), recorded in a train run's metrics.json when more than one."""
    rd = spec.dir
    if rd.metrics() is None:
        rd.start(spec.resolved, spec.seed, run={"label": spec.label, "pattern": spec.pattern})
        rd.write_metrics({"experiment": cfg.name, "run_id": rd.path.name, "label": spec.label,
                          "pattern": spec.pattern, "seed": spec.seed, "status": "running"})
    else:
        log(f"[run] resuming {rd.path} ({len(rd.examples(log=log))} examples already done)")
    if cfg.kind == "evaluate":
        from spattern.experiments.lm_eval import evaluate_run

        return evaluate_run(cfg, spec, progress)
    return _train_run(cfg, spec, log, list(runtime), jobs)


def _train_config(cfg: ExperimentConfig, spec: RunSpec, runtime: list[str] = ()):
    """The training config of a ``train`` run: the experiment's training TOML, its overrides (and the
    variant's), then the run's own keys and ``runtime``."""
    from spattern.train.config import load_train_config

    t = spec.resolved["train"]
    base = Path(cfg.source).parent if cfg.source else Path(".")
    over = [*t["overrides"], f"name={_q(cfg.name + '-' + spec.dir.path.name)}",
            f"model.pattern={_q(spec.pattern)}", f"train.seed={spec.seed}",
            f"train.out_dir={_q(str(spec.dir.path))}", f"data.seq_len={spec.context}", "train.progress=false", *runtime]
    return load_train_config(base / t["config"], over)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_training_config(cfg: ExperimentConfig, spec: RunSpec) -> dict[str, tuple]:
    """A finished ``train`` run's training config (its ``config.toml``) against the one the experiment
    gives it now: {key: (then, now)} for each key whose value differs. A run's id hashes the training
    TOML's path and the overrides, not the file's content, so an edit of the file would otherwise leave
    runs of the old config standing as finished. Left out: RUNTIME_KEYS, where the run's files are
    (``name``, ``train.out_dir``, ``train.ckpt_dir``: a results folder given another way, as a relative or an
    absolute path), ``train.progress``, and keys one side lacks (fields added to or removed from the config
    since)."""
    import tomllib

    from spattern.utils.config import to_toml

    path = spec.dir.path / "config.toml"
    if not path.is_file():
        return {}
    then = _flat(tomllib.loads(path.read_text()))
    now = _flat(tomllib.loads(to_toml(_train_config(cfg, spec))))
    skip = {*RUNTIME_KEYS, "name", "train.out_dir", "train.ckpt_dir", "train.progress"}
    return {k: (then[k], now[k]) for k in sorted(then.keys() & now.keys()) if k not in skip and then[k] != now[k]}


def _check_finished_train_runs(cfg: ExperimentConfig, finished: list[RunSpec]) -> None:
    """Refuse to skip finished runs whose training config has changed since they were trained."""
    stale = {spec.dir.path.name: d for spec in finished if (d := changed_training_config(cfg, spec))}
    if not stale:
        return
    keys = sorted({k for d in stale.values() for k in d})
    example = next(iter(stale.values()))
    shown = ", ".join(f"{k}: {v[0]!r} then, {v[1]!r} now" for k, v in list(example.items())[:4])
    raise UserError(
        f"{len(stale)} finished run(s) of {cfg.name} were trained with another training config than "
        f"{cfg.train.config} gives now (keys {', '.join(keys)}; e.g. {next(iter(stale))}: {shown}). A run's id "
        f"does not hash the training TOML's content: put the change in the experiment's [train] overrides "
        f"(the runs then get new ids), or restore the file, or delete those runs to train them again.")


def _train_run(cfg: ExperimentConfig, spec: RunSpec, log, runtime: list[str], jobs: int = 1) -> dict:
    """A ``train`` run: the training loop writes the same run-directory files (it resumes from its
    checkpoint and recognises a finished run itself)."""
    from spattern.train.loop import train

    tcfg = _train_config(cfg, spec, runtime)
    summary = train(tcfg, log=log)
    m = {"experiment": cfg.name, "run_id": spec.dir.path.name, "label": spec.label, "pattern": spec.pattern,
         "seed": spec.seed, "context": spec.context, "status": summary["status"],
         "metrics": {"loss": summary.get("val_loss"), "val_ppl": summary.get("val_ppl"),
                     "final_train_loss": summary.get("final_loss"),
                     "tokens_per_s": summary["tokens"] / max(summary["seconds"], 1e-9),
                     **{k: v for k, v in summary.items() if k.startswith("mqar_accuracy")}},  # data.corpus = "mqar"
         "timings": {"train": summary["seconds"]}, "train": summary}
    if runtime:
        m["runtime"] = runtime
    if jobs > 1:  # its tokens/s and step time were measured on a shared device (report: "<device> xN")
        m["jobs"] = jobs
    # step time and the indexer's statistics over training (experiments/curves.py)
    from spattern.experiments.curves import train_curves

    curve_metrics, m["curves"] = train_curves(spec.dir.path / "metrics.jsonl")
    m["metrics"].update(curve_metrics)
    spec.dir.write_metrics(m)
    return m


def _q(s: str) -> str:
    import json

    return json.dumps(s)


def select(runs: list, only: list[str] | None = None, by_seed: bool = False) -> list:
    """The runs labelled ``only`` (all when None), in the sweep's order (pattern by pattern), or with
    ``by_seed`` seed by seed (every pattern of the first seed, then of the next), so that a sweep stopped
    at a deadline leaves complete sets of runs paired by seed."""
    runs = [r for r in runs if not only or r.label in only]
    return sorted(runs, key=lambda r: r.seed) if by_seed else runs


def check_jobs(jobs: int, cfg: ExperimentConfig) -> int:
    """``--jobs N``: N >= 1; more than one only for ``train`` experiments (small models that leave a GPU
    mostly idle; an ``evaluate`` run already fills the machine it runs on)."""
    if not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs expects a whole number >= 1, got {jobs!r}")
    if jobs > 1 and cfg.kind != "train":
        raise UserError(f"--jobs > 1 applies to kind = \"train\" experiments; {cfg.name} is {cfg.kind!r}")
    return jobs


def write_record(cfg: ExperimentConfig, planned: list) -> None:
    """``<out_dir>/experiment.json``: what `spattern compare <folder>` needs from the config (its
    baseline), beside the runs, and the run folders the config expands to (``planned``, whatever --only
    runs now): the report names those not finished. Rewritten only when it changes: a finished
    experiment's record stays as it is unless its config changed (or the record is older than ``runs``)."""
    from spattern.utils.io import write_json

    meta = cfg.out_dir / "experiment.json"
    info = {"experiment": cfg.name, "kind": cfg.kind, "baseline": cfg.baseline,
            "runs": [s.dir.path.name for s in planned]}
    if cfg.check_of:  # only when set: the experiment.json of every other experiment stays as it was
        info["check_of"] = cfg.check_of
    if not meta.is_file() or json.loads(meta.read_text()) != info:
        write_json(meta, info)


def run_experiment(cfg: ExperimentConfig, log=print, only: list[str] | None = None,
                   by_seed: bool = False, runtime: list[str] = (), jobs: int = 1) -> list[dict]:
    """Run every run of the sweep (``select``: ``only``, ``by_seed``) that has not finished; returns every
    run's summary. ``runtime``: ``--runtime`` overrides (``check_runtime``) for the runs executed here.
    ``jobs``: runs executed at once, each in its own process (``_run_parallel``)."""
    runtime = check_runtime(runtime, cfg)
    jobs = check_jobs(jobs, cfg)
    if off := python_structure_off_code(cfg):
        log(f"[run] warning: {', '.join(off)} read the Python statement tree (structure='python') of corpus "
            f"{corpus_of(cfg)!r}, which is not Python source: where a line does not parse the tree falls back to "
            f"the text tree, so these runs are structure='text' in all but name (drop them in [match] drop)")
    planned = expand(cfg)
    runs = select(planned, only, by_seed)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    write_record(cfg, planned)
    summaries, todo, finished = [], [], []
    if cfg.kind == "evaluate":
        prune_grown(runs, log)
    for spec in runs:
        if cfg.kind == "evaluate" and (grown := grown_from(spec)) is not None:  # more passkey seeds, say
            adopt(spec, *grown)
            log(f"[run] {spec.dir.path.name} grows {grown[0].name} (adds {describe(grown[1])}): only the new "
                f"examples are computed")
        if spec.dir.finished():
            summaries.append(spec.dir.metrics())
            finished.append(spec)
        else:
            todo.append(spec)
    if cfg.kind == "train":
        _check_finished_train_runs(cfg, finished)
    log(f"[run] {cfg.name}: {len(runs)} runs, {len(runs) - len(todo)} finished (skipped), {len(todo)} to run "
        f"-> {cfg.out_dir}")
    t0 = time.perf_counter()
    with _stoppable(log), _progress() as progress:
        sweep = progress.add_task(f"{cfg.name}", total=len(todo))
        if jobs > 1 and len(todo) > 1:
            summaries += _run_parallel(cfg, todo, runtime, jobs, progress, sweep)
        else:
            for spec in todo:
                summaries.append(run_one(cfg, spec, progress, log=progress.console.print, runtime=runtime))
                progress.advance(sweep)
    if todo:
        log(f"[run] {cfg.name}: {len(todo)} runs in {time.perf_counter() - t0:.1f} s"
            + (f", {min(jobs, len(todo))} at a time" if jobs > 1 else ""))
    return summaries


def _prefixed(name: str, *args, **kwargs) -> None:
    print(f"[{name}]", *args, **kwargs, flush=True)


def worker_threads(jobs: int, cpus: int, env: dict) -> int | None:
    """Torch's CPU threads in each of ``jobs`` run processes on ``cpus`` CPUs: an equal share (at least
    one), so that N processes do not each start a thread per CPU; None when ``OMP_NUM_THREADS`` is set
    (the user's choice stands)."""
    if env.get("OMP_NUM_THREADS"):
        return None
    return max(1, cpus // max(jobs, 1))


_STOP = None  # in a worker process of _run_parallel: the sweep's stop event (set by _init_worker)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _restore_signal(sig, handler) -> None:
    """Put back a handler ``signal.getsignal`` returned (None: one set from C, restored as the default)."""
    import signal

    signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextmanager
def _stoppable(log):
    """While a sweep runs, SIGTERM stops it as SIGINT does: ``timeout``'s default signal, a batch
    scheduler's notice before it kills a job. Both send it to every process of the sweep, so its ``--jobs``
    workers end at once (SIGTERM's default: they keep their last checkpoints, as after a SIGKILL, and
    ``spattern run`` again resumes them); a worker with a handler of its own would go on to the next queued
    run when a crashed pool terminates it. A process started with SIGINT ignored (a background job of a
    non-interactive shell: ``cmd &`` in a script) cannot be stopped by Ctrl-C or ``timeout -s INT``;
    Python keeps the inherited SIG_IGN, so this is said once, at the start. Only in the main thread
    (signal handlers can be set nowhere else); the previous handler is put back after the sweep."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        log("[run] SIGINT is ignored in this process (it was started with SIGINT ignored, e.g. as a "
            "background job of a script): Ctrl-C and `timeout -s INT` will not stop the sweep; SIGTERM will")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)
        yield
    finally:
        _restore_signal(signal.SIGTERM, previous)


def _init_worker(stop) -> None:
    global _STOP
    _STOP = stop


def _one_in_worker(cfg: ExperimentConfig, spec: RunSpec, runtime: list[str], jobs: int) -> dict | None:
    import os

    if _STOP is not None and _STOP.is_set():  # the sweep was interrupted: a run already queued is not started
        return None
    threads = worker_threads(jobs, len(os.sched_getaffinity(0)), dict(os.environ))
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return run_one(cfg, spec, None, log=partial(_prefixed, spec.dir.path.name), runtime=runtime, jobs=jobs)


def _shut_down_through_interrupts(pool) -> None:
    """``pool.shutdown`` (queued runs cancelled, the workers' running runs awaited) with further SIGINTs
    and SIGTERMs ignored until it is done. ``timeout`` signals the command and then its process group, so
    the sweep's process can get a second signal while it shuts down. On a device call (Python 3.12, 16
    workers) a second SIGINT did, inside the shutdown's join; the pool's manager thread then died
    (``OSError: handle is closed``) and the call hung to its limit with the workers alive
    (results/study_device_logs, call 63). Not reproduced on a 2-CPU machine (Python 3.11 and 3.12.1), with
    or without this guard. An interrupt that lands before the signals are ignored restarts the shutdown,
    which is idempotent."""
    import signal

    both = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in both}
    try:
        while True:
            try:
                for s in both:
                    signal.signal(s, signal.SIG_IGN)
                pool.shutdown(wait=True, cancel_futures=True)
                return
            except KeyboardInterrupt:
                continue
    finally:
        for s in both:
            _restore_signal(s, previous[s])


def _run_parallel(cfg: ExperimentConfig, todo: list[RunSpec], runtime: list[str], jobs: int, progress,
                  sweep) -> list[dict]:
    """``todo``'s runs, ``jobs`` at a time, each in a fresh (spawned: CUDA does not survive a fork)
    process; their log lines carry the run's folder name. Every run is attempted; the runs that raised
    are named in one error at the end (their folders keep their checkpoints: the next call resumes them).
    An interrupt (Ctrl-C, ``timeout -s INT``, or SIGTERM: ``_stoppable``; Ctrl-C and ``timeout`` signal
    the process group, so the running runs stop too; a signal to this process alone lets them finish)
    starts no further run: the pool hands a worker its next run before the current one ends, so the
    workers get a stop event and return such a run unstarted (before, they went on with it, and the
    sweep outlived its deadline by a run's length)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    summaries, failed = [], []
    n = min(jobs, len(todo))
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker, initargs=(stop,)) as pool:
        futures = {pool.submit(_one_in_worker, cfg, spec, runtime, n): spec for spec in todo}
        try:
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    summaries.append(fut.result())
                except Exception as e:  # noqa: BLE001 - reported with the run's name below
                    failed.append(f"{spec.dir.path.name}: {type(e).__name__}: {e}")
                    progress.console.print(f"[run] {spec.dir.path.name} failed: {type(e).__name__}: {e}")
                progress.advance(sweep)
        except KeyboardInterrupt:
            stop.set()
            _shut_down_through_interrupts(pool)
            raise
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(todo)} runs failed:\n  " + "\n  ".join(failed))
    return summaries


__all__ = ["RUNTIME_KEYS", "changed_training_config", "check_jobs", "check_runtime", "expand", "run_experiment",
           "run_one", "select", "worker_threads"]
