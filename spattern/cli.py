"""``spattern <command>``: parses arguments and calls the package (nothing else lives here)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    Console(width=max(120, Console().width)).print(t)

def _fmt(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:g}"

def _block(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--block: expected B or BQxBK (e.g. 64 or 128x64), got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"--block: expected B or BQxBK, got {text!r}")
    return vals[0], vals[1]

def _cost_rows(pattern, seqs, block, head_dim):
    from spattern.compiler.complexity import cost

    rows = []
    for n in seqs:
        c = cost(pattern, n, block=block, head_dim=head_dim)
        closed = "-" if c.pairs_closed_value is None else f"{c.pairs_closed_value} ({'exact' if c.pairs_exact else 'bound'})"
        rows.append([n, f"{c.density:.4f}", c.blocks, f"{c.block_density:.4f}", c.pairs, closed,
                     _fmt(c.flops_fwd), _fmt(c.flops_fwd_bwd), _fmt(c.bytes_fwd), _fmt(c.metadata_bytes), c.asymptotic])
    cols = ["N", "density", "blocks", "block dens.", "pairs", "closed form", "FLOPs fwd", "FLOPs f+b",
            "bytes fwd", "metadata", "class"]
    return cols, rows

def cmd_show(args) -> int:
    import spattern
    from spattern.compiler.complexity import closed_form

    p = spattern.parse(args.pattern)
    out = Path(args.out or "pattern.png")
    layout = spattern.compile(p, args.seq, block=args.block)
    from spattern import viz

    if args.seq <= args.token_limit:
        viz.draw_pattern(p, args.seq, path=out, block=args.block)
    else:
        viz.draw_layout(layout, path=out)
    cols, rows = _cost_rows(p, [args.seq], args.block, args.head_dim)
    _table(f"{p}", cols, rows)
    general = closed_form(p, "pairs", symbolic=True)
    if general is not None:
        print(f"pairs(N) = {general[0]}   [{'exact' if general[1] else 'upper bound'}]")
    print(f"wrote {out}")
    return 0

def cmd_compile(args) -> int:
    import time

    import spattern
    from spattern.compiler.compile import clear_cache

    p = spattern.parse(args.pattern)
    clear_cache()
    t = time.perf_counter()
    layout = spattern.compile(p, args.seq, args.kv_len, block=args.block, path=args.path)
    ms = (time.perf_counter() - t) * 1e3
    layout.validate()
    st = layout.stats()
    _table(f"{p}  (compiled in {ms:.1f} ms, path={args.path})", ["field", "value"],
           [[k, v] for k, v in st.items() if k != "pattern"])
    if args.out:
        layout.save(args.out)
        print(f"wrote {args.out}")
    return 0

def cmd_cost(args) -> int:
    import spattern

    p = spattern.parse(args.pattern)
    cols, rows = _cost_rows(p, args.seq, args.block, args.head_dim)
    _table(str(p), cols, rows)
    return 0

def cmd_patterns(args) -> int:
    from spattern.patterns import EXAMPLES, registry

    rows = []
    for name in registry.names():
        cls = registry.REGISTRY[name]
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        rows.append([name, doc[0] if doc else ""])
    _table("pattern families", ["name", "summary"], rows)
    _table("examples", ["name", "pattern"], [[k, v] for k, v in EXAMPLES.items()])
    return 0

def cmd_tour(args) -> int:
    from spattern.tour import run_tour

    summary = run_tour(out=Path(args.out), sizes=args.seq, check_len=args.check_len, quick=args.quick)
    return 0 if summary["ok"] else 1

def _delegate(module: str, argv: list[str]) -> int:
    """Hand the rest of the command line to a module's main(argv)."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        print(f"this command needs {module}, which could not be imported: {e}", file=sys.stderr)
        return 2
    rc = mod.main(argv)
    return int(rc or 0)

DELEGATED = {
    ("bench", "attention"): "spattern.evaluation.bench_attention",
    ("bench", "topk"): "spattern.evaluation.bench_topk",
    ("data",): "spattern.data.cli",
    ("train",): "spattern.train.cli",
    ("generate",): "spattern.train.generate_cli",
    ("perplexity",): "spattern.train.perplexity_cli",
}

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spattern", description="sparse attention patterns: DSL, compiler, kernels, evaluation")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("tour", help="the main job: patterns -> layouts -> attention -> checks -> figures (CPU)")
    t.add_argument("--out", default="out/tour", help="output folder (default out/tour)")
    t.add_argument("--seq", type=int, nargs="+", default=[1024, 4096, 16384], help="sequence lengths")
    t.add_argument("--check-len", type=int, default=1024, help="length of the attention-vs-oracle check")
    t.add_argument("--quick", action="store_true", help="smaller sizes (for tests)")
    t.set_defaults(fn=cmd_tour)

    s = sub.add_parser("show", help="draw a pattern and print its costs")
    s.add_argument("pattern")
    s.add_argument("--seq", type=int, default=1024)
    s.add_argument("--block", type=_block, default=(64, 64))
    s.add_argument("--head-dim", type=int, default=64)
    s.add_argument("--out", default=None, help="PNG path (default pattern.png)")
    s.add_argument("--token-limit", type=int, default=4096, help="draw the token mask up to this N, else the block grid")
    s.set_defaults(fn=cmd_show)

    c = sub.add_parser("compile", help="compile a pattern, print layout statistics, optionally save it (.npz)")
    c.add_argument("pattern")
    c.add_argument("--seq", type=int, required=True)
    c.add_argument("--kv-len", type=int, default=None)
    c.add_argument("--block", type=_block, default=(64, 64))
    c.add_argument("--path", choices=["auto", "analytic", "generic"], default="auto")
    c.add_argument("--out", default=None)
    c.set_defaults(fn=cmd_compile)

    k = sub.add_parser("cost", help="closed forms and exact counts at several N")
    k.add_argument("pattern")
    k.add_argument("--seq", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    k.add_argument("--block", type=_block, default=(64, 64))
    k.add_argument("--head-dim", type=int, default=64)
    k.set_defaults(fn=cmd_cost)

    p = sub.add_parser("patterns", help="list the registered pattern families and examples")
    p.set_defaults(fn=cmd_patterns)

    b = sub.add_parser("bench", help="GPU benchmarks: 'spattern bench attention --help', 'spattern bench topk --help'")
    b.add_argument("what", choices=["attention", "topk"])
    for name in ("data", "train", "generate", "perplexity"):
        sub.add_parser(name, help=f"see 'spattern {name} --help'", add_help=False)
    return ap

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for key, module in DELEGATED.items():
        if tuple(argv[: len(key)]) == key:
            return _delegate(module, argv[len(key):])
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, TypeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

