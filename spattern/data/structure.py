"""The context a content-dependent pattern compiles with, from token ids alone.

``structure_context(tokenizer, ids)`` -> a read-only mapping of the trees a pattern may ask for, each
built the first time it is read: ``"tree"``, the outline tree of the text the ids spell
(``spattern.patterns.outline.text_tree``: lines and indentation), and ``"python_tree"``, the Python
statement tree of that text (``spattern.patterns.fragment.python_fragment_tree``: ``ast`` on source cut
anywhere, documents split where an end-of-document token stands). The ids' bytes are joined into one
text (Latin-1, one character per byte, so lines and indentation are exact whatever the encoding) with
each token's start offset. Working from ids means documents, evaluation windows, task examples and
packed training sequences all get their structure the same way, with no second tokenization.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Sequence

import numpy as np

from spattern.patterns.fragment import python_fragment_tree
from spattern.patterns.outline import text_tree


def text_and_offsets(tokenizer, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    """(text, start offset of each token): the concatenated bytes of ``ids`` as Latin-1."""
    pieces = tokenizer.token_bytes([int(i) for i in ids])
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(pieces) else np.zeros(0, np.int64)
    return b"".join(pieces).decode("latin-1"), offsets


class StructureContext(Mapping):
    """The trees of one token sequence, each built when first read (``BUILDERS``). Pickles the trees
    built so far only (a context worker's result carries what the layouts were compiled from)."""

    BUILDERS = {
        "tree": lambda text, offs, breaks: text_tree(text, offs, len(offs)),
        "python_tree": lambda text, offs, breaks: python_fragment_tree(text, offs, len(offs), breaks=breaks),
    }

    def __init__(self, text: str, offsets: np.ndarray, breaks: tuple[int, ...] = ()) -> None:
        self.text, self.offsets, self.breaks = text, offsets, breaks
        self.built: dict = {}

    def __getitem__(self, key):
        if key not in self.built:
            if key not in self.BUILDERS:
                raise KeyError(key)
            if self.text is None:
                raise KeyError(f"{key}: not built before this context was pickled (it carries its built trees only)")
            self.built[key] = self.BUILDERS[key](self.text, self.offsets, self.breaks)
        return self.built[key]

    def __iter__(self):
        return iter(self.BUILDERS)

    def __len__(self) -> int:
        return len(self.BUILDERS)

    def __getstate__(self) -> dict:
        return {"text": None, "offsets": None, "breaks": (), "built": self.built}


def structure_context(tokenizer, ids: Sequence[int]) -> StructureContext:
    """The trees of ``len(ids)`` tokens (``StructureContext``): ``["tree"]`` the outline tree of the
    text the ids spell, ``["python_tree"]`` its Python statement tree; a token that spells no bytes (an
    end-of-document token) starts a new document for the latter."""
    text, offsets = text_and_offsets(tokenizer, ids)
    lengths = np.diff(np.append(offsets, len(text)))
    breaks = tuple(int(c) for c in offsets[lengths == 0])
    return StructureContext(text, offsets, breaks)
