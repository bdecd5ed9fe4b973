"""Document-level train/validation/test splits by a hash of the document id.

A document's split depends only on its id and the salt, never on the order or the other
documents, so no document crosses splits and adding documents moves none of the old ones.
"""
from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")


def check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions: expected three non-negative numbers (train, validation, test) "
                         f"summing to 1, got {fractions!r}")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def hash_unit(doc_id: str, salt: str = "spattern") -> float:
    """A number in [0, 1) from sha256(salt:doc_id): uniform, stable across machines and runs."""
    digest = hashlib.sha256(f"{salt}:{doc_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(doc_id: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
             salt: str = "spattern") -> str:
    """'train', 'validation' or 'test' for this document id."""
    train, val, _ = check_fractions(fractions)
    u = hash_unit(doc_id, salt)
    if u < train:
        return "train"
    if u < train + val:
        return "validation"
    return "test"
