"""Readers of ``results/``: everything the report shows comes through here, with the files it came from.

``load_study(dirs)`` walks the given results folders (sorted, so the order never depends on the
file system) and classifies what it finds by content, tolerating extra keys:

- **runs**: a folder with ``metrics.json`` holding ``experiment`` and ``run_id`` (the experiment
  runner's layout: ``config.toml``, ``metrics.json``, ``per_example.jsonl``, ``env.json``; a training
  run adds the loop's ``metrics.jsonl``; an indexer run may add ``indexer_snapshot.json``). A run
  whose ``status`` is not ``finished`` (one in progress, or stopped) is skipped until it is.
- **significance tables**: JSON with ``rows`` and ``correction`` (``spattern compare --json``).
- **experiment records** (``experiment.json``, written by ``spattern run``): ``experiment``, ``kind``,
  ``baseline``, ``runs`` (the run folders the config expands to; absent in records written before it
  was kept) and, for a check of another experiment's setting, ``check_of``.
- **matching records** (``matches.json``, written by ``spattern run``): per family and setting, the
  ``key`` it was matched under and the ``match`` found (``pattern``, ``achieved``, ``target``, ``note``:
  set when the target was out of the family's reach).
- **attention benchmarks**: JSON with a ``results`` list of cells holding ``N`` and ``ms``
  (``spattern bench attention``); a cell with ``"backward": true`` is forward+backward.
- **top-k build benchmarks**: JSON with ``build_eager_ms``; **compile benchmarks**: JSON with
  ``headline``/``analytic_vs_generic``.
- **training curves** outside run folders: ``<name>_metrics.jsonl`` beside ``<name>_run.json``
  (the training loop's files, as in ``results/train_h100/``).
- **indexer snapshots** (``indexer_snapshot.json``): ``{"block": int, "heads": [{"scores":
  [[float]] (N, N), "selected": [[0/1]] (R, C) blocks, "attention": [[float]] (N, N)}, ...]}``.

Anything else is listed in ``Study.skipped`` with the reason. Every object keeps ``sources`` (the
files it was read from) so the manifest can trace each figure and table to its inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from spattern.evaluation.trials import unique_trials
from spattern.utils.io import read_jsonl

QUALITY_METRICS = ("ppl", "nll", "kl", "top1_agreement", "top1", "recall", "passkey_correct")
_FAMILY_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_NOT_FAMILIES = {"causal", "heads"}


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def family(pattern: str | None) -> str:
    """The series key of a pattern string: its family names in order of appearance, joined by '+'
    (``"(local(512) | sink(64)) & causal"`` -> ``"local+sink"``); no pattern or dense -> ``"dense"``."""
    if pattern is None or str(pattern).strip() in ("", "dense", "none", "full", "causal"):
        return "dense"
    names: list[str] = []
    for m in _FAMILY_RE.finditer(str(pattern)):
        n = m.group(1)
        if n not in _NOT_FAMILIES and n not in names:
            names.append(n)
    return "+".join(names) if names else str(pattern).strip()


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _jsonl(path: Path) -> list[dict]:
    return read_jsonl(path, on_torn=lambda msg: warnings.warn(msg, stacklevel=3))


@dataclass
class Run:
    """One finished (or partial) run of an experiment."""

    dir: Path
    experiment: str
    run_id: str
    label: str
    pattern: str | None
    params: dict
    status: str
    metrics: dict
    timings: dict
    env: dict | None
    sources: list[Path]
    per_example_path: Path | None = None
    curve_path: Path | None = None
    snapshot_path: Path | None = None
    raw: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Series key (colour, legend): ``params.family`` if the run names one; else the run's
        ``label`` when it is a name (the runner labels matched families by name: ``window``,
        ``longformer``; training variants: ``indexer``), not a pattern string nor the run id; else
        ``family(pattern)``."""
        fam = self.params.get("family") if isinstance(self.params, dict) else None
        if fam:
            return str(fam)
        lab = self.label.strip()
        named = bool(lab) and lab != self.run_id and "(" not in lab  # "causal" is a name and a pattern
        if named and lab.split("@")[0] != "dense":  # a training variant of a dense model too (indexer)
            return lab
        if family(self.pattern) == "dense":
            return "dense"
        return lab if named else family(self.pattern)

    @property
    def seed(self):
        """``seed`` of metrics.json (the runner's), else ``params.seed``."""
        if self.raw.get("seed") is not None:
            return self.raw["seed"]
        return self.params.get("seed") if isinstance(self.params, dict) else None

    @property
    def context(self):
        """The sequence length of the run: ``context`` of metrics.json, else ``params.seq_len``."""
        v = self.raw.get("context", self.params.get("seq_len") if isinstance(self.params, dict) else None)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    @property
    def density(self) -> float | None:
        """The cost the run was matched at: ``metrics[params.measure]`` when the runner matched
        patterns by ``block_density`` or ``density``, else ``metrics.density`` (or ``params.density``)."""
        measure = self.density_measure
        v = self.metrics.get(measure, self.params.get(measure) if isinstance(self.params, dict) else None)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    @property
    def density_measure(self) -> str:
        m = self.params.get("measure") if isinstance(self.params, dict) else None
        return m if m in ("block_density", "density") and m in self.metrics else "density"

    @property
    def target(self) -> float | None:
        """The cost the run was matched to (``params.target``); None for a run that was not matched."""
        t = self.params.get("target") if isinstance(self.params, dict) else None
        return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None

    @cached_property
    def config(self) -> dict:
        """The run's ``config.toml`` (empty when absent or unreadable)."""
        path = self.dir / "config.toml"
        try:
            import tomllib
        except ImportError:  # Python 3.10
            return {}
        try:
            with open(path, "rb") as f:
                return tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError):
            return {}

    @property
    def block(self) -> int | None:
        """The block size the run compiled its pattern with (``setup.block`` of config.toml)."""
        b = (self.config.get("setup") or {}).get("block", self.config.get("block"))
        b = b[0] if isinstance(b, list) and b else b
        return int(b) if isinstance(b, int) and not isinstance(b, bool) and b > 0 else None

    @cached_property
    def per_example(self) -> list[dict]:
        """The run's per-example records, one per trial (two ids with the same input count once)."""
        return unique_trials(_jsonl(self.per_example_path)) if self.per_example_path else []

    @cached_property
    def curve(self) -> list[dict]:
        return _jsonl(self.curve_path) if self.curve_path else []

    def values(self, metric: str) -> np.ndarray:
        """Finite per-example values of ``metric`` (float64 [n]), in file order."""
        vals = [float(v) for v in (r.get(metric) for r in self.per_example) if isinstance(v, (int, float))]
        arr = np.array(vals, dtype=np.float64)  # bools count as 0/1 (e.g. ``correct``)
        return arr[np.isfinite(arr)]


