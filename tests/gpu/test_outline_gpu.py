"""Outline attention on the CUDA kernels: layouts compiled from real text (one per sequence of a
batch, bitmask blocks from scattered headers), forward and backward against float64."""
from __future__ import annotations

import inspect
import json.decoder

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spattern as sp  # noqa: E402
from spattern.patterns.outline import text_tree  # noqa: E402
from spattern.runtime import cupy_backend  # noqa: E402
from test_backward import _qkv, check_grads  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cupy_backend.is_available(), reason="needs CUDA and CuPy")]

CODE = inspect.getsource(json.decoder)
PROSE = "".join(f"Paragraph {i} opens with a few words.\nIt goes on for a while and then stops.\n\n" for i in range(60))


@pytest.mark.parametrize("block", [(64, 64), (128, 128)])
@pytest.mark.parametrize("D", [64, 128])
def test_outline_batch_of_code_and_prose(block, D):
    n = 2000
    contexts = [{"tree": text_tree(CODE[:n])}, {"tree": text_tree(PROSE[:n])}]
    p = sp.parse("outline(window=96, header=6, recent=2) & causal")
    lay = sp.compile(p, n, block=block, context=contexts)
    masks = np.stack([lay.to_dense(g) for g in range(lay.n_groups)])
    assert lay.group_shape == (2, 1) and 0 < masks.mean() < 0.2
    q, k, v = _qkv(2, 4, 2, n, D, torch.bfloat16, seed=D + block[0])
    check_grads(q, k, v, lay, masks)


def test_backward_after_the_layout_object_is_dropped():
    """A layout built per step (top-k indexer, per-batch structure) and dropped after the forward:
    the autograd context keeps it alive until the backward."""
    import gc

    n = 512
    q, k, v = (t.requires_grad_(True) for t in _qkv(1, 2, 2, n, 64, torch.bfloat16, seed=1))

    def forward():
        lay = sp.compile(sp.parse("outline(window=32) & causal"), n, block=(64, 64),
                         context={"tree": text_tree(CODE[:n])})
        return sp.attention(q, k, v, lay, backend="cupy")

    out = forward()
    gc.collect()
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
