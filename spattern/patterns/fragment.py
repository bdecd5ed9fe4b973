"""The statement tree of Python source cut anywhere: a training window, an evaluation window.

``python_tree`` (spattern.patterns.tree) needs source that parses. A window of a packed stream
rarely does: it starts inside a statement (often inside an indented block, sometimes inside a
string) and stops inside another, and it may hold the ends and starts of several files.
``python_fragment_tree(text, offsets, breaks=...)`` recovers the statement tree of such a window:

1. Segments. ``breaks`` are the character offsets where a new document starts (where a packed
   stream's end-of-document token was); each segment is parsed on its own and, when there are
   several, becomes a "Module" node under the root.
2. Indentation. A span of lines that starts inside a block starts indented; it is parsed behind a
   chain of synthetic openers (``if 1:``, or ``try:`` where the span later dedents to an ``except``
   or ``finally`` at that level), one per indentation level below its first line's that its lines
   use, so that it parses as it stood in its file. Each opener becomes an "Enclosing" node from the
   span's first token to the end of its block: the statement that began before the window (a
   ``def``, a ``class``), clipped to it, as the whole file's tree restricted to the window has it.
3. Recovery. While the span does not parse, the line the ``SyntaxError`` names is dropped from the
   nearer end: lines from the start up to it (a window that begins in the middle of a statement or
   a string), or lines from it to the end (a window that ends inside a statement); a window that
   ends inside a triple-quoted string gets its quotes closed instead, and one that ends right after a
   block's opening line a ``pass``. Where the start did not parse, a second recovery assumes the
   window began inside a triple-quoted string (it resumes after the first line that holds three
   double quotes, or three single quotes); the recovery that parses more lines is kept. At most
   ``max_tries`` parses per recovery.
4. What does not parse (the dropped lines at either end) gets the outline tree of its text
   (``spattern.patterns.outline.text_tree``: lines and indentation), grafted under the segment, so
   every token belongs to a node either way.

A statement covers the tokens whose start lies in [token(c0), token(c1)), token(c) being the token that
holds character c and [c0, c1) the statement's source span; nested statements stay nested and
sibling statements disjoint, so the tree is laminar (outline's interval form applies). Node kinds
are the ast class names ("FunctionDef", "If", ...), "Module" and the text tree's kinds.
``FragmentStats`` (``python_fragment_tree(..., stats=...)``) counts the lines parsed and dropped.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass

import numpy as np

from spattern.patterns.outline import text_tree
from spattern.patterns.tree import Tree, _char_offset, _line_starts

MAX_TRIES = 24
TAIL_LOST = 3  # non-blank lines a recovery may drop at the end before a string start is tried too
_TRY_CLAUSES = ("except", "finally")


@dataclass
class FragmentStats:
    """Lines of the non-blank source that the AST covers, and that fell to the text tree."""

    parsed_lines: int = 0
    dropped_lines: int = 0
    segments: int = 0
    parses: int = 0


class _Builder:
    """Parent pointers, spans and kinds of a tree under construction (parents before children)."""

    def __init__(self, n_tok: int, offs: np.ndarray) -> None:
        self.offs = offs
        self.parent, self.start, self.end, self.kind = [-1], [0], [n_tok], ["Module"]

    def add(self, p: int, t0: int, t1: int, kind: str) -> int:
        t0 = max(t0, self.start[p])
        t1 = min(max(t1, t0), self.end[p])
        self.parent.append(p)
        self.start.append(t0)
        self.end.append(max(t0, t1))
        self.kind.append(kind)
        return len(self.parent) - 1

    def graft(self, p: int, t: Tree, shift: int) -> None:
        """The non-root nodes of ``t`` (over tokens from ``shift``) under ``p``."""
        ids = {0: p}
        for v in range(1, t.n_nodes):
            if t.end[v] > t.start[v]:
                ids[v] = self.add(ids.get(t.parent[v], p), t.start[v] + shift, t.end[v] + shift, t.kind[v])

    def tree(self, n_tok: int) -> Tree:
        return Tree(tuple(self.parent), tuple(self.start), tuple(self.end), n_tok, tuple(self.kind))


def _indent(line: str) -> int | None:
    body = line.expandtabs(8).rstrip("\r\n")
    stripped = body.lstrip()
    if not stripped or stripped.startswith("#"):
        return None
    return len(body) - len(stripped)


def _openers(lines: list[str], indents: list[int | None]) -> list[str]:
    """The synthetic opener lines that let ``lines`` parse at their own indentation."""
    first = next((i for i in indents if i is not None), 0)
    if first == 0:
        return []
    levels = sorted({0} | {i for i in indents if i is not None and i < first})
    out = []
    for lv in levels:
        dedent = next((ln.lstrip() for ln, i in zip(lines, indents) if i == lv), "")
        word = dedent.split(None, 1)[0].rstrip(":") if dedent.strip() else ""
        out.append(" " * lv + ("try:\n" if word in _TRY_CLAUSES else "if 1:\n"))
    return out


def _parse(lines: list[str], indents: list[int | None], close: str = "") -> tuple[ast.Module, int, str]:
    """(module, number of opener lines, the source parsed) of ``lines`` behind their openers, and
    ``close`` after them (the quotes that end a string the window cuts)."""
    openers = _openers(lines, indents)
    src = "".join(openers) + "".join(lines)
    if lines and not lines[-1].endswith(("\n", "\r")):
        src += "\n"
    src += close
    with warnings.catch_warnings():  # a fragment's odd literals ("invalid escape sequence", ...) are not news
        warnings.simplefilter("ignore")
        # (a NUL byte, which the parser refuses outright, as a space: the same length, so the same offsets)
        return ast.parse(src.replace("\0", " ")), len(openers), src


_BODIES = ("body", "handlers", "orelse", "finalbody", "cases")  # in source order


def _statements(node):
    """The statements directly inside ``node`` (its blocks; an except clause's or a case's own block),
    without walking its expressions, where no statement can be."""
    for field in _BODIES:
        for child in getattr(node, field, ()):
            if isinstance(child, ast.stmt):
                yield child
            else:  # ast.ExceptHandler, ast.match_case
                yield from _statements(child)


def _count(indents) -> int:
    return sum(i is not None for i in indents)


def _open_quote(line: str) -> str | None:
    """The triple quotes last opened on ``line`` (None: none there)."""
    at = max(line.rfind('"""'), line.rfind("'''"))
    return line[at:at + 3] if at >= 0 else None


