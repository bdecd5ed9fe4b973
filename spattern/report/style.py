"""One look for every figure: fonts, sizes, a colour per pattern family, deterministic files.

Colours: the study's series keys (pattern families such as ``local``, ``local+landmark+sink``,
baselines ``dense``/``sdpa_flash``/...) are given colours once per report (``Palette``), so one
pattern has one colour in every figure. Well-known keys have fixed colours; the rest take the
remaining colours of a colour-blind-safe cycle in sorted order.

Determinism: matplotlib writes SVG with a fixed ``svg.hashsalt`` and text as paths, PDF without a
creation date, PNG without software metadata, so the same figure gives the same bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Okabe-Ito (colour-blind safe), Tableau extras, then Paul Tol's muted set: 25 colours, so that a study's
# keys (26 with dense in this study) do not wrap around onto each other; black is reserved for dense.
CYCLE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
         "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD",
         "#332288", "#117733", "#882255", "#44AA99", "#999933", "#AA4499", "#DDCC77", "#88CCEE",
         "#6699CC", "#EE8866", "#BBCC33", "#FFAABB", "#AA3377")
FIXED = {"dense": "#000000", "sdpa_flash": "#4D4D4D", "sdpa_cudnn": "#8C8C8C", "flex": "#9467BD",
         "flex_native": "#9467BD", "spattern": "#0072B2"}
METHOD_LABELS = {"sdpa_flash": "SDPA flash (dense)", "sdpa_cudnn": "SDPA cuDNN (dense)",
                 "flex": "Flex (converted)", "flex_native": "FlexAttention",
                 "spattern": "spattern mma.sync", "spattern_hopper": "spattern Hopper"}

RC = {
    "font.family": "DejaVu Sans", "font.size": 8.0, "axes.titlesize": 8.5, "axes.labelsize": 8.0,
    "legend.fontsize": 6.5, "xtick.labelsize": 7.0, "ytick.labelsize": 7.0, "lines.linewidth": 1.3,
    "lines.markersize": 3.5, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "figure.dpi": 100, "savefig.dpi": 150,
    "svg.hashsalt": "spattern-report", "svg.fonttype": "path", "pdf.fonttype": 42,
    "image.interpolation": "nearest",
}
WIDTH_COLUMN = 3.3   # inches: one column of the two-column report
WIDTH_PAGE = 6.9     # inches: a figure across both columns


class Palette:
    """Colour per series key; build it once from every key of the study. ``keys`` may repeat a key (once
    per experiment that has it): the most frequent keys (the study's main families, in many experiments)
    take the first, most distinct colours; ties in name order. The order of ``keys`` does not matter."""

    def __init__(self, keys: Iterable[str] = ()):
        self._colours: dict[str, str] = {}
        free = [c for c in CYCLE]
        counts = Counter(keys)
        for k in sorted(counts, key=lambda k: (-counts[k], k)):
            if k in FIXED:
                continue
            self._colours[k] = free[len(self._colours) % len(free)]

    def __call__(self, key: str) -> str:
        if key in FIXED:
            return FIXED[key]
        if key not in self._colours:  # a key not seen at build time: next free colour, stable order
            self._colours[key] = CYCLE[len(self._colours) % len(CYCLE)]
        return self._colours[key]

    def keys(self) -> list[str]:
        return sorted(self._colours)


@contextmanager
def style() -> Iterator[None]:
    """Matplotlib rc settings of the report (the Agg backend, fixed fonts and hash salt)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with plt.rc_context(RC):
        yield


def new_figure(ncols: int = 1, nrows: int = 1, width: float = WIDTH_COLUMN, height: float | None = None,
               **kw):
    """A Figure and its axes (array when more than one) in the report's style."""
    from matplotlib.figure import Figure

    height = height if height is not None else 0.75 * width / max(ncols, 1) * nrows + 0.3
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=True, **kw)
    return fig, axes


def save_figure(fig, stem: str | Path, formats: Iterable[str] = ("svg", "png")) -> list[Path]:
    """Write ``stem.<fmt>`` for each format without timestamps; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    meta = {"svg": {"Date": None, "Creator": None}, "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
            "png": {"Software": None}}
    for i, fmt in enumerate(formats):
        path = stem.with_suffix(f".{fmt}")
        with style():
            fig.savefig(path, format=fmt, metadata=meta.get(fmt))
        out.append(path)
        if i == 0 and fig.get_layout_engine() is not None:
            fig.set_layout_engine("none")  # keep the layout of the first draw: later formats skip solving it
    return out


def label_method(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def styled(fn):
    """Decorator: run a figure function inside ``style()`` (rc settings apply at artist creation)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with style():
            return fn(*args, **kwargs)

    return wrapper
