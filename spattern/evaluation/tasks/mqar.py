"""Multi-query associative recall (MQAR; Arora, Eyuboglu et al. 2023, "Zoology") as a registered task.

The data (``MQARConfig``, ``mqar_batch``, ``mqar_batches``, the sequence layout and the distance
buckets) live in ``spattern.data.mqar``, below the training loop that trains on them; this module
scores a model on them: ``evaluate_mqar`` (one record per query), ``mqar_accuracy`` (grouped by
n_pairs and distance bucket) and the ``MQAR`` task.
"""

from __future__ import annotations

import torch

from spattern.data.mqar import (MQARBatch, MQARConfig, distance_bucket, mqar_accuracy, mqar_batch,
                                mqar_batches)
from spattern.evaluation.tasks.registry import LogitsFn, Task, TaskExample, register_task
from spattern.utils.errors import UserError


def evaluate_mqar(model_fn: LogitsFn, batch: MQARBatch) -> list[dict]:
    """One record per query ``{id, n_pairs, distance, correct}`` from one forward pass (B, T) -> (B, T, V)."""
    with torch.no_grad():
        logits = model_fn(batch.input_ids)
    B, T = batch.input_ids.shape
    if not (isinstance(logits, torch.Tensor) and logits.dim() == 3 and tuple(logits.shape[:2]) == (B, T)):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserError(f"model_fn: expected logits of shape (B, T, V) = ({B}, {T}, V), got {got}")
    pred = logits.argmax(-1).gather(1, batch.query_pos)  # (B, Q)
    correct = (pred == batch.targets.gather(1, batch.query_pos)).tolist()
    dist = batch.distance.tolist()
    return [{"id": f"{rid}/q{j}", "n_pairs": batch.n_pairs, "distance": dist[b][j], "correct": bool(correct[b][j])}
            for b, rid in enumerate(batch.ids()) for j in range(batch.query_pos.shape[1])]


@register_task
class MQAR(Task):
    name = "mqar"

    def __init__(self, cfg: MQARConfig | dict | None = None, n_batches: int = 1) -> None:
        self.cfg = cfg if isinstance(cfg, MQARConfig) else MQARConfig(**(cfg or {}))
        self.n_batches = int(n_batches)

    def examples(self, seed: int) -> list[TaskExample]:
        out = []
        for i in range(self.n_batches):
            b = mqar_batch(self.cfg, seed, i)
            for r, rid in enumerate(b.ids()):
                q, d = b.query_pos[r].tolist(), b.distance[r].tolist()
                out.append(TaskExample(rid, b.input_ids[r], b.targets[r], tuple((p,) for p in q),
                                       {"n_pairs": b.n_pairs}, tuple({"distance": x} for x in d)))
        return out

    @classmethod
    def demo(cls) -> "MQAR":
        return cls(MQARConfig(vocab_size=64, seq_len=64, n_pairs=6, n_queries=4, batch_size=8), n_batches=2)


__all__ = ["MQAR", "MQARBatch", "MQARConfig", "distance_bucket", "evaluate_mqar", "mqar_accuracy", "mqar_batch",
           "mqar_batches"]
