"""(l) Iterations of manifold Muon's certified solvers on gradient-like problems, and what each rule saves.

Each case is a float64 tall W on Stiefel and a G whose singular values decay like a training gradient's; the
default ``hybrid`` solve and the alternative its rules replaced run side by side to the same tolerance. The
table gives iterations (eigensolves), whether the result is certified (residual and relative duality gap
under tol) and ``adopted at``: for the default, the most iterations it took when its rule was adopted (a row
above it is a regression in speed, not in correctness: the tests check correctness); for the rule it
replaced, the iterations that one took then.

    python -m benchmarks.solver_iterations [--quick]
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from modman.manifolds import Stiefel
from modman.rules.manifold_muon import Problem, hybrid, manifold_muon_direction

from .common import finish, parser


def gradient_like(m: int, n: int, seed: int, spectrum: Callable[[torch.Tensor], torch.Tensor], tangent: float = 0.0):
    """W on Stiefel and ``G = U diag(spectrum(k)) Vᵀ`` (random U, V), plus ``tangent``·mean(σ)·W·N (N Gaussian):
    a part along W's own span, as a warm gradient has."""
    gen = torch.Generator().manual_seed(seed)
    W = Stiefel().project(torch.randn(m, n, generator=gen, dtype=torch.float64))
    U = torch.linalg.qr(torch.randn(m, n, generator=gen, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    s = spectrum(torch.arange(1, n + 1, dtype=torch.float64))
    G = (U * s) @ V.T
    if tangent:
        G = G + tangent * s.mean() * W @ torch.randn(n, n, generator=gen, dtype=torch.float64)
    return W, G


# name -> (problem, tol, {variant: (solve, iterations measured when the rule was adopted)})
CASES = {
    "decaying 1/k, 256x64": (
        lambda seed: gradient_like(256, 64, seed, lambda k: 1 / k, tangent=0.3),
        1e-4,
        {
            "hybrid (probe after 5)": (lambda p: hybrid(p), 10),
            "20 fixed point, then smoothing Newton": (lambda p: hybrid(p, direct_steps=0, fixed_point_steps=20), 23),
        },
    ),
    "decaying 1/k², 256x64 (probe stalls)": (
        lambda seed: gradient_like(256, 64, seed, lambda k: k**-2.0, tangent=0.3),
        1e-4,
        {
            "hybrid (straight to smoothing Newton)": (lambda p: hybrid(p), 20),
            "20 fixed point, then smoothing Newton": (lambda p: hybrid(p, direct_steps=0, fixed_point_steps=20), 28),
        },
    ),
    "cold e^(-k/25)/k, 512x128 (second round)": (
        lambda seed: gradient_like(512, 128, seed, lambda k: torch.exp(-k / 25) / k),
        1e-4,
        {
            "hybrid (two rounds, then the probe)": (lambda p: hybrid(p), 12),
            "one round, then smoothing Newton": (lambda p: hybrid(p, fixed_point_steps=5), 19),
        },
    ),
    "cold e^(-k/8), 512x128 (slow fixed point)": (
        lambda seed: gradient_like(512, 128, seed, lambda k: torch.exp(-k / 8)),
        1e-4,
        {"hybrid (Newton after one round)": (lambda p: hybrid(p), 30)},
    ),
}


def gaussian_newton(seed: int):
    """Gaussian 256x128 at tol 1e-6 under ``newton``: the stage rule (end at tol where the gap is far) took 25."""
    gen = torch.Generator().manual_seed(seed)
    W = Stiefel().project(torch.randn(256, 128, generator=gen, dtype=torch.float64))
    G = torch.randn(256, 128, generator=gen, dtype=torch.float64)
    return manifold_muon_direction(W, G, solver="newton", steps=100, tol=1e-6)[1]


def main(argv=None):
    p = parser(__doc__)
    args = p.parse_args(argv)
    seeds = [0] if args.quick else [0, 1]
    rows = []
    for case, (make, tol, variants) in CASES.items():
        for seed in seeds:
            W, G = make(seed)
            for variant, (solve, expected) in variants.items():
                info = solve(Problem(W, G, steps=30, tol=tol)).info
                rows.append(
                    {
                        "case": case,
                        "seed": seed,
                        "solver": variant,
                        "iterations": info["iterations"],
                        "adopted at": expected,
                        "certified": info["residual"] < tol and info["gap"] < tol,
                    }
                )
    for seed in seeds:
        info = gaussian_newton(seed)
        rows.append(
            {
                "case": "Gaussian 256x128, tol 1e-6",
                "seed": seed,
                "solver": "newton",
                "iterations": info["iterations"],
                "adopted at": 25,
                "certified": info["residual"] < 1e-6 and info["gap"] < 1e-6,
            }
        )
    finish("solver_iterations", args, rows, ["case", "seed", "solver", "iterations", "adopted at", "certified"])


if __name__ == "__main__":
    main()
