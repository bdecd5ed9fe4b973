"""``spattern show | compile | cost | patterns``: patterns, layouts and their costs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from spattern.cli._args import block, positive_int
from spattern.utils.console import fmt_si, print_table
from spattern.utils.errors import UserError


def _parse(text: str):
    from spattern.patterns import PatternSyntaxError, parse

    try:
        return parse(text)
    except (PatternSyntaxError, ValueError, TypeError) as e:
        raise UserError(f"pattern: {e}") from None


def _cost_rows(pattern, seqs, blk, head_dim):
    from spattern.compiler.complexity import cost

    rows = []
    for n in seqs:
        c = cost(pattern, n, block=blk, head_dim=head_dim)
        closed = "-" if c.pairs_closed_value is None else f"{c.pairs_closed_value} ({'exact' if c.pairs_exact else 'bound'})"
        rows.append([n, f"{c.density:.4f}", c.blocks, f"{c.block_density:.4f}", c.pairs, closed,
                     fmt_si(c.flops_fwd), fmt_si(c.flops_fwd_bwd), fmt_si(c.bytes_fwd), fmt_si(c.metadata_bytes),
                     c.asymptotic])
    cols = ["N", "density", "blocks", "block dens.", "pairs", "closed form", "FLOPs fwd", "FLOPs f+b",
            "bytes fwd", "metadata", "class"]
    return cols, rows


def _compile(p, n, kv_len, blk, path="auto"):
    from spattern.compiler.compile import compile as compile_pattern

    try:
        return compile_pattern(p, n, kv_len, block=blk, path=path)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None


def cmd_show(args) -> int:
    from spattern import viz
    from spattern.compiler.complexity import closed_form

    p = _parse(args.pattern)
    out = Path(args.out or "pattern.png")
    layout = _compile(p, args.seq, None, args.block)
    if args.seq <= args.token_limit:
        viz.draw_pattern(p, args.seq, path=out, block=args.block)
    else:
        viz.draw_layout(layout, path=out)
    cols, rows = _cost_rows(p, [args.seq], args.block, args.head_dim)
    print_table(f"{p}", cols, rows)
    general = closed_form(p, "pairs", symbolic=True)
    if general is not None:
        print(f"pairs(N) = {general[0]}   [{'exact' if general[1] else 'upper bound'}]")
    print(f"wrote {out}")
    return 0


def cmd_compile(args) -> int:
    from spattern.compiler.compile import clear_cache

    p = _parse(args.pattern)
    clear_cache()
    t = time.perf_counter()
    layout = _compile(p, args.seq, args.kv_len, args.block, args.path)
    ms = (time.perf_counter() - t) * 1e3
    layout.validate()
    st = layout.stats()
    print_table(f"{p}  (compiled in {ms:.1f} ms, path={args.path})", ["field", "value"],
                [[k, v] for k, v in st.items() if k != "pattern"])
    if args.out:
        layout.save(args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_cost(args) -> int:
    p = _parse(args.pattern)
    try:
        cols, rows = _cost_rows(p, args.seq, args.block, args.head_dim)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    print_table(str(p), cols, rows)
    return 0


def cmd_patterns(args) -> int:
    from spattern.patterns import EXAMPLES, registry

    rows = []
    for name in registry.names():
        cls = registry.REGISTRY[name]
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        rows.append([name, doc[0] if doc else ""])
    print_table("pattern families", ["name", "summary"], rows)
    print_table("examples", ["name", "pattern"], [[k, v] for k, v in EXAMPLES.items()])
    return 0


def register(sub) -> None:
    s = sub.add_parser("show", help="draw a pattern and print its costs")
    s.add_argument("pattern", help='a pattern string, e.g. "(local(128) | strided(128)) & causal"')
    s.add_argument("--seq", type=positive_int, default=1024, help="sequence length N (default 1024)")
    s.add_argument("--block", type=block, default=(64, 64), help="layout block, B or BQxBK (default 64)")
    s.add_argument("--head-dim", type=positive_int, default=64, help="head dim for FLOP/byte counts (default 64)")
    s.add_argument("--out", default=None, help="PNG path (default pattern.png)")
    s.add_argument("--token-limit", type=positive_int, default=4096,
                   help="draw the token mask up to this N, else the block grid (default 4096)")
    s.set_defaults(func=cmd_show)

    c = sub.add_parser("compile", help="compile a pattern, print layout statistics, optionally save it (.npz)")
    c.add_argument("pattern", help="a pattern string")
    c.add_argument("--seq", type=positive_int, required=True, help="query length N")
    c.add_argument("--kv-len", type=positive_int, default=None, help="key length (default: N)")
    c.add_argument("--block", type=block, default=(64, 64), help="layout block, B or BQxBK (default 64)")
    c.add_argument("--path", choices=["auto", "analytic", "generic"], default="auto",
                   help="compiler path (default auto: analytic when every leaf has an enumerator)")
    c.add_argument("--out", default=None, help="write the layout to this .npz file")
    c.set_defaults(func=cmd_compile)

    k = sub.add_parser("cost", help="closed forms and exact counts at several N")
    k.add_argument("pattern", help="a pattern string")
    k.add_argument("--seq", type=positive_int, nargs="+", default=[1024, 4096, 16384, 65536],
                   help="sequence lengths (default 1024 4096 16384 65536)")
    k.add_argument("--block", type=block, default=(64, 64), help="layout block, B or BQxBK (default 64)")
    k.add_argument("--head-dim", type=positive_int, default=64, help="head dim for FLOP/byte counts (default 64)")
    k.set_defaults(func=cmd_cost)

    p = sub.add_parser("patterns", help="list the registered pattern families and examples")
    p.set_defaults(func=cmd_patterns)
