"""(a) msign accuracy against the float64 SVD polar factor (op_error = ‖X − UVᵀ‖_op), by method, dtype and iteration
count, with time per call.

python -m benchmarks.msign_accuracy [--device cuda] [--quick]
"""

from __future__ import annotations

import torch

from modman import msign

from .common import finish, parser, timeit


def well_conditioned(m, n, seed, device):
    """A tall Gaussian (σ ∈ √m ± √n): the input Polar Express is tuned for."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=torch.float64).to(device)


def stiefel_error(X):
    """``‖XᵀX − I‖_op`` in float64 (tall X): how far the result is from orthonormal columns."""
    X = X.double()
    return float(torch.linalg.matrix_norm(X.mT @ X - torch.eye(X.shape[1], dtype=X.dtype, device=X.device), ord=2))


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    shapes = [(256, 64)] if args.quick else [(1024, 256), (4096, 1024)]
    rows = []
    for m, n in shapes:
        G = well_conditioned(m, n, args.seed, args.device)
        exact = msign(G, method="exact")
        rows.append(
            {
                "shape": f"{m}x{n}",
                "method": "exact",
                "dtype": "float64",
                "steps": "-",
                "op_error": 0.0,
                "stiefel_error": stiefel_error(exact),
                "ms": 1000 * timeit(lambda G=G: msign(G, method="exact"), args.device, repeat=3),
            }
        )
        for method, steps_list in [("polar_express", [4, 6, 8, 10, 12]), ("newton_schulz", [5, 10])]:
            for dtype in (torch.float32, torch.bfloat16):
                for steps in steps_list:
                    Gd = G.float()
                    X = msign(Gd, method=method, steps=steps, dtype=dtype)
                    err = float(torch.linalg.matrix_norm(X.double() - exact, ord=2))
                    ms = 1000 * timeit(
                        lambda Gd=Gd, method=method, steps=steps, dtype=dtype: msign(
                            Gd, method=method, steps=steps, dtype=dtype
                        ),
                        args.device,
                    )
                    rows.append(
                        {
                            "shape": f"{m}x{n}",
                            "method": method,
                            "dtype": str(dtype).removeprefix("torch."),
                            "steps": steps,
                            "op_error": err,
                            "stiefel_error": stiefel_error(X),
                            "ms": ms,
                        }
                    )
    finish("msign_accuracy", args, rows, ["shape", "method", "dtype", "steps", "op_error", "stiefel_error", "ms"])


if __name__ == "__main__":
    main()
