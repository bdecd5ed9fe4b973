"""Name -> constructor registry for patterns (the CLI, configs, the parser and contract tests use it).

Built-in families register themselves with ``@register("name")``. Users add their own pattern
classes the same way, and named predicates with ``register_predicate`` so that
``custom('name')`` can be written in configs and on the command line.

A predicate name means one predicate: registering a different predicate under a taken name is
a ``ValueError`` (pass ``replace=True`` to rebind it on purpose). "The same predicate" is the
same function object, or a function with equal code, defaults and captured values (the same
``lambda`` line run again, e.g. a re-run cell or a loop); the first registered object is kept.
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


def _same_value(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(type(a) is type(b) and a == b)
    except Exception:  # e.g. numpy arrays: ambiguous truth value; not provably the same
        return False


def same_predicate(f: Callable, g: Callable) -> bool:
    """True when ``f`` and ``g`` are the same object, or functions with equal code, defaults and
    captured (closure) values."""
    if f is g:
        return True
    cf, cg = getattr(f, "__code__", None), getattr(g, "__code__", None)
    if cf is None or cg is None or cf != cg:
        return False
    if not (_same_value(f.__defaults__, g.__defaults__) and _same_value(f.__kwdefaults__, g.__kwdefaults__)):
        return False
    cells_f, cells_g = f.__closure__ or (), g.__closure__ or ()
    try:
        return len(cells_f) == len(cells_g) and all(
            _same_value(a.cell_contents, b.cell_contents) for a, b in zip(cells_f, cells_g))
    except ValueError:  # an empty cell
        return False


def register_predicate(name: str, fn: Callable | None = None, replace: bool = False):
    """Register a vectorized predicate ``fn(q_idx, kv_idx) -> bool array`` under ``name``.

    Usable as a decorator. ``custom('name')`` then resolves to it, in Python and in strings.
    Returns the registered predicate (the first one registered when ``fn`` is the same predicate
    again). A different predicate under a taken name raises ``ValueError`` unless ``replace``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_predicate: expected a name that is a Python identifier, got {name!r}")

    def deco(f):
        if not callable(f):
            raise TypeError(f"register_predicate({name!r}): expected a callable, got {type(f).__name__}")
        prev = PREDICATES.get(name)
        if prev is not None and not replace:
            if same_predicate(prev, f):
                return prev
            raise ValueError(
                f"register_predicate({name!r}): expected a free name, got one already registered to a different "
                f"predicate ({getattr(prev, '__qualname__', prev)!r}); choose another name, or pass replace=True "
                "to rebind it (patterns already built keep their own function)")
        PREDICATES[name] = f
        return f

    return deco(fn) if fn is not None else deco


def get(name: str) -> Callable:
    if name not in REGISTRY:
        raise KeyError(f"unknown pattern {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def names() -> list[str]:
    return sorted(REGISTRY)
