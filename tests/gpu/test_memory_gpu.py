"""runtime.memory on the GPU: after a real launch, the per-layout state ``kernel_state`` names is the
one each launcher keeps (asking for it allocates nothing), and the benchmark's per-call peak counts
at least the output. Marked `gpu`; the Hopper case needs a compute-capability 9.0 device."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import spattern  # noqa: E402
from spattern.evaluation.bench_attention import call_peak_bytes  # noqa: E402
from spattern.runtime import cupy_backend, cupy_bwd, hopper_backend  # noqa: E402
from spattern.runtime.memory import kernel_state, state_bytes, tensor_bytes  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not cupy_backend.is_available(), reason="needs CUDA and CuPy")]

PATTERNS = ["(local(300) | random(2, seed=3) | sink(128)) & causal", "local(300) | sink(128)"]


def _qkv(B=1, H=4, N=1000, D=128, grad=False):
    g = torch.Generator(device="cuda").manual_seed(0)
    return [torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(grad)
            for _ in range(3)]


def _launchers():
    out = [("mma_sync", lambda q, k, v, lay: cupy_backend.attention_cupy(q, k, v, lay, 0.1, True, None))]
    if hopper_backend.is_available():
        out.append(("hopper", lambda q, k, v, lay: hopper_backend.attention_hopper(q, k, v, lay, 0.1, True, None)))
    return out


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("kernel,launch", _launchers(), ids=lambda x: x if isinstance(x, str) else "")
def test_the_state_named_is_the_state_the_launcher_keeps(pattern, kernel, launch):
    lay = spattern.compile(pattern, 1000, block=(128, 128))
    q, k, v = _qkv()
    launch(q, k, v, lay)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    st = kernel_state(lay, "cuda", kernel, 1, 4, 128)  # every tensor already cached by the launch
    assert torch.cuda.memory_allocated() == before
    assert tensor_bytes(st) == state_bytes(lay, "cpu", 1, 4, 128)[kernel]  # the CPU count is the GPU's


def test_the_backward_state_is_the_one_the_backward_keeps():
    lay = spattern.compile(PATTERNS[0], 1000, block=(128, 128))
    q, k, v = _qkv()
    out, lse = cupy_backend.attention_cupy(q, k, v, lay, 0.1, True, None)
    cupy_bwd.attention_backward_cupy(torch.randn_like(out), q, k, v, out, lse, lay, 0.1)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    kernel_state(lay, "cuda", "backward", 1, 4, 128)
    assert torch.cuda.memory_allocated() == before


def test_call_peak_counts_at_least_the_output_and_grads():
    lay = spattern.compile(PATTERNS[0], 1000, block=(128, 128))
    q, k, v = _qkv(grad=True)
    fwd = lambda q, k, v: spattern.attention(q, k, v, lay, backend="cupy")  # noqa: E731
    fwd(q, k, v)  # caches the layout on the device first, as the benchmark's warm-up does
    assert call_peak_bytes(fwd, (q, k, v)) >= q.numel() * q.element_size()
    do = torch.randn_like(q)
    both = lambda q, k, v: torch.autograd.grad(fwd(q, k, v), (q, k, v), do)  # noqa: E731
    both(q, k, v)
    assert call_peak_bytes(both, (q, k, v)) >= 3 * q.numel() * q.element_size()
