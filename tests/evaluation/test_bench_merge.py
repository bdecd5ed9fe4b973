"""Merging repeated attention-benchmark runs into per-cell medians (bench_attention.merge_repeats)."""
from __future__ import annotations

import pytest

from spattern.evaluation.bench_attention import merge_repeats


def _run(hopper_ms: float, cudnn_ms: float, n: int = 4096) -> dict:
    cell = dict(N=n, D=128, causal=False, family="lrs", pattern="p", density_target=0.5, density=0.5,
                nnz_blocks=512, block=[128, 128], flops_computed=1e11, pass_="fwd",
                ms={"spattern_hopper": hopper_ms, "sdpa_cudnn": cudnn_ms, "flex_native": 0.3}, errors={},
                tflops={}, speedup_vs_flash={}, wall_s=1.0)
    return dict(env={"gpu": "x"}, config={"heads": 16}, results=[cell])


def test_medians_per_method_and_ratios_from_the_medians():
    m = merge_repeats([_run(0.10, 0.15), _run(0.14, 0.15), _run(0.11, 0.16)], ["a.json", "b.json", "c.json"])
    c = m["results"][0]
    assert c["ms_runs"]["spattern_hopper"] == [0.10, 0.14, 0.11]
    assert c["ms"]["spattern_hopper"] == pytest.approx(0.11) and c["ms"]["sdpa_cudnn"] == pytest.approx(0.15)
    assert c["vs_cudnn"]["spattern_hopper"] == pytest.approx(0.15 / 0.11)
    assert c["vs_flex_native"]["spattern_hopper"] == pytest.approx(0.3 / 0.11)
    assert c["tflops"]["spattern_hopper"] == pytest.approx(1e11 / 0.11e-3 / 1e12)
    assert m["config"]["repeats"] == 3 and m["merged_from"] == ["a.json", "b.json", "c.json"]


def test_runs_of_different_cells_are_refused():
    with pytest.raises(ValueError, match="same cells"):
        merge_repeats([_run(0.1, 0.2, n=4096), _run(0.1, 0.2, n=8192)])
    with pytest.raises(ValueError, match="at least one"):
        merge_repeats([])


def test_a_failed_method_in_one_run_takes_the_median_of_the_others():
    a, b = _run(0.10, 0.15), _run(0.12, 0.15)
    b["results"][0]["ms"]["spattern_hopper"] = None
    c = merge_repeats([a, b])["results"][0]
    assert c["ms"]["spattern_hopper"] == pytest.approx(0.10) and c["ms_runs"]["spattern_hopper"] == [0.10, None]
