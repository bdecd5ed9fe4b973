"""GPU: the fused top-k selection kernel against its torch twin; attention on the layout it
builds (cupy backend against the reference); the build captured in a CUDA graph."""

import numpy as np
import pytest
import torch

import spattern as sp
from spattern.indexer import topk_block_layout

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("n,block,k,causal,sink,local", [
    (1000, 64, 5, True, 1, 1), (4096, 64, 32, True, 1, 2), (4096, 64, 8, False, 0, 1),
    (777, 32, 3, True, 2, 1), (16384, 64, 32, True, 1, 1), (65536, 64, 16, True, 1, 1),
])
@pytest.mark.parametrize("ties", [False, True])
def test_kernel_equals_torch_twin(n, block, k, causal, sink, local, ties):
    g = torch.Generator(device="cuda").manual_seed(n + k)
    R = -(-n // block)
    s = torch.randn(2, R, R, device="cuda", generator=g)
    if ties:
        s = torch.round(s)
    s[0, :, 3] = float("-inf")
    s[1, :, 2] = float("nan")
    a = topk_block_layout(s, k, n, n, (block, block), causal, sink, local, impl="cuda")
    b = topk_block_layout(s, k, n, n, (block, block), causal, sink, local, impl="torch")
    assert a.equals(b)


def test_cupy_attention_on_topk_layout_matches_reference():
    n, block, k = 2048, 64, 6
    g = torch.Generator(device="cuda").manual_seed(0)
    s = torch.randn(2, n // block, n // block, device="cuda", generator=g)
    layout = topk_block_layout(s, k, n, n, (block, block))
    q = torch.randn(2, 8, n, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    kv = torch.randn(2, 2, n, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    out = sp.attention(q, kv, kv, layout, backend="cupy")
    ref = sp.attention(q.double(), kv.double(), kv.double(), layout, backend="reference")
    # the yardstick: torch's own attention with the same mask, in bf16, against float64
    mask = torch.from_numpy(layout.to_dense()).to("cuda")[:, None]  # (B, 1, N, N)
    kk = kv.repeat_interleave(4, 1)
    dense = torch.nn.functional.scaled_dot_product_attention(q, kk, kk, attn_mask=mask)
    dense_ref = torch.nn.functional.scaled_dot_product_attention(q.double(), kk.double(), kk.double(), attn_mask=mask)
    tol = 2 * (dense.double() - dense_ref).abs().max().item() + 1e-3
    assert (out.double() - ref).abs().max().item() <= tol


def test_build_is_graph_capturable_and_replays_new_scores():
    n, block, k = 4096, 64, 8
    R = n // block
    s = torch.randn(1, R, R, device="cuda")
    for _ in range(2):
        topk_block_layout(s, k, n, n, (block, block))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = topk_block_layout(s, k, n, n, (block, block))
    s.copy_(torch.randn(1, R, R, device="cuda"))
    graph.replay()
    torch.cuda.synchronize()
    fresh = topk_block_layout(s, k, n, n, (block, block), impl="torch")
    got = captured.to_device("cuda")["col_idx"].cpu().numpy()
    assert np.array_equal(got, fresh.col_idx)


def test_indexed_sparse_training_step_on_cuda():
    """The sparse stage on the GPU: selection by the fused kernel, attention through a backend
    with a backward (auto picks flex when gradients are needed), gradients reach the model."""
    from spattern.indexer.train import attach_indexers, indexer_modules, set_mode
    from spattern.models import build_model, get_config

    torch.manual_seed(0)
    model = build_model(get_config("neox-tiny", vocab_size=256)).cuda()
    attach_indexers(model, k=3, block=(128, 128), n_heads=2, head_dim=16)
    model.cuda()
    set_mode(model, "sparse")
    idx = torch.randint(0, 256, (2, 513), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        aux = sum(m.aux_loss for m in indexer_modules(model))
    (loss + aux).backward()
    assert torch.isfinite(loss) and torch.isfinite(aux)
    for m in indexer_modules(model):
        assert m.indexer.wq.weight.grad is not None and torch.isfinite(m.indexer.wq.weight.grad).all()
        assert m.attn.v_proj.weight.grad is not None and m.attn.v_proj.weight.grad.abs().sum() > 0
