"""How close outline attention on a window's recovered statement tree (``python_fragment_tree``: what
``outline(structure='python')`` trains with) comes to outline on the statement tree of the whole file
restricted to the window, against the text tree (lines and indentation) as the baseline:

    python scripts/fragment_agreement.py [--root DIR] [--files 100] [--per-file 3] [--chars 4096]
                                         [--window 256] [--header 32] [--recent 2] [--seed 0] [--json OUT]

Windows of ``--chars`` characters start at random offsets (seeded) of standard-library files that parse,
one token per character, so they begin and end mid-statement as packed training windows do. The reference
is ``python_tree`` of the whole file with its statements clipped to the window and those outside it
dropped. The comparison is exact (``outline.pair_overlap``): the Jaccard index of two patterns' pairs, the
share of the reference's pairs beyond the window that a tree also has (its recall) and of the tree's own
that the reference has (its precision).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import sysconfig
from pathlib import Path

import numpy as np

from spattern.patterns.fragment import FragmentStats, python_fragment_tree
from spattern.patterns.outline import key_ends, pair_overlap, text_tree
from spattern.patterns.tree import python_tree, without_empty


def pair_agreement(e_tree: np.ndarray, e_ref: np.ndarray, window: int) -> dict:
    """Jaccard of two outline patterns' pairs (key ends ``e_tree``, ``e_ref`` over one window), and the
    shares of the pairs beyond the local window: the reference's that the tree has, the tree's that the
    reference has (``outline.pair_overlap``)."""
    o = pair_overlap(e_tree, e_ref, window)
    return {"jaccard": o["jaccard"], "recall_beyond_window": o["b_beyond_in_a"],
            "precision_beyond_window": o["a_beyond_in_b"]}


def windows(root: str, files: int, per_file: int, chars: int, seed: int):
    """(file name, source, window start) for ``per_file`` random windows of each of ``files`` files that
    parse and hold at least two windows' worth of characters."""
    rng = np.random.default_rng(seed)
    taken = 0
    for p in sorted(Path(root).glob("*.py")):
        src = p.read_text(encoding="utf-8", errors="replace")
        if len(src) < 2 * chars:
            continue
        try:
            ast.parse(src)
        except SyntaxError:
            continue
        for a in sorted(rng.integers(0, len(src) - chars, size=per_file).tolist()):
            yield p.name, src, int(a)
        taken += 1
        if taken == files:
            return


def measure(src: str, a: int, chars: int, window: int, header: int, recent: int, stats: FragmentStats) -> dict:
    text = src[a:a + chars]
    ref = without_empty(python_tree(src, np.arange(a, a + chars), n_tokens=chars))
    e_ref = key_ends(ref, window, header, recent)
    out = {}
    for name, t in (("fragment", python_fragment_tree(text, stats=stats)), ("text", text_tree(text))):
        out[name] = pair_agreement(key_ends(t, window, header, recent), e_ref, window)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--per-file", type=int, default=3)
    ap.add_argument("--chars", type=int, default=4096)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--header", type=int, default=32)
    ap.add_argument("--recent", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    stats, rows = FragmentStats(), []
    for name, src, start in windows(a.root, a.files, a.per_file, a.chars, a.seed):
        rows.append({"file": name, "start": start, **measure(src, start, a.chars, a.window, a.header, a.recent, stats)})
    if not rows:
        print(f"no file of {a.root} holds two windows of {a.chars} characters and parses", file=sys.stderr)
        return 1
    summary = {tree: {k: {"median": float(np.median([r[tree][k] for r in rows])),
                          "p10": float(np.percentile([r[tree][k] for r in rows], 10)),
                          "mean": float(np.mean([r[tree][k] for r in rows]))}
                      for k in rows[0][tree]} for tree in ("fragment", "text")}
    total = stats.parsed_lines + stats.dropped_lines
    summary["fragment_lines_parsed"] = stats.parsed_lines / total if total else 1.0
    summary["fragment_parses_per_segment"] = stats.parses / max(stats.segments, 1)
    out = {"args": vars(a), "windows": len(rows), "files": len({r["file"] for r in rows}), "summary": summary,
           "rows": rows}
    print(json.dumps({"windows": len(rows), **summary}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