@dataclass
class Curve:
    """A training curve: the loop's ``metrics.jsonl`` records of one (pattern, seed)."""

    name: str
    key: str
    seed: Any
    records: list[dict]
    sources: list[Path]
    experiment: str | None = None


def family_name(fam) -> str:
    """One name per benchmark layout family: the benchmarks write band_landmark; the oldest files
    have none (they timed band + landmark only)."""
    return str(fam or "band+landmark").replace("band_landmark", "band+landmark")


@dataclass
class Found:
    """A JSON document of a known kind and the file it came from."""

    kind: str
    data: dict
    path: Path


@dataclass
class Study:
    roots: list[Path]
    runs: list[Run] = field(default_factory=list)
    significance: list[Found] = field(default_factory=list)
    bench: list[Found] = field(default_factory=list)
    topk: list[Found] = field(default_factory=list)
    compile_bench: list[Found] = field(default_factory=list)
    memory: list[Found] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    snapshots: list[Found] = field(default_factory=list)
    throughput: list[Found] = field(default_factory=list)
    meta: list[Found] = field(default_factory=list)  # each experiment folder's experiment.json (spattern run)
    matches: list[Found] = field(default_factory=list)  # each experiment folder's matches.json (spattern run)
    reach: list[Found] = field(default_factory=list)  # scripts/mqar_reach.py: MQAR queries a pattern's layers connect
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    unfinished: list[tuple[Path, dict]] = field(default_factory=list)  # run folders not finished, their metrics.json

    def check_of(self) -> dict[str, str]:
        """experiment -> the experiment it checks one setting of (``check_of`` in its config)."""
        return {str(f.data["experiment"]): str(f.data["check_of"]) for f in self.meta if f.data.get("check_of")}

    def experiments(self) -> list[str]:
        return sorted({r.experiment for r in self.runs})

    def bench_cells(self) -> list[tuple[dict, Path]]:
        """Attention benchmark cells with their file, each with ``backward`` set (from the cell's
        ``backward`` or ``pass_ == "fwd+bwd"``, else the file's ``config.backward``), ``family``
        (the cell's, else the file's description) and ``device`` (the GPU of the file's environment,
        ``gpu_name``); a later file's cell replaces an earlier one with the same (N, D, causal, family,
        density_target, backward, device)."""
        cells: dict[tuple, tuple[dict, Path]] = {}
        for f in self.bench:
            cfg = f.data.get("config") if isinstance(f.data.get("config"), dict) else {}
            device = gpu_name(file_env(f.data))
            for c in f.data.get("results", []):
                if not isinstance(c, dict) or "N" not in c or not isinstance(c.get("ms"), dict):
                    continue
                bwd = c.get("backward")
                if bwd is None:
                    mode = c.get("pass_", c.get("pass"))
                    bwd = mode == "fwd+bwd" if mode is not None else bool(cfg.get("backward"))
                c = {**c, "backward": bool(bwd), "family": family_name(c.get("family")), "device": device}
                k = (c.get("N"), c.get("D"), bool(c.get("causal")), c["family"],
                     c.get("density_target", c.get("density")), c["backward"], device)
                cells[k] = (c, f.path)
        return [cells[k] for k in sorted(cells, key=lambda t: tuple(str(x) for x in t))]

    def envs(self) -> list[tuple[dict, Path]]:
        out = [(r.env, r.dir / "env.json") for r in self.runs if r.env]
        for f in self.bench + self.memory:
            env = file_env(f.data)
            if env:
                out.append((env, f.path))
        return out


