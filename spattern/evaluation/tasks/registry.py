"""Synthetic tasks: one example format, one scorer, a registry with contract tests over all tasks.

Every task turns a seed into ``TaskExample``s: a token sequence ``input_ids`` (T,) and ``targets``
(T,) that are -100 except at answer positions, where ``targets[t]`` is the token the model must
predict from ``logits[t]`` (next-token prediction, teacher forced: answer tokens are in the input).
Answer positions come in ``groups`` scored together (a passkey answer is one group of its digit
tokens; each MQAR query is a group of one position). For a group A:

- ``correct = all(argmax_v logits[t, v] == targets[t] for t in A)`` -- greedy decoding reproduces the
  answer, computed in one forward pass (teacher forcing makes step t see the true tokens < t, which
  is exactly what greedy decoding sees when every earlier step was right);
- ``logprob = sum_{t in A} log softmax(logits[t])[targets[t]]``.

A model is ``logits_fn(input_ids: LongTensor (B, T)) -> logits (B, T, V)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch

from spattern.utils.errors import UserError

LogitsFn = Callable[[torch.Tensor], torch.Tensor]
IGNORE = -100


@dataclass(frozen=True)
class TaskExample:
    id: str
    input_ids: torch.Tensor  # (T,) int64
    targets: torch.Tensor  # (T,) int64, IGNORE except at answer positions
    groups: tuple[tuple[int, ...], ...]  # answer positions scored together
    meta: dict = field(default_factory=dict)  # per-example fields copied into every record
    group_meta: tuple[dict, ...] = ()  # per-group fields (e.g. the distance), one per group


def score_examples(logits_fn: LogitsFn, examples: list[TaskExample], batch_size: int = 1) -> list[dict]:
    """One record per answer group: ``{id, group, **meta, **group_meta, correct, logprob}``.

    Examples of equal length are stacked ``batch_size`` at a time into one ``logits_fn`` call."""
    records: list[dict] = []
    by_len: dict[int, list[TaskExample]] = {}
    for ex in examples:
        by_len.setdefault(int(ex.input_ids.numel()), []).append(ex)
    order = {ex.id: i for i, ex in enumerate(examples)}
    if len(order) != len(examples):
        raise UserError(f"examples: expected unique ids, got {len(examples) - len(order)} duplicate(s)")
    for T, exs in by_len.items():
        for s in range(0, len(exs), batch_size):
            chunk = exs[s:s + batch_size]
            ids = torch.stack([e.input_ids for e in chunk])  # (B, T)
            with torch.no_grad():
                logits = logits_fn(ids)
            if not (isinstance(logits, torch.Tensor) and logits.shape[:2] == ids.shape and logits.dim() == 3):
                got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise UserError(f"logits_fn: expected logits of shape (B, T, V) = ({len(chunk)}, {T}, V), got {got}")
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()  # (B, T, V), scored on the host
            pred = logits.argmax(dim=-1).cpu()  # (B, T)
            for b, ex in enumerate(chunk):
                for g, pos in enumerate(ex.groups):
                    p = torch.tensor(pos, dtype=torch.long)
                    tgt = ex.targets[p]
                    rec = {"id": ex.id, "group": g, **ex.meta, **(ex.group_meta[g] if ex.group_meta else {})}
                    rec["correct"] = bool((pred[b, p] == tgt).all())
                    rec["logprob"] = float(logp[b, p, tgt].sum())
                    records.append(rec)
    records.sort(key=lambda r: (order[r["id"]], r["group"]))
    return records


def accuracy_by(records: list[dict], *keys: str) -> dict[tuple, dict]:
    """``{(values of keys): {"n": count, "accuracy": mean of correct}}``, keys sorted."""
    out: dict[tuple, list[bool]] = {}
    for r in records:
        out.setdefault(tuple(r[k] for k in keys), []).append(bool(r["correct"]))
    return {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(out.items())}


class Task(ABC):
    """A registered task: a small, deterministic example generator plus the shared scorer."""

    name: ClassVar[str]

    @abstractmethod
    def examples(self, seed: int) -> list[TaskExample]:
        """The examples for one seed; the same seed gives the same examples."""

    def score(self, logits_fn: LogitsFn, examples: list[TaskExample], batch_size: int = 1) -> list[dict]:
        return score_examples(logits_fn, examples, batch_size)

    @classmethod
    @abstractmethod
    def demo(cls) -> "Task":
        """A small instance (no network, seconds on a CPU) for the contract tests."""


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: ``TASKS[cls.name] = cls``; a duplicate name is an error."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_task: {cls.__name__} needs a class attribute `name`")
    if name in TASKS and TASKS[name] is not cls:
        raise ValueError(f"register_task: task {name!r} is already registered ({TASKS[name].__name__})")
    TASKS[name] = cls
    return cls


def get_task(name: str, **params) -> Task:
    """An instance of the registered task ``name`` built with ``params``."""
    if name not in TASKS:
        raise UserError(f"task {name!r}: not registered; available: {', '.join(sorted(TASKS))}")
    return TASKS[name](**params)
