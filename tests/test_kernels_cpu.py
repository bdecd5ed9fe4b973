"""CPU-only checks of the CuPy kernel backend: the .cu sources compile with nvcc for sm_90a for
every instantiation the launcher can request (skipped without nvcc), and the launcher's argument
checks fire before any CUDA call, with messages naming argument, expectation and value."""
from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kernel_fixtures import layout_dense_mask, layout_from_masks  # noqa: E402
from spattern.evaluation.bench_attention import band_landmark_layout  # noqa: E402
from spattern.runtime import cupy_backend as cb  # noqa: E402

NVCC = shutil.which("nvcc")
# (dtype, head dim, layout block_q, block_k, warp rows, CTA rows, stages): every config kernel_config can pick
INSTANTIATIONS = sorted({
    (bf16, hd, bq, bk, *(lambda c: (c[1], c[0], c[2]))(cb.kernel_config(bq, hd) if name is None else
                                                       (cb.KERNEL_CONFIGS[name] if bq == 128 else (64, 16, 3))))
    for bf16, hd, (bq, bk), name in itertools.product((0, 1), cb.SUPPORTED_HEAD_DIMS, cb.SUPPORTED_BLOCKS,
                                                      [None, *cb.KERNEL_CONFIGS])
})


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("bf16,hd,bq,bk,wm,cta,ns", INSTANTIATIONS)
def test_kernel_compiles_sm90a(tmp_path: Path, bf16, hd, bq, bk, wm, cta, ns):
    out = tmp_path / "k.cubin"
    cmd = [NVCC, "-gencode=arch=compute_90a,code=sm_90a", "-std=c++17", "-cubin", "-Xptxas", "-v",
           *cb.kernel_defines(bf16, hd, bq, bk, wm, cta, ns), "-o", str(out), str(cb.KERNEL_FILE)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.stat().st_size > 0
    # no significant register spills
    assert "spill stores" in r.stderr
    main = [ln for ln in r.stderr.splitlines() if "spill" in ln]
    spills = [int(ln.split(",")[1].split()[0]) for ln in main]
    assert max(spills) <= (64 if wm == 16 else 256), r.stderr  # wm=32 (opt-in variant) spills a little


def test_every_cu_file_is_known():
    from spattern.runtime import cupy_bwd, hopper_backend

    files = sorted(p.name for p in cb.KERNEL_DIR.glob("*.cu"))
    assert files == sorted([cb.KERNEL_FILE.name, cupy_bwd.KERNEL_FILE.name, hopper_backend.KERNEL_FILE.name])


def test_smem_fits_hopper():
    for hd in cb.SUPPORTED_HEAD_DIMS:
        for cta, wm, ns in cb.KERNEL_CONFIGS.values():
            assert cb.smem_bytes(hd, cta, ns) <= 227 * 1024


# ----------------------------------------------------------------------------- argument checks
def _lay(n=128, block=(64, 64)):
    return band_landmark_layout(n, block, W=16, L=8)


def _t(*shape, dtype=torch.bfloat16):
    return torch.zeros(*shape, dtype=dtype)  # CPU: the checks must fail before any CUDA call


def _check(q, k, v, lay, scale=0.125, lse=False, cu=None):
    return cb.check(q, k, v, lay, scale, lse, cu)


def test_rejects_dtype():
    q = _t(1, 2, 128, 64, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"q: expected dtype float16 or bfloat16, got float32"):
        _check(q, q, q, _lay())


def test_rejects_mixed_dtypes():
    q = _t(1, 2, 128, 64)
    k = _t(1, 2, 128, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"q/k/v dtypes: expected one dtype for all three"):
        _check(q, k, k, _lay())


def test_rejects_head_dim():
    q = _t(1, 2, 128, 96)
    with pytest.raises(ValueError, match=r"q: expected head_dim in \(64, 128\), got 96"):
        _check(q, q, q, _lay())


def test_rejects_rank():
    q = _t(2, 128, 64)
    with pytest.raises(ValueError, match=r"q.shape: expected 4 dims \(batch, heads, seq, head_dim\), got \(2, 128, 64\)"):
        _check(q, q, q, _lay())


def test_rejects_gqa_heads():
    q = _t(1, 6, 128, 64)
    k = _t(1, 4, 128, 64)
    with pytest.raises(ValueError, match=r"k heads: expected a divisor of q's 6 heads"):
        _check(q, k, k, _lay())


def test_rejects_block_sizes():
    q = _t(1, 2, 128, 64)
    lay = band_landmark_layout(128, (32, 64), W=16, L=8)
    with pytest.raises(ValueError, match=r"layout: expected \(block_q, block_k\) in .* got \(32, 64\)"):
        _check(q, q, q, lay)


def test_rejects_lengths():
    q = _t(1, 2, 100, 64)
    with pytest.raises(ValueError, match=r"layout: expected q_len=100 and kv_len=100"):
        _check(q, q, q, _lay())


def test_rejects_groups():
    q = _t(1, 2, 128, 64)
    lay = _lay()
    from spattern.compiler.layout import replace

    lay = replace(lay, group_shape=(1, 3))
    with pytest.raises(ValueError, match=r"layout.group_shape\[1\]: expected 1 or the number of query heads 2, got 3"):
        _check(q, q, q, lay)


def test_rejects_cu_seqlens_dtype():
    # int64 offsets are accepted (the launcher converts them); the only complaint left on a CPU
    # machine is the device
    q = _t(256, 2, 64)
    cu = torch.tensor([0, 128, 256], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"expected tensors on a CUDA device"):
        _check(q, q, q, _lay(), cu=cu)


def test_rejects_scale():
    q = _t(1, 2, 128, 64)
    with pytest.raises(ValueError, match=r"scale: expected a finite float"):
        _check(q, q, q, _lay(), scale=float("nan"))


def test_rejects_cpu_tensors_last():
    q = _t(1, 2, 128, 64)
    with pytest.raises(ValueError, match=r"q, k, v: expected tensors on a CUDA device, got cpu"):
        _check(q, q, q, _lay())


def test_attention_cupy_checks_before_cuda():
    q = _t(1, 2, 128, 64, dtype=torch.float32)
    with pytest.raises(TypeError, match="q: expected dtype"):
        cb.attention_cupy(q, q, q, _lay(), 0.125, False, None)


# ----------------------------------------------------------------------------- test-layout helpers
def test_analytic_layout_matches_its_program():
    for causal in (False, True):
        lay = band_landmark_layout(300, (64, 64), W=40, L=20, causal=causal)
        i, j = np.meshgrid(np.arange(300), np.arange(300), indexing="ij")
        want = ((np.abs(i - j) <= 40) | (j < 20) | (i < 20)) & ((i >= j) if causal else True)
        assert np.array_equal(layout_dense_mask(lay)[0], want)


def test_layout_from_masks_roundtrip_bitmask():
    rng = np.random.default_rng(0)
    m = rng.random((2, 130, 200)) < 0.1
    lay = layout_from_masks(m, 64, 128, group_shape=(1, 2))
    assert np.array_equal(layout_dense_mask(lay), m)


# ----------------------------------------------------------------------------- backward kernels
from spattern.runtime import cupy_bwd  # noqa: E402

# every (head dim, blocks) in bf16, and fp16 at 128 x 128 (the dtype only changes the mma/cvt opcodes)
BWD_INSTANTIATIONS = ([(1, hd, b) for hd in cb.SUPPORTED_HEAD_DIMS for b in cb.SUPPORTED_BLOCKS]
                      + [(0, hd, (128, 128)) for hd in cb.SUPPORTED_HEAD_DIMS])


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("bf16,hd,blocks", BWD_INSTANTIATIONS)
def test_backward_kernels_compile_sm90a(tmp_path: Path, bf16, hd, blocks):
    """Every backward instantiation compiles from the launcher's own source text (header inlined),
    without register spills, and its shared memory fits two CTAs per Hopper SM."""
    src = tmp_path / "bwd.cu"
    src.write_text(cb.kernel_source(cupy_bwd.KERNEL_FILE)[0])
    out = tmp_path / "b.cubin"
    cmd = [NVCC, "-gencode=arch=compute_90a,code=sm_90a", "-std=c++17", "-cubin", "-Xptxas", "-v",
           *cupy_bwd.kernel_defines(bf16, hd, *blocks), "-o", str(out), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    spills = [int(ln.split(",")[1].split()[0]) for ln in r.stderr.splitlines() if "spill stores" in ln]
    assert len(spills) == len(cupy_bwd.NAMES) and max(spills) == 0, r.stderr
    assert 2 * (cupy_bwd.smem_bytes(hd) + 1024) <= 228 * 1024


def test_kernel_source_inlines_the_mask_header():
    for f in (cb.KERNEL_FILE, cupy_bwd.KERNEL_FILE):
        src, h = cb.kernel_source(f)
        assert '#include "' not in src and "eval_program_row" in src and len(h) == 16


def test_backward_declines_huge_gqa_groups():
    from spattern.runtime.problem import describe

    q = _t(1, 128, 128, 64)
    k = _t(1, 1, 128, 64)
    prob = describe(q, k, k, _lay(), None)
    assert "at most 64 query heads" in cupy_bwd.supports(prob)
    assert cupy_bwd.supports(describe(q[:, :64], k, k, _lay(), None)) is None


# ----------------------------------------------------------------------------- gradcheck of the oracle
@pytest.mark.parametrize("text,block,gqa", [("local(5) & causal", (16, 16), 1), ("sink(2) | dilated(3, dilation=2)", (16, 32), 2),
                                           ("document([0, 15, 33]) & causal", (16, 16), 1)])
def test_reference_gradcheck(text, block, gqa):
    """The float64 reference's own gradients (the oracle of the GPU backward) pass torch.autograd.gradcheck."""
    import spattern as sp

    n = 33
    lay = sp.compile(text, n, block=block)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, n, 4, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(1, 2 // gqa, n, 4, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(1, 2 // gqa, n, 4, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda a, b, c: sp.attention(a, b, c, lay, backend="reference")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-5, fast_mode=True)


# ----------------------------------------------------------------------------- benchmark layouts
@pytest.mark.parametrize("family", ["lrs", "band_landmark"])
@pytest.mark.parametrize("causal", [False, True])
def test_bench_native_mask_mod_is_the_layouts_mask(family, causal):
    """The benchmark's native FlexAttention mask_mod (written from the pattern, not the layout) allows
    exactly the layout's token mask, so both flex columns time the same attention."""
    from torch.nn.attention.flex_attention import create_mask

    from spattern.evaluation import bench_attention as ba

    lay = ba.structured_layout(768, 0.3, (128, 128), causal, family)
    m = create_mask(ba.native_mask_mod(lay, "cpu"), 1, 1, 768, 768, device="cpu")[0, 0].numpy()
    assert np.array_equal(m, lay.to_dense()[0])


def test_bench_cells_parse_and_reject():
    from spattern.evaluation.bench_attention import _parse_cells
    from spattern.utils.errors import UserError

    assert _parse_cells(["16384:0.1:no:lrs", "8192:0.25:yes:band_landmark"]) == [
        (16384, 0.1, False, "lrs"), (8192, 0.25, True, "band_landmark")]
    with pytest.raises(UserError, match="expected N:DENSITY"):
        _parse_cells(["16384:0.1:maybe:lrs"])


def test_prepare_io_allocates_or_checks_the_outputs():
    """The forward launchers' shared input/output preparation (cupy_backend.prepare_io), on CPU tensors."""
    import torch

    from spattern.runtime.cupy_backend import prepare_io

    q = torch.randn(2, 3, 5, 8).transpose(2, 3).transpose(2, 3)      # (B, H, N, D), contiguous again
    k = torch.randn(2, 3, 8, 5).transpose(2, 3)                       # not contiguous: copied
    qq, kk, vv, out, lse = prepare_io(q, k, k, None, None, True, False, 2, 3)
    assert kk.is_contiguous() and torch.equal(kk, k) and out.shape == q.shape and lse.shape == (2, 3, 5)
    assert prepare_io(q, k, k, None, None, False, False, 2, 3)[4] is None
    packed = torch.randn(7, 3, 8)                                     # (T, H, D)
    assert prepare_io(packed, packed, packed, None, None, True, True, 1, 3)[4].shape == (3, 7)
    given = torch.empty(2, 3, 5)
    assert prepare_io(q, k, k, None, given, True, False, 2, 3)[4] is given
    with pytest.raises(ValueError, match=r"lse_out: expected a contiguous \(2, 3, 5\) float32"):
        prepare_io(q, k, k, None, torch.empty(2, 3, 6), True, False, 2, 3)
    with pytest.raises(ValueError, match="out: expected a contiguous"):
        prepare_io(q, k, k, torch.empty(2, 3, 5, 8, dtype=torch.float64), None, True, False, 2, 3)


def test_kernel_source_is_kept_until_a_file_changes(tmp_path, monkeypatch):
    """The inlined source is read once per process and re-read when the file or a header changes (the
    files are looked at once per SOURCE_RECHECK_S; 0 here, so every call looks)."""
    import os

    monkeypatch.setattr(cb, "SOURCE_RECHECK_S", 0.0)

    main, head = tmp_path / "k.cu", tmp_path / "h.cuh"
    head.write_text("#define A 1\n")
    main.write_text('#include "h.cuh"\nint x = A;\n')
    src1, h1 = cb.kernel_source(main)
    assert "#define A 1" in src1 and cb.kernel_source(main) == (src1, h1)
    head.write_text("#define A 22\n")
    os.utime(head, ns=(1, 1))  # a different stamp even where the clock is coarse
    src2, h2 = cb.kernel_source(main)
    assert "#define A 22" in src2 and h2 != h1
    main.write_text('#include "h.cuh"\nint yy = A;\n')
    assert "int yy = A;" in cb.kernel_source(main)[0]


def test_kernel_source_looks_at_the_files_at_most_once_per_interval(tmp_path, monkeypatch):
    main = tmp_path / "k.cu"
    main.write_text("int x = 1;\n")
    monkeypatch.setattr(cb, "SOURCE_RECHECK_S", 3600.0)
    src1, _ = cb.kernel_source(main)
    main.write_text("int x = 22;\n")
    assert cb.kernel_source(main)[0] == src1  # within the interval: the cached text, no stat
    monkeypatch.setattr(cb, "SOURCE_RECHECK_S", 0.0)
    assert "int x = 22;" in cb.kernel_source(main)[0]
