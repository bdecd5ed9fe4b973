"""The experiment config: a setup (model, data, context, metrics, tasks) plus sweep axes.

TOML, validated (``spattern.utils.config``: ``base = "..."`` inheritance, unknown keys rejected)::

    name = "cpu_study"
    kind = "evaluate"            # evaluate a (pretrained or trained) model with patterns swapped in
    baseline = "dense"           # the run label `compare` tests every other run against

    [setup]
    model = "smollm2"            # "smollm2", "checkpoint:<path>", or "random:<preset>" (tests)
    corpus = "sotu"              # a spattern corpus spec, local files, or hf:<name>
    context = 512                # tokens per window
    docs = 12                    # documents (the first window of each long test document)
    metrics = ["perplexity", "info_loss"]
    tasks = ["passkey"]

    [sweep]
    pattern = ["dense", "(local(64) | sink(64)) & causal"]
    seed = [0]

    [sweep.fitted]               # per-layer, per-head patterns written by `spattern fit`
    fitted = "../results/fit/smollm2_pydocs_2k.json"   # label = the fit's JSON (relative to this file)

    [match]                      # patterns at equal cost: one free parameter, matched at `context`
    target = 0.25
    measure = "block_density"
    families = { local = "local({w}) & causal", strided = "(local({w}) | strided(64)) & causal" }

A family may add ``{layer}`` (one member per layer; ``[match] layers`` = the model's layer count) or
``{seed}`` (a random draw per run: each run's seed is put in the field before matching), e.g.
``bigbird_draws = "(local({w}) | random(2, seed={seed})) & causal"``. A file that inherits families it
does not run lists them in ``[match] drop`` (a density-sweep member whose target a family cannot reach).

``kind = "train"`` trains one model per (pattern, seed) with ``[train] config`` (a training TOML)
and its overrides; each run's unit for comparisons is then the seed. Training variants that are
not patterns (an indexer, another schedule) are a sweep axis of named override lists, applied
after ``[train] overrides``; a run is labelled by its variant (``<pattern>+<variant>`` when the
sweep has several patterns)::

    [sweep]
    seed = [0, 1, 2]
    variants = { dense = [], indexer = ["indexer.k=4"] }
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from spattern.utils.config import Section, load_config

METRICS = ("perplexity", "info_loss")


class PasskeySection(Section):
    context_lengths: list[int] = [256]
    depths: list[float] = [0.1, 0.5, 0.9]
    seeds: list[int] = [0, 1]
    boundaries: Literal["sentence", "line"] = "sentence"  # where the needle may go: "line" for source code,
                                                          # which has too few sentence ends (tasks/passkey.py)


class IndexerWarmup(Section):
    """``[setup.indexer]``: how the lightning indexers of an ``indexed(...)`` pattern are warmed up
    (``spattern.experiments.indexers``): the model frozen with dense attention, one indexer per layer
    trained on KL against its dense attention, on ``split`` windows of the setup's corpus."""
    split: Literal["train", "validation", "test"] = "train"
    steps: int = Field(300, ge=1)
    lr: float = Field(1e-3, gt=0)
    context: int = Field(1024, ge=8)      # tokens per warm-up window
    batch: int = Field(1, ge=1)           # windows per step
    per_doc: int = Field(8, ge=1)         # at most this many windows from one document
    heads: int = Field(4, ge=1)           # index heads H_I
    head_dim: int = Field(32, ge=2)       # d_I
    rope_dim: int = Field(16, ge=0)       # index dimensions that rotate with position (0: none)

    @model_validator(mode="after")
    def _rope_dim(self) -> "IndexerWarmup":
        if self.rope_dim % 2 or self.rope_dim > self.head_dim:
            raise ValueError(f"rope_dim: expected an even number of at most head_dim ({self.head_dim}), "
                             f"got {self.rope_dim}")
        return self


class Setup(Section):
    model: str = "smollm2"
    corpus: str = "sotu"
    split: Literal["train", "validation", "test"] = "test"
    context: int = Field(512, ge=8)
    docs: int = Field(8, ge=1)
    min_doc_tokens: Optional[int] = Field(None, ge=1)  # default: context + 1 (a full window)
    exclude: list[str] = []                # document ids to skip: globs such as "stdlib:encodings/*"
    block: tuple[int, int] = (64, 64)
    backend: str = "auto"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    metrics: list[Literal["perplexity", "info_loss"]] = ["perplexity"]
    tasks: list[Literal["passkey"]] = []   # what an evaluate run scores besides the documents
    passkey: PasskeySection = PasskeySection()
    indexer: IndexerWarmup = IndexerWarmup()  # only for indexed(...) patterns (in their runs' ids only)
    obtain: bool = False


# set by the runner for each run (a variant must not change them: they are sweep axes or the run's own)
RUN_KEYS = ("name", "model.pattern", "train.seed", "train.out_dir", "data.seq_len", "train.progress")


