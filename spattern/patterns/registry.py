"""Name -> constructor registry for patterns (the CLI, configs, the parser and contract tests use it).

Built-in families register themselves with ``@register("name")``. Users add their own pattern
classes the same way, and named predicates with ``register_predicate`` so that
``custom('name')`` can be written in configs and on the command line.
"""

from __future__ import annotations

from typing import Callable

REGISTRY: dict[str, Callable] = {}
PREDICATES: dict[str, Callable] = {}


def register(name: str):
    """Class decorator: make a pattern family available by ``name`` in strings and configs."""

    def deco(cls):
        prev = REGISTRY.get(name)
        if prev is not None and prev is not cls:
            if cls.__module__ == "__main__" and prev.__qualname__ == cls.__qualname__:
                return cls  # a family file run as a script (python -m ...) re-defines its class
            raise ValueError(f"pattern name {name!r} is already registered to {prev!r}")
        REGISTRY[name] = cls
        return cls

    return deco


def register_predicate(name: str, fn: Callable | None = None):
    """Register a vectorized predicate ``fn(q_idx, kv_idx) -> bool array`` under ``name``.

    Usable as a decorator. ``custom('name')`` then resolves to it, in Python and in strings.
    """

    def deco(f):
        if not callable(f):
            raise TypeError(f"register_predicate({name!r}): expected a callable, got {type(f).__name__}")
        PREDICATES[name] = f
        return f

    return deco(fn) if fn is not None else deco


def get(name: str) -> Callable:
    if name not in REGISTRY:
        raise KeyError(f"unknown pattern {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def names() -> list[str]:
    return sorted(REGISTRY)
