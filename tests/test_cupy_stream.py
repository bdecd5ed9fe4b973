"""`runtime.cupy_backend.external_stream` wraps torch's stream for CuPy through the CUDA stream protocol
(CuPy 14's `Stream.from_external`) and falls back to `ExternalStream` on older CuPy. Checked here with a
stand-in `cupy` module; tests/gpu/test_cupy_backend.py checks the real one on a GPU."""
from __future__ import annotations

import contextlib
import sys
import types

from spattern.runtime import cupy_backend


def _fake_cupy(with_from_external: bool):
    calls = []

    class Stream:
        pass

    if with_from_external:
        def from_external(obj):
            calls.append(("from_external", obj.__cuda_stream__(), current[0]))
            return ("stream", obj.__cuda_stream__()[1])
        Stream.from_external = staticmethod(from_external)

    current = [None]

    @contextlib.contextmanager
    def Device(i):
        prev, current[0] = current[0], i
        yield
        current[0] = prev

    def ExternalStream(ptr, dev):
        calls.append(("ExternalStream", ptr, dev))
        return ("external", ptr)

    cuda = types.SimpleNamespace(Stream=Stream, Device=Device, ExternalStream=ExternalStream)
    return types.SimpleNamespace(cuda=cuda), calls


def test_from_external_gets_the_protocol_handle_on_its_device(monkeypatch):
    fake, calls = _fake_cupy(True)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    s = cupy_backend.external_stream(0xABC0, 3)
    assert s == ("stream", 0xABC0)
    assert calls == [("from_external", (0, 0xABC0), 3)]   # protocol version 0, under Device(3)


def test_older_cupy_falls_back_to_external_stream(monkeypatch):
    fake, calls = _fake_cupy(False)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert cupy_backend.external_stream(77, 1) == ("external", 77)
    assert calls == [("ExternalStream", 77, 1)]
