"""The context a content-dependent pattern compiles with, from token ids alone.

``structure_context(tokenizer, ids)`` -> ``{"tree": outline tree}``: the ids' bytes are joined
into one text (Latin-1, one character per byte, so lines and indentation are exact whatever the
encoding) with each token's start offset, and ``spattern.patterns.outline.text_tree`` builds the
tree. Working from ids means documents, evaluation windows, task examples and packed training
sequences all get their structure the same way, with no second tokenization.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from spattern.patterns.outline import text_tree


def text_and_offsets(tokenizer, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    """(text, start offset of each token): the concatenated bytes of ``ids`` as Latin-1."""
    pieces = tokenizer.token_bytes([int(i) for i in ids])
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(pieces) else np.zeros(0, np.int64)
    return b"".join(pieces).decode("latin-1"), offsets


def structure_context(tokenizer, ids: Sequence[int]) -> dict:
    """``{"tree": Tree}`` over ``len(ids)`` tokens: the outline tree of the text the ids spell."""
    text, offsets = text_and_offsets(tokenizer, ids)
    return {"tree": text_tree(text, offsets, len(offsets))}
