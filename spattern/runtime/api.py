"""``spattern.attention``: the one entry point of the runtime, and its input checks.

    out = spattern.attention(q, k, v, layout)                       # (B, H, N, D)
    out, lse = spattern.attention(q, k, v, layout, return_lse=True)
    out = spattern.attention(q, k, v, layout, cu_seqlens=cu)        # packed (T, H, D)

Semantics: softmax over the keys the layout allows, scaled by ``scale`` (default 1/sqrt(D)).
A query with no allowed key gives zeros and LSE = -inf. The LSE is natural-log, fp32, shaped
(B, H, Nq) (packed: (H, T)). k/v may have fewer heads than q (grouped-query attention: query
head h reads kv head h // (H / Hkv)). Backends: ``reference`` (torch, any device, the oracle),
``cupy`` (CUDA kernels, forward only), ``flex`` (FlexAttention), ``auto`` (cupy on CUDA fp16/bf16
when CuPy works and no gradient is needed; flex on CUDA when one is; otherwise reference).
"""

from __future__ import annotations

from typing import Callable

import torch

from spattern.compiler.layout import BlockLayout, LayoutError
from spattern.runtime.reference import attention_reference, default_scale

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _backend_cupy():
    from spattern.runtime.cupy_backend import attention_cupy

    return attention_cupy


def _backend_flex():
    from spattern.runtime.flex import attention_flex

    return attention_flex


BACKENDS: dict[str, Callable[[], Callable]] = {
    "reference": lambda: attention_reference,
    "cupy": _backend_cupy,
    "flex": _backend_flex,
}


def cupy_available() -> bool:
    try:
        from spattern.runtime.cupy_backend import is_available
    except ImportError:
        return False
    return is_available()


def flex_available() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def _fail(arg: str, expected: str, got) -> None:
    raise ValueError(f"{arg}: expected {expected}, got {got}")


def check_inputs(q, k, v, layout, cu_seqlens=None, trusted=False):
    """Check shapes, dtypes, devices, heads and the layout; raise with what was expected/given."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            _fail(f"{name}.dtype", "float16, bfloat16, float32 or float64", t.dtype)
    if not (q.dtype == k.dtype == v.dtype):
        _fail("q/k/v dtypes", "one dtype for all three", f"q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not (q.device == k.device == v.device):
        _fail("q/k/v devices", "one device for all three", f"q {q.device}, k {k.device}, v {v.device}")
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout: expected a BlockLayout (spattern.compile(...)), got {type(layout).__name__}")
    packed = cu_seqlens is not None
    want = 3 if packed else 4
    shape_doc = "(total_tokens, heads, head_dim) with cu_seqlens" if packed else "(batch, heads, seq, head_dim)"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != want:
            _fail(f"{name}.shape", f"{want} dims {shape_doc}", tuple(t.shape))
    hdim = 1 if packed else 1
    H, Hkv = q.shape[hdim], k.shape[hdim]
    if v.shape[hdim] != Hkv:
        _fail("v heads", f"as many as k ({Hkv})", v.shape[hdim])
    if Hkv < 1 or H % Hkv:
        _fail("k heads", f"a divisor of q's {H} heads (grouped-query attention)", Hkv)
    if q.shape[-1] != k.shape[-1]:
        _fail("k.shape[-1]", f"q's head_dim {q.shape[-1]}", k.shape[-1])
    if packed:
        if not (q.shape[0] == k.shape[0] == v.shape[0]):
            _fail("q/k/v total tokens", "equal", (q.shape[0], k.shape[0], v.shape[0]))
        cu = torch.as_tensor(cu_seqlens)
        if cu.dim() != 1 or cu.numel() < 2 or cu.dtype not in (torch.int32, torch.int64):
            _fail("cu_seqlens", "a 1-D int32/int64 tensor [0, ..., total_tokens]", f"{tuple(cu.shape)} {cu.dtype}")
        if not trusted:  # the value checks read cu_seqlens on the host (a sync): skipped when trusted
            cu_h = cu.cpu()
            lens = cu_h[1:] - cu_h[:-1]
            if int(cu_h[0]) != 0 or int(cu_h[-1]) != q.shape[0] or bool((lens < 0).any()):
                _fail("cu_seqlens", f"non-decreasing from 0 to total_tokens={q.shape[0]}", cu_h.tolist())
            longest = int(lens.max())
            if longest > layout.q_len or longest > layout.kv_len:
                _fail("layout", f"q_len and kv_len >= the longest sequence ({longest})",
                      f"q_len={layout.q_len}, kv_len={layout.kv_len}")
        n_seq = cu.numel() - 1
        if layout.group_shape[0] not in (1, n_seq):
            _fail("layout.group_shape[0]", f"1 or the number of sequences ({n_seq})", layout.group_shape[0])
    else:
        B, Nq, Nk = q.shape[0], q.shape[2], k.shape[2]
        if k.shape[0] != B or v.shape[0] != B:
            _fail("k/v batch", f"q's batch {B}", (k.shape[0], v.shape[0]))
        if v.shape[2] != Nk:
            _fail("v.shape[2]", f"k's length {Nk}", v.shape[2])
        if layout.q_len != Nq or layout.kv_len != Nk:
            _fail("layout", f"q_len={Nq} and kv_len={Nk} (the tensors' lengths)",
                  f"q_len={layout.q_len}, kv_len={layout.kv_len}")
        if layout.group_shape[0] not in (1, B):
            _fail("layout.group_shape[0]", f"1 or the batch size {B}", layout.group_shape[0])
    if layout.group_shape[1] not in (1, H):
        _fail("layout.group_shape[1]", f"1 or the number of query heads {H}", layout.group_shape[1])
    if not trusted and not getattr(layout, "_validated", False):
        try:
            layout.validate()
        except LayoutError as e:
            raise ValueError(f"layout: {e}") from None
        layout.mark_validated()


def attention(q, k, v, layout: BlockLayout, *, scale: float | None = None, backend: str = "auto",
              return_lse: bool = False, cu_seqlens=None, trusted: bool = False):
    """Sparse attention of q over (k, v) restricted to ``layout``; see the module docstring.

    ``trusted=True`` skips the checks that need the host (layout validation, the values of
    ``cu_seqlens``), so the call does not synchronize; shapes, dtypes and devices are always checked."""
    check_inputs(q, k, v, layout, cu_seqlens, trusted)
    if scale is None:
        scale = default_scale(q.shape[-1])
    elif not isinstance(scale, (int, float)) or isinstance(scale, bool):
        _fail("scale", "a float or None", repr(scale))
    if backend not in ("auto", *BACKENDS):
        _fail("backend", f"one of {('auto', *BACKENDS)}", repr(backend))
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if backend == "auto":
        # the CUDA kernels are forward-only: when gradients are needed on a GPU, FlexAttention
        # (which has a backward) for unpacked input, else the differentiable reference
        if q.is_cuda and not needs_grad and q.dtype in (torch.float16, torch.bfloat16) and cupy_available():
            backend = "cupy"
        elif q.is_cuda and needs_grad and cu_seqlens is None and flex_available():
            backend = "flex"
        else:
            backend = "reference"
    elif backend == "cupy" and needs_grad:
        _fail("backend", "'flex' or 'reference' when gradients are needed ('cupy' is forward-only)",
              "'cupy' with inputs that require grad")
    fn = BACKENDS[backend]()
    out, lse = fn(q, k, v, layout, float(scale), return_lse, cu_seqlens)
    return (out, lse) if return_lse else out
