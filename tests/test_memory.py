"""runtime.memory: the per-layout state each attention path keeps, counted from the tensors the
runtime's builders make (on the CPU here; tests/gpu checks the CUDA launchers keep the same)."""
from __future__ import annotations

import pytest
import torch

import spattern
from spattern.compiler.layout import PROGRAM, programs_as_bitmasks
from spattern.runtime import cupy_backend, hopper_backend
from spattern.runtime.memory import KERNELS, blockmask_tensors, kernel_state, state_bytes, tensor_bytes

LRS = "(local(200) | random(2, seed=3) | sink(128)) & causal"


def uploaded(*arrays) -> int:
    """Device bytes of host arrays uploaded together (``upload_arrays``: each at a 16-byte offset)."""
    return sum(-(-a.nbytes // 16) * 16 for a in arrays)


def layout_bytes(lay) -> int:
    return uploaded(*(getattr(lay, n) for n in lay._ARRAYS))


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(10, dtype=torch.int32)
    b = torch.zeros(3, dtype=torch.uint8)
    assert tensor_bytes(a) == 40
    assert tensor_bytes({"a": a, "view": a[2:5], "nested": [a.view(2, 5), (b,)]}) == 43
    assert tensor_bytes("not a tensor", 3, None) == 0


@pytest.mark.parametrize("B,H,D", [(1, 1, 128), (2, 4, 64), (1, 16, 128)])
def test_forward_state_is_the_layout_arrays_and_the_work_order(B, H, D):
    lay = spattern.compile(LRS, 1100, block=(128, 64))
    split = lay.block_q // cupy_backend.kernel_config(lay.block_q, D)[0]
    got = state_bytes(lay, "cpu", B, H, D)
    assert got["mma_sync"] == layout_bytes(lay) + 4 * B * H * lay.n_rows * split  # int32 work items
    assert layout_bytes(lay) - lay.metadata_bytes() < 16 * len(lay._ARRAYS)  # the alignment only
    assert got["dense_bool_mask"] == 1100 * 1100
    assert set(got) == {"mma_sync", "hopper", "backward", "flex_blockmask", "dense_bool_mask"}


def test_hopper_state_holds_bitmasks_in_place_of_programs():
    lay = spattern.compile("local(300) | sink(128)", 1000, block=(128, 128))
    assert (lay.block_kind == PROGRAM).any()  # else the comparison below says nothing
    conv = programs_as_bitmasks(lay, hopper_backend.MAX_BITMASK_BLOCKS)
    st = kernel_state(lay, "cpu", "hopper", 1, 2, 128)
    assert not (st["layout"]["block_kind"] == PROGRAM).any() and conv.bitmasks.shape[0] > lay.bitmasks.shape[0]
    assert state_bytes(lay, "cpu", 1, 2, 128)["hopper"] == layout_bytes(conv) + 4 * 1 * 2 * lay.n_rows  # split 1


def test_backward_adds_the_transposed_csr_and_its_work_orders():
    lay = spattern.compile(LRS, 1100, block=(128, 64))
    st = kernel_state(lay, "cpu", "backward", 1, 2, 128)
    nnz = int(lay.nnz)
    csc = tensor_bytes(st["csc"])
    assert csc == uploaded(*lay.csc().values())  # col_ptr, row_idx, perm (int32), one upload
    assert uploaded(*lay.csc().values()) - 4 * (lay.n_groups * (lay.n_cols + 1) + 2 * nnz) < 3 * 16
    assert state_bytes(lay, "cpu", 1, 2, 128)["backward"] == tensor_bytes(st)


def test_flex_blockmask_is_dense_in_the_key_blocks():
    lay = spattern.compile(LRS, 1100, block=(128, 64))
    R, C = lay.n_rows, lay.n_cols
    bm = blockmask_tensors(lay, "cpu")
    assert tuple(bm["kv_indices"].shape)[-2:] == (R, C)  # an index slot for every key block of every row
    assert state_bytes(lay, "cpu")["flex_blockmask"] == 4 * 2 * (R + C + 2 * R * C)


def test_per_head_layouts_and_checked_arguments():
    lay = spattern.compile("heads(local(64) & causal, strided(32) & causal)", 512, block=(128, 128))
    assert tuple(lay.group_shape) == (1, 2)
    split = 128 // cupy_backend.kernel_config(128, 128)[0]
    assert kernel_state(lay, "cpu", "mma_sync", 3, 2)["work"].numel() == 3 * 2 * lay.n_rows * split
    with pytest.raises(ValueError, match=r"group_shape: expected \(1 or B=1, 1 or H=4\), got \(1, 2\)"):
        kernel_state(lay, "cpu", "mma_sync", 1, 4)
    with pytest.raises(ValueError, match="kernel: expected one of"):
        kernel_state(lay, "cpu", "nope", 1, 2)
    assert set(KERNELS) == {"mma_sync", "hopper", "backward"}