def file_env(data: dict) -> dict:
    """The environment a benchmark file records: its ``env``, else its first run's (files that merge
    repeated runs); {} when none."""
    runs = data.get("runs") if isinstance(data.get("runs"), dict) else {}
    env = data.get("env") or next((r.get("env") for r in runs.values() if isinstance(r, dict) and r.get("env")), None)
    return env if isinstance(env, dict) else {}


def gpu_name(env: dict) -> str:
    """A short name for the machine of an environment: the GPU model ("H200" from "NVIDIA H200",
    "H100" from "NVIDIA H100 80GB HBM3"; older files name it in ``device``), "CPU" for a CPU
    environment, "unknown" without a name."""
    dev = env.get("device")
    name = env.get("name") or (dev if dev not in ("cpu", "cuda") else None)
    if isinstance(name, str) and name.strip():
        return name.strip().removeprefix("NVIDIA ").split()[0]
    return "CPU" if dev == "cpu" else "unknown"


def _load_run(d: Path, study: Study) -> bool:
    """Read the run folder ``d`` into ``study``; False when it is not a run folder after all (its
    files are then read one by one)."""
    mpath = d / "metrics.json"
    try:
        m = _read_json(mpath)
    except (OSError, json.JSONDecodeError) as e:
        study.skipped.append((mpath, f"unreadable metrics.json: {e}"))
        return False
    if not isinstance(m, dict) or "experiment" not in m or "run_id" not in m:
        study.skipped.append((mpath, "metrics.json without experiment/run_id"))
        return False
    if m.get("status") not in ("finished", None):  # a run in progress (or stopped) has partial results
        study.skipped.append((mpath, f"run not finished (status {m.get('status')!r}): left out until it is"))
        study.unfinished.append((d, m))
        return True
    sources = [mpath]
    env = None
    if (d / "env.json").exists():
        try:
            env = _read_json(d / "env.json")
            sources.append(d / "env.json")
        except (OSError, json.JSONDecodeError) as e:
            study.skipped.append((d / "env.json", f"unreadable: {e}"))
    if (d / "config.toml").exists():
        sources.append(d / "config.toml")
    per_ex = d / "per_example.jsonl"
    curve = d / "metrics.jsonl"
    snap = d / "indexer_snapshot.json"
    run = Run(dir=d, experiment=str(m["experiment"]), run_id=str(m["run_id"]), label=str(m.get("label") or m["run_id"]),
              pattern=m.get("pattern"), params=m.get("params") or {}, status=str(m.get("status", "unknown")),
              metrics={k: v for k, v in (m.get("metrics") or {}).items()}, timings=m.get("timings") or {},
              env=env, sources=sources, per_example_path=per_ex if per_ex.exists() else None,
              curve_path=curve if curve.exists() else None, snapshot_path=snap if snap.exists() else None,
              raw=m)
    study.runs.append(run)
    if run.curve_path is not None:
        study.curves.append(Curve(name=run.label, key=run.key, seed=run.seed, records=run.curve,
                                  sources=[run.curve_path, mpath], experiment=run.experiment))
    if run.snapshot_path is not None:
        try:
            study.snapshots.append(Found("indexer_snapshot", _read_json(snap), snap))
        except (OSError, json.JSONDecodeError) as e:
            study.skipped.append((snap, f"unreadable: {e}"))
    return True


