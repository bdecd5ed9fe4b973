"""BlockLayout.load on damaged files (issue 9, item 13): every case raises the one load error,
``LayoutFileError`` (a ``ValueError``), saying the file is not a valid spattern layout and why;
arrays are read with ``allow_pickle=False``, the format version is checked, arrays validated."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spattern as sp
from spattern.compiler.layout import FORMAT_VERSION, BlockLayout, LayoutFileError

PREFIX = "not a valid spattern layout file"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    sp.register_predicate("tlf_mod3", lambda q, k: (q + k) % 3 == 0)
    layout = sp.compile("heads((local(20) | sink(3)) & causal, custom('tlf_mod3'))", 90, block=16)
    path = layout.save(tmp_path_factory.mktemp("layout") / "layout.npz")
    return layout, path.read_bytes()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _parts(raw: bytes) -> tuple[dict, dict]:
    with np.load(io.BytesIO(raw)) as z:
        arrays = {n: z[n] for n in z.files}
    return arrays, json.loads(arrays["meta"].tobytes())


def _meta(meta: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def _load(tmp_path, data: bytes):
    p = tmp_path / "damaged.npz"
    p.write_bytes(data)
    return BlockLayout.load(p)


def test_round_trip_and_atomic_save(saved, tmp_path):
    layout, raw = saved
    back = _load(tmp_path, raw)
    assert back.equals(layout) and back.pattern == layout.pattern
    layout.save(tmp_path / "again.npz")
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def _damaged(raw: bytes, name: str) -> bytes:
    arrays, meta = _parts(raw)
    if name == "text":
        return b"q_len=90\nthis is not a layout\n"
    if name == "empty":
        return b""
    if name == "truncated":
        return raw[: len(raw) // 2]
    if name == "npy":
        buf = io.BytesIO()
        np.save(buf, np.arange(4))
        return buf.getvalue()
    if name == "missing-array":
        return _npz(**{k: v for k, v in arrays.items() if k != "col_idx"})
    if name == "missing-meta":
        return _npz(**{k: v for k, v in arrays.items() if k != "meta"})
    if name == "missing-meta-key":
        return _npz(**dict(arrays, meta=_meta({k: v for k, v in meta.items() if k != "block_q"})))
    if name == "bad-json":
        return _npz(**dict(arrays, meta=np.frombuffer(b'{"q_len": 90,', dtype=np.uint8)))
    if name == "json-list":
        return _npz(**dict(arrays, meta=_meta([1, 2])))
    if name == "format-99":
        return _npz(**dict(arrays, meta=_meta(dict(meta, format=99))))
    if name == "format-missing":
        return _npz(**dict(arrays, meta=_meta({k: v for k, v in meta.items() if k != "format"})))
    if name == "q_len-string":
        return _npz(**dict(arrays, meta=_meta(dict(meta, q_len="90"))))
    if name == "group-shape-bad":
        return _npz(**dict(arrays, meta=_meta(dict(meta, group_shape=[1]))))
    if name == "pickled-array":
        return _npz(**dict(arrays, col_idx=np.array([{"x": 1}], dtype=object)))
    if name == "float-columns":
        return _npz(**dict(arrays, col_idx=arrays["col_idx"].astype(np.float64)))
    if name == "column-out-of-range":
        return _npz(**dict(arrays, col_idx=arrays["col_idx"] + 100))
    if name == "row-ptr-shape":
        return _npz(**dict(arrays, row_ptr=arrays["row_ptr"][:, :-1]))
    if name == "bad-kind":
        return _npz(**dict(arrays, block_kind=np.full_like(arrays["block_kind"], 7)))
    if name == "bad-program":
        progs = arrays["programs"].copy()
        progs[:, 0, 0] = 99
        return _npz(**dict(arrays, programs=progs))
    raise AssertionError(name)


CASES = ["text", "empty", "truncated", "npy", "missing-array", "missing-meta", "missing-meta-key", "bad-json",
         "json-list", "format-99", "format-missing", "q_len-string", "group-shape-bad", "pickled-array",
         "float-columns", "column-out-of-range", "row-ptr-shape", "bad-kind", "bad-program"]
WHY = {"format-99": f"format: expected {FORMAT_VERSION}, got 99", "missing-array": "missing arrays ['col_idx']",
       "empty": "empty file", "bad-json": "not JSON", "column-out-of-range": "col_idx",
       "pickled-array": "allow_pickle", "missing-meta-key": "block_q"}


@pytest.mark.parametrize("name", CASES)
def test_every_damage_gives_the_one_load_error(saved, tmp_path, name):
    with pytest.raises(LayoutFileError) as info:
        _load(tmp_path, _damaged(saved[1], name))
    assert PREFIX in str(info.value) and str(tmp_path) in str(info.value)
    assert WHY.get(name, "") in str(info.value) and "\n" not in str(info.value)  # a one-line UserError
    assert isinstance(info.value, ValueError)


def test_not_a_file(tmp_path):
    with pytest.raises(LayoutFileError, match="no such file"):
        BlockLayout.load(tmp_path / "absent.npz")
    with pytest.raises(LayoutFileError, match="not a regular file"):
        BlockLayout.load(tmp_path)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_byte_corruptions_give_the_one_load_error(saved, tmp_path, data):
    """Flipped or overwritten bytes, a cut or junk appended: LayoutFileError, or (when the bytes
    hit nothing that matters, e.g. a zip timestamp) a layout equal to the original. Never any
    other exception, never a different layout."""
    layout, raw = saved
    b = bytearray(raw)
    kind = data.draw(st.sampled_from(["flip", "overwrite", "cut", "append"]))
    if kind in ("flip", "overwrite"):
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = b[i] ^ data.draw(st.integers(1, 255)) if kind == "flip" else data.draw(st.integers(0, 255))
    elif kind == "cut":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    else:
        b += data.draw(st.binary(min_size=1, max_size=64))
    try:
        back = _load(tmp_path, bytes(b))
    except LayoutFileError as e:
        assert PREFIX in str(e)
        return
    assert back.equals(layout), "a corrupted file loaded as a different layout"


# ------------------------------------------------------------------------------------------
# layout statistics: the fast pair count (mask classes of program blocks, popcounts) against its
# slow twin (every partial block evaluated), on random layouts of every kind of block
# ------------------------------------------------------------------------------------------
from spattern.testing import strategies as sst  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(sst.layouts())
def test_pair_counts_equal_the_slow_twin(layout):
    np.testing.assert_array_equal(layout.pair_counts(), layout.pair_counts_slow())
    assert layout.stats()["pairs"] == int(layout.pair_counts_slow().sum())
    assert layout.stats() is not layout.stats() and layout.stats() == layout.stats()  # cached, copied


@pytest.mark.parametrize("text", ["(local(128) | strided(128)) & causal", "dilated(64, dilation=4) & causal",
                                  "(local(100) | landmark(every=300) | sink(7)) & causal", "local(40) | random(2, seed=0)"])
def test_pair_counts_equal_the_slow_twin_on_long_layouts(text):
    layout = sp.compile(text, 4096, block=(64, 32))
    np.testing.assert_array_equal(layout.pair_counts(), layout.pair_counts_slow())
