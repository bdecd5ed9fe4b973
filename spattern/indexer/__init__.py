"""DeepSeek-style learned sparse attention: a lightning indexer scores (query, key) pairs, a
top-k selection turns the scores into a layout (block or token granularity), and a KL objective
aligns the indexer with the dense attention distribution.

- ``lightning.LightningIndexer``: I(t, s) = sum_j w(t, j) * ReLU(q(t, j) . k(s)).
- ``select``: block scores from token scores, top-k block selection with forced blocks and
  causality built into a BlockLayout on the device with torch ops (no host synchronization);
  per-query top-k token indices and their reference attention.
- ``train``: dense warm-up (KL to the dense attention, only the indexer learns), sparse stage
  (KL on the selected set), selection statistics.
"""

from spattern.indexer.lightning import LightningIndexer
from spattern.indexer.select import (
    DeviceBlockLayout,
    attention_topk_tokens,
    block_scores,
    topk_block_layout,
    topk_block_table,
    topk_token_indices,
)

__all__ = [
    "LightningIndexer", "DeviceBlockLayout", "attention_topk_tokens", "block_scores",
    "topk_block_layout", "topk_block_table", "topk_token_indices",
]
