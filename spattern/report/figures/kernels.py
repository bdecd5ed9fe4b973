"""Kernel time, TFLOP/s and speed-up against dense attention, with the Project C targets drawn in."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

from matplotlib import colormaps

from spattern.report.style import WIDTH_PAGE, label_method, new_figure, styled

# Project C: block-sparse attention must beat dense attention by these factors (density, N, speed-up).
TARGETS = ({"density": 0.5, "N": 4096, "speedup": 1.5},
           {"density": 0.25, "N": 8192, "speedup": 2.5},
           {"density": 0.1, "N": 16384, "speedup": 5.0})
DENSE = ("sdpa_flash", "sdpa_cudnn")


def select_cells(cells: Sequence[dict], backward: bool = False, head_dim: int | None = None,
                 causal: bool | None = None, family: str | None = None) -> tuple[list[dict], dict]:
    """The cells of one (mode, head dim, causal, layout family) slice: by default the most common
    head dim, non-causal when present, and the family with the most cells (ties: sorted first).
    Returns (cells, {"D", "causal", "backward", "family"})."""
    cs = [c for c in cells if bool(c.get("backward")) == backward and isinstance(c.get("ms"), dict)
          and isinstance(c.get("N"), int) and isinstance(c.get("density_target", c.get("density")), (int, float))]
    if not cs:
        return [], {"D": head_dim, "causal": causal, "backward": backward, "family": family}
    if head_dim is None:
        head_dim = Counter(c.get("D") for c in cs).most_common(1)[0][0]
    if causal is None:
        causal = not any(not c.get("causal") for c in cs if c.get("D") == head_dim)
    cs = [c for c in cs if c.get("D") == head_dim and bool(c.get("causal")) == causal]
    if family is None:
        counts = Counter(str(c.get("family")) for c in cs)
        family = min(counts, key=lambda f: (-counts[f], f))
    cs = [c for c in cs if str(c.get("family")) == family]
    return cs, {"D": head_dim, "causal": causal, "backward": backward, "family": family}


def flex_method(cells: Sequence[dict]) -> str:
    """FlexAttention on its own fast path (``flex_native``: a mask_mod for the pattern, compiled)
    when the cells measured it, else FlexAttention on spattern's converted layout (``flex``)."""
    native = any(isinstance((c.get("ms") or {}).get("flex_native"), (int, float)) for c in cells)
    return "flex_native" if native else "flex"


