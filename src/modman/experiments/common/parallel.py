"""``modman train --parallel ddp|fsdp`` under torchrun: process group, batch slices, global losses.

The global batch of a step is ``batch_at(seed, step)`` as in one process; rank r takes rows
``[r·B/N, (r+1)·B/N)``. DDP and FSDP2 average the gradients, so N processes follow the same trajectory as
one (up to float rounding), and the logged losses are the all-reduced global means. Under FSDP2 each
transformer block (and the rest of the model) is sharded with ``fully_shard`` before the optimizer is built.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist

from ...errors import UserError

__all__ = ["Parallel", "init_parallel", "shard_units"]


@dataclass
class Parallel:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    created: bool = False
    mode: str = "none"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """FSDP2: weights are DTensors, so every rank takes part in forward passes and in reading weights."""
        return self.mode == "fsdp"

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2: ``fully_shard`` each block (``shard_units``), then the model (in place); otherwise a no-op."""
        if not self.sharded:
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world,))  # the run's device, not fully_shard's guess
        for block in shard_units(model):
            fully_shard(block, mesh=mesh)
        return cast(torch.nn.Module, fully_shard(model, mesh=mesh))

    def slice(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch."""
        if self.world == 1:
            return x
        b = x.shape[0] // self.world
        return x[self.rank * b : (self.rank + 1) * b]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks (every rank gets it)."""
        if self.world == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP: the module that synchronises gradients in backward (FSDP2's sharded model does so itself)."""
        if self.world == 1 or self.sharded:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (a one-element list in one process)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.created and dist.is_initialized():
            # FSDP2 modules live in reference cycles: free them while the group is alive, and let no rank tear it
            # down while another still uses it (either aborted gloo's threads now and then: "terminate called").
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks FSDP2 shards one by one (each gathered for its own forward): modman's ``model.layers``, or a
    Hugging Face model's repeated layers, the classes its ``_no_split_modules`` names (``LlamaDecoderLayer``,
    ``GPT2Block``...)."""
    if isinstance(getattr(model, "layers", None), torch.nn.ModuleList):
        return list(cast(torch.nn.ModuleList, model.layers))
    names = {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or [])}
    return [m for m in model.modules() if type(m).__name__ in names]


def init_parallel(mode: str, device: torch.device, batch_size: int) -> Parallel:
    """``none``: one process. ``ddp`` / ``fsdp``: join (or start) the default process group from torchrun's
    variables; gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``)."""
    if mode == "none":
        return Parallel(device=device)
    if "WORLD_SIZE" not in os.environ and not dist.is_initialized():
        raise UserError(
            f"--parallel {mode} runs under torchrun: torchrun --standalone --nproc_per_node N -m "
            f"modman train --parallel {mode} ..."
        )
    created = False
    if not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch_size % world:
        if created:
            dist.destroy_process_group()
        raise UserError(
            f"--batch-size {batch_size} is not divisible by the {world} processes; each takes an "
            "equal slice of the global batch"
        )
    return Parallel(rank, world, device, created, mode)
