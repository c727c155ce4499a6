"""Data-parallel work sharing for matrix optimizers (KellerJordan/Muon's design, generalised).

Under DDP every rank holds the same weights and, after the gradient all-reduce, the same gradients. The
expensive part of a matrix rule — msign, the manifold Muon solve, the Stiefel retraction — then needs
doing once, not once per rank: each matrix gets an *owner* rank, only the owner computes its update (and
keeps its momentum / multiplier state), and the owner broadcasts the new weight to the others.

Owners are assigned greedily by cost (largest matrix to the least-loaded rank), in parameter order, so
every rank computes the same assignment without talking.

Under FSDP2 (``torch.distributed.fsdp.fully_shard``) a parameter is a DTensor whose rows are spread over
the ranks (microsoft/dion's and Moonlight's design): its owner gathers the whole matrix and gradient from
the shards, computes the update with the full state it keeps, and scatters the new rows back — for all
matrices at once, one ``all_to_all_single`` each way (``gather_to_owners``, ``scatter_from_owners``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeGuard

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

__all__ = [
    "world",
    "assign_owners",
    "broadcast_from_owners",
    "is_dtensor",
    "local_tensor",
    "full_tensor",
    "with_sharded_owners",
    "gather_to_owners",
    "scatter_from_owners",
    "write_full",
    "all_ranks_agree",
    "state_owners",
]


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


def is_dtensor(t: object) -> TypeGuard[DTensor]:
    return isinstance(t, DTensor)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor, else ``t`` itself (no communication)."""
    return t.to_local() if isinstance(t, DTensor) else t


def with_sharded_owners(owners: dict[int, int] | None, moving, pool, size: int) -> dict[int, int]:
    """``owners``, completed by an assignment over ``pool`` when a DTensor in ``moving`` has no owner yet (an
    FSDP2 parameter is always updated by one owner rank, whether or not ``share_work`` was called)."""
    owners = owners or {}
    if any(isinstance(p, DTensor) and id(p) not in owners for p in moving):
        return {**assign_owners(pool, size), **owners}
    return owners


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor's shards gathered (collective: every rank calls it), else ``t`` itself."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def _row_sharded(t: DTensor) -> bool:
    """Rows split over a 1-D mesh of every rank (FSDP2's ``Shard(0)``): the layout the batched exchange handles."""
    mesh = t.device_mesh
    return mesh.ndim == 1 and mesh.size() == world()[1] and tuple(t.placements) == (Shard(0),)


def _block(t: DTensor, size: int) -> tuple[int, int]:
    """(rows, elements) of one rank's padded block of ``t`` (torch.chunk sizes: ceil(m / size) rows)."""
    rows = math.ceil(t.shape[0] / size) if t.shape[0] else 0
    return rows, rows * (t.numel() // t.shape[0] if t.shape[0] else 0)


def _buckets(tensors: list[DTensor]) -> tuple[dict[tuple, list[int]], list[int]]:
    """Indices of row-sharded tensors grouped by (dtype, device), and the indices of the rest."""
    fast: dict[tuple, list[int]] = {}
    slow: list[int] = []
    for i, t in enumerate(tensors):
        if _row_sharded(t):
            fast.setdefault((t.dtype, str(t.to_local().device)), []).append(i)
        else:
            slow.append(i)
    return fast, slow


def _pad_rows(x: torch.Tensor, rows: int, like: torch.Tensor) -> torch.Tensor:
    """``x`` with zero rows appended up to ``rows``, in ``like``'s dtype, flattened (one rank's block)."""
    block = like.new_zeros((rows, *x.shape[1:]))
    block[: x.shape[0]] = x
    return block.reshape(-1)


def _all_to_all(like: torch.Tensor, parts_for: list[list[torch.Tensor]], recv_splits: list[int]) -> torch.Tensor:
    """``all_to_all_single``: ``parts_for[r]`` (flat tensors) go to rank r; returns what every rank sent here."""
    flat = [part for parts in parts_for for part in parts]
    send = torch.cat(flat) if flat else like.new_empty(0)
    recv = like.new_empty(sum(recv_splits))
    dist.all_to_all_single(recv, send, recv_splits, [sum(p.numel() for p in parts) for parts in parts_for])
    return recv


@torch.no_grad()
def gather_to_owners(tensors: list[DTensor], owners: list[int]) -> list[torch.Tensor | None]:
    """Collective (same lists on every rank): tensor i whole on rank ``owners[i]``, None elsewhere.

    Row-sharded tensors of one dtype and device travel in one ``all_to_all_single``: each rank sends its
    padded row block of every tensor to that tensor's owner. Other layouts fall back to an all-gather each."""
    rank, size = world()
    out: list[torch.Tensor | None] = [None] * len(tensors)
    fast, slow = _buckets(tensors)
    for idx in fast.values():
        local = tensors[idx[0]].to_local()
        parts_for = [
            [_pad_rows(tensors[i].to_local(), _block(tensors[i], size)[0], local) for i in idx if owners[i] == r]
            for r in range(size)
        ]
        mine = [i for i in idx if owners[i] == rank]
        sizes = [_block(tensors[i], size)[1] for i in mine]
        recv = _all_to_all(local, parts_for, [sum(sizes)] * size)
        by_source = [chunk.split(sizes) for chunk in recv.split(sum(sizes))] if mine else []
        for j, i in enumerate(mine):
            t = tensors[i]
            rows = _block(t, size)[0]
            out[i] = torch.cat([by_source[s][j].view(rows, *t.shape[1:]) for s in range(size)])[: t.shape[0]]
    for i in slow:
        full = tensors[i].full_tensor()  # owners are global ranks
        out[i] = full if rank == owners[i] else None
    return out


@torch.no_grad()
def scatter_from_owners(fulls: list[torch.Tensor | None], targets: list[DTensor], owners: list[int]) -> None:
    """Collective: write each owner's whole tensor ``fulls[i]`` (None on the other ranks) into every rank's
    shard of ``targets[i]``; one ``all_to_all_single`` per (dtype, device) of row-sharded targets."""
    rank, size = world()
    fast, slow = _buckets(targets)
    for idx in fast.values():
        local = targets[idx[0]].to_local()
        mine = [i for i in idx if owners[i] == rank]

        def rows_for(i: int, s: int, local: torch.Tensor = local) -> torch.Tensor:
            rows, full = _block(targets[i], size)[0], fulls[i]
            assert full is not None  # this rank owns i
            return _pad_rows(full.reshape(targets[i].shape)[s * rows : (s + 1) * rows], rows, local)

        parts_for = [[rows_for(i, s) for i in mine] for s in range(size)]
        recv_splits = [sum(_block(targets[i], size)[1] for i in idx if owners[i] == r) for r in range(size)]
        recv = _all_to_all(local, parts_for, recv_splits)
        for r, chunk in enumerate(recv.split(recv_splits)):
            from_r = [i for i in idx if owners[i] == r]
            for i, block in zip(from_r, chunk.split([_block(targets[i], size)[1] for i in from_r])):
                shard = targets[i].to_local()
                shard.copy_(block.view(-1, *targets[i].shape[1:])[: shard.shape[0]])
    for i in slow:
        t = targets[i]
        full = fulls[i]
        src = (
            full.reshape(t.shape).to(t.dtype)
            if full is not None
            else torch.empty(t.shape, dtype=t.dtype, device=t.to_local().device)
        )
        t.to_local().copy_(distribute_tensor(src, t.device_mesh, t.placements, src_data_rank=owners[i]).to_local())


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