def _classify(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if "rows" in data and "correction" in data:
        return "significance"
    res = data.get("results")
    if isinstance(res, list) and any(isinstance(c, dict) and "N" in c and "ms" in c for c in res):
        return "bench"
    if "build_eager_ms" in data:
        return "topk"
    if "headline" in data and "analytic_vs_generic" in data:
        return "compile_bench"
    mem = data.get("memory")
    if isinstance(mem, list) and mem and all(isinstance(r, dict) and isinstance(r.get("bytes"), dict) for r in mem):
        return "memory"
    if "heads" in data and isinstance(data.get("heads"), list) and data["heads"] and "scores" in data["heads"][0]:
        return "indexer_snapshot"
    if set(data) >= {"experiment", "kind", "baseline"} and not isinstance(data.get("rows"), list):
        return "meta"  # experiment.json: what spattern run records of the config beside the runs
    if data and all(isinstance(v, dict) and isinstance(v.get("match"), dict) and "pattern" in v["match"]
                    and "key" in v for v in data.values()):
        return "matches"  # matches.json: what the matching found per family (spattern.experiments.inputs)
    runs = data.get("runs")
    if isinstance(runs, list) and runs and all(isinstance(r, dict) and "tok_per_s_median" in r
                                               and "ratio_to_baseline" in r for r in runs):
        return "throughput"  # scripts/throughput_summary.py: training runs of one device call
    if isinstance(data.get("by_distance"), list) and "layers" in data and "experiment" in data:
        return "reach"  # scripts/mqar_reach.py: per pattern and distance, reach and routes against accuracy
    return None


SUPERSEDED = "superseded"
RAW = "raw"  # per-run files already merged into a file above them (e.g. benchmark repeats -> medians)


def load_study(dirs, exclude=()) -> Study:
    """Read every results folder in ``dirs`` (a path or a list of paths), skipping anything under
    the folders in ``exclude`` (a report built inside a results folder) and under any folder named
    ``superseded`` (measurements kept as evidence but replaced by later ones, e.g. a benchmark taken
    before a fix) or ``raw`` (per-run files merged into one above, e.g. repeated benchmark runs whose
    medians are the file read). Missing folders warn."""
    roots = [Path(d) for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs)]
    skip = [Path(e).resolve() for e in exclude]
    study = Study(roots=roots)
    for root in roots:
        if not root.exists():
            warnings.warn(f"results folder {root} does not exist; nothing read from it", stacklevel=2)
            continue
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and not {SUPERSEDED, RAW} & set(p.relative_to(root).parts)
                       and not any(e == p.resolve() or e in p.resolve().parents for e in skip))
        run_dirs = sorted({p.parent for p in files if p.name == "metrics.json"})
        in_run = {d for d in run_dirs if _load_run(d, study)}
        for p in files:
            if any(d in p.parents for d in in_run):
                continue
            if p.suffix == ".jsonl" and p.name.endswith("_metrics.jsonl"):
                _load_loose_curve(p, study)
                continue
            if p.suffix != ".json" or p.name.endswith("_run.json"):
                continue
            try:
                data = _read_json(p)
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
                study.skipped.append((p, f"unreadable JSON: {e}"))
                continue
            kind = _classify(data)
            if kind is None:
                study.skipped.append((p, "not a kind the report reads"))
            else:
                getattr(study, {"indexer_snapshot": "snapshots"}.get(kind, kind)).append(Found(kind, data, p))
    return study


def _load_loose_curve(p: Path, study: Study) -> None:
    stem = p.name[: -len("_metrics.jsonl")]
    run_json = p.with_name(f"{stem}_run.json")
    pattern, seed, sources = None, None, [p]
    if run_json.exists():
        try:
            info = _read_json(run_json)
            sources.append(run_json)
            model = (info.get("config") or {}).get("model") or {}
            pattern = model.get("pattern")
            seed = info.get("seed", ((info.get("config") or {}).get("train") or {}).get("seed"))
        except (OSError, json.JSONDecodeError) as e:
            study.skipped.append((run_json, f"unreadable: {e}"))
    records = _jsonl(p)
    if not any("loss" in r for r in records):
        study.skipped.append((p, "no training loss records"))
        return
    study.curves.append(Curve(name=stem, key=family(pattern), seed=seed, records=records, sources=sources,
                              experiment=p.parent.name))


# --- statistics for bands ------------------------------------------------------------------------

def mean_ci(values, confidence: float = 0.95, method: str = "t", seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high). ``t`` (default): mean +- t_{n-1, (1+confidence)/2} * s / sqrt(n);
    ``bootstrap``: percentile bootstrap of the mean (scipy, 2000 resamples, fixed seed).
    Fewer than two values: (mean, nan, nan)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if x.size < 2 or float(x.std()) == 0.0:
        return (m, math.nan, math.nan) if x.size < 2 else (m, m, m)
    if method == "t":
        h = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
        return m, m - h, m + h
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=2000, method="percentile",
                          random_state=np.random.default_rng(seed), vectorized=True)
    return m, float(res.confidence_interval.low), float(res.confidence_interval.high)
