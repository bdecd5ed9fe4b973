"""FlexAttention interop on the CPU: a layout as a BlockMask (full/partial block lists and a
mask_mod running the mask program or reading the bitmask) gives the reference's output."""

import warnings

import pytest
import torch

import spattern as sp
from spattern.runtime.flex import block_mask_from_layout

fa = pytest.importorskip("torch.nn.attention.flex_attention")


@pytest.mark.parametrize("text", [
    "(local(40) | landmark(every=64) | strided(7)) & causal",   # PROGRAM blocks
    "document([0, 100, 180, 256]) & causal",                      # BITMASK blocks
    "heads(local(16) & causal, sink(8) | dilated(4, dilation=3))",  # per-head groups
])
def test_flex_block_mask_matches_reference(text):
    layout = sp.compile(text, 256, block=(128, 128))
    H = 2
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, H, 256, 32, generator=g) for _ in range(3))
    bm = block_mask_from_layout(layout, "cpu", 1, H)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns that it is unfused
        out = fa.flex_attention(q, k, v, block_mask=bm)
    ref = sp.attention(q, k, v, layout, backend="reference")
    rows = torch.from_numpy(layout.to_dense().any(-1)).reshape(-1, 256)  # rows with some key
    rows = rows.expand(H, 256) if rows.shape[0] == 1 else rows
    assert torch.allclose(out[0][rows], ref[0][rows], atol=1e-5)
