"""Training configs: typed, validated TOML (``spattern.utils.config``).

A file is TOML with ``base = "other.toml"`` inheritance and ``--set a.b=value`` overrides; it
parses into ``TrainConfig`` whose sections reject unknown keys and wrong types with a message that
names the file, the key, what was expected and what came::

    cfg = load_train_config("experiments/train_tiny_cpu.toml", ["train.steps=10"])
    cfg.train.steps, cfg.model.pattern
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from spattern.data.mqar import MQARConfig
from spattern.utils.config import Section, load_config, to_toml

PatternSpec = Union[None, str, list[Optional[str]]]


class ModelSection(Section):
    """``[model]``: a preset (``spattern.models.PRESETS``) plus overrides of its fields."""

    preset: str = "neox-tiny"
    pattern: PatternSpec = "dense"          # "dense", a pattern string, or one per layer
    backend: str = "auto"                   # spattern.attention backend for patterned layers
    block: Optional[tuple[int, int]] = None  # layout blocks; None = the preset's
    arch: Optional[str] = None
    vocab_size: Optional[int] = Field(None, ge=1)
    d_model: Optional[int] = Field(None, ge=1)
    n_layers: Optional[int] = Field(None, ge=1)
    n_heads: Optional[int] = Field(None, ge=1)
    n_kv_heads: Optional[int] = Field(None, ge=1)
    d_ff: Optional[int] = Field(None, ge=1)
    max_seq_len: Optional[int] = Field(None, ge=1)
    rotary_pct: Optional[float] = Field(None, ge=0, le=1)
    rope_theta: Optional[float] = Field(None, gt=0)
    tie_embeddings: Optional[bool] = None
    bias: Optional[bool] = None
    init_std: Optional[float] = Field(None, gt=0)

    def overrides(self) -> dict:
        """The preset's fields this section changes (what ``get_config(preset, **...)`` takes)."""
        d = self.model_dump(exclude={"preset"}, exclude_none=True)
        d.setdefault("pattern", self.pattern)
        return d


class MQARSection(Section):
    """``[data.mqar]`` (with ``data.corpus = "mqar"``): multi-query associative recall
    (``spattern.data.mqar``) at ``data.seq_len`` tokens over ``data.vocab_size`` tokens.

    Training batch ``i`` is ``mqar_train_batch(..., train_pairs, seed=train.seed, index=i)`` (rows mix
    the numbers of pairs); validation scores ``eval_sequences`` held-out sequences (stream
    ``eval_seed``, the same in every run) at each number of pairs in ``eval_pairs``."""

    train_pairs: list[int] = [4, 8, 16, 32, 64]
    eval_pairs: list[int] = [4, 8, 16, 32, 64]
    n_queries: Optional[int] = Field(None, ge=1)  # None: every pair is queried
    power_a: Optional[float] = Field(0.01, gt=0)  # None: query slots uniform
    random_fill: bool = True
    eval_seed: int = 1_000_000
    eval_sequences: int = Field(64, ge=1)  # per number of pairs

    @field_validator("train_pairs", "eval_pairs")
    @classmethod
    def _pairs(cls, v: list[int]) -> list[int]:
        if not v or any(n < 1 for n in v) or len(set(v)) != len(v):
            raise ValueError(f"a non-empty list of distinct numbers of pairs >= 1 (got {v})")
        return v

    def task(self, vocab_size: int, seq_len: int, n_pairs: int, batch_size: int) -> MQARConfig:
        return MQARConfig(vocab_size=vocab_size, seq_len=seq_len, n_pairs=n_pairs, n_queries=self.n_queries,
                          power_a=self.power_a, batch_size=batch_size, random_fill=self.random_fill)


