"""spattern: a research toolkit for sparse attention patterns.

    pattern (DSL) -> compile -> BlockLayout (CSR + cost) -> attention(q, k, v, layout)
"""

from spattern.compiler import BlockLayout, compile
from spattern.patterns import (
    EXAMPLES,
    Pattern,
    PatternSyntaxError,
    blockstrided,
    causal,
    custom,
    dilated,
    document,
    full,
    heads,
    landmark,
    local,
    parse,
    random,
    register,
    register_predicate,
    sink,
    strided,
)

__version__ = "0.1.0"


def attention(*args, **kwargs):
    """Sparse attention over a BlockLayout; see ``spattern.runtime.api.attention``."""
    from spattern.runtime.api import attention as _attention

    return _attention(*args, **kwargs)


def cost(pattern, N, **kwargs):
    """Costs of a pattern at N: see ``spattern.compiler.complexity.cost``."""
    from spattern.compiler.complexity import cost as _cost

    return _cost(pattern, N, **kwargs)


__all__ = [
    "BlockLayout", "EXAMPLES", "Pattern", "PatternSyntaxError", "attention", "blockstrided", "causal",
    "compile", "cost", "custom", "dilated", "document", "full", "heads", "landmark", "local", "parse",
    "random", "register", "register_predicate", "sink", "strided",
]
