"""How a sequence is split over the ranks of a context-parallel group.

The sequence of ``n_tokens`` tokens is cut into units of ``unit`` tokens (a multiple of both
block sizes, so every query block and every key block lies in one unit and so on one rank); the
last unit holds the remainder when ``n_tokens`` is not a multiple of ``unit``. Units go to ranks:

- ``contiguous``: rank r holds units [r*U/W, (r+1)*U/W) (``numpy.array_split``: the first
  U mod W ranks hold one unit more).
- ``zigzag``: the units are cut into 2W contiguous chunks (``array_split``); rank r holds chunks
  r and 2W-1-r. Under a causal layout the work of a query block grows with its position, so each
  rank pairs a cheap early chunk with an expensive late one (balanced to within one chunk).

Padding rule: nothing is padded. A rank's shard is its units' tokens in ascending global order
(so only the rank holding the last unit may end with a partial block); shards may differ in
length by up to one chunk. Every rank must hold at least one unit (U >= W), else ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

STRATEGIES = ("contiguous", "zigzag")


@dataclass(frozen=True)
class Sharding:
    n_tokens: int
    world: int
    unit: int
    strategy: str
    unit_owner: np.ndarray = field(repr=False)  # int64 [U]: rank holding each unit

    @property
    def n_units(self) -> int:
        return int(self.unit_owner.size)

    def units(self, rank: int) -> np.ndarray:
        """int64 [u_r]: the units of ``rank``, ascending."""
        return np.flatnonzero(self.unit_owner == rank)

    def token_index(self, rank: int) -> np.ndarray:
        """int64 [n_r]: global positions of the rank's tokens, ascending (its shard's order)."""
        u = self.units(rank)
        pos = (u[:, None] * self.unit + np.arange(self.unit)[None, :]).reshape(-1)
        return pos[pos < self.n_tokens]

    def n_local(self, rank: int) -> int:
        return int(self.token_index(rank).size)

    def owner_of_blocks(self, block: int, n_blocks: int) -> np.ndarray:
        """int64 [n_blocks]: rank holding each block of ``block`` tokens (block divides unit)."""
        return self.unit_owner[(np.arange(n_blocks) * block) // self.unit]

    def local_blocks(self, rank: int, block: int) -> np.ndarray:
        """int64 [b_r]: global indices of the rank's blocks of ``block`` tokens, ascending."""
        return self.token_index(rank)[::block] // block


def make_sharding(n_tokens: int, world: int, block: tuple[int, int] = (64, 64), strategy: str = "contiguous",
                  unit: int | None = None) -> Sharding:
    """Assign units of ``unit`` tokens (default lcm(block_q, block_k)) of a sequence of
    ``n_tokens`` to ``world`` ranks by ``strategy`` (see the module docstring)."""
    bq, bk = (int(b) for b in block)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if not isinstance(world, int) or world < 1:
        raise ValueError(f"world: expected an int >= 1, got {world!r}")
    if not isinstance(n_tokens, (int, np.integer)) or n_tokens < 1:
        raise ValueError(f"n_tokens: expected an int >= 1, got {n_tokens!r}")
    base = math.lcm(bq, bk)
    unit = base if unit is None else int(unit)
    if unit < 1 or unit % base:
        raise ValueError(f"unit: expected a positive multiple of lcm(block_q, block_k) = {base}, got {unit}")
    U = -(-int(n_tokens) // unit)
    if U < world:
        raise ValueError(f"n_tokens: {n_tokens} tokens make {U} units of {unit}; expected at least one unit "
                         f"per rank (world={world}): use a smaller unit or fewer ranks")
    owner = np.empty(U, dtype=np.int64)
    if strategy == "contiguous":
        for r, chunk in enumerate(np.array_split(np.arange(U), world)):
            owner[chunk] = r
    else:
        chunks = np.array_split(np.arange(U), 2 * world)
        for r in range(world):
            owner[chunks[r]] = r
            owner[chunks[2 * world - 1 - r]] = r
    return Sharding(int(n_tokens), world, unit, strategy, owner)
