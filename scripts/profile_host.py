"""Host-side cost of attention_cupy (cProfile) and a fixed case for ncu; diagnostics for notes/kernel.md.

python3 scripts/profile_host.py --n 4096 --density 0.1 [--calls 200] [--no-cprofile]
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
a = ap.parse_args()
lay = structured_layout(a.n, a.density, (128, 128), False)
q, k, v = (torch.randn(1, 16, a.n, a.d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
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
