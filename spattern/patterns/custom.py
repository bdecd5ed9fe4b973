"""custom(predicate): a user pattern from a vectorized predicate of (query index, key index).

    >>> import spattern as sp
    >>> every_7th = sp.custom(lambda q, k: (q - k) % 7 == 0, name="every7")
    >>> layout = sp.compile(every_7th & sp.causal, 1024)

The predicate receives two int64 numpy arrays of absolute positions of ONE shape (query and
key indices already broadcast against each other) and must return a bool array of that same
shape: one answer per (query, key) pair. Anything else (a wrong shape, a non-bool dtype such as
``(q - k) % 7`` without ``== 0``) raises ``ValueError`` instead of being broadcast or cast.

A custom pattern has no analytic enumerator and no mask program: it compiles through the
generic path and its partial blocks carry bitmasks. ``custom(fn, name="mine")`` registers ``fn``
under ``mine`` so that strings and configs can say ``custom('mine')``; a name means one
predicate (``spattern.register_predicate`` explains "the same" and ``replace=True``), so a
second, different ``fn`` under a taken name is a ``ValueError``, never a silent switch.
Equality and hashing go by name and function.

Run ``python -m spattern.patterns.custom`` to draw an example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from spattern.patterns.base import Pattern
from spattern.patterns.registry import PREDICATES, register, register_predicate


@register("custom")
@dataclass(frozen=True, repr=False)
class Custom(Pattern):
    name_: str
    fn: Callable = field(default=None, compare=True, hash=True, repr=False)  # type: ignore[assignment]

    name = "custom"

    def __post_init__(self):
        if not isinstance(self.name_, str) or not self.name_:
            raise TypeError(f"custom: expected a non-empty name, got {self.name_!r}")
        if self.fn is None:
            if self.name_ not in PREDICATES:
                raise KeyError(
                    f"custom({self.name_!r}): no predicate registered under that name; "
                    f"register one with spattern.register_predicate({self.name_!r}, fn); "
                    f"registered: {sorted(PREDICATES)}"
                )
            object.__setattr__(self, "fn", PREDICATES[self.name_])
        if not callable(self.fn):
            raise TypeError(f"custom: expected a callable predicate, got {type(self.fn).__name__}")

    def allowed(self, q_idx, kv_idx, geom):
        q, k = np.broadcast_arrays(np.asarray(q_idx, dtype=np.int64), np.asarray(kv_idx, dtype=np.int64))
        out = np.asarray(self.fn(q, k))
        if out.shape != q.shape:
            raise ValueError(
                f"custom({self.name_!r}): expected the predicate to return one value per (query, key) pair, "
                f"shape {q.shape} (the shape of its q and k arguments), got shape {out.shape}")
        if out.dtype != np.bool_:
            raise ValueError(
                f"custom({self.name_!r}): expected the predicate to return a bool array, got dtype {out.dtype} "
                "(compare explicitly, e.g. (q - k) % 7 == 0)")
        return out

    def __str__(self):
        return f"custom({self.name_!r})"


def custom(predicate: Callable | str, name: str | None = None, register_name: bool = True) -> Custom:
    """Make a pattern from ``predicate(q_idx, kv_idx) -> bool array``, or look one up by name."""
    if isinstance(predicate, str):
        return Custom(predicate)
    if not callable(predicate):
        raise TypeError(f"custom: expected a callable predicate or a registered name, got {type(predicate).__name__}")
    name = name or getattr(predicate, "__name__", "predicate")
    if register_name and name != "<lambda>":
        predicate = register_predicate(name, predicate)  # ValueError if taken by a different predicate
    return Custom(name, predicate)


if __name__ == "__main__":
    from spattern.patterns.base import demo_main

    demo_main("custom", [(custom(lambda q, k: ((q // 16) % 2 == (k // 16) % 2), name="checker"), 'custom.png')])
