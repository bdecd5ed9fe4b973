"""The sdpa_mask backend on a GPU against its twin, the reference (tests/test_sdpa_mask.py does it on the
CPU in float64): CUDA's SDPA kernels under a boolean mask, in float32 and bfloat16, outputs and
gradients, on the patterns and shapes of study scenario 3 (MQAR: 256 tokens, 16-blocks, head dim 32)
and on per-head groups; rows with no allowed key give zeros, a NaN stays with the queries that see it."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import spattern as sp  # noqa: E402
from spattern.runtime.reference import attention_dense  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

# study_mqar_long.toml's five families at their matched windows (block density 0.3 of 16-blocks at 256)
PATTERNS = ["local(70) & causal", "(local(40) | blockstrided(4, block=16)) & causal",
            "(local(60) | sink(4)) & causal", "(local(50) | landmark(every=128)) & causal",
            "(local(30) | landmark(every=128) | random(2, block=16)) & causal",
            "heads(local(16) & causal, (local(8) | sink(4)) & causal)"]
TOL = {torch.float32: (2e-5, 1e-4), torch.bfloat16: (2e-2, 6e-2)}  # (output, gradient) absolute


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("text", PATTERNS)
def test_outputs_and_gradients_equal_the_reference(text, dtype):
    layout = sp.compile(sp.parse(text), 256, block=(16, 16))
    g = torch.Generator(device="cuda").manual_seed(0)
    ins = [torch.randn(8, 2, 256, 32, device="cuda", generator=g).to(dtype).requires_grad_(True) for _ in range(3)]
    twin = [t.detach().float().clone().requires_grad_(True) for t in ins]  # the oracle in float32
    dout = torch.randn(8, 2, 256, 32, device="cuda", generator=g)
    got = sp.attention(*ins, layout, scale=32 ** -0.5, backend="sdpa_mask")
    want, _ = attention_dense(*twin, layout, 32 ** -0.5)
    out_tol, grad_tol = TOL[dtype]
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, atol=out_tol, rtol=0)
    g1 = torch.autograd.grad((got.float() * dout).sum(), ins)
    g2 = torch.autograd.grad((want * dout).sum(), twin)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a.float(), b, atol=grad_tol, rtol=0)


def test_rows_without_keys_are_zeros():
    layout = sp.compile(sp.parse("local(4) & causal - sink(8)"), 64, block=(16, 16))  # rows 0-7 see nothing
    q, k, v = (torch.randn(2, 2, 64, 32, device="cuda") for _ in range(3))
    got = sp.attention(q, k, v, layout, backend="sdpa_mask")
    assert torch.equal(got[:, :, :8], torch.zeros_like(got[:, :, :8]))
    torch.testing.assert_close(got, attention_dense(q, k, v, layout, 32 ** -0.5)[0], atol=2e-5, rtol=0)


def test_a_nan_stays_with_the_queries_that_see_it():
    layout = sp.compile(sp.parse("local(4) & causal"), 64, block=(16, 16))
    q, k, v = (torch.randn(1, 1, 64, 32, device="cuda") for _ in range(3))
    v[0, 0, 40] = float("nan")
    got = sp.attention(q, k, v, layout, backend="sdpa_mask")
    assert torch.isnan(got[0, 0, 40:44]).all() and not torch.isnan(got[0, 0, :40]).any()
    assert not torch.isnan(got[0, 0, 44:]).any()
