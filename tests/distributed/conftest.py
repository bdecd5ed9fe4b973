"""Helpers to start gloo process groups for the distributed tests."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def spawn(tmp_path, monkeypatch):
    """spawn(fn, world, *args) -> the records each rank wrote (rank<r>.json in its out dir)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def run(fn, world: int, *args):
        out = tmp_path / f"w{world}-{fn.__name__}"
        out.mkdir()
        mp.spawn(fn, args=(world, free_port(), str(out), *args), nprocs=world, join=True)
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]

    return run


@pytest.fixture
def single_group(tmp_path):
    """A one-process gloo group in this process (destroyed after the test)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


os.environ.setdefault("OMP_NUM_THREADS", "1")
