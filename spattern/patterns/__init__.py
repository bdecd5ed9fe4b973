"""Pattern DSL: one family per file, combinators in base.py, string syntax in parse.py."""

from spattern.patterns.base import (
    Difference,
    Geometry,
    Heads,
    Intersection,
    Pattern,
    Union,
    difference,
    heads,
    intersection,
    union,
)
from spattern.patterns.custom import Custom, custom
from spattern.patterns.dilated import Dilated, dilated
from spattern.patterns.document import Document, document
from spattern.patterns.full import Causal, Full, causal, full
from spattern.patterns.landmark import Landmark, landmark
from spattern.patterns.local import Local, local
from spattern.patterns.outline import Outline, outline, text_tree
from spattern.patterns.parse import PatternSyntaxError, parse
from spattern.patterns.random import Random, random
from spattern.patterns.registry import REGISTRY, register, register_predicate
from spattern.patterns.sink import Sink, sink
from spattern.patterns.topk import BlockSelection, Indexed, Oracle, TopK, indexed, oracle, topk
from spattern.patterns.tree import (
    AstScope,
    Tree,
    ancestors,
    ast_scope,
    char_tree,
    children,
    parent,
    python_tree,
    same_node,
    siblings,
)
from spattern.patterns.strided import BlockStrided, Strided, blockstrided, strided

REGISTRY.setdefault("heads", Heads)

# Built-in examples used by the tour, the CLI and the contract tests.
EXAMPLES = {
    "local": "local(256) & causal",
    "strided": "(local(128) | strided(128)) & causal",
    "blockstrided": "(local(128) | blockstrided(4)) & causal",
    "dilated": "dilated(64, dilation=4) & causal",
    "landmark": "(local(256) | landmark(every=512)) & causal",
    "sink": "(local(256) | sink(64)) & causal",
    "random": "local(128) | random(2, seed=0)",
    "bigbird": "local(192) | landmark(every=1024) | random(3, seed=1)",
    "longformer": "(local(512) | landmark(every=2048) | sink(64)) & causal",
    "full-causal": "causal",
}

__all__ = [n for n in dir() if not n.startswith("_")]
