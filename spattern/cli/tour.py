"""``spattern tour``: the guided path through patterns, layouts, attention and analysis (CPU)."""

from __future__ import annotations

from pathlib import Path

from spattern.cli._args import positive_int


def cmd_tour(args) -> int:
    from spattern.tour import run_tour

    summary = run_tour(out=Path(args.out), sizes=args.seq, check_len=args.check_len, quick=args.quick)
    return 0 if summary["ok"] else 1


def register(sub) -> None:
    t = sub.add_parser("tour", help="patterns -> layouts -> attention -> checks -> figures (CPU, seconds)")
    t.add_argument("--out", default="out/tour", help="output folder (default out/tour)")
    t.add_argument("--seq", type=positive_int, nargs="+", default=[1024, 4096, 16384],
                   help="sequence lengths (default 1024 4096 16384)")
    t.add_argument("--check-len", type=positive_int, default=1024,
                   help="length of the attention-vs-oracle check (default 1024)")
    t.add_argument("--quick", action="store_true", help="smaller sizes (for tests)")
    t.set_defaults(func=cmd_tour)