class Sweep(Section):
    pattern: list[str] = ["dense"]
    seed: list[int] = [0]
    context: Optional[list[int]] = None   # default: [setup.context]
    variants: Optional[dict[str, list[str]]] = None  # kind = "train": name -> training-config overrides
    fitted: dict[str, str] = {}           # kind = "evaluate": label -> a `spattern fit` JSON (its per-layer patterns)

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: Optional[dict[str, list[str]]]) -> Optional[dict[str, list[str]]]:
        if v is None:
            return v
        if not v:
            raise ValueError("at least one variant (name = [overrides]), got an empty table")
        for name, overrides in v.items():
            if not name.strip() or not all(c.isalnum() or c in "-_." for c in name):
                raise ValueError(f"variant names of letters, digits, '-', '_' or '.', got {name!r}")
            for item in overrides:
                key = item.split("=", 1)[0].strip()
                if "=" not in item or not key:
                    raise ValueError(f"variant {name!r}: overrides KEY=VALUE (e.g. indexer.k=4), got {item!r}")
                if key in RUN_KEYS:
                    raise ValueError(f"variant {name!r}: a key other than {', '.join(RUN_KEYS)} (set per run by "
                                     f"the sweep), got {key!r}")
        return v


class Match(Section):
    target: Optional[float] = Field(None, gt=0, le=1)
    measure: Literal["block_density", "density", "flops"] = "block_density"
    families: dict[str, str] = {}
    # families that a base file names and this file does not run (inheritance merges tables, so a
    # key cannot be removed otherwise): a density-sweep member where a family cannot reach its target.
    # Applied once, when the file is read: the validated config holds the remaining families and an
    # empty drop (so it validates again as it is). A file's drop replaces its base's, as any list does.
    drop: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _drop_families(cls, data):
        if not isinstance(data, dict) or not data.get("drop"):
            return data
        fams, drop = data.get("families") or {}, data["drop"]
        if not isinstance(fams, dict) or not isinstance(drop, list) or not all(isinstance(d, str) for d in drop):
            return data  # the fields' own checks say what came
        unknown = sorted(set(drop) - set(fams))
        if unknown:
            raise ValueError(f"match.drop naming families of this file or its base "
                             f"({', '.join(sorted(fams)) or 'none'}), not {unknown}")
        return {**data, "families": {k: v for k, v in fams.items() if k not in drop}, "drop": []}

    # the model's layer count, for per-layer families (a {layer} field: one pattern per layer,
    # spattern.evaluation.matching); None where no family has one
    layers: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _needs_target(self) -> "Match":
        if self.families and self.target is None:
            raise ValueError("a target (families are matched to it)")
        from spattern.evaluation.matching import is_per_layer, is_per_run, with_seed  # noqa: PLC0415

        for f in self.families.values():
            if is_per_run(f):
                try:
                    with_seed(f, 0)  # a {seed} field with a format or conversion is refused here, not at a run
                except Exception as e:
                    raise ValueError(str(e)) from None
        per_layer = sorted(n for n, f in self.families.items() if is_per_layer(f))
        if per_layer and self.layers is None:
            raise ValueError(f"layers (the model's layer count): the families {per_layer} have a {{layer}} field")
        return self


class TrainSetup(Section):
    config: str = ""                      # a training TOML, relative to the experiment file
    overrides: list[str] = []             # --set style overrides applied to every run


class Compare(Section):
    """What ``spattern run`` compares at its end (as ``spattern compare`` with these options), so that
    running a study again rewrites each ``compare.json`` as it was made."""
    test: Literal["wilcoxon", "permutation", "t"] = "wilcoxon"
    metrics: Optional[list[str]] = None   # None: every metric the baseline and another run have


class ExperimentConfig(Section):
    name: str
    kind: Literal["evaluate", "train"] = "evaluate"
    baseline: str = "dense"
    results: str = "results"              # runs go to <results>/<name>/<run>
    report: bool = False                  # build the report after the runs
    check_of: Optional[str] = None        # the experiment this one checks one setting of (e.g. BigBird's random
                                          # draw): the report gives it its tables and one sentence, not a figure row
    setup: Setup = Setup()
    sweep: Sweep = Sweep()
    match: Match = Match()
    train: TrainSetup = TrainSetup()
    compare: Compare = Compare()
    source: str = ""                      # the file it was read from (set by load_experiment)

    @model_validator(mode="after")
    def _train_has_config(self) -> "ExperimentConfig":
        if self.kind == "train" and not self.train.config:
            raise ValueError("a [train] config file for kind = 'train'")
        if self.sweep.fitted and self.kind != "evaluate":
            raise ValueError(f"sweep.fitted only with kind = 'evaluate' (a fitted pattern is fitted to a trained "
                             f"model's attention), got kind = {self.kind!r}")
        if self.sweep.variants is not None and self.kind != "train":
            raise ValueError(f"sweep.variants only with kind = 'train' (they override the training config), "
                             f"got kind = {self.kind!r}")
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.results) / self.name


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    cfg = load_config(ExperimentConfig, path, overrides)
    return cfg.model_copy(update={"source": str(Path(path).resolve())})
