"""The main job, on a CPU: every built-in example pattern through the whole path.

patterns -> compiled layouts (timed; analytic == generic checked at small N) -> cost table
(density, blocks, FLOPs, bytes, closed forms, growth class) -> attention through the blockwise
CSR executor checked against the dense float64 oracle -> receptive-field analysis -> figures.
Everything it prints is also written to ``<out>/summary.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import spattern
from spattern.utils.io import write_json
from spattern.compiler.compile import clear_cache
from spattern.compiler.complexity import cost
from spattern.patterns import EXAMPLES
from spattern.runtime.reference import attention_blockwise, attention_dense


def _print_table(title, columns, rows):
    from spattern.utils.console import print_table

    print_table(title, columns, rows)


def _timed_compile(p, n):
    clear_cache()
    t = time.perf_counter()
    layout = spattern.compile(p, n)
    return layout, (time.perf_counter() - t) * 1e3


def check_attention(p, n: int, seed: int = 0, block=(64, 64)) -> dict:
    """Blockwise executor (float32, GQA 4 -> 2 heads) vs the dense float64 oracle on random data."""
    return check_attention_layout(spattern.compile(p, n, block=block), seed)


def check_attention_layout(layout, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = layout.q_len
    q = torch.randn(1, 4, n, 64, generator=g)
    k = torch.randn(1, 2, n, 64, generator=g)
    v = torch.randn(1, 2, n, 64, generator=g)
    scale = 64 ** -0.5
    ref, ref_lse = attention_dense(q.double(), k.double(), v.double(), layout, scale, True)
    out, lse = attention_blockwise(q, k, v, layout, scale, True)
    dense32, _ = attention_dense(q, k, v, layout, scale, False)  # same precision, dense: the yardstick
    err = (out.double() - ref).abs().max().item()
    err_dense = (dense32.double() - ref).abs().max().item()
    finite = torch.isfinite(ref_lse)
    lse_err = (lse.double()[finite] - ref_lse[finite]).abs().max().item() if finite.any() else 0.0
    ok = bool(err <= 2 * err_dense + 1e-5 and torch.equal(torch.isinf(lse), torch.isinf(ref_lse)))
    return {"max_err": err, "dense_fp32_err": err_dense, "lse_err": lse_err, "ok": ok}


def _content_dependent(n: int):
    """(name, pattern, context, extra) for a document batch, a Python AST and a top-k selection."""
    import inspect

    from spattern.compiler import layout as layout_module
    from spattern.indexer import LightningIndexer
    from spattern.indexer.select import block_scores
    from spattern.patterns.tree import AstScope, char_tree

    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, n), size=5, replace=False))
    cu = [0, *cuts.tolist(), n]
    yield "documents", spattern.parse("document() & causal"), {"cu_seqlens": cu}, {"note": f"cu_seqlens={cu}"}
    tree = char_tree(inspect.getsource(layout_module))  # the layout uses its first n characters
    p = AstScope(window=64, header=8)
    b = p.bound(tree)
    yield "python AST", p, {"tree": tree}, {"note": f"spattern/compiler/layout.py, character level: "
                                                     f"{tree.n_nodes} statements, depth {tree.max_depth}", **b}
    torch.manual_seed(0)
    scores = LightningIndexer(64)(torch.randn(1, n, 64))
    bs = block_scores(scores.detach(), 64, 64)[0]
    yield "indexer top-k", spattern.parse("topk(4)"), {"block_scores": bs, "q_len": n, "kv_len": n}, \
        {"note": "random-init lightning indexer, k=4 blocks"}


def run_tour(out: Path = Path("out/tour"), sizes=(1024, 4096, 16384), check_len: int = 1024,
             quick: bool = False) -> dict:
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    if quick:
        sizes, check_len = [min(s, 2048) for s in sizes][:2], min(check_len, 512)
    summary: dict = {"sizes": list(sizes), "patterns": {}, "ok": True}

    # 1. compile + costs
    rows = []
    for name, text in EXAMPLES.items():
        p = spattern.parse(text)
        entry = summary["patterns"].setdefault(name, {"pattern": str(p), "costs": []})
        for n in sizes:
            layout, ms = _timed_compile(p, n)
            c = cost(p, n)
            entry["costs"].append({**c.as_dict(), "compile_ms": ms})
            closed = "-" if c.pairs_closed_value is None else (
                f"{c.pairs_closed_value}" + (" =" if c.pairs_exact else " >="))
            rows.append([name, n, f"{c.density:.4f}", f"{c.block_density:.3f}", c.blocks,
                         f"{c.flops_fwd / 1e9:.2f}", closed, c.asymptotic, f"{ms:.1f}"])
    _print_table("1. patterns -> layouts -> costs (per head, D=64, 64x64 blocks)",
                 ["example", "N", "density", "block dens.", "blocks", "GFLOP fwd", "pairs closed form",
                  "class", "compile ms"], rows)

    # 2. analytic vs generic at a small N
    rows = []
    for name, text in EXAMPLES.items():
        p = spattern.parse(text)
        n = min(sizes)
        clear_cache()
        a = spattern.compile(p, n, path="auto")
        g = spattern.compile(p, n, path="generic")
        same = a.equals(g)
        summary["patterns"][name]["paths_agree"] = same
        summary["ok"] &= same
        rows.append([name, n, "yes" if same else "NO"])
    _print_table("2. analytic path == generic path", ["example", "N", "identical"], rows)

    # 3. attention vs oracle
    rows = []
    for name, text in EXAMPLES.items():
        r = check_attention(spattern.parse(text), check_len)
        summary["patterns"][name]["attention_check"] = r
        summary["ok"] &= r["ok"]
        rows.append([name, check_len, f"{r['max_err']:.2e}", f"{r['dense_fp32_err']:.2e}", f"{r['lse_err']:.2e}",
                     "ok" if r["ok"] else "FAIL"])
    _print_table("3. blockwise CSR attention (fp32) vs dense float64 oracle",
                 ["example", "N", "max |err|", "dense fp32 err", "LSE err", "verdict"], rows)

    # 4. receptive field (networkx) and figures
    try:
        from spattern.compiler.analysis import layers_to_full_reach
    except ImportError:
        layers_to_full_reach = None
    rows = []
    n_fig = min(sizes)
    for name, text in EXAMPLES.items():
        p = spattern.parse(text)
        layout = spattern.compile(p, n_fig)
        reach = layers_to_full_reach(layout) if layers_to_full_reach else None
        summary["patterns"][name]["layers_to_full_reach"] = reach
        fig_path = out / "figures" / f"{name}.png"
        try:
            from spattern import viz

            viz.draw_pattern(p, n_fig, path=fig_path, block=(64, 64))
            summary["patterns"][name]["figure"] = str(fig_path)
        except ImportError:
            fig_path = None
        rows.append([name, n_fig, "-" if reach is None else reach, fig_path or "-"])
    _print_table("4. receptive field (layers until every reachable key is reached) and figures",
                 ["example", "N", "layers", "figure"], rows)

    # 5. content-dependent patterns: documents, a code AST, a learned top-k selection
    rows = []
    for name, p, ctx, extra in _content_dependent(check_len):
        layout = spattern.compile(p, check_len, context=ctx)
        st = layout.stats()
        r = check_attention_layout(layout, seed=1)
        summary.setdefault("content_dependent", {})[name] = {"pattern": str(p), **st, **extra, "attention_check": r}
        summary["ok"] &= r["ok"]
        rows.append([name, str(p), check_len, f"{st['density']:.4f}", st["blocks"],
                     f"{r['max_err']:.2e}", "ok" if r["ok"] else "FAIL", extra.get("note", "")])
    _print_table("5. content-dependent patterns (per-sequence layouts from a context)",
                 ["name", "pattern", "N", "density", "blocks", "max |err|", "verdict", "note"], rows)

    write_json(out / "summary.json", summary)
    print(f"{'all checks passed' if summary['ok'] else 'SOME CHECKS FAILED'}; wrote {out / 'summary.json'}")
    return summary