def _recover(lines: list[str], indents: list[int | None], s: int, max_tries: int):
    """(module or None, opener lines, source parsed, first line, end line, parses): ``lines[s:]`` parsed,
    dropping the line each SyntaxError names and those between it and the nearer end."""
    e, close = len(lines), ""
    for tries in range(1, max_tries + 1):
        while s < e and indents[s] is None:
            s += 1
        while e > s and indents[e - 1] is None:
            e -= 1
        if s >= e:
            return None, 0, "", e, e, tries - 1
        try:
            module, n_open, src = _parse(lines[s:e], indents[s:e], close)
            return module, n_open, src, s, e, tries
        except (RecursionError, MemoryError):  # nesting too deep for the parser: the text tree takes it all
            return None, 0, "", e, e, tries
        except SyntaxError as err:
            n_open = len(_openers(lines[s:e], indents[s:e]))
            at = s + max(0, min((err.lineno or 1) - 1 - n_open, e - s - 1))
            msg = err.msg or ""
            quote = _open_quote(lines[at]) if msg.startswith("unterminated triple-quoted") else None
            if quote and not close and at - s >= e - at:  # the window stops inside a long string: close it
                close = "\n" + quote + "\n"
            elif msg.startswith("expected an indented block") and at == e - 1 and not close:
                close = " " * (indents[at] + 4) + "pass\n"  # it stops after a block's opening line
            elif at - s < e - at:  # nearer the start: the window began inside it
                s, close = at + 1, ""
            else:                  # nearer the end: the window stops inside it
                e, close = at, ""
    return None, 0, "", e, e, max_tries


