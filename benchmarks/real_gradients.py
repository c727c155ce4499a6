"""(b') Manifold Muon solvers on real training gradients, captured from ``modman train --exp manifold_muon``.

Gaussian gradients (``benchmarks.solvers``) are easier than real ones, whose spectra decay: the complement
Gram C is near singular, so ``hybrid`` does not take its Newton-at-once path. This benchmark trains the
default LLM with manifold Muon for ``--train-steps`` steps, keeps the solver inputs (W, momentum, warm-start
multiplier, tolerance, step cap) of every tall matrix at the steps in ``--capture``, then solves each of
them again with every solver below and reports iterations, certificate and time.

    python -m benchmarks.real_gradients [--quick] [--train-steps N] [--capture 0,1,5,20,50,100]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from functools import partial

import torch

import modman.optim.manifold_muon as optim_module
from modman.cli import main as cli_main
from modman.manifolds.stiefel import as_tall
from modman.rules import duality_gap, tangent_residual
from modman.rules.manifold_muon_solvers import fixed_point, hybrid

from .common import finish, parser

SOLVERS = {
    "hybrid (default: fixed point <= 20, then smoothing Newton)": hybrid,
    "hybrid, fixed point <= 5, Newton <= 4, then smoothing": partial(hybrid, fixed_point_steps=5, direct_steps=4),
    "fixed_point": fixed_point,
}


def capture(train_steps: int, steps: set[int], preset: str) -> list[dict]:
    """Train manifold_muon for ``train_steps`` and keep the solver inputs at the optimizer steps in ``steps``."""
    direction, update = optim_module.manifold_muon_direction, optim_module.ManifoldMuon._update
    kept, current = [], {"step": -1}

    def updating(self, W, G, state, group):
        current["step"] = state.get("step", 0)  # steps this matrix has taken: the index of this one
        return update(self, W, G, state, group)

    def recording(W, G, **kw):
        if current["step"] in steps:
            kept.append({"step": current["step"], "W": W.clone(), "G": G.clone(), "tol": kw["tol"],
                         "steps": kw["steps"],
                         "multiplier": None if kw.get("multiplier") is None else kw["multiplier"].clone()})
        return direction(W, G, **kw)

    optim_module.manifold_muon_direction, optim_module.ManifoldMuon._update = recording, updating
    try:
        with tempfile.TemporaryDirectory() as out:
            cli_main(["train", "--exp", "manifold_muon", "--max-steps", str(train_steps), "--preset", preset,
                      "--no-progress", "--eval-every", str(10**9), "--checkpoint-every", str(10**9), "--out", out])
    finally:
        optim_module.manifold_muon_direction, optim_module.ManifoldMuon._update = direction, update
    return kept


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--capture", default=None, help="optimizer steps whose solves are kept (default 0,1,5,20,50,100)")
    args = p.parse_args(argv)
    train_steps = args.train_steps or (6 if args.quick else 101)
    steps = {int(s) for s in (args.capture or ("0,1,5" if args.quick else "0,1,5,20,50,100")).split(",")}
    solves = capture(train_steps, steps, "tiny" if args.quick else "small")
    rows = []
    for name, solver in SOLVERS.items():
        its, gaps, res, ms = [], [], [], []
        for rec in solves:
            W, G = rec["W"].to(args.device), rec["G"].to(args.device)
            Wt, wide = as_tall(W)
            Gt = G.mT if wide else G
            multiplier = None if rec["multiplier"] is None else rec["multiplier"].to(args.device)
            t0 = time.perf_counter()
            A, Lambda, info = solver(Wt, Gt, Lambda=multiplier, alpha=0.01, steps=rec["steps"], tol=rec["tol"],
                                     msign_fn=None)
            ms.append(1000 * (time.perf_counter() - t0))
            its.append(info["iterations"])
            res.append(tangent_residual(Wt.double(), A.double()))
            gaps.append(duality_gap(Wt, Gt, A, Lambda)["relative_gap"])
        tol = solves[0]["tol"]
        rows.append({"solver": name, "solves": len(solves), "median_iterations": statistics.median(its),
                     "max_iterations": max(its), "uncertified": sum(1 for g, r in zip(gaps, res) if g > tol or r > tol),
                     "max_rel_gap": max(gaps), "max_residual": max(res), "total_ms": sum(ms)})
    finish("real_gradients", args, rows, ["solver", "solves", "median_iterations", "max_iterations", "uncertified",
                                          "max_rel_gap", "max_residual", "total_ms"],
           extra={"train_steps": train_steps, "captured_steps": sorted(steps),
                  "shapes": sorted({tuple(r["W"].shape) for r in solves})})


if __name__ == "__main__":
    main()
