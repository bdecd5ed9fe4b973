"""Experiments: a typed config -> runs -> ``results/<experiment>/<run>/`` -> comparisons.

    cfg = load_experiment("experiments/cpu_study.toml")
    run_experiment(cfg)                      # skips finished runs, resumes interrupted ones
    table = compare_experiment("results/cpu_study")

A run directory holds ``config.toml`` (the run's resolved config), ``metrics.json`` (status and
aggregate metrics), ``per_example.jsonl`` (one line per document / sequence / task example, the
unit of paired tests) and ``env.json`` (git revision, versions, device, seed). Files are written
atomically (``spattern.utils.io``); the run id is a stable hash of the run's resolved config.
"""

from spattern.experiments.config import ExperimentConfig, load_experiment
from spattern.experiments.results import compare_experiment, load_runs
from spattern.experiments.rundir import RunDir
from spattern.experiments.runner import expand, run_experiment

__all__ = ["ExperimentConfig", "load_experiment", "RunDir", "expand", "run_experiment", "load_runs",
           "compare_experiment"]
