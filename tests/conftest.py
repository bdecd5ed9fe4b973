"""Project-wide test configuration: the `gpu` marker skips without a CUDA device."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker 'gpu')")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh SPATTERN_CACHE for one test module (prepared corpora, tokenizers), restored after."""
    path = tmp_path_factory.mktemp("spattern-cache")
    old = os.environ.get("SPATTERN_CACHE")
    os.environ["SPATTERN_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SPATTERN_CACHE", None)
    else:
        os.environ["SPATTERN_CACHE"] = old
