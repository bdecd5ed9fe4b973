"""GPU backends keep a NaN/Inf in one input row local (issue 9, item 8): the same contract as
tests/test_nonfinite.py for the reference, on the CuPy kernel and on FlexAttention.

A non-finite value at key j in k may reach only the outputs of queries whose allowed keys
include j (and must reach them when it is a NaN); a non-finite query reaches only its own row.

In v the tensor-core kernels (spattern's and FlexAttention's alike, measured on the H200) are
exact at BLOCK granularity only: O = P V runs as one MMA over a whole key tile, and a masked
element's P = 0 times a NaN/Inf in v is NaN. So a non-finite v row reaches exactly the query rows
whose layout row computes its key block (the block rows of the layout's column of that key),
and never a row outside them; the reference backend is exact per token (tests/test_nonfinite.py).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import spattern as sp  # noqa: E402
from spattern.runtime import backends  # noqa: E402
from spattern.runtime.problem import describe  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

PATTERNS = ["local(16) & causal", "(local(9) | sink(3) | strided(17)) & causal",
            "local(5) | random(2, seed=1, block=64)"]
N = 256


def _available(name):
    if not backends.BACKENDS[name].available():
        pytest.skip(f"backend {name} is not available here")


@pytest.mark.parametrize("backend", ["cupy", "flex"])
@pytest.mark.parametrize("text", PATTERNS)
@pytest.mark.parametrize("where", ["k", "v", "q"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_one_nonfinite_row_reaches_only_the_rows_that_attend_it(backend, text, where, value, dtype):
    _available(backend)
    layout = sp.compile(text, N, block=64)
    mask = torch.from_numpy(layout.to_dense(0)).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, H, N, 64, generator=g, device="cuda").to(dtype) for H in (4, 2, 2))
    reason = backends.BACKENDS[backend].supports(describe(q, k, v, layout, 0.125))
    if reason:
        pytest.skip(f"{backend}: {reason}")
    row = 150
    {"q": q, "k": k, "v": v}[where][1, 1, row] = value
    out = sp.attention(q, k, v, layout, scale=0.125, backend=backend)
    bad = ~torch.isfinite(out.float()).all(dim=-1)
    expect = torch.zeros_like(bad)
    if where == "q":
        expect[1, 1, row] = True
    elif where == "k":
        expect[1, 2:, :] = mask[:, row]
    else:  # v: every query of a block row that computes the key's block (see the docstring)
        bq, bk = layout.block_q, layout.block_k
        grid = torch.from_numpy(layout.block_grid(0) >= 0).cuda()         # (R, C): computed blocks
        rows_of_block = grid[:, row // bk].repeat_interleave(bq)[:N]       # (N,)
        expect[1, 2:, :] = rows_of_block
    leaked = (bad & ~expect).nonzero().tolist()
    assert not leaked, f"{backend}: non-finite outputs in rows that never attend the bad row: {leaked[:8]}"
    if value != value or where == "v":  # with +-inf in q or k a score can be -inf: no contribution
        missed = (expect & ~bad).nonzero().tolist()
        assert not missed, f"{backend}: rows that attend the bad row came out finite: {missed[:8]}"
