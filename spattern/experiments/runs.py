"""Expanding an experiment config into runs (the sweep, with patterns matched at equal cost)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from spattern.experiments.config import ExperimentConfig
from spattern.experiments.rundir import RunDir

DENSE = ("dense", "", "none")


@dataclass(frozen=True)
class RunSpec:
    label: str            # what `compare` calls the run (the pattern, or its family name)
    pattern: str | tuple[str, ...]  # the resolved pattern ("dense" for dense attention; one per layer if fitted)
    seed: int
    context: int
    resolved: dict        # everything that determines the run's results (hashed into its id)
    dir: RunDir
    variant: str | None = None  # the sweep's training variant (None: the sweep has no variants)


def resolve_patterns(cfg: ExperimentConfig, context: int,
                     seed: int | None = None) -> list[tuple[str, str | tuple[str, ...], dict]]:
    """[(label, pattern, matching info)]: the sweep's patterns as given, then each matched family,
    then each fitted pattern (one per layer). A family with a ``{seed}`` field (a random draw per
    run) is matched with ``seed`` in it, so it needs ``seed``."""
    out = [(p if p not in DENSE else "dense", p if p not in DENSE else "dense", {}) for p in cfg.sweep.pattern]
    if cfg.match.families:
        from spattern.evaluation.matching import is_per_run, with_seed
        from spattern.experiments.inputs import matched

        per_run = sorted(n for n, f in cfg.match.families.items() if is_per_run(f))
        if per_run and seed is None:
            from spattern.utils.errors import UserError

            raise UserError(f"{cfg.source or cfg.name}: the families {per_run} have a {{seed}} field: "
                            "expected a run's seed to put in it, got none")
        matches = {name: matched(cfg, with_seed(fam, seed) if name in per_run else fam, context)
                   for name, fam in cfg.match.families.items()}
        for name, m in matches.items():
            out.append((name, m.pattern, {"target": cfg.match.target, "measure": cfg.match.measure,
                                          "achieved": m.achieved, "param": m.param}))
    if cfg.sweep.fitted:
        from spattern.experiments.inputs import fitted

        out += [(name, *fitted(cfg, name, path, context)) for name, path in cfg.sweep.fitted.items()]
    labels = [o[0] for o in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        from spattern.utils.errors import UserError

        raise UserError(f"{cfg.source or cfg.name}: run labels must be unique, got {dup} more than once")
    return out


# setup fields added after runs were made, with their defaults: left out of a run's resolved config at
# the default, so that the runs made before them keep their ids
LATER_FIELDS = ((("exclude",), []), (("passkey", "boundaries"), "sentence"))


def _drop_later_defaults(setup: dict) -> None:
    for (*parents, key), default in LATER_FIELDS:
        d = setup
        for p in parents:
            d = d[p]
        if d[key] == default:
            del d[key]


def _indexer_scored(pattern) -> bool:
    from spattern.models.attention import indexer_scored

    return isinstance(pattern, str) and indexer_scored(pattern)


_PYTHON_STRUCTURE = re.compile(r"structure\s*=\s*['\"]python['\"]")


def corpus_of(cfg: ExperimentConfig) -> str:
    """The corpus spec an experiment's runs read: ``setup.corpus``, or a ``train`` experiment's training
    config's ``data.corpus`` (with the experiment's overrides)."""
    if cfg.kind != "train":
        return cfg.setup.corpus
    from spattern.train.config import load_train_config

    base = Path(cfg.source).parent if cfg.source else Path(".")
    return load_train_config(base / cfg.train.config, list(cfg.train.overrides)).data.corpus


def python_structure_off_code(cfg: ExperimentConfig) -> list[str]:
    """The sweep patterns and families (as written, before matching) that read the Python statement tree
    (``structure='python'``) while the corpus is a named corpus that is not Python source, where it is
    nearly all the text tree's fallback (``spattern.patterns.fragment``): a mistake more often than not,
    e.g. a prose config whose base is a code config. Empty when the corpus is code or unknown."""
    written = [(p, p) for p in cfg.sweep.pattern] + list(cfg.match.families.items())  # (label, pattern)
    hits = [label for label, p in written if _PYTHON_STRUCTURE.search(p)]
    if not hits:
        return []
    from spattern.data.corpora import known_non_code

    return hits if known_non_code(corpus_of(cfg)) else []


def expand(cfg: ExperimentConfig) -> list[RunSpec]:
    """Every run of the sweep: patterns x variants x contexts x seeds, each with its directory. A
    family with a ``{seed}`` field has its own member per seed (the run's seed put in the field).

    Without ``sweep.variants`` a run's resolved config (and so its id) has no variant entry: the
    configs written before variants existed keep their run directories."""
    from spattern.evaluation.matching import is_per_run

    contexts = cfg.sweep.context or [cfg.setup.context]
    variants = list(cfg.sweep.variants.items()) if cfg.sweep.variants is not None else [(None, [])]
    per_run = any(is_per_run(f) for f in cfg.match.families.values())
    runs = []
    for context in contexts:
        by_seed = {s: resolve_patterns(cfg, context, s) for s in cfg.sweep.seed} if per_run else None
        patterns = by_seed[cfg.sweep.seed[0]] if per_run else resolve_patterns(cfg, context)
        for i, (variant, v_over), seed in itertools.product(range(len(patterns)), variants, cfg.sweep.seed):
            plabel, pattern, match = by_seed[seed][i] if per_run else patterns[i]
            label = plabel if variant is None else (variant if len(patterns) == 1 else f"{plabel}+{variant}")
            setup = cfg.setup.model_dump(mode="json")
            _drop_later_defaults(setup)
            if not _indexer_scored(pattern):  # the warm-up is part of an indexed run only
                del setup["indexer"]
            setup["context"] = context
            resolved = {"experiment": cfg.name, "kind": cfg.kind, "label": label,
                        "pattern": list(pattern) if isinstance(pattern, tuple) else pattern, "seed": seed,
                        "context": context, "setup": setup}
            if match:
                resolved["match"] = match
            if cfg.kind == "train":  # the training config as written (relative to the experiment file)
                resolved["train"] = {"config": cfg.train.config, "overrides": [*cfg.train.overrides, *v_over]}
            if variant is not None:
                resolved["variant"] = variant
            full_label = label if len(contexts) == 1 else f"{label}@{context}"
            runs.append(RunSpec(full_label, pattern, seed, context, resolved,
                                RunDir.create(cfg.out_dir, f"{full_label}-s{seed}", resolved), variant))
    return runs
