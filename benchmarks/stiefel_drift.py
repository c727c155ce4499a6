"""(j) Drift off the Stiefel manifold over long training: ManifoldMuon with its defaults, float32 weights.

A tall, a wide and a square matrix (the shapes of benchmark (c) at ``--width``) take ``--steps`` default
ManifoldMuon steps (lr 0.05, Nesterov momentum 0.95) on fresh random gradients, each a random low-rank part
that persists plus noise, as training gradients do. The table gives ``max_i |σ_i(W) − 1|`` (float64 SVD)
every ``--every`` steps, and the largest over the run.

    python -m benchmarks.stiefel_drift [--device cuda] [--quick] [--steps N] [--width D]
"""

from __future__ import annotations

import torch

from modman.manifolds import Stiefel
from modman.optim import ManifoldMuon

from .common import finish, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 10000; 200 with --quick)")
    p.add_argument("--every", type=int, default=1000, help="report every this many steps (default: %(default)s)")
    p.add_argument("--width", type=int, default=64, help="d: matrices 4d×d, d×4d and d×d (default: %(default)s)")
    args = p.parse_args(argv)
    steps = args.steps or (200 if args.quick else 10_000)
    if steps < 1 or args.every < 1 or args.width < 1:
        p.error("--steps, --every and --width must be >= 1")
    d = args.width
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    shapes = [(4 * d, d), (d, 4 * d), (d, d)]
    params = [torch.nn.Parameter(torch.randn(*s, generator=g, device=args.device)) for s in shapes]
    opt = ManifoldMuon(params, lr=0.05, momentum=0.95, nesterov=True)
    trend = [torch.randn(*s, generator=g, device=args.device) for s in shapes]
    stiefel, rows, worst = Stiefel(), [], [0.0] * len(params)
    for step in range(1, steps + 1):
        for p_, t in zip(params, trend):
            t.mul_(0.99).add_(torch.randn(t.shape, generator=g, device=args.device), alpha=0.1)
            p_.grad = t + torch.randn(t.shape, generator=g, device=args.device)
        opt.step()
        if step % args.every == 0 or step == steps:
            violations = [stiefel.violation(p_.detach()) for p_ in params]
            worst = [max(w, v) for w, v in zip(worst, violations)]
            diag = opt.diagnostics()
            rows.append(
                {
                    "step": step,
                    **{f"{s[0]}x{s[1]}": v for s, v in zip(shapes, violations)},
                    "solvers": ",".join(sorted({x["solver"] for x in diag.values()})),
                }
            )
    rows.append({"step": "max", **{f"{s[0]}x{s[1]}": w for s, w in zip(shapes, worst)}, "solvers": ""})
    finish(
        "stiefel_drift",
        args,
        rows,
        ["step"] + [f"{s[0]}x{s[1]}" for s in shapes] + ["solvers"],
        extra={"width": d, "steps": steps, "dtype": "float32"},
    )


if __name__ == "__main__":
    main()
