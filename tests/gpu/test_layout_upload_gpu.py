"""A layout built per step (outline's, one per batch) reaches the GPU without holding the host:
``BlockLayout.to_device`` is one pinned, non-blocking copy, and the forward and backward that read
it then run without a synchronizing call (torch's sync debug mode raises on one). The twin, a
synchronous ``.to`` of the same array, is caught by the same mode, so the check can fail."""
from __future__ import annotations

import inspect
import json.decoder

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spattern as sp  # noqa: E402
from spattern.data.batch_contexts import SequenceContexts  # noqa: E402
from spattern.patterns.outline import text_tree  # noqa: E402
from spattern.runtime import cupy_backend  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cupy_backend.is_available(), reason="needs CUDA and CuPy")]

CODE = inspect.getsource(json.decoder)


def _contexts(n: int) -> SequenceContexts:
    return SequenceContexts([{"tree": text_tree(CODE[i * 500:i * 500 + n])} for i in range(2)])


def test_sync_debug_mode_catches_a_synchronous_upload():
    with pytest.raises(RuntimeError, match="synchroniz"):
        with sync_errors():
            torch.from_numpy(np.arange(1000, dtype=np.int32)).to("cuda")


def test_a_new_layout_trains_without_a_host_sync():
    n = 2048
    ctx = _contexts(n)
    lay = ctx.layout("outline(window=256, header=8, recent=2) & causal", n, n, (64, 64))
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 64, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_()
               for _ in range(3))
    torch.cuda.synchronize()
    with sync_errors():
        ctx.to_device(torch.device("cuda"), csc=True)  # what the training loop does with each batch
        out = sp.attention(q, k, v, lay, backend="cupy", trusted=True)
        out.float().square().sum().backward()
    torch.cuda.synchronize()
    ref = sp.attention(q.detach().float(), k.detach().float(), v.detach().float(), lay, backend="reference")
    assert (out.float() - ref).abs().max().item() < 3e-2
    arrays = lay.to_device("cuda")
    assert len({t.untyped_storage().data_ptr() for t in arrays.values()}) == 1  # one buffer, one copy
    assert arrays["col_ptr"].cpu().numpy().tolist() == lay.csc()["col_ptr"].tolist()


class sync_errors:
    """torch.cuda.set_sync_debug_mode("error") for a block."""

    def __enter__(self):
        self.before = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode(self.before)
        return False


@pytest.mark.parametrize("dtype", [torch.int64, torch.float32, torch.bfloat16])
def test_a_batch_reaches_the_gpu_without_a_host_sync_and_unchanged(dtype):
    """``loop.to_device``: numpy's copy into pinned memory (torch's for bf16, which numpy lacks), then one
    non-blocking copy; the values arrive unchanged, a strided batch included."""
    from spattern.train.loop import to_device

    host = torch.arange(8 * 4097, dtype=torch.float32).reshape(8, 4097).to(dtype)
    for t in (host, host[:, ::2]):
        with sync_errors():
            out = to_device(t, torch.device("cuda"))
        torch.cuda.synchronize()
        assert out.dtype == t.dtype and out.shape == t.shape
        assert torch.equal(out.cpu(), t)
