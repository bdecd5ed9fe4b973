"""Small cases of the CuPy block-sparse kernels (forward and backward) for compute-sanitizer (memcheck / racecheck).

Covers PROGRAM and BITMASK blocks, odd lengths, an empty row range, GQA, packed varlen and
all four block-size configurations, both dtypes; prints the max error against fp64 per case.
"""
import math
import sys

import numpy as np
import torch

sys.path.insert(0, ".")
sys.path.insert(0, "tests")
from kernel_fixtures import (AND, ANDNOT, BAND, INF, KEY_RANGE, OR, QUERY_RANGE, eval_program,  # noqa: E402
                             layout_from_masks)
from spattern.runtime import cupy_backend  # noqa: E402


def ref(q, k, v, mask, scale):
    H, Hkv = q.shape[1], k.shape[1]
    k = k.double().repeat_interleave(H // Hkv, 1)
    v = v.double().repeat_interleave(H // Hkv, 1)
    s = (q.double() @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~torch.from_numpy(mask).cuda(), -math.inf)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return p @ v


def main():
    prog = [(BAND, -30, 30, 0), (KEY_RANGE, 0, 8, 0), (OR, 0, 0, 0), (QUERY_RANGE, 0, 8, 0), (OR, 0, 0, 0),
            (QUERY_RANGE, 70, 90, 0), (ANDNOT, 0, 0, 0), (BAND, 0, INF, 0), (AND, 0, 0, 0)]
    n = 150
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ev = eval_program
    mask = ev(prog, i, j)
    worst = 0.0
    for dtype in (torch.bfloat16, torch.float16):
        for D in (64, 128):
            for block in ((64, 64), (64, 128), (128, 64), (128, 128)):
                lay = layout_from_masks(mask[None], *block, programs=[prog], bitmask_every=2)
                q = torch.randn(1, 2, n, D, device="cuda").to(dtype)
                k = torch.randn(1, 1, n, D, device="cuda").to(dtype)
                v = torch.randn(1, 1, n, D, device="cuda").to(dtype)
                o, lse = cupy_backend.attention_cupy(q, k, v, lay, 1 / math.sqrt(D), True, None)
                err = float((o.double() - ref(q, k, v, mask, 1 / math.sqrt(D))).abs().max())
                worst = max(worst, err)
                print(f"{str(dtype):15s} D={D:3d} block={block}: max err {err:.2e}", flush=True)
    # packed varlen
    lens = [100, 150, 3]
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32, device="cuda")
    T = sum(lens)
    lay = layout_from_masks(mask[None], 64, 64, programs=[prog])
    q = torch.randn(T, 2, 64, device="cuda").half()
    k = torch.randn(T, 2, 64, device="cuda").half()
    o, lse = cupy_backend.attention_cupy(q, k, k, lay, 0.125, True, cu)
    torch.cuda.synchronize()
    print("varlen ok, nan:", bool(torch.isnan(o).any()), "worst err", worst)
    bad = backward_cases(mask, prog)
    return 0 if worst < 3e-2 and not bad else 1


def backward_cases(mask, prog):
    """The backward kernels (delta, dQ, dK/dV) on every block size, both dtypes, D 64/128, GQA, varlen."""
    from spattern.runtime import cupy_bwd

    bad = 0
    n = mask.shape[0]
    for dtype in (torch.bfloat16, torch.float16):
        for D in (64, 128):
            for block in ((64, 64), (64, 128), (128, 64), (128, 128)):
                lay = layout_from_masks(mask[None], *block, programs=[prog], bitmask_every=2)
                q, k, v = (torch.randn(1, h, n, D, device="cuda").to(dtype) for h in (4, 2, 2))
                o, lse = cupy_backend.attention_cupy(q, k, v, lay, 1 / math.sqrt(D), True, None)
                dq, dk, dv = cupy_bwd.attention_backward_cupy(torch.randn_like(o), q, k, v, o, lse, lay, 1 / math.sqrt(D))
                torch.cuda.synchronize()
                nan = any(bool(torch.isnan(t).any()) for t in (dq, dk, dv))
                bad += nan
                print(f"bwd {str(dtype):15s} D={D:3d} block={block}: nan={nan}", flush=True)
    lens = [100, 150, 3]
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32, device="cuda")
    T = sum(lens)
    lay = layout_from_masks(mask[None], 64, 128, programs=[prog], bitmask_every=3)
    q, k, v = (torch.randn(T, h, 128, device="cuda").bfloat16() for h in (2, 1, 1))
    o, lse = cupy_backend.attention_cupy(q, k, v, lay, 0.1, True, cu)
    dq, dk, dv = cupy_bwd.attention_backward_cupy(torch.randn_like(o), q, k, v, o, lse, lay, 0.1, cu)
    torch.cuda.synchronize()
    nan = any(bool(torch.isnan(t).any()) for t in (dq, dk, dv))
    print("bwd varlen nan:", nan, flush=True)
    return bad + nan


if __name__ == "__main__":
    sys.exit(main())
