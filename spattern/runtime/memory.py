"""What attention keeps on a device for one layout between calls, counted from the objects built.

Nothing here is a formula: each function asks the runtime's own builders for the per-layout state a
path keeps (through ``BlockLayout.cached``, so on a device where the path already ran they return the
very tensors it uses) and adds up the bytes of their distinct storages. The builders run on any torch
device, so the CPU counts what a GPU would hold.

    kernel_state(layout, "cpu", "mma_sync", B=1, H=16, head_dim=128)  -> {"layout": ..., "work": ...}
    state_bytes(layout, "cpu", B=1, H=16, head_dim=128)               -> {"mma_sync": 12345, ...}

Per path (keys of ``state_bytes``):
- ``mma_sync``: the CSR arrays as the forward launcher uploads them (those of the layout's bitmask twin
  where ``cupy_backend.kernel_layout`` reads its PROGRAM blocks as bits) and its work order
  (B*H*R*split int32 items, longest row first);
- ``hopper``: the same for the Hopper launcher, whose layout has its PROGRAM blocks turned into bitmasks;
- ``backward``: what the backward kernels add (the transposed CSR and their two work orders);
- ``flex_blockmask``: the index tensors of a FlexAttention ``BlockMask`` of the same blocks (what
  ``create_block_mask`` returns for a mask_mod of the same pattern: its shape does not depend on how
  the mask_mod is written);
- ``dense_bool_mask``: a boolean (q_len, kv_len) mask, what dense attention with an explicit mask
  reads (dense attention with no mask, or ``is_causal``, keeps nothing).
Activations (Q, K, V, O, LSE, gradients) are per call and not counted here.
"""

from __future__ import annotations

from typing import Any

import torch

from spattern.compiler.layout import BlockLayout
from spattern.runtime import cupy_backend as _cb
from spattern.runtime import cupy_bwd as _bwd
from spattern.runtime import flex as _flex
from spattern.runtime import hopper_backend as _hb

KERNELS = ("mma_sync", "hopper", "backward")
BLOCKMASK_FIELDS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
                    "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")


def tensor_bytes(*objs: Any) -> int:
    """Bytes of the distinct storages of the torch tensors inside ``objs`` (nested dicts, lists and
    tuples; other objects are skipped). Views of one storage count once."""
    seen: dict[tuple, int] = {}

    def walk(o):
        if isinstance(o, torch.Tensor):
            st = o.untyped_storage()
            seen[(str(o.device), st.data_ptr())] = st.nbytes()
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    for o in objs:
        walk(o)
    return int(sum(seen.values()))


def _shape(layout: BlockLayout, B: int, H: int) -> tuple[int, int, int]:
    Bg, Hg = (int(x) for x in layout.group_shape)
    if Bg not in (1, B) or Hg not in (1, H):
        raise ValueError(f"layout.group_shape: expected (1 or B={B}, 1 or H={H}), got {tuple(layout.group_shape)}")
    return Bg, Hg, int(layout.n_rows)


def _device(device) -> torch.device:
    """``device`` as the launchers key their caches: a tensor's device, so "cuda" means "cuda:<current>"
    (a bare "cuda" key would miss the launcher's "cuda:0" entries and build a second copy)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def kernel_state(layout: BlockLayout, device, kernel: str, B: int = 1, H: int = 1, head_dim: int = 128,
                 Hkv: int | None = None) -> dict:
    """The per-layout tensors a launch of ``kernel`` (one of ``KERNELS``) keeps on ``device`` for a
    (B, H, N, head_dim) call, built (or fetched from the layout's cache) by the launcher's builders."""
    device = _device(device)
    Bg, Hg, R = _shape(layout, B, H)
    if kernel == "mma_sync":
        lay = _cb.kernel_layout(layout, device)
        lt = _cb._layout_tensors(lay, device)
        split = layout.block_q // _cb.kernel_config(layout.block_q, head_dim)[0]
        return {"layout": lt, "work": _cb._work_order(lay, lt, B, H, R, Bg, Hg, device, split)}
    if kernel == "hopper":
        plen = layout.program_len
        lay = _hb.kernel_layout(layout, device, int(plen.max()) if plen.size else 0)
        lt = _cb._layout_tensors(lay, device)
        return {"layout": lt, "work": _cb._work_order(lay, lt, B, H, R, Bg, Hg, device, 1)}
    if kernel == "backward":
        lay = _cb.kernel_layout(layout, device)  # the forward's twin, as cupy_bwd reads it
        lt = _cb._layout_tensors(lay, device)
        csc = _bwd._csc_tensors(lay, device)
        return {"csc": csc, "dq_work": _bwd._dq_work(lay, lt, B, H, R, Bg, Hg, device),
                "dkdv_work": _bwd._dkdv_work(lay, csc, B, H, Hkv or H, layout.n_cols, Bg, Hg, device)}
    raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")


def blockmask_tensors(layout: BlockLayout, device) -> dict:
    """The index tensors of the FlexAttention BlockMask of the layout's blocks (``flex.block_mask_from_layout``)."""
    bm = _flex.block_mask_from_layout(layout, _device(device))
    return {n: getattr(bm, n) for n in BLOCKMASK_FIELDS if isinstance(getattr(bm, n, None), torch.Tensor)}


def state_bytes(layout: BlockLayout, device="cpu", B: int = 1, H: int = 1, head_dim: int = 128,
                flex: bool = True) -> dict[str, int]:
    """Bytes each path keeps for ``layout`` (keys in the module docstring). ``backward`` counts only
    what the backward adds to the forward's (mma.sync) state: the CSR arrays both read are counted once."""
    fwd = kernel_state(layout, device, "mma_sync", B, H, head_dim)
    out = {"mma_sync": tensor_bytes(fwd),
           "hopper": tensor_bytes(kernel_state(layout, device, "hopper", B, H, head_dim)),
           "backward": tensor_bytes(fwd, kernel_state(layout, device, "backward", B, H, head_dim))
           - tensor_bytes(fwd)}
    if flex:
        out["flex_blockmask"] = tensor_bytes(blockmask_tensors(layout, device))
    out["dense_bool_mask"] = int(layout.q_len) * int(layout.kv_len)
    return out
