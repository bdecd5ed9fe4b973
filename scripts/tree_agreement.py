"""How far outline attention on the text tree (lines and indentation: what the study trains with) is from
outline on Python's AST statement tree (``python_tree``), on the opening window of standard-library files:

    python scripts/tree_agreement.py [--root DIR] [--files 200] [--chars 4096] [--window 256] [--header 32]
                                     [--recent 2] [--json OUT]

One token per character. A window cuts a file mid-statement, where ``ast`` cannot parse it, so the AST tree
is built on the window's longest prefix that parses, ending before a line at indentation 0 (a top-level
statement's start); the comparison covers the keys in that prefix, exactly (``outline.pair_overlap``: the
Jaccard index of the two patterns' pairs, and the share of each one's pairs beyond the window that the
other also has).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import sysconfig
from pathlib import Path

import numpy as np

from spattern.patterns.outline import key_ends, pair_overlap, text_tree
from spattern.patterns.tree import python_tree


def parsed_prefix(text: str) -> int:
    """The length of ``text``'s longest prefix that ends before a line at indentation 0 and parses (0: none)."""
    starts = [0]
    for line in text.splitlines(keepends=True)[:-1]:
        starts.append(starts[-1] + len(line))
    cuts = [s for s in starts[1:] if text[s:s + 1] not in ("", " ", "\t", "\n", "\r", "#", ")", "]", "}")]
    for cut in reversed(cuts + [len(text)] if text.endswith("\n") else cuts):
        try:
            ast.parse(text[:cut])
            return cut
        except SyntaxError:
            continue
    return 0


def agreement(text: str, window: int, header: int, recent: int) -> dict | None:
    cut = parsed_prefix(text)
    if cut < window:
        return None
    n = len(text)
    e_text = key_ends(text_tree(text), window, header, recent)
    e_ast = key_ends(python_tree(text[:cut], range(cut), n_tokens=n), window, header, recent)
    if e_text is None or e_ast is None:
        return None
    o = pair_overlap(e_text[:cut], e_ast[:cut], window, n)
    return {"chars": cut, "jaccard": o["jaccard"], "text_beyond_window_in_ast": o["a_beyond_in_b"],
            "ast_beyond_window_in_text": o["b_beyond_in_a"], "pairs_text": o["pairs_a"], "pairs_ast": o["pairs_b"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--chars", type=int, default=4096)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--header", type=int, default=32)
    ap.add_argument("--recent", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    files = sorted(p for p in Path(a.root).glob("*.py"))
    rows = []
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        if len(text) < a.chars or not text.isascii():
            continue
        r = agreement(text[:a.chars], a.window, a.header, a.recent)
        if r is not None:
            rows.append({"file": p.name, **r})
        if len(rows) == a.files:
            break
    if not rows:
        print("no file gave a window that parses", file=sys.stderr)
        return 1
    keys = ("jaccard", "text_beyond_window_in_ast", "ast_beyond_window_in_text")
    summary = {k: {"median": float(np.median([r[k] for r in rows])), "p10": float(np.percentile([r[k] for r in rows], 10)),
                   "mean": float(np.mean([r[k] for r in rows]))} for k in keys}
    summary["pairs_ast_over_text"] = float(sum(r["pairs_ast"] for r in rows) / sum(r["pairs_text"] for r in rows))
    summary["chars_parsed_median"] = float(np.median([r["chars"] for r in rows]))
    out = {"args": vars(a), "files": len(rows), "summary": summary, "rows": rows}
    print(json.dumps({"files": len(rows), **summary}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
