"""The checkpoint folders of the started, unfinished runs of train experiments, one per line:

    python scripts/partial_checkpoints.py experiments/<a>.toml ... [--set KEY=VALUE ...]

A run's checkpoint lives in the cache (``spattern.train.loop.run_paths``), not in its results folder, so a
device call that stops mid-run returns the run's metrics but not what it needs to resume; scripts/study_gpu.sh
packs these folders into one archive returned in 15 MiB parts (``$OUT/checkpoints.tar.gz.00``, ``.01``,
...) and restores them from those parts carried in ``.carry/``, so that the next call, on a fresh machine too, resumes those runs instead of starting them again. The
folder name hashes the run's results path as resolved there, so it matches when the calls run in the same
working directory."""
from __future__ import annotations

import argparse

from spattern.experiments.config import load_experiment
from spattern.experiments.runner import _train_config, expand
from spattern.train.loop import run_paths


def partial_checkpoints(paths: list[str], overrides: list[str] = ()) -> list[str]:
    out = []
    for path in paths:
        cfg = load_experiment(path, list(overrides))
        if cfg.kind != "train":
            continue
        for spec in expand(cfg):
            if spec.dir.path.is_dir() and not spec.dir.finished():
                ckpt = run_paths(_train_config(cfg, spec))[1]
                if ckpt.is_file():
                    out.append(str(ckpt.parent.resolve()))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--set", action="append", default=[], help="an experiment override, as spattern run's")
    a, _ = ap.parse_known_args()  # spattern run's other options (--jobs, --runtime, ...) are ignored
    print("\n".join(partial_checkpoints(a.configs, a.set)))
