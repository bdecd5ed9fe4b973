"""The one-page HTML and the slides: self-contained, and in a real headless browser (skipped without
chromium): no console messages, no broken images, a screenshot that is not blank."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import escape

import numpy as np
import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def test_html_is_self_contained(built):
    html = built["paths"]["html"].read_text()
    figs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)
    assert sorted(figs) == sorted(json.loads((built["out"] / "data" / "figures.json").read_text()))
    assert not re.search(r'(src|href)="(?!data:)', html), "an external reference"
    assert "@media print" in html and "missing:" not in html
    assert "NVIDIA H100" in html and "significant" in html
    quality = sorted((built["out"] / "tables").glob("quality_*.json"))
    captions = [json.loads(p.read_text())["caption"] for p in quality]
    assert quality and all(escape(c) in html for c in captions)  # every value with its CI, as the PDF says


@pytest.mark.skipif(browser() is None, reason="no chromium/google-chrome on PATH (CI: apt-get install -y chromium)")
def test_html_in_a_headless_browser(built, tmp_path):
    exe, page = browser(), built["paths"]["html"].resolve().as_uri()
    common = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--virtual-time-budget=5000"]
    shot = tmp_path / "shot.png"
    run = subprocess.run(common + ["--enable-logging=stderr", "--v=0", "--window-size=1280,2000",
                                   f"--screenshot={shot}", "--dump-dom", page],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    console = [ln for ln in run.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console  # the page logs nothing unless something is wrong
    body = re.search(r"<body[^>]*>", run.stdout).group(0)
    n_figs = len(json.loads((built["out"] / "data" / "figures.json").read_text()))
    assert 'data-images-broken="0"' in body and f'data-images-ok="{n_figs}"' in body, body
    from matplotlib.image import imread

    img = imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert img.shape[:2] == (2000, 1280)
    not_white = (img < 0.95).any(axis=-1)
    assert not_white.mean() > 0.05, f"screenshot almost blank ({not_white.mean():.3f} of pixels drawn)"
    assert len(np.unique(img.reshape(-1, 3).round(2), axis=0)) > 50  # figures, not a flat page


def test_slides_are_self_contained_one_figure_a_slide(built):
    from spattern.report.slides import FIGURES, OPTIONAL, TABLES

    html = built["paths"]["slides"].read_text()
    figs = json.loads((built["out"] / "data" / "figures.json").read_text())
    shown = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)
    assert sorted(shown) == sorted(figs)  # every figure of the build, each once
    assert not re.search(r'(src|href)="(?!data:)', html), "an external reference"
    slides = re.findall(r"<section>", html)
    folded = figs.get("training", {}).get("indexer_panel")  # the indexer: a panel of the training figure
    n_fig_slides = sum(1 for name, _ in FIGURES if (name not in OPTIONAL or name in figs) and not (name == "indexer" and folded))
    assert len(slides) == 1 + n_fig_slides + len(TABLES) + 1  # title, figures, tables, reproduce
    assert "missing:" not in html and "spattern report" in html and "@media print" in html


@pytest.mark.skipif(browser() is None, reason="no chromium/google-chrome on PATH (CI: apt-get install -y chromium)")
def test_slides_in_a_headless_browser(built, tmp_path):
    """Opened at its fourth slide (#4): images decode, nothing logged, the slide counter says 4 / N."""
    exe, page = browser(), built["paths"]["slides"].resolve().as_uri() + "#4"
    run = subprocess.run([exe, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=5000",
                          "--enable-logging=stderr", "--v=0", "--window-size=1280,800", "--dump-dom", page],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not [ln for ln in run.stderr.splitlines() if ":CONSOLE" in ln]
    body = re.search(r"<body[^>]*>", run.stdout).group(0)
    n_figs = len(json.loads((built["out"] / "data" / "figures.json").read_text()))
    assert 'data-images-broken="0"' in body and f'data-images-ok="{n_figs}"' in body, body
    n = run.stdout.count("<section>")
    assert f'<div class="count">4 / {n}</div>' in run.stdout
