"""Distributed-training pieces the one training loop can call: a (dp, cp) device mesh, FSDP2
wrapping, a batch's sequence shard, the loss scale of context parallelism, and checkpoints that
load on any number of ranks (``torch.distributed.checkpoint``).

Gradient rule with context parallelism: the ranks of one cp group hold different tokens of the
same sequences, so a parameter's gradient is the SUM over the group of the per-rank gradients,
and the mean over the dp replicas. FSDP2 (and DDP) average over all dp*cp ranks; so each rank's
loss is  sum of its tokens' losses * cp / tokens_per_replica  (``context_parallel_loss``), and
the average over dp*cp ranks equals the mean over replicas of each replica's token-mean loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from spattern.distributed.sharding import Sharding


def make_mesh(dp: int, cp: int, device_type: str = "cpu"):
    """A 2-D device mesh ("dp", "cp") over dp*cp ranks (rank = dp_index * cp + cp_index), and the
    flattened 1-D mesh "dp_cp" over which FSDP2 shards parameters and averages gradients."""
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if dp < 1 or cp < 1 or dp * cp != world:
        raise ValueError(f"dp x cp: expected a factorization of the world size {world}, got {dp} x {cp}")
    mesh = init_device_mesh(device_type, (dp, cp), mesh_dim_names=("dp", "cp"))
    return mesh, mesh["dp", "cp"]._flatten("dp_cp")


def fully_shard_model(model: nn.Module, mesh=None, blocks: Iterable[nn.Module] | None = None,
                      reshard_after_forward: bool = True) -> nn.Module:
    """FSDP2: ``fully_shard`` each block (default: the elements of ``model.layers``), then the
    root (embeddings, norm, head). Parameters become DTensors sharded over ``mesh`` (default: the
    world). Returns the model (FSDP2 changes it in place)."""
    from torch.distributed.fsdp import fully_shard

    if blocks is None:
        if not isinstance(getattr(model, "layers", None), nn.ModuleList):
            raise ValueError("blocks: expected the modules to shard one by one (the model has no "
                             "`layers` ModuleList to default to)")
        blocks = list(model.layers)
    for b in blocks:
        fully_shard(b, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def shard_batch(idx: torch.Tensor, targets: torch.Tensor, sharding: Sharding, rank: int):
    """(B, N) token ids and targets -> this cp rank's (B, n_r) ids, targets, and their global
    positions int64 (n_r,) (for position embeddings / rotary)."""
    if idx.dim() != 2 or targets.shape != idx.shape:
        raise ValueError(f"idx/targets: expected two (B, N) tensors of one shape, got {tuple(idx.shape)} "
                         f"and {tuple(targets.shape)}")
    if idx.shape[1] != sharding.n_tokens:
        raise ValueError(f"idx.shape[1]: expected the sharding's n_tokens {sharding.n_tokens}, got {idx.shape[1]}")
    pos = torch.from_numpy(sharding.token_index(rank)).to(idx.device)
    return idx.index_select(1, pos), targets.index_select(1, pos), pos


def context_parallel_loss(local_loss_sum: torch.Tensor, tokens_per_replica: int, cp: int) -> torch.Tensor:
    """The loss a cp rank backpropagates: local_loss_sum * cp / tokens_per_replica (module doc)."""
    if tokens_per_replica < 1 or cp < 1:
        raise ValueError(f"tokens_per_replica, cp: expected positive ints, got {tokens_per_replica}, {cp}")
    return local_loss_sum * (cp / tokens_per_replica)


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    step: int = 0) -> None:
    """Write model (+ optimizer) state and the step with ``torch.distributed.checkpoint`` into the
    folder ``path``: every rank writes its shards; the files load on any number of ranks (or in one
    process without a process group). Collective: every rank calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    if optimizer is None:
        state = {"model": get_state_dict(model, [])[0]}
    else:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optimizer": osd}
    state["step"] = torch.tensor(int(step))
    dcp.save(state, checkpoint_id=str(path))


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Load ``save_checkpoint``'s folder into a model (plain, DDP or FSDP2 on any number of ranks;
    the checkpoint is resharded to the model's layout) and optimizer; returns the step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not Path(path, ".metadata").is_file():
        raise FileNotFoundError(f"path: expected a torch.distributed.checkpoint folder (with .metadata), got {path}")
    if optimizer is None:
        state = {"model": get_state_dict(model, [])[0]}
    else:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optimizer": osd}
    state["step"] = torch.tensor(0)
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, [] if optimizer is None else optimizer, model_state_dict=state["model"],
                   optim_state_dict=state.get("optimizer", {}))
    return int(state["step"])


def full_state(model: nn.Module) -> dict[str, np.ndarray]:
    """The full (unsharded) parameters as numpy on every rank (collective under FSDP2): for checks."""
    from torch.distributed.tensor import DTensor

    out = {}
    for n, p in model.named_parameters():
        t = p.full_tensor() if isinstance(p, DTensor) else p
        out[n] = t.detach().cpu().numpy().copy()
    return out
