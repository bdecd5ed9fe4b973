"""Passkey retrieval for pretrained models (Mohtashami & Jaggi 2023), over a haystack of real prose.

One example of context length L (tokens, answer included) and depth fraction d in [0, 1]::

    [bos] INTRO  haystack[:b]  NEEDLE("\\nThe pass key is NNNNN. Remember it.\\n")  haystack[b:]  QUESTION  " NNNNN"

- the haystack is whole sentences (``boundaries="sentence"``, for prose) or whole lines (``"line"``,
  for source code) of the given documents, taken cyclically from a start unit, the last one cut to
  fill L exactly; ``b`` is the unit boundary nearest to ``d * len(haystack)`` (so the needle never
  splits a sentence, or a line). Where the haystack has no boundary between two depths (source code
  cut into sentences: long runs of lines without ". "), both snap to one boundary and their examples
  are the same input under two ids; ``meta["depth_actual"]`` says where the needle went, and
  ``spattern.evaluation.trials`` counts such examples as one trial;
- the key (5 digits) and the start sentence depend on the seed only, so every (L, d) of one seed
  uses the same key and text: deterministic per (seed, L, d), and paired across lengths and depths;
- the pieces are tokenized separately (``tokenizer.encode(str) -> list[int]``, no special tokens
  added; pass ``bos_id`` for models that need one); the key's tokens in the needle are the answer's.

Scoring (``registry.score_examples``): one forward pass over the whole sequence with the answer
teacher-forced; ``correct`` = the argmax at every answer position is the answer token (= greedy
decoding of the digits returns the key), ``answer_logprob`` = sum of the answer tokens' log-probs.
``distance_tokens`` = position of the first answer token - position of the first key token in the
needle: how far back the model must look.
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence

import numpy as np
import torch

from spattern.evaluation.tasks.registry import IGNORE, LogitsFn, Task, TaskExample, register_task, score_examples
from spattern.utils.errors import UserError

INTRO = ("There is an important piece of information hidden inside a lot of irrelevant text. "
         "Find it and memorize it. I will quiz you about it.\n\n")
NEEDLE = ("\nThe pass key is", "{key}", ". Remember it.\n")  # on a line of its own wherever it lands
QUESTION = "\n\nWhat is the pass key? The pass key is"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def sentence_units(docs: Sequence[str]) -> list[str]:
    """Documents -> sentences, each with the whitespace that follows it (``"\\n\\n"`` at a document end)."""
    units = []
    for doc in docs:
        parts = [s for s in _SENTENCE.split(doc.strip()) if s.strip()]
        units += [s.strip() + " " for s in parts[:-1]] + ([parts[-1].strip() + "\n\n"] if parts else [])
    return units


def line_units(docs: Sequence[str]) -> list[str]:
    """Documents -> their lines as written (indentation and blank lines kept, trailing spaces dropped),
    each with its ``"\\n"`` (``"\\n\\n"`` at a document end)."""
    units = []
    for doc in docs:
        lines = [ln.rstrip() for ln in doc.strip("\n").rstrip().split("\n")] if doc.strip() else []
        units += [ln + "\n" for ln in lines[:-1]] + ([lines[-1] + "\n\n"] if lines else [])
    return units


BOUNDARIES = {"sentence": sentence_units, "line": line_units}  # where the needle may go


@register_task
class Passkey(Task):
    name = "passkey"

    def __init__(self, tokenizer: Tokenizer, docs: Sequence[str], context_lengths: Sequence[int] = (1024,),
                 depths: Sequence[float] = (0.0, 0.5, 1.0), bos_id: int | None = None,
                 boundaries: str = "sentence") -> None:
        if not hasattr(tokenizer, "encode"):
            raise UserError(f"tokenizer: expected an object with encode(str) -> list[int], "
                            f"got {type(tokenizer).__name__}")
        bad = [d for d in depths if not (isinstance(d, (int, float)) and 0 <= d <= 1)]
        if bad or not depths:
            raise UserError(f"depths: expected fractions in [0, 1], got {list(depths)}")
        self.tokenizer, self.bos_id = tokenizer, bos_id
        self.context_lengths, self.depths = [int(x) for x in context_lengths], [float(d) for d in depths]
        if boundaries not in BOUNDARIES:
            raise UserError(f"boundaries: expected one of {sorted(BOUNDARIES)}, got {boundaries!r}")
        self.units = [tokenizer.encode(u) for u in BOUNDARIES[boundaries](docs)]
        self.units = [u for u in self.units if u]
        if not self.units:
            raise UserError("haystack_docs: expected at least one document with text, got none")
        self.fixed = {k: tokenizer.encode(v) for k, v in (("intro", INTRO), ("pre", NEEDLE[0]),
                                                           ("post", NEEDLE[2]), ("question", QUESTION))}

    def example(self, seed: int, context_len: int, depth: float) -> TaskExample:
        rng = np.random.default_rng(seed)
        key = int(rng.integers(10_000, 100_000))
        start = int(rng.integers(len(self.units)))
        key_ids = self.tokenizer.encode(" " + str(key))
        f = self.fixed
        head = ([self.bos_id] if self.bos_id is not None else []) + f["intro"]
        needle = f["pre"] + key_ids + f["post"]
        room = context_len - len(head) - len(needle) - len(f["question"]) - len(key_ids)
        if room < 1:
            raise UserError(f"context_len: expected more than {context_len - room} tokens (intro, needle, question "
                            f"and answer), got {context_len}")
        hay, bounds, i = [], [0], start
        while len(hay) < room:
            hay += self.units[i % len(self.units)]
            bounds.append(min(len(hay), room))
            i += 1
        hay = hay[:room]
        b = min(bounds, key=lambda x: (abs(x - depth * room), x))
        ids = head + hay[:b] + needle + hay[b:] + f["question"] + key_ids  # (L,)
        key_pos = len(head) + b + len(f["pre"])
        ans = len(ids) - len(key_ids)
        targets = [IGNORE] * len(ids)
        for t in range(ans, len(ids)):
            targets[t - 1] = ids[t]  # logits[t - 1] predict token t
        meta = {"context_len": context_len, "depth": depth, "depth_actual": b / room, "seed": seed, "key": key,
                "distance_tokens": ans - key_pos}
        return TaskExample(f"passkey/L{context_len}/d{depth:g}/s{seed}", torch.tensor(ids, dtype=torch.long),
                           torch.tensor(targets, dtype=torch.long), (tuple(range(ans - 1, len(ids) - 1)),), meta)

    def examples(self, seed: int) -> list[TaskExample]:
        return [self.example(seed, L, d) for L in self.context_lengths for d in self.depths]

    @classmethod
    def demo(cls) -> "Passkey":
        import json
        import string

        from spattern.data.tokenizer import ByteTokenizer

        return cls(ByteTokenizer(), [json.__doc__, string.__doc__], context_lengths=(400, 700), depths=(0.0, 0.5, 1.0))


def evaluate_passkey(logits_fn: LogitsFn, tokenizer: Tokenizer, haystack_docs: Sequence[str],
                     context_lengths: Sequence[int], depths: Sequence[float], seeds: Sequence[int],
                     bos_id: int | None = None, batch_size: int = 1, boundaries: str = "sentence") -> list[dict]:
    """Per-example records ``{id, context_len, depth, depth_actual, distance_tokens, seed, key, correct,
    answer_logprob}`` over every (seed, context length, depth)."""
    task = Passkey(tokenizer, haystack_docs, context_lengths, depths, bos_id, boundaries)
    examples = [ex for s in seeds for ex in task.examples(s)]
    records = score_examples(logits_fn, examples, batch_size)
    for r in records:
        r["answer_logprob"] = r.pop("logprob")
        del r["group"]
    return records