class DataSection(Section):
    """``[data]``: a corpus (or a prepared folder) and the tokenizer; ``corpus = "mqar"``: the
    synthetic MQAR task of ``[data.mqar]`` (no tokenizer: tokens are ids below ``vocab_size``)."""

    corpus: str = "stdlib"
    tokenizer: Literal["bpe", "byte"] = "bpe"
    vocab_size: int = Field(2048, ge=1)
    max_docs: Optional[int] = Field(None, ge=1)
    path: str = ""                           # a folder written by `spattern data prepare --out`
    seq_len: int = Field(256, ge=2)
    mqar: Optional[MQARSection] = None       # None: left out of config.toml (MQARSection() with corpus "mqar")

    @model_validator(mode="after")
    def _mqar(self) -> "DataSection":
        if self.corpus != "mqar":
            if self.mqar is not None:
                raise ValueError(f'corpus = "mqar" with a [data.mqar] section (got corpus {self.corpus!r})')
            return self
        if self.path:
            raise ValueError(f'no data.path with corpus = "mqar" (the task is generated), got {self.path!r}')
        m = self.mqar or MQARSection()
        for n in sorted({*m.train_pairs, *m.eval_pairs}):
            try:
                m.task(self.vocab_size, self.seq_len, n, 1)
            except ValidationError as e:
                why = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors(include_url=False))
                raise ValueError(f"{n} pairs that fit seq_len={self.seq_len} and vocab_size={self.vocab_size} "
                                 f"({why})") from None
        if self.mqar is None:
            self.mqar = m
        return self


class TrainSection(Section):
    """``[train]``: optimisation, schedule, checkpoints and where results go."""

    steps: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    eval_every: int = Field(50, ge=0)        # 0 = only at the end
    eval_batches: int = Field(4, ge=1)
    log_every: int = Field(10, ge=1)
    ckpt_every: int = Field(0, ge=0)         # 0 = auto: about every tenth of the run (and at the end)
    resume: bool = True
    out_dir: str = ""                        # the run directory (default: results/train/<name>)
    ckpt_dir: str = ""                       # checkpoints (default: the cache, never under results/)
    device: str = "auto"
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False
    progress: bool = True
    max_seconds: float = Field(0, ge=0)      # a wall-clock guard (0 = none)
    context_workers: Optional[int] = Field(None, ge=0)  # outline: processes building contexts ahead (None = auto)
    # outline: how the workers' contexts come back (None = "pipe", through the pool; "file": spooled to
    # /dev/shm and read by the trainer when it needs them; spattern.train.contexts)
    context_transport: Optional[Literal["pipe", "file"]] = None
    # outline: where the workers run (None = "shared"; "spare": the trainer's thread on two CPUs and the
    # workers on the others; spattern.train.contexts)
    context_cpus: Optional[Literal["shared", "spare"]] = None
    # distributed (under torchrun). None = the default, left out of config.toml so that the files of
    # runs written before these fields existed stay byte-identical.
    parallel: Optional[Literal["ddp", "fsdp"]] = None        # None = "ddp"; "fsdp": FSDP2 + DCP checkpoints
    context_parallel: Optional[int] = Field(None, ge=1)     # cp degree (None = 1); world = dp * cp
    cp_sharding: Optional[Literal["contiguous", "zigzag"]] = None  # None = "zigzag" (balanced causal work)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda", "mps") and not v.startswith("cuda:"):
            raise ValueError(f"one of auto, cpu, cuda, cuda:N, mps (got {v!r})")
        return v

    def checkpoint_interval(self) -> int:
        return self.ckpt_every or max(1, self.steps // 10)


class IndexerSection(Section):
    """``[indexer]``: a DeepSeek-V3.2-style lightning indexer per layer (off when k = 0)."""

    k: int = Field(0, ge=0)
    block: tuple[int, int] = (64, 64)
    n_heads: int = Field(4, ge=1)
    head_dim: int = Field(32, ge=1)
    sink: int = Field(1, ge=0)
    local: int = Field(1, ge=0)
    layers: Union[Literal["all"], list[int]] = "all"
    warmup_steps: int = Field(0, ge=0)
    aux_weight: float = Field(1.0, ge=0)
    # the LM during the warm-up: None/false = frozen (DeepSeek's warm-up of a pretrained model); true =
    # it trains densely on the LM loss beside the indexers' KL (from scratch). None: left out of config.toml
    warmup_train_lm: Optional[bool] = None


class TrainConfig(Section):
    name: str = "run"
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    indexer: IndexerSection = IndexerSection()


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """defaults <- the file's base chain <- the file <- ``--set`` overrides, validated."""
    return load_config(TrainConfig, path, overrides)


__all__ = ["TrainConfig", "ModelSection", "DataSection", "MQARSection", "TrainSection", "IndexerSection",
           "load_train_config", "to_toml"]
