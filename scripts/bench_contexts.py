"""Host time of a training batch's structure contexts and layouts (what a context worker builds for
outline attention in study scenario 2), on the CPU, optionally A/B against another source tree.

    python scripts/bench_contexts.py [--patterns P ...] [--batch 8] [--seq 4096] [--batches 10]
                                     [--rounds 5] [--against SRC] [--json out.json]

Each round runs one fresh process per source tree (this checkout, and ``--against``: another
checkout's root, e.g. ``git worktree add /tmp/old <rev>``), in alternating order. A process builds a
warm-up batch, then ``--batches`` batches of ``--batch`` random training sequences of the prepared
CPython standard library (8192-token BPE, as the study's training runs; ``--corpus``, ``--vocab``,
``--max-docs`` choose another), the same rows in every
process, and times per batch and pattern: the structure contexts (token bytes -> text -> outline
tree; built anew for each pattern, so nothing cached on a tree carries over) and the pattern's layout
over them (``spattern.data.batch_contexts``). Reported: per source and pattern, the median ms per
batch over all rounds and batches (contexts, layout, both), the last layout's blocks and distinct
bitmasks, a digest chained over every batch's layout (``digest``), and with ``--against`` whether the
two trees' layouts are all the same and the ratio of the total medians (against / this).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("outline(window=258) & causal", "outline(window=322, recent=0) & causal")


def measure(patterns, batch: int, seq: int, batches: int, corpus: str = "stdlib", vocab: int = 8192,
            max_docs: int | None = None, seed: int = 0) -> dict:
    """Per batch: seconds of the contexts and of each pattern's layout; one process, one source."""
    import spattern
    from spattern.data.batch_contexts import SequenceContexts, TokenBytes
    from spattern.data.prepare import PreparedData, prepare
    from spattern.data.structure import structure_context

    d = PreparedData(prepare(corpus=corpus, vocab_size=vocab, max_docs=max_docs, log=lambda *a: None))
    s = d.stream("train")
    table = TokenBytes(d.tokenizer())
    rng = np.random.default_rng(seed)
    out = {"spattern": str(Path(spattern.__file__).parent), "contexts": {p: [] for p in patterns},
           "layouts": {p: [] for p in patterns}, "shape": {}}
    for i in range(batches + 1):  # the first is a warm-up
        starts = rng.integers(0, s.size - seq, batch)
        rows = np.stack([s[a:a + seq] for a in starts]).astype(np.int64)
        for p in patterns:  # fresh trees for each pattern: nothing a tree caches carries over
            t0 = time.perf_counter()
            ctx = SequenceContexts([structure_context(table, r) for r in rows.tolist()])
            t1 = time.perf_counter()
            layout = ctx.layout(p, seq, seq, (64, 64))
            t2 = time.perf_counter()
            if i:
                out["contexts"][p].append(t1 - t0)
                out["layouts"][p].append(t2 - t1)
            seen = out["shape"].get(p, {}).get("digest", "")  # over every batch's layout, warm-up included
            out["shape"][p] = {"blocks": int(layout.col_idx.size), "bitmasks": int(layout.bitmasks.shape[0]),
                               "digest": digest(layout, seen)}
    return out


def digest(layout, before: str = "") -> str:
    """sha256 of ``before`` and what a layout means (CSR arrays, kinds, programs, each partial block's
    bits in block order), independent of how its distinct bitmasks are stored: equal digests, equal
    layouts (chained over a process's batches, equal layouts of every batch)."""
    import hashlib

    h = hashlib.sha256(before.encode())
    bits = layout.bitmasks[np.maximum(layout.mask_idx, 0)] * (layout.mask_idx >= 0)[:, None, None]
    for a in (layout.row_ptr, layout.col_idx, layout.block_kind, layout.programs, layout.program_len, bits):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def run_worker(src: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, __file__, "--worker", "--batch", str(args.batch), "--seq", str(args.seq),
           "--batches", str(args.batches), "--corpus", args.corpus, "--vocab", str(args.vocab),
           *(["--max-docs", str(args.max_docs)] if args.max_docs else []), "--patterns", *args.patterns]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict], patterns) -> dict:
    ms = lambda xs: round(float(np.median(xs)) * 1e3, 2)  # noqa: E731
    every = lambda key, p: [x for r in runs for x in r[key][p]]  # noqa: E731
    return {p: {"contexts_ms": ms(every("contexts", p)), "layout_ms": ms(every("layouts", p)),
                "total_ms": ms([a + b for a, b in zip(every("contexts", p), every("layouts", p))]),
                **runs[-1]["shape"][p]} for p in patterns} | {"spattern": runs[-1]["spattern"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patterns", nargs="+", default=list(PATTERNS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--corpus", default="stdlib", help="a prepared corpus (spattern.data.prepare), BPE")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--max-docs", type=int, default=None, help="its first N documents only (a quick check)")
    ap.add_argument("--against", type=Path, help="another checkout's root to compare with")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.patterns, args.batch, args.seq, args.batches, args.corpus, args.vocab,
                                 args.max_docs)))
        return 0
    if args.against is not None and not (args.against / "spattern" / "__init__.py").is_file():
        ap.error(f"--against: expected a checkout's root holding spattern/, got {args.against}")
    sources = {"this": ROOT, **({"against": args.against} if args.against else {})}
    runs: dict[str, list] = {k: [] for k in sources}
    for r in range(args.rounds):
        for name in (list(sources) if r % 2 == 0 else list(sources)[::-1]):
            runs[name].append(run_worker(sources[name], args))
    from spattern.utils.env import capture_env

    result = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "settings": {k: getattr(args, k) for k in ("batch", "seq", "batches", "rounds", "corpus", "vocab",
                                                          "max_docs")},
              "env": capture_env(cpus=os.cpu_count()),
              **{name: summarize(rs, args.patterns) for name, rs in runs.items()}}
    if args.against:
        this, other = result["this"], result["against"]
        result["same_layouts"] = all(this[p]["digest"] == other[p]["digest"] for p in args.patterns)
        result["ratio_against_over_this"] = {p: round(other[p]["total_ms"] / this[p]["total_ms"], 3)
                                             for p in args.patterns}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
