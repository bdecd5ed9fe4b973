"""``spattern <command>``: one argparse tree; each command module registers its own sub-parser.

A command module exposes ``register(subparsers)``, which adds its parser(s) (every option with a
help text) and sets ``func=handler`` with ``handler(args) -> int``. Errors: a ``UserError`` (a bad
input, a missing file or corpus, an invalid config) is printed as one line ``error: ...`` with exit
code 2; argparse's own usage errors also exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from spattern.utils.errors import UserError

# the command modules, in the order `spattern --help` lists them
COMMANDS = (
    "spattern.cli.tour",
    "spattern.cli.patterns",
    "spattern.cli.data",
    "spattern.cli.train",
    "spattern.cli.evaluate",
    "spattern.cli.fit",
    "spattern.cli.experiments",
    "spattern.cli.bench",
    "spattern.cli.report",
)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spattern",
                                 description="sparse attention: pattern DSL, compiler, kernels, evaluation, reports")
    sub = ap.add_subparsers(dest="command", required=True, metavar="<command>")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
