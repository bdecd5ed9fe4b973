"""Growing a finished run's sampled examples without redoing the rest.

A run's id hashes its whole resolved config (``rundir.run_id``), so adding a passkey seed to a config
gives every run a new id, and the runs would start again from nothing: every document re-scored to
add a few task examples. Instead, a run whose resolved config differs from a run already in the
results folder only in a *growable* list, with the old list's values among the new ones, takes that
run's directory over (``adopt``): the directory is renamed to the new id, its ``config.toml``
rewritten, and ``env.json`` records the growth (``grown``: from which run, what was added, and the
environment that adds it). The runner then resumes it: the documents and examples already in
``per_example.jsonl`` are kept (each example's id names its seed), only the new ones are computed,
and ``metrics.json`` is recomputed over all of them.

A growable list is one whose values each add examples and change no other example: the passkey
seeds (an example of seed s depends on s, its length and depth only; ``tasks/passkey.py``), and the
tasks themselves (``setup.tasks``: a task added to a run adds its examples; the added task's own
settings, ``setup.<task>``, did not matter to the run before, so they may differ too).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tomllib
from pathlib import Path

from spattern.experiments.rundir import RunDir, run_id
from spattern.experiments.runs import RunSpec
from spattern.utils.env import capture_env
from spattern.utils.io import atomic_write_text, read_json, write_json

TASKS = ("setup", "tasks")                    # paths in a run's resolved config
GROWABLE = (("setup", "passkey", "seeds"),)
_PATHS = (TASKS, *GROWABLE)                   # tasks first: an added task brings its own settings


def _get(d: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _set(d: dict, path: tuple[str, ...], value) -> dict:
    out = copy.deepcopy(d)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def grown_from(spec: RunSpec) -> tuple[Path, dict] | None:
    """The finished run of the same label and seed that ``spec`` grows, and what it adds
    (``{"setup.passkey.seeds": [2]}``); None when ``spec``'s directory exists or no run qualifies.

    A candidate qualifies when putting its growable values into ``spec``'s resolved config gives
    exactly the candidate's id: every other value is then the same. A run whose adoption by ``spec``
    was interrupted before its rename (``adopt``) qualifies again."""
    if spec.dir.path.exists():
        return None
    name = spec.dir.path.name
    prefix = name[: -len(run_id(spec.resolved))]
    best = None
    for old in sorted(spec.dir.path.parent.glob(f"{prefix}*")):
        if not re.fullmatch(re.escape(prefix) + r"[0-9a-f]{10}", old.name):
            continue
        m = RunDir(old).metrics() or {}
        if m.get("run_id") == name and m.get("grown_from") == old.name and isinstance(m.get("grown_added"), dict):
            return old, m["grown_added"]  # adopt was interrupted: its marker names this run
        if m.get("status") != "finished":
            continue
        try:
            old_cfg = tomllib.loads((old / "config.toml").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        candidate, added, ok = spec.resolved, {}, True
        for path in _PATHS:
            was, now = _get(old_cfg, path), _get(candidate, path)
            if was == now:
                continue
            if not isinstance(was, list) or not isinstance(now, list) or not set(was) < set(now):
                ok = False
                break
            candidate = _set(candidate, path, was)
            added[".".join(path)] = [v for v in now if v not in was]
            if path == TASKS:  # an added task's settings did not matter to the old run: take its values
                for task in added[".".join(path)]:
                    if _get(old_cfg, ("setup", task)) is not None:
                        candidate = _set(candidate, ("setup", task), _get(old_cfg, ("setup", task)))
        if ok and added and run_id(candidate) == old.name[len(prefix):]:
            size = sum(len(_get(old_cfg, p) or []) for p in _PATHS)
            if best is None or size > best[0]:
                best = (size, old, added)
    return None if best is None else (best[1], best[2])


def describe(added: dict) -> str:
    """``grown_from``'s "what it adds" in words: ``setup.passkey.seeds [2]``."""
    return ", ".join(f"{k} {v}" for k, v in added.items())


def adopt(spec: RunSpec, old: Path, added: dict) -> None:
    """Mark ``old`` as ``spec``'s run to resume, then rename it to ``spec``'s directory (see the module
    doc). The rename comes last: until then ``old`` keeps its name, and its marker in metrics.json
    (``run_id`` = the new name, ``grown_from``, ``grown_added``) lets ``grown_from`` find it again."""
    from spattern.utils.config import dumps_toml

    here = RunDir(old)
    m = here.metrics() or {}
    m.update({"run_id": spec.dir.path.name, "status": "running", "grown_from": old.name, "grown_added": added})
    here.write_metrics(m)
    atomic_write_text(here.config_path, dumps_toml(spec.resolved))
    env = read_json(here.env_path) if here.env_path.is_file() else {}
    if not any(g.get("from") == old.name for g in env.get("grown", [])):
        env.setdefault("grown", []).append({"from": old.name, "added": added, **capture_env()})
        write_json(here.env_path, env)
    os.rename(old, spec.dir.path)


def prune_grown(specs: list[RunSpec], log=print) -> list[Path]:
    """Remove the runs that a run of ``specs`` grew from, where both are present: a run grown on another
    machine (the GPU's) and copied back arrives under its new name beside the old one, which would
    otherwise count as a second run of the same label. An old run is removed only when its examples
    are the first lines of the grown run's (it is then wholly inside it); otherwise this refuses."""
    from spattern.utils.errors import UserError

    removed = []
    for spec in specs:
        env_path = spec.dir.env_path
        if not env_path.is_file():
            continue
        mine = None  # the grown run's examples, read once it has an old self here
        for g in read_json(env_path).get("grown", []):
            old = spec.dir.path.parent / str(g.get("from", ""))
            if not g.get("from") or old == spec.dir.path or not old.is_dir():
                continue
            if mine is None:
                mine = spec.dir.examples_path.read_bytes() if spec.dir.examples_path.is_file() else b""
            theirs = (old / "per_example.jsonl").read_bytes() if (old / "per_example.jsonl").is_file() else b""
            if not mine.startswith(theirs):
                raise UserError(f"{old} and {spec.dir.path} are both here; the second grew from the first, but "
                                f"the first holds examples the second does not: move one of them aside")
            shutil.rmtree(old)
            removed.append(old)
            log(f"[run] removed {old.name}: {spec.dir.path.name} grew from it (elsewhere) and holds all its examples")
    return removed


__all__ = ["GROWABLE", "TASKS", "adopt", "describe", "grown_from", "prune_grown"]
