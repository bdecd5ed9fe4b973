"""The string syntax of patterns: parsed, never eval'ed.

    local(256) | strided(128) | landmark(every=512) & causal
    (local(512) | landmark(every=2048) | sink(64)) & causal
    heads(local(64), strided(8)) & causal
    document([0, 100, 250]) & causal - sink(4)

Grammar (precedence as in Python: ``-`` binds tighter than ``&``, ``&`` tighter than ``|``)::

    expr  := and ('|' and)*
    and   := sub ('&' sub)*
    sub   := atom ('-' atom)*
    atom  := '(' expr ')' | NAME | NAME '(' [arg (',' arg)*] ')'
    arg   := [NAME '='] value
    value := expr | INT | FLOAT | true | false | none | 'STRING' | '[' [value (',' value)*] ']'

Names come from the registry (``spattern.patterns.registry``). ``causal(p)`` means ``p & causal``.
A malformed string raises ``PatternSyntaxError`` showing the column and what was expected.

Limits (a ``PatternSyntaxError`` names the one exceeded, never a ``RecursionError``):
``MAX_DEPTH`` = 64 levels of nesting (parentheses, brackets, argument lists and ``-`` chains,
which nest to the left), ``MAX_OPERANDS`` = 1000 operands in one ``|`` or ``&`` chain, and
integer literals of magnitude at most ``MAX_INT`` = 2**31 - 1 (token positions and pattern
parameters are int32 in the kernels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from spattern.patterns import registry
from spattern.patterns.base import Pattern, heads


MAX_DEPTH = 64
MAX_OPERANDS = 1000
MAX_INT = 2**31 - 1


class PatternSyntaxError(ValueError):
    def __init__(self, text: str, col: int, message: str):
        self.text, self.col, self.message = text, col, message
        super().__init__(f"{message} at column {col + 1}:\n  {text}\n  {' ' * col}^")


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*|\d*\.\d+|\d+)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>[()\[\],=|&\-]))"
)


@dataclass
class _Tok:
    kind: str  # num, name, str, op, end
    text: str
    col: int


def _tokenize(text: str) -> list[_Tok]:
    toks, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            col = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise PatternSyntaxError(text, col, f"unexpected character {text[col]!r}")
        kind = m.lastgroup
        toks.append(_Tok(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def enter(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise PatternSyntaxError(self.text, tok.col, f"too deeply nested: expected at most {MAX_DEPTH} levels "
                                     "of parentheses, brackets, argument lists and '-' chains")

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def error(self, message: str, tok: _Tok | None = None):
        tok = tok or self.tok
        found = "end of input" if tok.kind == "end" else repr(tok.text)
        raise PatternSyntaxError(self.text, tok.col, f"{message}, found {found}")

    def accept(self, op: str) -> bool:
        if self.tok.kind == "op" and self.tok.text == op:
            self.i += 1
            return True
        return False

    def expect(self, op: str, what: str):
        if not self.accept(op):
            self.error(f"expected {what}")

    # expr := and ('|' and)*
    def expr(self) -> Pattern:
        return self.chain("|", self.conj, lambda a, b: a | b)

    def conj(self) -> Pattern:
        return self.chain("&", self.diff, lambda a, b: a & b)

    def chain(self, op: str, operand, combine) -> Pattern:
        out, n = operand(), 1
        while self.tok.kind == "op" and self.tok.text == op:
            n += 1
            if n > MAX_OPERANDS:
                raise PatternSyntaxError(self.text, self.tok.col, f"too many operands: expected at most "
                                         f"{MAX_OPERANDS} in one {op!r} chain")
            self.i += 1
            out = combine(out, operand())
        return out

    def diff(self) -> Pattern:
        depth = self.depth
        out = self.atom()
        while self.tok.kind == "op" and self.tok.text == "-":
            self.enter(self.tok)  # a - b - c nests to the left: each '-' is one level deeper
            self.i += 1
            out = out - self.atom()
        self.depth = depth
        return out

    def atom(self) -> Pattern:
        tok = self.tok
        if self.accept("("):
            self.enter(tok)
            out = self.expr()
            self.expect(")", "')' to close the '(' at column %d" % (tok.col + 1))
            self.depth -= 1
            return out
        if tok.kind != "name":
            self.error("expected a pattern (a name such as local(...), or '(')")
        self.i += 1
        name = tok.text
        if name not in registry.REGISTRY:
            raise PatternSyntaxError(
                self.text, tok.col, f"unknown pattern {name!r}; expected one of {', '.join(registry.names())}"
            )
        cls = registry.REGISTRY[name]
        if not (self.tok.kind == "op" and self.tok.text == "("):
            try:
                return cls()
            except (TypeError, ValueError):
                self.error(f"expected '(' and arguments after {name!r}")
        self.i += 1
        self.enter(tok)
        args, kwargs = self.arguments()
        self.depth -= 1
        try:
            if name == "heads":
                if kwargs:
                    raise TypeError("heads(...) takes patterns only, no keywords")
                return heads(*args)
            if name == "causal":
                if not args and not kwargs:
                    return cls()  # causal() is causal
                if len(args) != 1 or kwargs or not isinstance(args[0], Pattern):
                    raise TypeError("causal(...) takes exactly one pattern")
                return args[0] & cls()
            return cls(*args, **kwargs)
        except (TypeError, ValueError, KeyError) as e:
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)  # KeyError's str quotes
            raise PatternSyntaxError(self.text, tok.col, f"bad arguments to {name}(...): {msg}") from None

    def arguments(self) -> tuple[list[Any], dict[str, Any]]:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        if self.accept(")"):
            return args, kwargs
        while True:
            tok = self.tok
            nxt = self.toks[min(self.i + 1, len(self.toks) - 1)]
            if tok.kind == "name" and nxt.kind == "op" and nxt.text == "=":
                self.i += 2
                if tok.text in kwargs:
                    raise PatternSyntaxError(self.text, tok.col, f"argument {tok.text!r} given twice")
                kwargs[tok.text] = self.value()
            else:
                if kwargs:
                    self.error("expected a keyword argument (name=value) after keyword arguments")
                args.append(self.value())
            if self.accept(")"):
                return args, kwargs
            self.expect(",", "',' or ')' in the argument list")

    def value(self) -> Any:
        tok = self.tok
        if tok.kind == "op" and tok.text == "-" and self.toks[min(self.i + 1, len(self.toks) - 1)].kind == "num":
            self.i += 1
            return -self.number()
        if tok.kind == "num":
            return self.number()
        if tok.kind == "str":
            self.i += 1
            return tok.text[1:-1]
        if tok.kind == "name" and tok.text in ("true", "false", "none"):
            self.i += 1
            return {"true": True, "false": False, "none": None}[tok.text]
        if self.accept("["):
            self.enter(tok)
            items: list[Any] = []
            while not self.accept("]"):
                if items:
                    self.expect(",", "',' or ']' in the list")
                items.append(self.value())
            self.depth -= 1
            return tuple(items)
        if tok.kind == "name" or (tok.kind == "op" and tok.text == "("):
            return self.expr()
        self.error("expected a value (number, true/false, 'string', [list] or pattern)")

    def number(self):
        tok = self.tok
        if "." in tok.text:
            self.i += 1
            return float(tok.text)
        if len(tok.text) > 12 or int(tok.text) > MAX_INT:
            self.error(f"expected an integer of at most {MAX_INT} (2**31 - 1)")
        self.i += 1
        return int(tok.text)


def parse(text: str) -> Pattern:
    """Read a pattern from its string syntax. ``parse(str(p)) == p`` for every built-in."""
    if isinstance(text, Pattern):
        return text
    if not isinstance(text, str):
        raise TypeError(f"parse: expected a str, got {type(text).__name__}")
    if not text.strip():
        raise PatternSyntaxError(text, 0, "expected a pattern, found an empty string")
    p = _Parser(text)
    out = p.expr()
    if p.tok.kind != "end":
        p.error("expected an operator ('|', '&', '-') or the end")
    return out
