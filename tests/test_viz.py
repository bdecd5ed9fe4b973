"""spattern.viz: PNGs for patterns, per-head stacks, large layouts and receptive fields; no token
mask at large N; every pattern module's ``__main__`` drawing."""
from __future__ import annotations

import ast
import builtins
import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import spattern
from spattern import compile, parse
from spattern.compiler.analysis import receptive_field
from spattern.compiler.layout import BlockLayout
from spattern.patterns.base import Pattern
from spattern.viz import draw_layout, draw_pattern, draw_receptive_field

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]
FAMILY_MODULES = ["local", "strided", "dilated", "landmark", "sink", "random", "document", "full", "custom"]


def _is_png(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def _visible_axes(fig: Figure) -> int:
    return sum(ax.get_visible() for ax in fig.axes)


def test_draw_pattern_with_block_overlay(tmp_path):
    out = tmp_path / "p.png"
    fig = draw_pattern("(local(24) | strided(16) | landmark(every=64)) & causal", 160, path=out, block=32)
    assert isinstance(fig, Figure) and _is_png(out)
    ax = fig.axes[0]
    assert len(ax.images) == 2  # block shading + token mask
    assert "program" in ax.get_title() and ax.get_legend() is not None
    # without blocks: the token mask only; kv_len may differ
    fig = draw_pattern(parse("sink(8)"), 64, kv_len=96, path=tmp_path / "s.png")
    assert len(fig.axes[0].images) == 1 and _is_png(tmp_path / "s.png")


def test_draw_heads_stack(tmp_path):
    out = tmp_path / "heads.png"
    p = "heads(local(16), strided(8), blockstrided(2, block=16), landmark(every=32)) & causal"
    fig = draw_pattern(p, 128, path=out, block=16)
    assert _is_png(out) and _visible_axes(fig) == 4
    assert all("16x16 blocks" in fig.axes[h].get_title() for h in range(4))  # each head its own group


def _forbid_token_masks(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("token mask built at large N")

    monkeypatch.setattr(BlockLayout, "to_dense", boom)
    monkeypatch.setattr(BlockLayout, "block_masks", boom)
    monkeypatch.setattr(Pattern, "dense_mask", boom)


def test_draw_layout_large_n_without_token_mask(tmp_path, monkeypatch):
    layout = compile("(local(512) | landmark(every=2048) | sink(64)) & causal", 65536)
    _forbid_token_masks(monkeypatch)
    out = tmp_path / "layout.png"
    t = time.perf_counter()
    fig = draw_layout(layout, out)
    assert time.perf_counter() - t < 5.0
    assert _is_png(out) and "65536" in fig.axes[0].get_title()
    # draw_pattern falls back to the block grid above MAX_TOKEN_PAIRS
    t = time.perf_counter()
    fig = draw_pattern("local(256) & causal", 65536, path=tmp_path / "big.png")
    assert time.perf_counter() - t < 5.0
    assert _is_png(tmp_path / "big.png") and "blocks" in fig.axes[0].get_title()


def test_draw_layout_groups(tmp_path):
    layout = compile("heads(local(16), sink(8)) & causal", 256, block=16)
    assert _visible_axes(draw_layout(layout, tmp_path / "g.png", group=None)) == 2
    assert _is_png(tmp_path / "g.png")
    with pytest.raises(ValueError, match="group"):
        draw_layout(layout, group=2)


def test_draw_receptive_field(tmp_path):
    res = {
        "local": receptive_field(compile("local(64) & causal", 2048)),
        "longformer": receptive_field(compile("(local(128) | landmark(every=128)) & causal", 2048)),
        "fractions": [0.1, 0.5, 1.0],
    }
    fig = draw_receptive_field(res, tmp_path / "rf.png")
    assert _is_png(tmp_path / "rf.png") and len(fig.axes[0].get_lines()) >= 3
    fig = draw_receptive_field([res["local"]], tmp_path / "rf2.png")
    assert _is_png(tmp_path / "rf2.png")


def test_bad_inputs():
    with pytest.raises(ValueError, match="context"):
        draw_pattern("document() & causal", 64)
    with pytest.raises(ValueError, match="q_len"):
        draw_pattern("local(4)", 0)
    with pytest.raises(TypeError, match="BlockLayout"):
        draw_layout("local(4)")
    with pytest.raises(ValueError, match="at least one"):
        draw_receptive_field({})


def _main_body(module) -> str:
    """The source of a module's ``if __name__ == "__main__":`` block."""
    src = Path(module.__file__).read_text()
    for node in ast.parse(src).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return "\n".join(ast.unparse(s) for s in node.body)
    raise AssertionError(f"{module.__name__} has no __main__ block")


@pytest.mark.parametrize("name", FAMILY_MODULES)
def test_family_main_blocks_draw(name, tmp_path, monkeypatch):
    """Each family's __main__ drawing, run in the module's namespace (the same code as
    ``python -m spattern.patterns.<name>``), writes its PNG(s)."""
    module = importlib.import_module(f"spattern.patterns.{name}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"spattern.patterns.{name}"])  # the block parses --out-dir
    exec(builtins.compile(_main_body(module), f"<{name} __main__>", "exec"), dict(vars(module)))
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(_is_png(p) for p in pngs)


def test_python_m_local_writes_png(tmp_path):
    r = subprocess.run([sys.executable, "-m", "spattern.patterns.local"], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _is_png(tmp_path / "local.png")
    assert f"wrote {(tmp_path / 'local.png').resolve()}" in r.stdout  # says where it wrote
    r = subprocess.run([sys.executable, "-m", "spattern.patterns.local", "--out-dir", "figs"], cwd=tmp_path,
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                       timeout=120)
    assert r.returncode == 0 and _is_png(tmp_path / "figs" / "local.png"), r.stderr[-2000:]


def test_pattern_draw_method(tmp_path):
    fig = spattern.local(8).draw(64, path=tmp_path / "m.png", block=16)
    assert isinstance(fig, Figure) and _is_png(tmp_path / "m.png")
