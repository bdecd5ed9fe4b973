"""The sdpa_mask backend (torch SDPA under the layout's token mask) against its twin, the reference:
outputs and gradients on random layouts (shared, per-head and per-batch groups, GQA, rows with no
allowed key), non-finite inputs, and what it refuses."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.runtime.reference import attention_dense
from spattern.testing import strategies as sst

F64 = torch.float64


@st.composite
def problems(draw):
    layout = draw(sst.layouts(geometry_strategy=sst.geometries(max_len=90)))
    Bg, Hg = layout.group_shape
    B = Bg if Bg > 1 else draw(st.integers(1, 2))
    H = Hg if Hg > 1 else draw(st.sampled_from((1, 2, 4)))
    Hkv = draw(st.sampled_from([d for d in (1, 2, 4) if H % d == 0]))
    return layout, B, H, Hkv, layout.q_len, layout.kv_len


def _inputs(B, H, Hkv, Nq, Nk, seed, D=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, D, dtype=F64, generator=g).requires_grad_(True)
            for b, h, n in ((B, H, Nq), (B, Hkv, Nk), (B, Hkv, Nk))]


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(problems(), st.integers(0, 2**31 - 1))
def test_outputs_and_gradients_equal_the_reference(prob, seed):
    layout, B, H, Hkv, Nq, Nk = prob
    ins = _inputs(B, H, Hkv, Nq, Nk, seed)
    twin = [t.detach().clone().requires_grad_(True) for t in ins]
    dout = torch.randn(B, H, Nq, 8, dtype=F64, generator=torch.Generator().manual_seed(seed + 1))
    got = sp.attention(*ins, layout, scale=0.37, backend="sdpa_mask")
    want, _ = attention_dense(*twin, layout, 0.37)
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    g1 = torch.autograd.grad((got * dout).sum(), ins)
    g2 = torch.autograd.grad((want * dout).sum(), twin)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


def test_rows_without_keys_are_zeros_in_float32_too():
    """The contract; on torch 2.13's CPU kernel it holds without the backend's guard too."""
    layout = sp.compile(sp.parse("local(4) & causal - sink(8)"), 32, block=(16, 16))  # rows 0-7 see nothing
    q, k, v = (torch.randn(2, 2, 32, 16) for _ in range(3))
    got = sp.attention(q, k, v, layout, backend="sdpa_mask")
    assert torch.equal(got[:, :, :8], torch.zeros_like(got[:, :, :8]))
    torch.testing.assert_close(got, attention_dense(q, k, v, layout, 16 ** -0.5)[0], atol=1e-5, rtol=0)


def test_non_finite_inputs_keep_the_references_semantics():
    """A NaN in v at a key that only later queries see stays out of earlier rows (the reference's
    contract): the backend hands such inputs to the reference."""
    layout = sp.compile(sp.parse("local(4) & causal"), 32, block=(16, 16))
    q, k, v = (torch.randn(1, 1, 32, 16) for _ in range(3))
    v[0, 0, 20] = float("nan")
    got = sp.attention(q, k, v, layout, backend="sdpa_mask")
    want, _ = attention_dense(q, k, v, layout, 16 ** -0.5)
    assert torch.isnan(got[0, 0, 20:24]).all() and not torch.isnan(got[0, 0, :20]).any()
    torch.testing.assert_close(got, want, equal_nan=True)


def test_what_it_refuses_is_said():
    layout = sp.compile(sp.parse("local(4) & causal"), 32, block=(16, 16))
    q = k = v = torch.randn(1, 1, 32, 16)
    with pytest.raises(ValueError, match="returns no LSE"):
        sp.attention(q, k, v, layout, backend="sdpa_mask", return_lse=True)
    big = sp.compile(sp.parse("local(4) & causal"), 8192, block=(64, 64))
    qb = torch.randn(1, 1, 8192, 16)
    with pytest.raises(ValueError, match="dense token mask"):
        sp.attention(qb, qb, qb, big, backend="sdpa_mask")
