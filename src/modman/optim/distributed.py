"""Data-parallel work sharing for matrix optimizers (KellerJordan/Muon's design, generalised).

Under DDP every rank holds the same weights and, after the gradient all-reduce, the same gradients. The
expensive part of a matrix rule — msign, the manifold Muon solve, the Stiefel retraction — then needs
doing once, not once per rank: each matrix gets an *owner* rank, only the owner computes its update (and
keeps its momentum / multiplier state), and the owner broadcasts the new weight to the others.

Owners are assigned greedily by cost (largest matrix to the least-loaded rank), in parameter order, so
every rank computes the same assignment without talking.

Under FSDP2 (``torch.distributed.fsdp.fully_shard``) a parameter is a DTensor whose rows are spread over
the ranks (microsoft/dion's and Moonlight's design): its owner gathers the whole matrix and gradient from
the shards (``gather_to_owner``), computes the update with the full state it keeps, and scatters the new
rows back (``scatter_from_owner``).
"""

from __future__ import annotations

from typing import Iterable

import math

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

__all__ = ["world", "assign_owners", "broadcast_from_owners", "is_dtensor", "full_tensor", "gather_to_owner",
           "scatter_from_owner", "write_full", "all_ranks_agree", "state_owners"]


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
    """Every rank receives each parameter's value from its owner (parameters in the same order everywhere):
    one broadcast per (owner, dtype, device), the owner's tensors flattened into one buffer."""
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        buckets.setdefault((owners[id(p)], p.dtype, str(p.device)), []).append(p)
    for (owner, _, _), bucket in buckets.items():
        flat = torch.cat([p.data.reshape(-1) for p in bucket])
        dist.broadcast(flat, src=owner)
        for p, chunk in zip(bucket, flat.split([p.numel() for p in bucket])):
            p.data.copy_(chunk.view_as(p))


def is_dtensor(t) -> bool:
    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor's shards gathered (collective: every rank calls it), else ``t`` itself."""
    return t.full_tensor() if isinstance(t, DTensor) else t


@torch.no_grad()
def gather_to_owner(t: DTensor, owner: int) -> torch.Tensor | None:
    """Collective over ``t``'s mesh: the whole tensor on rank ``owner``, None elsewhere.

    Rows sharded on a 1-D mesh over every rank (FSDP2's ``Shard(0)``, torch.chunk sizes) are padded to equal
    blocks and gathered to the owner only; any other layout falls back to an all-gather."""
    mesh = t.device_mesh
    if mesh.ndim != 1 or mesh.size() != world()[1] or tuple(t.placements) != (Shard(0),):
        full = t.full_tensor()  # owners are global ranks
        return full if world()[0] == owner else None
    group, size, local = mesh.get_group(), mesh.size(), t.to_local()
    rows = math.ceil(t.shape[0] / size) if t.shape[0] else 0
    block = local.new_zeros((rows, *t.shape[1:]))
    block[:local.shape[0]] = local
    mine = mesh.get_local_rank() == owner
    blocks = [torch.empty_like(block) for _ in range(size)] if mine else None
    dist.gather(block, blocks, group=group, group_dst=owner)
    return torch.cat(blocks)[:t.shape[0]] if mine else None


@torch.no_grad()
def scatter_from_owner(full: torch.Tensor | None, t: DTensor, owner: int) -> None:
    """Collective: write the owner's whole tensor ``full`` (None on the other ranks) into every rank's shard of ``t``."""
    src = full.reshape(t.shape).to(t.dtype) if full is not None else torch.empty(t.shape, dtype=t.dtype,
                                                                                  device=t.to_local().device)
    new = distribute_tensor(src, t.device_mesh, t.placements, src_data_rank=owner)
    t.to_local().copy_(new.to_local())


@torch.no_grad()
def write_full(t: DTensor, full: torch.Tensor) -> None:
    """Write a whole tensor that every rank holds identically into this rank's shard (no communication)."""
    new = distribute_tensor(full.reshape(t.shape).to(t.dtype), t.device_mesh, t.placements, src_data_rank=None)
    t.to_local().copy_(new.to_local())


def all_ranks_agree(flags: list[bool], device: torch.device) -> list[bool]:
    """Element-wise AND of ``flags`` over every rank (so that all ranks take the same branch)."""
    if not flags or world()[1] == 1:
        return flags
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return [bool(v) for v in t.tolist()]


def state_owners(opt: torch.optim.Optimizer) -> dict[tuple, tuple[torch.Tensor, int | None]]:
    """Where each parameter's state sits in ``opt.state_dict()`` (the key path of its entry) → (the parameter,
    the rank that keeps it, or None when every rank does). Sub-optimizers of ``ModularOptimizer`` included."""
    subs = getattr(opt, "optimizers", None)
    if isinstance(subs, dict):
        return {("optimizers", rule) + k: v for rule, sub in subs.items() for k, v in state_owners(sub).items()}
    owners = (getattr(opt, "_owners", None) or {}) if getattr(opt, "owner_keeps_state", False) else {}
    params = [p for g in opt.param_groups for p in g["params"]]
    return {("state", i): (p, owners.get(id(p))) for i, p in enumerate(params)}
