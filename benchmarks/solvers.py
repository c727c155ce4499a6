"""(b) Manifold Muon solvers: residual, certified duality gap, msign calls, iterations and time.

Random W (on Stiefel) and G at three gradient scales per aspect ratio, then along a training
trajectory (a Stiefel layer fitted to a teacher with Nesterov momentum) with the default solver for
tall W (``hybrid``), warm-started or not.

    python -m benchmarks.solvers [--device cuda] [--quick]
"""

from __future__ import annotations

import statistics
import time

import torch

from modman.manifolds import Stiefel
from modman.rules import duality_gap, manifold_muon_direction, tangent_residual

from .common import finish, parser, sync


def solve(W, G, solver, device, multiplier=None):
    sync(device)
    t0 = time.perf_counter()
    A, info = manifold_muon_direction(W, G, solver=solver, multiplier=multiplier)
    sync(device)
    seconds = time.perf_counter() - t0
    Wt, At = (W, A) if W.shape[0] >= W.shape[1] else (W.mT, A.mT)
    return (
        A,
        info,
        {
            "residual": tangent_residual(Wt.double(), At.double()),
            "rel_gap": duality_gap(W, G, A, info["multiplier"])["relative_gap"],
            "msign_calls": info["msign_calls"],
            "iterations": info["iterations"],
            "cg_steps": info.get("cg_steps", 0),
            "ms": 1000 * seconds,
        },
    )


def random_rows(args, shapes, solvers):
    rows = []
    g = torch.Generator().manual_seed(args.seed)
    for m, n in shapes:
        W = Stiefel().project(torch.randn(m, n, generator=g)).to(args.device)
        G0 = torch.randn(m, n, generator=g).to(args.device)
        for solver in solvers(m, n):
            for scale in (1e-3, 1.0, 1e3):
                _, _, r = solve(W, G0 * scale, solver, args.device)
                rows.append(
                    {
                        "shape": f"{m}x{n}",
                        "aspect": round(max(m, n) / min(m, n), 2),
                        "solver": solver,
                        "grad_scale": scale,
                        **r,
                    }
                )
    return rows


def trajectory_rows(args, shape, steps):
    """Train one Stiefel layer y = Wx toward a teacher with manifold Muon; solve each step cold and warm."""
    m, n = shape
    g = torch.Generator().manual_seed(args.seed + 1)
    W = Stiefel().project(torch.randn(m, n, generator=g)).to(args.device)
    teacher = Stiefel().project(torch.randn(m, n, generator=g)).to(args.device)
    X = torch.randn(4 * max(m, n), n, generator=g).to(args.device)
    buf = torch.zeros_like(W)
    warm_multiplier = None
    stats = {"cold": [], "warm": []}
    for _ in range(steps):
        W.requires_grad_(True)
        loss = ((X @ W.mT - X @ teacher.mT) ** 2).mean()
        (G,) = torch.autograd.grad(loss, W)
        W = W.detach()
        buf.lerp_(G, 0.05)
        M = G.lerp(buf, 0.95)
        _, _, cold = solve(W, M, "hybrid", args.device)
        A, info, warm = solve(W, M, "hybrid", args.device, multiplier=warm_multiplier)
        warm_multiplier = info["multiplier"]
        stats["cold"].append(cold)
        stats["warm"].append(warm)
        W, _ = Stiefel().retract_step(W, A, 0.05, gram=info.get("gram"))
    rows = []
    for start, runs in stats.items():
        rows.append(
            {
                "shape": f"{m}x{n}",
                "start": start,
                "steps": steps,
                "median_iterations": statistics.median(r["iterations"] for r in runs),
                "max_residual": max(r["residual"] for r in runs),
                "median_rel_gap": statistics.median(r["rel_gap"] for r in runs),
                "median_ms": statistics.median(r["ms"] for r in runs),
            }
        )
    return rows


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    torch.manual_seed(args.seed)
    if args.quick:
        shapes, traj, traj_steps = [(96, 64), (128, 64), (256, 64), (768, 32), (64, 64)], [(256, 64)], 5
    else:
        shapes, traj, traj_steps = (
            [(768, 512), (1024, 512), (1024, 256), (3072, 128), (512, 512)],
            [(1024, 256), (1024, 512)],
            20,
        )

    def solvers(m, n):
        return (
            ["dual_ascent", "closed_form", "fixed_point"]
            if m == n
            else ["dual_ascent", "fixed_point", "newton", "hybrid"]
        )

    rows = random_rows(args, shapes, solvers)
    columns = [
        "shape",
        "aspect",
        "solver",
        "grad_scale",
        "residual",
        "rel_gap",
        "msign_calls",
        "iterations",
        "cg_steps",
        "ms",
    ]
    traj_rows = [r for shape in traj for r in trajectory_rows(args, shape, traj_steps)]
    from .common import format_table

    print(
        format_table(
            traj_rows, ["shape", "start", "steps", "median_iterations", "max_residual", "median_rel_gap", "median_ms"]
        )
        + "\n"
    )
    finish("solvers", args, rows, columns, extra={"trajectory": traj_rows})


if __name__ == "__main__":
    main()