def _segment(b: _Builder, seg: int, text: str, c_base: int, tok, max_tries: int,
             stats: FragmentStats | None) -> None:
    """Nodes of one segment's ``text`` (starting at character ``c_base`` of the window; ``tok``: window
    character -> the token holding it) under node ``seg``."""
    lines = text.splitlines(keepends=True)
    indents = [_indent(ln) for ln in lines]
    line_c = _line_starts(text) + [len(text)]
    module, n_open, src, s, e, tries = _recover(lines, indents, 0, max_tries)
    if tries > 1:  # the start did not parse: perhaps the window began inside a triple-quoted string,
        for quote in ('"""', "'''"):  # which ends on the first line that holds its quotes
            close = next((i for i, ln in enumerate(lines) if quote in ln), None)
            # (worth a second recovery only where the first lost lines after that one, or many at the end)
            if close is None or (module is not None and s <= close + 1 and _count(indents[e:]) <= TAIL_LOST):
                continue
            alt = _recover(lines, indents, close + 1, max_tries)
            tries += alt[5]
            if alt[0] is not None and (module is None or _count(indents[alt[3]:alt[4]]) > _count(indents[s:e])):
                module, n_open, src, s, e, _ = alt
    if stats is not None:
        stats.parses += tries
    if module is None:
        s = e = len(lines)
    else:  # the statements: their spans in ``src`` -> the segment's characters -> tokens
        src_lines, src_starts = src.splitlines(keepends=True), _line_starts(src)
        shift = c_base + line_c[s] - src_starts[n_open]
        c_end = c_base + line_c[e]

        def visit(node, pid):
            for child in _statements(node):
                c1 = min(_char_offset(src_lines, src_starts, child.end_lineno, child.end_col_offset) + shift, c_end)
                if child.lineno <= n_open:  # a synthetic opener: the block that holds the window's start
                    c0 = c_base + line_c[s]
                    kind = "Enclosing"
                else:
                    c0 = _char_offset(src_lines, src_starts, child.lineno, child.col_offset) + shift
                    kind = type(child).__name__
                if c0 >= c_end:  # what ``close`` added
                    continue
                t0, t1 = tok(c0), tok(c1)
                if t1 > t0:
                    visit(child, b.add(pid, t0, t1, kind))

        visit(module, seg)
    for a, z in ((0, s), (e, len(lines))):  # the lines that did not parse: their text tree
        if z > a and any(i is not None for i in indents[a:z]):
            c0, c1 = c_base + line_c[a], c_base + line_c[z]
            t0, t1 = tok(c0), tok(c1)
            if t1 > t0:
                local = np.maximum(b.offs[t0:t1] - c0, 0)
                b.graft(seg, text_tree(text[line_c[a]:line_c[z]], local, t1 - t0), t0)
    if stats is not None:
        stats.segments += 1
        stats.parsed_lines += sum(i is not None for i in indents[s:e])
        stats.dropped_lines += sum(i is not None for i in indents[:s] + indents[e:])


def python_fragment_tree(text: str, token_offsets=None, n_tokens: int | None = None, breaks=(),
                         max_tries: int = MAX_TRIES, stats: FragmentStats | None = None) -> Tree:
    """The statement tree of a window of Python source over its tokens (see the module docstring).

    ``token_offsets``: the character offset where each token starts (ascending; default one token
    per character); ``n_tokens``: tokens past it are dropped. ``breaks``: character offsets where a
    new document starts. ``stats``: a ``FragmentStats`` to fill."""
    offs = np.arange(len(text), dtype=np.int64) if token_offsets is None else np.asarray(token_offsets, np.int64)
    n_tok = int(offs.size if n_tokens is None else n_tokens)
    if offs.size > 1 and (np.diff(offs) < 0).any():
        raise ValueError("token_offsets: expected ascending character offsets")
    end_c = int(offs[n_tok]) if n_tok < offs.size else len(text)  # the text the kept tokens spell
    text, offs = text[:end_c], offs[:n_tok]

    def tok(c: int) -> int:  # the token holding character c (n_tok at the end)
        return n_tok if c >= end_c else max(int(np.searchsorted(offs, c, side="right")) - 1, 0)

    bounds = [0] + sorted({int(c) for c in breaks if 0 < int(c) < end_c}) + [end_c]
    b = _Builder(n_tok, offs)
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        seg = 0
        if len(bounds) > 2:
            t0, t1 = tok(c0), tok(c1)
            if t1 <= t0:
                continue
            seg = b.add(0, t0, t1, "Module")
        _segment(b, seg, text[c0:c1], c0, tok, max_tries, stats)
    return b.tree(n_tok)
