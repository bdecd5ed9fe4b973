"""FlexAttention interop on the CPU: the generated mask_mod (straight-line torch ops, per-block
bitmask lookup) and the BlockMask's full/partial lists give exactly ``layout.to_dense()``; eager flex
with that BlockMask gives the reference's output; kernel options divide any layout block size."""

import warnings

import numpy as np
import pytest
import torch

import spattern as sp
from spattern.ir import program as P
from spattern.runtime.flex import block_mask_from_layout, kernel_options_for, mask_mod_source, program_lines

fa = pytest.importorskip("torch.nn.attention.flex_attention")

LAYOUTS = [
    ("(local(40) | landmark(every=64) | strided(7)) & causal", 256, (128, 128)),  # PROGRAM blocks
    ("document([0, 100, 180, 256]) & causal", 256, (128, 128)),                      # BITMASK blocks
    ("heads(local(16) & causal, sink(8) | dilated(4, dilation=3))", 256, (128, 128)),  # per-head groups
    ("(local(50) | random(2, seed=3) | sink(32)) & causal", 300, (64, 64)),            # 64-token blocks, odd N
    ("local(30) | random(1, seed=1) | sink(16)", 200, (64, 128)),
]


def _effective_mask(bm, layout):
    """Token mask FlexAttention computes with this BlockMask: full blocks, partial blocks & mask_mod."""
    Bg, Hg = layout.group_shape
    bq, bk = layout.block_q, layout.block_k
    Nq, Nk = layout.q_len, layout.kv_len
    R, C = layout.n_rows, layout.n_cols
    mm = fa.create_mask(bm.mask_mod, Bg, Hg, Nq, Nk, device="cpu")  # (Bg, Hg, Nq, Nk)
    out = torch.zeros(Bg, Hg, R * bq, C * bk, dtype=torch.bool)
    for nums, idx, full in ((bm.kv_num_blocks, bm.kv_indices, False), (bm.full_kv_num_blocks, bm.full_kv_indices, True)):
        for b in range(Bg):
            for h in range(Hg):
                for r in range(R):
                    for c in idx[b, h, r, : int(nums[b, h, r])].tolist():
                        out[b, h, r * bq:(r + 1) * bq, c * bk:(c + 1) * bk] = True if full else False
                        if not full:
                            q1, k1 = min((r + 1) * bq, Nq), min((c + 1) * bk, Nk)
                            out[b, h, r * bq:q1, c * bk:k1] = mm[b, h, r * bq:q1, c * bk:k1]
    return out[:, :, :Nq, :Nk].reshape(Bg * Hg, Nq, Nk).numpy()


@pytest.mark.parametrize("text,n,block", LAYOUTS)
def test_block_mask_equals_layout(text, n, block):
    layout = sp.compile(text, n, block=block)
    bm = block_mask_from_layout(layout, "cpu")
    assert np.array_equal(_effective_mask(bm, layout), layout.to_dense())
    # exact on every pair too (flex's eager path applies the mask_mod everywhere)
    Bg, Hg = layout.group_shape
    everywhere = fa.create_mask(bm.mask_mod, Bg, Hg, n, n, device="cpu").reshape(Bg * Hg, n, n).numpy()
    assert np.array_equal(everywhere, layout.to_dense())
    src = mask_mod_source(layout)
    assert "for " not in src and "evaluate" not in src  # straight-line code, no interpreter
    if not (np.asarray(layout.block_kind) == 2).any():
        assert "midx[" not in src  # program-only layouts: no table lookups at all


@pytest.mark.parametrize("seed", range(20))
def test_program_codegen_matches_evaluator(seed):
    rng = np.random.default_rng(seed)
    leaves = [(P.BAND, -5, 7, 0), (P.BAND, 0, P.INF, 0), (P.DIFF_MOD, 3, 1, 0), (P.KEY_MOD, 5, 1, 3),
              (P.QUERY_MOD, 4, 0, 1), (P.KEY_RANGE, 3, 20, 0), (P.QUERY_RANGE, 10, 30, 0), (P.TRUE, 0, 0, 0),
              (P.FALSE, 0, 0, 0)]
    prog = [leaves[rng.integers(len(leaves))]]
    for _ in range(int(rng.integers(1, 5))):
        prog.append(leaves[rng.integers(len(leaves))])
        prog.append((int(rng.choice([P.OR, P.AND, P.ANDNOT])), 0, 0, 0))
        if rng.random() < 0.3:
            prog.append((P.NOT, 0, 0, 0))
    i, j = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    ns = {"i": i, "j": j}
    exec("\n".join(program_lines(prog, "out")), ns)
    assert torch.equal(ns["out"], torch.as_tensor(P.evaluate(prog, i, j)))


@pytest.mark.parametrize("bq,bk", [(16, 16), (32, 64), (64, 64), (64, 128), (128, 64), (128, 128), (256, 128), (48, 80)])
def test_kernel_options_divide_blocks(bq, bk):
    o = kernel_options_for(bq, bk)
    if o is None:
        assert bq % 128 == 0 and bk % 128 == 0
        return
    assert bq % o["BLOCK_M"] == 0 and bk % o["BLOCK_N"] == 0
    assert bq % o["BLOCK_M1"] == 0 and bk % o["BLOCK_N1"] == 0 and o["BLOCK_N1"] % o["BLOCK_M1"] == 0
    assert bq % o["BLOCK_M2"] == 0 and bk % o["BLOCK_N2"] == 0 and o["BLOCK_M2"] % o["BLOCK_N2"] == 0


@pytest.mark.parametrize("text,n,block", LAYOUTS[:3])
def test_flex_block_mask_matches_reference(text, n, block):
    layout = sp.compile(text, n, block=block)
    H = 2
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, H, n, 32, generator=g) for _ in range(3))
    bm = block_mask_from_layout(layout, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns that it is unfused
        out = fa.flex_attention(q, k, v, block_mask=bm)
    ref = sp.attention(q, k, v, layout, backend="reference")
    rows = torch.from_numpy(layout.to_dense().any(-1)).reshape(-1, n)  # rows with some key
    rows = rows.expand(H, n) if rows.shape[0] == 1 else rows
    assert torch.allclose(out[0][rows], ref[0][rows], atol=1e-5)
