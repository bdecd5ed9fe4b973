"""The training loop's MQAR data (``data.corpus = "mqar"``): training batches by index, and the
held-out evaluation, per sequence (for paired comparisons) and in summary.

Training batch ``i`` (``i = (step * grad_accum + micro) * dp + dp_rank``; ``i = step`` in one process)
is ``mqar_train_batch(cfg, train_pairs, train.seed, i)``: a pure function of the step, so a resumed
run reads exactly the batches the uninterrupted run would have. The model is trained on
``(input_ids, targets)`` as they are: the loss is the cross-entropy at the query positions only
(targets are -100, torch's ignore_index, everywhere else).

Evaluation: for each n in ``eval_pairs``, the ``eval_sequences`` sequences ``mqar_batch(n pairs,
eval_seed, 0)`` (the same in every run of any seed). Per sequence (one ``per_example.jsonl`` line):
``id``, ``n_pairs``, ``loss`` (mean NLL over its queries), ``mqar_accuracy`` and
``mqar_accuracy_n<n>`` (its fraction of queries answered: argmax at the query position = the
value), ``mean_distance`` (key to query, tokens) and ``by_distance`` ({power-of-two bucket: [queries,
correct]}). Then one line per (n_pairs, power-of-two distance bucket) over every query: ``id``
(``mqar/n<n>/distance<lo>``), ``n_pairs``, ``distance`` (the bucket's lower edge), ``accuracy``,
``n`` (what the report's accuracy-against-distance figure reads; ``compare`` ignores these lines: they
carry no per-sequence metric). The summary: ``mqar_accuracy`` and ``mqar_accuracy_n<n>`` (means
over sequences: what ``spattern compare`` averages per seed) and ``mqar_by_distance`` (the rows
of the bucket lines).
"""
from __future__ import annotations

import torch

from ..data.mqar import bucket_lo, distance_bucket, mqar_accuracy, mqar_batch, mqar_train_batch
from ..utils.errors import UserError
from .config import TrainConfig


class MQARSource:
    def __init__(self, cfg: TrainConfig) -> None:
        d, m = cfg.data, cfg.data.mqar
        if cfg.train.seed == m.eval_seed:
            raise UserError(f"train.seed: expected a seed other than data.mqar.eval_seed (the held-out stream), "
                            f"got {cfg.train.seed}")
        self.vocab_size, self.seed, self.pairs = d.vocab_size, cfg.train.seed, list(m.train_pairs)
        self.task = m.task(d.vocab_size, d.seq_len, self.pairs[0], cfg.train.batch_size)
        self.eval_sets = {n: mqar_batch(m.task(d.vocab_size, d.seq_len, n, m.eval_sequences), m.eval_seed, 0)
                          for n in m.eval_pairs}
        self.meta = {"corpus": "mqar", "vocab_size": d.vocab_size, "seq_len": d.seq_len, **m.model_dump(mode="json")}

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids (B, T), targets (B, T)) of training batch ``index``."""
        return mqar_train_batch(self.task, self.pairs, self.seed, index)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batch_size: int, device: torch.device,
                 autocast) -> tuple[float, list[dict], dict]:
        """(mean query loss, one record per sequence, summary metrics) on the held-out sequences."""
        model.eval()
        examples, queries, summary = [], [], {}
        for n, b in self.eval_sets.items():
            dist = b.distance.tolist()  # (S, Q)
            accs = []
            for s in range(0, b.input_ids.shape[0], batch_size):
                x, y = b.input_ids[s:s + batch_size].to(device), b.targets[s:s + batch_size].to(device)  # (B, T)
                qp = b.query_pos[s:s + batch_size].to(device)  # (B, Q)
                with autocast():
                    logits, nll = model(x, y, reduction="none")  # (B, T, V), (B, T)
                correct = (logits.argmax(-1).gather(1, qp) == y.gather(1, qp)).tolist()  # (B, Q)
                loss = nll.float().gather(1, qp).mean(1).tolist()  # (B,)
                for r, rid in enumerate(b.ids()[s:s + batch_size]):
                    d, c = dist[s + r], correct[r]
                    buckets: dict[str, list[int]] = {}
                    for dd, cc in zip(d, c):
                        k = buckets.setdefault(distance_bucket(dd), [0, 0])
                        k[0], k[1] = k[0] + 1, k[1] + int(cc)
                    acc = sum(c) / len(c)
                    accs.append(acc)
                    examples.append({"id": rid, "n_pairs": n, "loss": loss[r], "mqar_accuracy": acc,
                                     f"mqar_accuracy_n{n}": acc, "mean_distance": sum(d) / len(d),
                                     "by_distance": buckets})
                    queries.extend({"n_pairs": n, "distance": dd, "correct": cc} for dd, cc in zip(d, c))
            summary[f"mqar_accuracy_n{n}"] = sum(accs) / len(accs)
        model.train()
        rows = mqar_accuracy(queries)  # (n_pairs, distance bucket) over every query
        summary = {"mqar_accuracy": sum(e["mqar_accuracy"] for e in examples) / len(examples), **summary,
                   "mqar_by_distance": rows}
        buckets = [{"id": f"mqar/n{r['n_pairs']}/distance{bucket_lo(r['distance_bucket'])}", "n_pairs": r["n_pairs"],
                    "distance": bucket_lo(r["distance_bucket"]), "distance_bucket": r["distance_bucket"],
                    "accuracy": r["accuracy"], "n": r["n"]} for r in rows]
        return sum(e["loss"] for e in examples) / len(examples), examples + buckets, summary


