"""Run by test_fsdp.py under torchrun (2 gloo processes), and in one process for the reference: every modman
optimizer steps a small FSDP2-sharded model (uneven shards, an empty one) and rank 0 saves the final weights."""

import gc
import sys

import torch
import torch.distributed as dist

from modman.optim import (
    SPEL,
    Hyperball,
    HypersphericalDescent,
    ManifoldMuon,
    Muon,
    SpectralDescent,
    SpectralSphere,
    StiefelRetraction,
)


def build(name, params):
    return {
        "muon": lambda: Muon(params, lr=0.05, msign_dtype=None),
        "manifold_muon": lambda: ManifoldMuon(params, lr=0.05, momentum=0.9, nesterov=True, tol=1e-8),
        "hyperspherical": lambda: HypersphericalDescent(params, lr=0.05, momentum=0.9, dim=-1),
        "spectral": lambda: SpectralDescent(params, lr=0.05),
        "stiefel": lambda: StiefelRetraction(torch.optim.AdamW(params, lr=0.01)),
        "hyperball": lambda: Hyperball(params, lr=0.05, msign_dtype=None),
        "spel": lambda: SPEL(params, lr=0.05, msign_dtype=None),
        "spectral_sphere": lambda: SpectralSphere(params, lr=0.05, msign_dtype=None),
        "sso": lambda: SpectralSphere(params, lr=0.05, tangent=True, msign_dtype=None),
    }[name]()


def main(name: str, out: str, sharded: bool) -> None:
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    # Shards of 8 and 7 rows, and of 1 and 0 rows; tall, square and wide matrices whose manifold Muon solves
    # converge (32 rows per batch: full-rank gradients).
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 15, bias=False),
        torch.nn.Tanh(),
        torch.nn.Linear(15, 15, bias=False),
        torch.nn.Tanh(),
        torch.nn.Linear(15, 1, bias=False),
    )
    data = torch.randn(4, 32, 4)
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))  # fully_shard would pick CUDA where there is one
        for layer in model[::2]:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    opt = build(name, list(model.parameters()))
    rank, size = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    for x in data:
        opt.zero_grad()
        rows = x[rank * len(x) // size : (rank + 1) * len(x) // size]
        (model(rows).square().sum() * size / len(x)).backward()
        opt.step()
    full = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}
    work = getattr(opt, "local_matrices", None)
    if sharded:
        works = [None] * size
        dist.all_gather_object(works, work)
        work = works
    if rank == 0:
        torch.save({"weights": full, "work": work}, out)
    if sharded:
        del model, opt
        gc.collect()  # as modman.experiments.parallel.Parallel.close: FSDP2's cycles freed before the group goes
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] == "fsdp")
