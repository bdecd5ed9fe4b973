"""The sweep's training-variants axis (kind = "train"): expansion, labels, stable run ids, overrides
applied after [train] overrides, bad variants refused; configs without variants keep the run
directories they had before the axis existed."""

from __future__ import annotations

import pytest

from spattern.experiments import expand
from spattern.experiments.config import ExperimentConfig
from spattern.utils.config import validate
from spattern.utils.errors import ConfigError

EVAL = {"name": "tiny", "baseline": "dense",
        "setup": {"model": "random:neox-tiny", "corpus": "stdlib", "context": 96, "block": [32, 32], "docs": 4},
        "sweep": {"pattern": ["dense", "local(16) & causal"], "context": [96, 128]},
        "match": {"target": 0.4, "families": {"window": "local({w}) & causal"}}}
TRAIN = {"name": "trainexp", "kind": "train", "setup": {"context": 64},
         "sweep": {"pattern": ["dense", "local(16) & causal"], "seed": [0, 1]},
         "train": {"config": "train_tiny_cpu.toml", "overrides": ["train.steps=3"]}}
# the run directories these configs expanded to before sweep.variants existed (commit 4254517)
GOLDEN = {"tiny": ["dense-96-s0-2863474e26", "local-16-causal-96-s0-fe91a6ed80", "window-96-s0-f44d5bc4b4",
                   "dense-128-s0-f04c61f0cb", "local-16-causal-128-s0-e713a75a3f", "window-128-s0-ace2847898"],
          "trainexp": ["dense-s0-b769c21fa5", "dense-s1-538e753fd6", "local-16-causal-s0-c008674bb4",
                       "local-16-causal-s1-951f30adb1"]}
VARIANTS = {"dense": [], "indexer": ["indexer.k=8", "indexer.warmup_steps=100"]}


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    """Expanding writes <results>/<name>/matches.json: keep it out of the repository's results/."""
    monkeypatch.chdir(tmp_path)


def _cfg(raw: dict, **sweep) -> ExperimentConfig:
    raw = {**raw, "sweep": {**raw["sweep"], **sweep}}
    return validate(ExperimentConfig, raw, "test")


@pytest.mark.parametrize("raw", [EVAL, TRAIN], ids=["evaluate", "train"])
def test_configs_without_variants_keep_their_run_directories(raw):
    runs = expand(_cfg(raw))
    assert [r.dir.path.name for r in runs] == GOLDEN[raw["name"]]
    assert all(r.variant is None and "variant" not in r.resolved for r in runs)


def test_variants_expand_with_labels_seeds_and_stable_ids():
    cfg = _cfg(TRAIN, pattern=["dense"], seed=[0, 1, 2], variants=VARIANTS)
    runs = expand(cfg)
    assert [(r.label, r.seed, r.variant, r.pattern) for r in runs] == [
        (v, s, v, "dense") for v in ("dense", "indexer") for s in (0, 1, 2)]
    assert [r.dir.path.name[:-11] for r in runs] == [f"{v}-s{s}" for v in ("dense", "indexer") for s in (0, 1, 2)]
    # the variant's overrides come after the experiment's (the more specific wins), and are hashed
    assert runs[0].resolved["train"]["overrides"] == ["train.steps=3"]
    assert runs[3].resolved["train"]["overrides"] == ["train.steps=3", "indexer.k=8", "indexer.warmup_steps=100"]
    assert runs[3].resolved["variant"] == "indexer"
    again = expand(_cfg(TRAIN, pattern=["dense"], seed=[0, 1, 2], variants=VARIANTS))
    assert [r.dir.path for r in again] == [r.dir.path for r in runs]
    assert len({r.dir.path for r in runs}) == 6
    # another variant's overrides: other ids for it, the same for the untouched one
    other = expand(_cfg(TRAIN, pattern=["dense"], seed=[0, 1, 2],
                        variants={**VARIANTS, "indexer": ["indexer.k=4", "indexer.warmup_steps=100"]}))
    assert [r.dir.path for r in other[:3]] == [r.dir.path for r in runs[:3]]
    assert {r.dir.path for r in other[3:]}.isdisjoint({r.dir.path for r in runs[3:]})
    # a variant named like a plain run is still another run (its resolved config says so)
    plain = expand(_cfg(TRAIN, pattern=["dense"], seed=[0]))
    assert plain[0].label == runs[0].label and plain[0].dir.path != runs[0].dir.path


def test_variants_cross_patterns_with_combined_labels():
    runs = expand(_cfg(TRAIN, variants=VARIANTS))
    assert [r.label for r in runs] == ["dense+dense", "dense+dense", "dense+indexer", "dense+indexer",
                                       "local(16) & causal+dense", "local(16) & causal+dense",
                                       "local(16) & causal+indexer", "local(16) & causal+indexer"]
    assert runs[6].pattern == "local(16) & causal" and runs[6].resolved["variant"] == "indexer"


@pytest.mark.parametrize("variants,message", [
    ({}, "at least one variant"),
    ({"a b": []}, "variant names of letters"),
    ({"x": ["indexer.k"]}, r"overrides KEY=VALUE .*got 'indexer.k'"),
    ({"x": ["train.seed=3"]}, r"a key other than .*got 'train.seed'"),
    ({"x": ["model.pattern=dense"]}, r"got 'model.pattern'"),
])
def test_bad_variants_are_refused(variants, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(TRAIN, variants=variants)


def test_variants_need_kind_train():
    with pytest.raises(ConfigError, match=r"sweep.variants only with kind = 'train'"):
        _cfg(EVAL, variants=VARIANTS)
