"""A NaN/Inf in one input row stays local (issue 9, item 8), in both reference executors.

A non-finite value at key j (in k or v) may reach only the outputs of queries whose allowed keys
include j, and those outputs must be non-finite (not silently dropped); a non-finite query row
reaches only its own output. Checked against the layout's own token mask, on several patterns
(program, bitmask and full blocks), with GQA. Forward outputs only: gradients are not yet
contained (0 * NaN in the backward of the online softmax; see the report of issue 9).

Which rows must turn non-finite: all that allow the key when the value is NaN (a NaN score or
value always propagates) or when v holds +-Inf; with +-Inf in q or k a score can be -inf, and a
key with score -inf rightly contributes nothing, so there only "no leak" is required.
"""
from __future__ import annotations

import functools

import pytest
import torch

import spattern as sp
from spattern.runtime.reference import _pv, attention_dense, attention_blockwise

PATTERNS = ["local(16) & causal", "(local(9) | sink(3) | strided(17)) & causal",
            "local(5) | random(2, seed=1, block=16)", "document([0, 40, 41, 100])"]
EXECUTORS = [attention_dense, attention_blockwise]
N = 100


def _inputs(seed=0, H=4, Hkv=2, D=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, H, N, D, generator=g, dtype=torch.float64),
            torch.randn(2, Hkv, N, D, generator=g, dtype=torch.float64),
            torch.randn(2, Hkv, N, D, generator=g, dtype=torch.float64))


@functools.lru_cache(maxsize=None)
def _clean(fn, text):
    return fn(*_inputs(), sp.compile(text, N, block=16), 0.3)[0]


@pytest.mark.parametrize("fn", EXECUTORS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("text", PATTERNS)
@pytest.mark.parametrize("where", ["k", "v", "q"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_one_nonfinite_row_reaches_only_the_rows_that_attend_it(fn, text, where, value):
    layout = sp.compile(text, N, block=16)
    mask = torch.from_numpy(layout.to_dense(0))  # (N, N)
    q, k, v = _inputs()
    row = 57
    t = {"q": q, "k": k, "v": v}[where]
    t[1, 1, row] = value  # batch 1, head 1 (kv head 1 serves query heads 2 and 3)
    out, lse = fn(q, k, v, layout, 0.3, return_lse=True)
    bad = ~torch.isfinite(out).all(dim=-1)  # (B, H, N)
    expect = torch.zeros_like(bad)
    if where == "q":
        expect[1, 1, row] = True
    else:
        expect[1, 2:, :] = mask[:, row]  # the query heads reading kv head 1, rows that allow key `row`
    leaked = (bad & ~expect).nonzero().tolist()
    assert not leaked, f"non-finite outputs in rows that never attend the bad row: {leaked[:8]}"
    if value != value or where == "v":
        missed = (expect & ~bad).nonzero().tolist()
        assert not missed, f"rows that attend the bad row came out finite: {missed[:8]}"
    # everything else equals the run without the bad value
    clean = _clean(fn, text)
    torch.testing.assert_close(out[~expect], clean[~expect], rtol=1e-12, atol=1e-12)


def test_pv_follows_ieee_per_allowed_pair():
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5], [0.5, 0.5, 0.0]], dtype=torch.float64)
    allowed = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    v = torch.tensor([[1.0], [float("inf")], [float("-inf")]], dtype=torch.float64)
    out = _pv(p, allowed, v)[:, 0]
    assert out[0] == float("inf")          # +inf arrives with p > 0
    assert out[1] == 1.0                   # key 1 not allowed: no 0 * inf
    assert torch.isnan(out[2])             # +inf and -inf both arrive
    assert torch.isnan(out[3])             # allowed -inf with p == 0: 0 * inf is NaN
    finite = torch.tensor([[2.0], [3.0], [4.0]], dtype=torch.float64)
    torch.testing.assert_close(_pv(p, allowed, finite), p @ finite)