def speedup(cell: dict, method: str = "spattern", dense: str = "sdpa_flash") -> float | None:
    """dense ms / method ms within one cell (times from the same process run)."""
    ms = cell.get("ms") or {}
    a, b = ms.get(dense), ms.get(method)
    return float(a) / float(b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else None


KERNEL_LABELS = {"spattern": "mma.sync", "spattern_hopper": "Hopper"}


def target_method(cell: dict) -> str:
    """The spattern forward kernel a target is judged on: the Hopper kernel where the cell timed it (what
    ``auto`` runs on that GPU), else the mma.sync kernel."""
    return "spattern_hopper" if isinstance((cell.get("ms") or {}).get("spattern_hopper"), (int, float)) else "spattern"


def target_rows(cells: Sequence[dict]) -> list[dict]:
    """For each target: the cell at its N whose measured density is closest to the target density,
    its kernel's (``target_method``) speed-up against each dense SDPA backend, and whether the target is
    met."""
    out = []
    for t in TARGETS:  # equally near cells (one per GPU): the one that timed the Hopper kernel
        at_n = [c for c in cells if c.get("N") == t["N"] and c.get("density_target", c.get("density")) is not None]
        best = min(at_n, key=lambda c: (abs(float(c.get("density_target", c.get("density"))) - t["density"]),
                                        target_method(c) != "spattern_hopper"), default=None)
        if best is None or abs(float(best.get("density_target", best.get("density"))) - t["density"]) > 0.051:
            out.append({**t, "cell": None})
            continue
        method = target_method(best)
        row = {**t, "cell": best, "density_measured": best.get("density"), "kernel": KERNEL_LABELS[method],
               "device": best.get("device")}
        for d in DENSE:
            s = speedup(best, method, d)
            row[f"vs_{d}"] = s
            row[f"met_{d}"] = None if s is None else bool(s >= t["speedup"])
        out.append(row)
    return out


def _key_legend(ax, colors: dict, styles: dict, devices: Sequence[str]) -> None:
    """A legend by factor instead of one entry per series: colours (label -> colour), line and marker
    styles (label -> Line2D keywords), and with several GPUs which is filled and which hollow."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2, label=lb) for lb, c in colors.items()]
    handles += [Line2D([], [], **{"color": "0.35", **kw}, label=lb) for lb, kw in styles.items()]
    if len(devices) > 1:
        handles.append(Line2D([], [], color="0.35", marker="o", ls="none", label=f"{devices[0]} (filled)"))
        handles += [Line2D([], [], color="0.35", marker="o", mfc="none", ls="none", label=f"{dv} (hollow; dense: x)")
                    for dv in devices[1:]]
    ax.legend(handles=handles, fontsize=4.8, ncols=2, handlelength=1.6, labelspacing=0.3, loc="upper center", bbox_to_anchor=(0.5, -0.26))


@styled
def kernel_figure(cells: Sequence[dict], backward: bool = False, head_dim: int | None = None,
                  causal: bool | None = None, family: str | None = None):
    """Three panels from the attention benchmark cells of one slice (see ``select_cells``):
    time vs N (log-log; both spattern kernels and FlexAttention per density, dense SDPA flash/cuDNN),
    TFLOP/s on computed blocks vs density at the N with the most densities (the largest among ties), and speed-up over dense SDPA vs
    density per N of the kernel ``auto`` runs (``target_method``) with the Project C targets as stars.
    Raises ValueError without cells."""
    cs, sl = select_cells(cells, backward, head_dim, causal, family)
    flex = flex_method(cs)
    if not cs:
        raise ValueError(f"cells: no benchmark cells with backward={backward}")
    mode = "forward+backward" if backward else "forward"
    devices = sorted({str(c.get("device")) for c in cs})
    # cells of several GPUs in one slice: each series is one GPU's, named with it; the first GPU's markers
    # filled and lines solid, the others' hollow (mfc none) with dense lines marked x
    sfx = (lambda dv: f" ({dv})") if len(devices) > 1 else (lambda dv: "")  # noqa: E731
    hollow = lambda dv: {} if dv == devices[0] else {"mfc": "none"}  # noqa: E731
    fig, axes = new_figure(ncols=3, width=WIDTH_PAGE, height=2.6)  # legends by factor: shorter than one entry per series
    dens = sorted({float(c.get("density_target", c["density"])) for c in cs if c.get("density_target", c.get("density")) < 1})
    ns = sorted({int(c["N"]) for c in cs})
    cmap = colormaps["viridis"]
    dcol = {d: cmap(0.15 + 0.7 * i / max(len(dens) - 1, 1)) for i, d in enumerate(dens)}
    ncol = {n: cmap(0.1 + 0.8 * i / max(len(ns) - 1, 1)) for i, n in enumerate(ns)}

    ax = axes[0]
    colors, styles = {}, {}  # the legend: density by colour, method by line and marker, GPU by fill
    for dv in devices:
        on = [c for c in cs if str(c.get("device")) == dv]
        for d in DENSE:  # dense baselines: one time per N (the same in every cell of that N)
            pts = sorted({(int(c["N"]), c["ms"][d]) for c in on if isinstance(c["ms"].get(d), (int, float))})
            if pts:
                col = "black" if d == "sdpa_flash" else "grey"
                ax.plot(*zip(*pts), color=col, lw=1.5, marker=None if dv == devices[0] else "x",
                        label=label_method(d) + sfx(dv))
                styles[label_method(d)] = {"color": col, "lw": 1.5}
        for d in dens:
            for m, ls, mk in (("spattern", "-", "o"), ("spattern_hopper", "-.", "^"), (flex, ":", "s")):
                pts = sorted((int(c["N"]), c["ms"][m]) for c in on if float(c.get("density_target", c["density"])) == d
                             and isinstance(c["ms"].get(m), (int, float)))
                if pts:
                    ax.plot(*zip(*pts), ls=ls, marker=mk, color=dcol[d], label=f"{label_method(m)} {d:.0%}{sfx(dv)}",
                            **hollow(dv))
                    colors[f"density {d:.0%}"] = dcol[d]
                    styles[label_method(m)] = {"ls": ls, "marker": mk}
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_ylabel(f"{mode} time (ms)")
    _key_legend(ax, colors, styles, devices)

    ax = axes[1]
    # the N with the most densities timed (the largest among ties): a curve, not one point, where the
    # slice's largest N timed a single density (the forward+backward benchmark's 32K cell)
    timed = lambda c: any(isinstance(v, (int, float)) for v in (c.get("tflops") or {}).values())  # noqa: E731
    per_n = {n: len({float(c.get("density_target", c.get("density"))) for c in cs if int(c["N"]) == n and timed(c)
                     and float(c.get("density_target", c.get("density"))) < 1}) for n in ns}
    n_max = max(ns, key=lambda n: (per_n[n], n))
    at_max = [c for c in cs if c["N"] == n_max]
    devs_max = sorted({str(c.get("device")) for c in at_max})
    for dv in devs_max:
        at = sorted((c for c in at_max if str(c.get("device")) == dv), key=lambda c: float(c.get("density_target", c["density"])))
        for m, mk, col in (("spattern", "o", "C0"), ("spattern_hopper", "^", "C3"), (flex, "s", "C4")):
            pts = [(float(c["density"]), c["tflops"][m]) for c in at
                   if isinstance((c.get("tflops") or {}).get(m), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker=mk, color=col, label=label_method(m) + sfx(dv), **hollow(dv))
        for d in DENSE:
            dense_cell = next((c for c in at if float(c.get("density_target", c["density"])) >= 1.0), None)
            v = (dense_cell or {}).get("tflops", {}).get(d)
            if isinstance(v, (int, float)):
                ax.axhline(v, color="black" if d == "sdpa_flash" else "grey", lw=1, ls="--" if dv == devices[0] else ":",
                           label=label_method(d) + sfx(dv))
    ax.set_xlabel("block density")
    ax.set_ylabel("TFLOP/s (computed blocks)")
    ax.set_title(f"N = {n_max}" + (f", {', '.join(devs_max)}" if len(devices) > 1 else ""))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=5.0, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.26))

    ax = axes[2]
    colors, styles = {}, {}
    for n, dv in itertools.product(ns, devices):  # the kernel auto runs (target_method: Hopper where timed)
        on = [c for c in cs if c["N"] == n and str(c.get("device")) == dv]
        for dname, ls in (("sdpa_flash", "-"), ("sdpa_cudnn", "--")):
            pts = sorted((float(c["density"]), speedup(c, target_method(c), dname)) for c in on
                         if speedup(c, target_method(c), dname) is not None)
            if pts:
                vs = f"vs {'flash' if dname == 'sdpa_flash' else 'cuDNN'}"
                ax.plot(*zip(*pts), ls=ls, marker="o", color=ncol[n], **hollow(dv), label=f"N={n}{sfx(dv)} {vs}")
                colors[f"N={n}"] = ncol[n]
                styles[vs] = {"ls": ls, "marker": "o"}
    for t in TARGETS:
        ax.plot([t["density"]], [t["speedup"]], marker="*", ms=9, color=ncol.get(t["N"], "red"), mec="red",
                ls="none")
        ax.annotate(f"target N={t['N']}", (t["density"], t["speedup"]), fontsize=5.5, xytext=(3, 3),
                    textcoords="offset points", color="red")
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("block density")
    ax.set_ylabel("speed-up over dense SDPA (x)")
    _key_legend(ax, colors, styles, devices)
    fig.suptitle(f"{mode}, head dim {sl['D']}, {'causal' if sl['causal'] else 'non-causal'}, layouts: {sl['family']}; "
                 f"{' and '.join(devices)}", fontsize=8)
    return fig
