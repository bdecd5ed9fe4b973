"""The one input check of the runtime, and the normalized problem description every backend takes.

    prob = describe(q, k, v, layout, scale=None, return_lse=False, cu_seqlens=None)

``describe`` checks everything once (types, dtypes, devices, shapes, heads, lengths, the layout,
``cu_seqlens``, ``scale``) and raises ``TypeError``/``ValueError`` naming the argument, what was
expected and what came. Backends then only ask ``backend.supports(prob)`` (a reason string when
they cannot run it, None when they can) and never re-check the inputs.

Shapes: unpacked q (B, H, Nq, D), k/v (B, Hkv, Nk, D); packed q (T, H, D), k/v (T, Hkv, D) with
``cu_seqlens`` (S+1,) and B = S sequences whose positions restart at 0 (Nq = Nk = the layout's
length, a per-sequence bound).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from spattern.compiler.layout import BlockLayout, LayoutError

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Problem:
    packed: bool
    B: int               # batch (packed: number of sequences)
    H: int               # query heads
    Hkv: int             # key/value heads (H % Hkv == 0; query head h reads kv head h // (H // Hkv))
    Nq: int              # queries per sequence (packed: the layout's q_len, an upper bound)
    Nk: int              # keys per sequence
    D: int               # head dim
    dtype: torch.dtype
    device: torch.device
    block_q: int
    block_k: int
    R: int               # query-block rows of the layout
    Bg: int              # layout groups over the batch (1 or B)
    Hg: int              # layout groups over the heads (1 or H)
    scale: float
    return_lse: bool
    needs_grad: bool     # autograd will need a backward through this call
    max_program: int     # the longest mask program in the layout
    total_tokens: int    # packed: T; else B * Nq

    @property
    def group_size(self) -> int:
        return self.H // self.Hkv


def _fail(arg: str, expected: str, got) -> None:
    raise ValueError(f"{arg}: expected {expected}, got {got}")


def _name(dt) -> str:
    return str(dt).replace("torch.", "")


def describe(q, k, v, layout, scale=None, return_lse=False, cu_seqlens=None, trusted=False) -> Problem:
    """Check the inputs of an attention call once and describe the problem.

    ``trusted=True`` skips the checks that need the host (layout validation, the values of
    ``cu_seqlens``), so the call does not synchronize; types, shapes, dtypes and devices are
    always checked."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            _fail(f"{name}.dtype", "float16, bfloat16, float32 or float64", _name(t.dtype))
        if t.layout != torch.strided:
            _fail(f"{name}.layout", "a dense (strided) tensor", _name(t.layout))
    if not (q.dtype == k.dtype == v.dtype):
        _fail("q/k/v dtypes", "one dtype for all three", f"q {_name(q.dtype)}, k {_name(k.dtype)}, v {_name(v.dtype)}")
    if not (q.device == k.device == v.device):
        _fail("q/k/v devices", "one device for all three", f"q {q.device}, k {k.device}, v {v.device}")
    if q.device.type == "meta":
        _fail("q.device", "a real device (cpu or cuda): meta tensors have no values", "meta")
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout: expected a BlockLayout (spattern.compile(...)), got {type(layout).__name__}")
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse: expected a bool, got {return_lse!r}")
    packed = cu_seqlens is not None
    want = 3 if packed else 4
    shape_doc = "(total_tokens, heads, head_dim) with cu_seqlens" if packed else "(batch, heads, seq, head_dim)"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != want:
            _fail(f"{name}.shape", f"{want} dims {shape_doc}", tuple(t.shape))
    hdim = -2 if packed else 1
    H, Hkv, D = q.shape[hdim], k.shape[hdim], q.shape[-1]
    if D < 1:
        _fail("q.shape[-1]", "a head_dim >= 1", D)
    if H < 1:
        _fail("q heads", "at least 1", H)
    if v.shape[hdim] != Hkv:
        _fail("v heads", f"as many as k ({Hkv})", v.shape[hdim])
    if H < 1 or Hkv < 1 or H % Hkv:
        _fail("k heads", f"a divisor of q's {H} heads (grouped-query attention)", Hkv)
    if k.shape[-1] != D:
        _fail("k.shape[-1]", f"q's head_dim {D}", k.shape[-1])
    if v.shape[-1] != D:
        _fail("v.shape[-1]", f"q's head_dim {D}", v.shape[-1])
    Bg, Hg = (int(x) for x in layout.group_shape)
    if packed:
        if not (q.shape[0] == k.shape[0] == v.shape[0]):
            _fail("q/k/v total tokens", "equal (packed self-attention)", (q.shape[0], k.shape[0], v.shape[0]))
        cu = cu_seqlens
        if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.numel() < 2 or cu.dtype not in (torch.int32, torch.int64):
            _fail("cu_seqlens", "a 1-D int32/int64 tensor [0, ..., total_tokens]",
                  f"{type(cu).__name__} {tuple(getattr(cu, 'shape', ()))} {getattr(cu, 'dtype', '')}")
        if cu.device != q.device:
            _fail("cu_seqlens.device", f"q's device {q.device}", cu.device)
        if layout.q_len != layout.kv_len:
            _fail("layout", "q_len == kv_len for packed self-attention", f"q_len={layout.q_len}, kv_len={layout.kv_len}")
        if not trusted:  # reads cu_seqlens on the host (a sync): skipped when trusted
            cu_h = cu.cpu()
            lens = cu_h[1:] - cu_h[:-1]
            if int(cu_h[0]) != 0 or int(cu_h[-1]) != q.shape[0] or bool((lens < 0).any()):
                _fail("cu_seqlens", f"non-decreasing from 0 to total_tokens={q.shape[0]}", cu_h.tolist())
            longest = int(lens.max())
            if longest > layout.q_len:
                _fail("layout", f"q_len and kv_len >= the longest sequence ({longest})",
                      f"q_len={layout.q_len}, kv_len={layout.kv_len}")
        B = cu.numel() - 1
        Nq = Nk = int(layout.q_len)
        T = q.shape[0]
        if Bg not in (1, B):
            _fail("layout.group_shape[0]", f"1 or the number of sequences ({B})", Bg)
    else:
        B, Nq, Nk = q.shape[0], q.shape[2], k.shape[2]
        T = B * Nq
        if k.shape[0] != B or v.shape[0] != B:
            _fail("k/v batch", f"q's batch {B}", (k.shape[0], v.shape[0]))
        if v.shape[2] != Nk:
            _fail("v.shape[2]", f"k's length {Nk}", v.shape[2])
        if layout.q_len != Nq or layout.kv_len != Nk:
            _fail("layout", f"q_len={Nq} and kv_len={Nk} (the tensors' lengths)",
                  f"q_len={layout.q_len}, kv_len={layout.kv_len}")
        if Bg not in (1, B):
            _fail("layout.group_shape[0]", f"1 or the batch size {B}", Bg)
    if Hg not in (1, H):
        _fail("layout.group_shape[1]", f"1 or the number of query heads {H}", Hg)
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real):  # numpy floats too
        _fail("scale", "a float or None (1/sqrt(head_dim))", repr(scale))
    elif not math.isfinite(float(scale)):
        _fail("scale", "a finite float", repr(scale))
    if not trusted and not getattr(layout, "_validated", False):
        try:
            layout.validate()
        except LayoutError as e:
            raise ValueError(f"layout: {e}") from None
        layout.mark_validated()
    plen = layout.program_len
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return Problem(packed=packed, B=B, H=H, Hkv=Hkv, Nq=Nq, Nk=Nk, D=D, dtype=q.dtype, device=q.device,
                   block_q=int(layout.block_q), block_k=int(layout.block_k), R=-(-int(layout.q_len) // int(layout.block_q)),
                   Bg=Bg, Hg=Hg, scale=float(scale), return_lse=return_lse, needs_grad=needs_grad,
                   max_program=int(plen.max()) if plen.size else 0, total_tokens=T)
