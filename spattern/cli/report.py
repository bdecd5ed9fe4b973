"""``spattern report [results dirs...] --out report/build``: figures, tables, the PDF and the HTML
page from results folders only (``spattern.report.build_report``)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("report", help="build the report (figures, tables, typst PDF, HTML page) from results/")
    p.add_argument("results", nargs="*", default=["results"],
                   help="results folders to read (default: results)")
    p.add_argument("--out", default="report/build", help="output folder (default: report/build)")
    p.add_argument("--no-pdf", action="store_true", help="skip compiling the typst PDF")
    p.add_argument("--no-html", action="store_true", help="skip the HTML page and the slides")
    p.add_argument("--title", default="Sparse attention patterns with spattern", help="the report's title")
    p.add_argument("--highlight", nargs="+", default=[], metavar="FAMILY",
                   help="pattern families (e.g. local+landmark) drawn first in the heatmap and cost figures")
    p.add_argument("--quiet", action="store_true", help="do not list what is missing")
    p.set_defaults(func=run)


def run(args) -> int:
    return build_and_print([Path(d) for d in args.results], args.out, pdf=not args.no_pdf, html=not args.no_html,
                           title=args.title, highlight=args.highlight, quiet=args.quiet)


def build_and_print(dirs: list[Path], out, *, pdf: bool = True, html: bool = True,
                    title: str = "Sparse attention patterns with spattern", highlight=(), quiet: bool = False) -> int:
    """Build the report and print where it went and what is missing (also used by `spattern run`)."""
    from spattern.report.build import build_report
    from spattern.utils.errors import UserError

    absent = [str(d) for d in dirs if not Path(d).is_dir()]
    if absent:
        raise UserError(f"results: expected existing folders, got {', '.join(absent)} (not a folder)")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = build_report(dirs, out, pdf=pdf, html=html, title=title, highlight=list(highlight))
    missing = [str(w.message) for w in caught if str(w.message).startswith("report: missing")]
    for name in ("pdf", "html", "slides", "manifest"):
        if name in paths:
            print(f"{name:9s} {paths[name]}")
    n_fig = sum(k.startswith("figure:") for k in paths)
    n_tab = sum(k.startswith("table:") for k in paths)
    print(f"{n_fig} figures, {n_tab} tables, {len(missing)} missing, {time.perf_counter() - t0:.1f} s")
    if not quiet:
        for m in missing:
            print(f"  {m}")
    return 0
