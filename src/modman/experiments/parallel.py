"""``modman train --parallel ddp`` under torchrun: process group, batch slices, global losses.

The global batch of a step is ``batch_at(seed, step)`` as in one process; rank r takes rows
``[r·B/N, (r+1)·B/N)``. DDP averages the gradients, so N processes follow the same trajectory as one
(up to float rounding), and the logged losses are the all-reduced global means.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Parallel", "init_parallel"]


@dataclass
class Parallel:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    created: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def slice(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch."""
        if self.world == 1:
            return x
        b = x.shape[0] // self.world
        return x[self.rank * b:(self.rank + 1) * b]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks (every rank gets it)."""
        if self.world == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
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
            dist.destroy_process_group()


def init_parallel(mode: str, device: torch.device, batch_size: int) -> Parallel:
    """``none``: one process. ``ddp``: join (or start) the default process group from torchrun's variables;
    gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``)."""
    if mode == "none":
        return Parallel(device=device)
    if "WORLD_SIZE" not in os.environ and not dist.is_initialized():
        raise ValueError("--parallel ddp runs under torchrun: torchrun --standalone --nproc_per_node N -m modman "
                         "train --parallel ddp ...")
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
        raise ValueError(f"--batch-size {batch_size} is not divisible by the {world} processes; each takes an "
                         "equal slice of the global batch")
    return Parallel(rank, world, device, created)
