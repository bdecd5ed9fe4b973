"""Running an experiment: every run of the sweep, finished ones skipped, interrupted ones resumed,
with a progress bar per run and for the whole sweep (rich, with an ETA)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from spattern.experiments.config import ExperimentConfig
from spattern.experiments.grow import adopt, describe, grown_from, prune_grown
from spattern.experiments.runs import RunSpec, expand
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


def run_one(cfg: ExperimentConfig, spec: RunSpec, progress=None, log=print, runtime: list[str] = ()) -> dict:
    """One run: start (config, env, status running) unless resuming, execute, finish. ``runtime``:
    checked ``--runtime`` overrides (``train`` runs only)."""
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
    return _train_run(cfg, spec, log, list(runtime))


def _train_run(cfg: ExperimentConfig, spec: RunSpec, log, runtime: list[str]) -> dict:
    """A ``train`` run: the training loop writes the same run-directory files (it resumes from its
    checkpoint and recognises a finished run itself)."""
    from spattern.train.config import load_train_config
    from spattern.train.loop import train

    t = spec.resolved["train"]
    base = Path(cfg.source).parent if cfg.source else Path(".")
    over = [*t["overrides"], f"name={_q(cfg.name + '-' + spec.dir.path.name)}",
            f"model.pattern={_q(spec.pattern)}", f"train.seed={spec.seed}",
            f"train.out_dir={_q(str(spec.dir.path))}", f"data.seq_len={spec.context}", "train.progress=false", *runtime]
    tcfg = load_train_config(base / t["config"], over)
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


def run_experiment(cfg: ExperimentConfig, log=print, only: list[str] | None = None,
                   by_seed: bool = False, runtime: list[str] = ()) -> list[dict]:
    """Run every run of the sweep (``select``: ``only``, ``by_seed``) that has not finished; returns every
    run's summary. ``runtime``: ``--runtime`` overrides (``check_runtime``) for the runs executed here."""
    runtime = check_runtime(runtime, cfg)
    runs = select(expand(cfg), only, by_seed)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    from spattern.utils.io import write_json

    # what `spattern compare <folder>` needs from the config (its baseline), beside the runs
    meta, info = cfg.out_dir / "experiment.json", {"experiment": cfg.name, "kind": cfg.kind, "baseline": cfg.baseline}
    if cfg.check_of:  # only when set: the experiment.json of every other experiment stays as it was
        info["check_of"] = cfg.check_of
    if not meta.is_file() or json.loads(meta.read_text()) != info:  # a finished experiment's files stay untouched
        write_json(meta, info)
    summaries, todo = [], []
    if cfg.kind == "evaluate":
        prune_grown(runs, log)
    for spec in runs:
        if cfg.kind == "evaluate" and (grown := grown_from(spec)) is not None:  # more passkey seeds, say
            adopt(spec, *grown)
            log(f"[run] {spec.dir.path.name} grows {grown[0].name} (adds {describe(grown[1])}): only the new "
                f"examples are computed")
        if spec.dir.finished():
            summaries.append(spec.dir.metrics())
        else:
            todo.append(spec)
    log(f"[run] {cfg.name}: {len(runs)} runs, {len(runs) - len(todo)} finished (skipped), {len(todo)} to run "
        f"-> {cfg.out_dir}")
    t0 = time.perf_counter()
    with _progress() as progress:
        sweep = progress.add_task(f"{cfg.name}", total=len(todo))
        for spec in todo:
            summaries.append(run_one(cfg, spec, progress, log=progress.console.print, runtime=runtime))
            progress.advance(sweep)
    if todo:
        log(f"[run] {cfg.name}: {len(todo)} runs in {time.perf_counter() - t0:.1f} s")
    return summaries


__all__ = ["RUNTIME_KEYS", "check_runtime", "expand", "run_experiment", "run_one", "select"]
