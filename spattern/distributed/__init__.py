"""Context-parallel sparse attention and distributed-training helpers on torch.distributed.

Layer: above ``runtime``, below ``models`` (imports utils, ir, patterns, compiler, runtime).
"""

from spattern.distributed.context_parallel import (
                                                   ExchangeStats,
                                                   context_parallel_attention,
                                                   gathered_tokens,
                                                   shard,
)
from spattern.distributed.cost import ExchangeCost, exchange_cost, needed_blocks
from spattern.distributed.plan import RankPlan, rank_plan
from spattern.distributed.sharding import Sharding, make_sharding

__all__ = [
                                                   "ExchangeCost",
                                                   "ExchangeStats",
                                                   "RankPlan",
                                                   "Sharding",
                                                   "context_parallel_attention",
                                                   "exchange_cost",
                                                   "gathered_tokens",
                                                   "make_sharding",
                                                   "needed_blocks",
                                                   "rank_plan",
                                                   "shard",
]
