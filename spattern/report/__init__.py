"""The report: figures, tables, the typst PDF and the one-page HTML, from ``results/`` only.

``build_report(results_dirs, out_dir) -> {name: path}`` (``spattern.report.build``). Readers of
results are in ``data``, the figure functions in ``figures`` (one file per kind), tables in
``tables``, the style (one colour per pattern) in ``style``, the provenance in ``manifest``.
Heavy imports (matplotlib, scipy, typst) happen when a build runs, not at import.
"""

from __future__ import annotations


def build_report(results_dirs, out_dir, **kwargs):
    from spattern.report.build import build_report as _build

    return _build(results_dirs, out_dir, **kwargs)


__all__ = ["build_report"]
