"""Host-side cost of attention_cupy (cProfile) and a fixed case for ncu; diagnostics for notes/kernel.md.

python3 scripts/profile_host.py --n 4096 --density 0.1 [--calls 200] [--no-cprofile] [--backward]
    [--family lrs|band_landmark] [--causal]
``--backward``: each call is a forward plus autograd.grad through the CUDA kernels (for ncu -k sp_bwd_*).
"""
import argparse
import cProfile
import io
import pstats
import sys

import torch

sys.path.insert(0, ".")
from spattern.evaluation.bench_attention import structured_layout  # noqa: E402
from spattern.runtime import cupy_backend as cb  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=4096)
ap.add_argument("--density", type=float, default=0.1)
ap.add_argument("--d", type=int, default=128)
ap.add_argument("--calls", type=int, default=200)
ap.add_argument("--no-cprofile", action="store_true")
ap.add_argument("--backward", action="store_true")
ap.add_argument("--causal", action="store_true")
ap.add_argument("--family", default="band_landmark")
a = ap.parse_args()
lay = structured_layout(a.n, a.density, (128, 128), a.causal, a.family)
q, k, v = (torch.randn(1, 16, a.n, a.d, device="cuda", dtype=torch.bfloat16, requires_grad=a.backward)
           for _ in range(3))
if a.backward:
    import spattern as sp

    do = torch.randn_like(q)

    def call(q, k, v, lay, scale, *_):
        out = sp.attention(q, k, v, lay, scale=scale, backend="cupy", trusted=True)
        return torch.autograd.grad(out, (q, k, v), do)
    cb = type("cb", (), {"attention_cupy": staticmethod(call)})
for _ in range(5):
    cb.attention_cupy(q, k, v, lay, a.d ** -0.5, False, None)
torch.cuda.synchronize()
pr = cProfile.Profile()
if not a.no_cprofile:
    pr.enable()
for _ in range(a.calls):
    cb.attention_cupy(q, k, v, lay, a.d ** -0.5, False, None)
if not a.no_cprofile:
    pr.disable()
torch.cuda.synchronize()
if not a.no_cprofile:
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(18)
    print(s.getvalue()[:6000])
