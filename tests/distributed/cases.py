"""Layouts for the context-parallel tests: built the same way in every process from fixed seeds."""

from __future__ import annotations

import numpy as np
import torch

import spattern
from tests.kernel_fixtures import layout_from_masks


def random_mask_layout(n: int, block: tuple[int, int], seed: int, groups=(1, 1), density: float = 0.15):
    """Random token masks (block-structured and token-level) with empty query rows and empty key
    columns forced in, as BITMASK/FULL blocks (``layout_from_masks``, the independent twin)."""
    rng = np.random.default_rng(seed)
    G = groups[0] * groups[1]
    R, C = -(-n // block[0]), -(-n // block[1])
    blocks = rng.random((G, R, C)) < density
    m = np.repeat(np.repeat(blocks, block[0], axis=1), block[1], axis=2)[:, :n, :n]
    m &= rng.random((G, n, n)) < 0.7
    m[:, rng.integers(0, n, 5)] = False  # empty rows
    m[:, :, rng.integers(0, n, 5)] = False  # empty columns
    m[:, block[0]: 2 * block[0]] = False  # a whole empty query block
    return layout_from_masks(m, block[0], block[1], group_shape=groups)


def topk_layout(n: int, block: tuple[int, int], k: int, batch: int, seed: int):
    from spattern.indexer import topk_block_layout

    g = torch.Generator().manual_seed(seed)
    R, C = -(-n // block[0]), -(-n // block[1])
    scores = torch.randn(batch, R, C, generator=g)
    return topk_block_layout(scores, k, n, n, block=block, causal=True, sink=1, local=1, impl="torch")


def cases():
    """(name, layout, B, H, Hkv) for each case: compiled patterns (PROGRAM blocks), per-head and
    per-batch groups, random masks with empty rows/columns, top-k, GQA, odd lengths."""
    docs = [{"cu_seqlens": [0, 100, 300, 448]}, {"cu_seqlens": [0, 250, 448]}]
    return [
        ("local-causal", spattern.compile("local(100) & causal", 512, block=(64, 64)), 1, 2, 1),
        ("strided|sink odd N", spattern.compile("(strided(96) | sink(16)) & causal", 500, block=(32, 64)), 1, 4, 2),
        ("landmark|local", spattern.compile("landmark(every=128) | local(32)", 384, block=(32, 32)), 2, 2, 2),
        ("per-head", spattern.compile("heads(local(64) & causal, strided(128) & causal)", 448, block=(32, 32)),
         1, 2, 2),
        ("document per batch", spattern.compile("document() & causal", 448, block=(32, 32), context=docs), 2, 2, 1),
        ("random masks", random_mask_layout(456, (32, 32), seed=5, groups=(1, 2)), 1, 2, 1),
        ("topk", topk_layout(512, (64, 64), k=3, batch=2, seed=7), 2, 4, 2),
    ]


def inputs(n: int, B: int, H: int, Hkv: int, D: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, n, D, generator=g, dtype=dtype)
    k = torch.randn(B, Hkv, n, D, generator=g, dtype=dtype)
    v = torch.randn(B, Hkv, n, D, generator=g, dtype=dtype)
    gout = torch.randn(B, H, n, D, generator=g, dtype=dtype)
    return q, k, v, gout
