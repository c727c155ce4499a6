"""Data-parallel work sharing for matrix optimizers (KellerJordan/Muon's design, generalised).

Under DDP every rank holds the same weights and, after the gradient all-reduce, the same gradients. The
expensive part of a matrix rule — msign, the manifold Muon solve, the Stiefel retraction — then needs
doing once, not once per rank: each matrix gets an *owner* rank, only the owner computes its update (and
keeps its momentum / multiplier state), and the owner broadcasts the new weight to the others.

Owners are assigned greedily by cost (largest matrix to the least-loaded rank), in parameter order, so
every rank computes the same assignment without talking.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist

__all__ = ["world", "assign_owners", "broadcast_from_owners", "gather_owned_state"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _cost(p: torch.Tensor) -> float:
    """msign / solve cost proxy of a matrix: m·n·min(m, n)."""
    if p.ndim < 2:
        return float(p.numel())
    m, n = p.shape[0], p.numel() // p.shape[0]
    return float(m * n * min(m, n))


def assign_owners(params: Iterable[torch.Tensor], world_size: int) -> dict[int, int]:
    """``{id(param): rank}``: largest cost first, each to the rank with the least work so far (ties: lowest)."""
    params = list(params)
    load = [0.0] * world_size
    owners: dict[int, int] = {}
    for i in sorted(range(len(params)), key=lambda i: (-_cost(params[i]), i)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners[id(params[i])] = rank
        load[rank] += _cost(params[i])
    return owners


@torch.no_grad()
def broadcast_from_owners(params: list[torch.Tensor], owners: dict[int, int]) -> None:
    """Every rank receives each parameter's value from its owner (parameters in the same order everywhere)."""
    for p in params:
        if p.data.is_contiguous():
            dist.broadcast(p.data, src=owners[id(p)])
        else:
            buf = p.data.contiguous()
            dist.broadcast(buf, src=owners[id(p)])
            p.data.copy_(buf)


def gather_owned_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], owners: dict[int, int]) -> None:
    """Give every rank the owners' state of every parameter (before a checkpoint: any rank can then save it,
    and a run resumed on another number of processes finds every momentum buffer)."""
    rank, _ = world()
    for p in params:
        holder = [optimizer.state[p] if owners[id(p)] == rank else None]
        dist.broadcast_object_list(holder, src=owners[id(p)])
        state = holder[0] or {}
        optimizer.state[p] = {k: (v.to(p.device) if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
