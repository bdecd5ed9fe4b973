"""BlockLayout.to_device: every array the kernels read, in one upload (one buffer, 16-byte aligned
views), cached per device; with ``csc`` the backward's transposed arrays too. On the CPU here; the
pinned, non-blocking CUDA copy is checked in tests/gpu/test_layout_upload_gpu.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import spattern
from spattern.compiler.layout import upload_arrays
from spattern.data.batch_contexts import SequenceContexts
from spattern.patterns.outline import text_tree

PATTERNS = ["(local(200) | random(2, seed=3) | sink(128)) & causal",  # FULL and BITMASK blocks
            "local(300) | sink(128)",                                  # PROGRAM blocks
            "heads(local(64) & causal, strided(32) & causal)"]         # two groups


def fresh(pattern: str, n: int):
    """A layout of its own (the compiler caches static patterns' layouts, device arrays included)."""
    lay = spattern.compile(pattern, n, block=(64, 64))
    lay._device_cache.clear()
    return lay


def storages(d: dict) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in d.values()}


def same_as_host(t: dict, host: dict) -> None:
    for name, a in host.items():
        assert tuple(t[name].shape) == a.shape, name
        assert t[name].numpy().tobytes() == np.ascontiguousarray(a).tobytes(), name  # bit for bit


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_arrays_arrive_whole_in_one_buffer(pattern):
    lay = fresh(pattern, 700)
    t = lay.to_device("cpu")
    assert set(t) == set(lay._ARRAYS)
    same_as_host(t, {n: getattr(lay, n) for n in lay._ARRAYS})
    assert t["bitmasks"].dtype == torch.int32 and t["block_kind"].dtype == torch.uint8
    assert len(storages(t)) == 1
    assert lay.to_device("cpu") is t  # cached


def test_with_csc_one_upload_serves_forward_and_backward():
    lay = fresh(PATTERNS[0], 900)
    both = lay.to_device("cpu", csc=True)
    same_as_host(both, {**{n: getattr(lay, n) for n in lay._ARRAYS}, **lay.csc()})
    assert len(storages(both)) == 1
    assert lay.to_device("cpu") is both  # the forward's call is served by the earlier upload
    assert lay.to_device("cpu", csc=True) is both


def test_csc_after_the_forward_arrays_uploads_only_the_csc():
    lay = fresh(PATTERNS[0], 900)
    fwd = lay.to_device("cpu")
    both = lay.to_device("cpu", csc=True)
    assert all(both[n] is fwd[n] for n in fwd)  # the forward's tensors are kept, not copied again
    csc_storages = {both[n].untyped_storage().data_ptr() for n in ("col_ptr", "row_idx", "perm")}
    assert len(csc_storages) == 1 and not csc_storages & storages(fwd)
    same_as_host(both, lay.csc())


def test_upload_arrays_aligns_every_view_and_keeps_empty_arrays():
    arrays = {"a": np.arange(3, dtype=np.uint8), "b": np.arange(6, dtype=np.int32).reshape(2, 3),
              "empty": np.zeros((0, 4), dtype=np.int32), "c": np.array([1.5, -2.0], dtype=np.float32),
              "d": np.array([2**40], dtype=np.int64)}
    t = upload_arrays(arrays, "cpu")
    same_as_host(t, arrays)
    assert all(v.storage_offset() * v.element_size() % 16 == 0 for v in t.values())
    assert [str(v.dtype) for v in t.values()] == ["torch.uint8", "torch.int32", "torch.int32", "torch.float32",
                                                  "torch.int64"]
    assert upload_arrays({}, "cpu") == {}


def test_sequence_contexts_upload_each_layout_they_hold():
    code = "def f(x):\n    return x\n\n" * 80
    ctx = SequenceContexts([{"tree": text_tree(code[:1500])}, {"tree": text_tree(code[:1500])}])
    lay = ctx.layout("outline(window=96, header=6, recent=2) & causal", 1500, 1500, (64, 64))
    ctx.to_device("cpu", csc=True)
    assert lay.to_device("cpu", csc=True) is lay.to_device("cpu")  # uploaded ahead, with the csc
    same_as_host(lay.to_device("cpu"), lay.csc())
