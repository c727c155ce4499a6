"""(b') Manifold Muon solvers on real training gradients, captured from ``modman train``.

Gaussian gradients (``benchmarks.solvers``) are easier than real ones, whose spectra decay: the complement
Gram C is near singular, so ``hybrid`` does not take its Newton-at-once path. Two kinds of solve:

* ``manifold_muon`` — trains the default LLM with manifold Muon for ``--train-steps`` steps and keeps the solver
  inputs (W, momentum, warm-start multiplier, tolerance, step cap) of every tall matrix at the optimizer steps
  in ``--capture``: warm-started, near their optimum;
* ``modular`` — trains the modman.modular GPT for ``--modular-steps`` steps and keeps every 7th non-square
  solve with its multiplier: ``ModularDescent`` warm-starts each atom's solve from its previous multiplier
  (the first step's solves are cold).

Each is solved again with every solver below (the warm-started ones also cold, to show what the warm start
saves), the solvers in turn on each problem, each solve timed ``--repeat`` times (the fastest kept); the table
reports iterations, certificate and time.

    python -m benchmarks.real_gradients [--quick] [--train-steps N] [--capture 0,1,5,20,50,100] [--modular-steps N]
                                        [--repeat R]
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from functools import partial

import modman.modular.atoms as atoms_module
import modman.optim.manifold_muon as optim_module
from modman.cli import main as cli_main
from modman.manifolds.stiefel import as_tall
from modman.rules import duality_gap, tangent_residual
from modman.rules.manifold_muon import Problem, Solution, fixed_point, hybrid

from .common import finish, parser, sync


def cold_hybrid(problem: Problem) -> Solution:
    """The default solver without the optimizer's warm start: what the warm start saves."""
    return hybrid(dataclasses.replace(problem, multiplier=None))


COLD = "hybrid, cold (the warm-start multiplier dropped)"
SOLVERS = {
    "hybrid (default: Newton probe after 5 or 10 fixed-point steps)": hybrid,
    "hybrid, direct_steps=0, fixed_point_steps=20 (no probe)": partial(hybrid, direct_steps=0, fixed_point_steps=20),
    "hybrid, fixed_point_steps=5 (one round, then smoothing Newton)": partial(hybrid, fixed_point_steps=5),
    "fixed_point": fixed_point,
    COLD: cold_hybrid,
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
            kept.append(
                {
                    "step": current["step"],
                    "W": W.clone(),
                    "G": G.clone(),
                    "tol": kw["tol"],
                    "steps": kw["steps"],
                    "multiplier": None if kw.get("multiplier") is None else kw["multiplier"].clone(),
                }
            )
        return direction(W, G, **kw)

    optim_module.manifold_muon_direction, optim_module.ManifoldMuon._update = recording, updating
    try:
        _train("manifold_muon", train_steps, preset)
    finally:
        optim_module.manifold_muon_direction, optim_module.ManifoldMuon._update = direction, update
    return kept


def capture_modular(train_steps: int, preset: str, every: int = 7) -> list[dict]:
    """Train the modular GPT for ``train_steps`` and keep every ``every``-th non-square solve's inputs."""
    direction, kept, count = atoms_module.manifold_muon_direction, [], [0]

    def recording(W, G, **kw):
        if W.shape[0] != W.shape[1]:
            count[0] += 1
            if count[0] % every == 0:
                warm = kw.get("multiplier")
                kept.append(
                    {
                        "step": None,
                        "W": W.clone(),
                        "G": G.clone(),
                        "tol": kw["tol"],
                        "steps": kw["steps"],
                        "multiplier": None if warm is None else warm.clone(),
                    }
                )
        return direction(W, G, **kw)

    atoms_module.manifold_muon_direction = recording
    try:
        _train("modular", train_steps, preset)
    finally:
        atoms_module.manifold_muon_direction = direction
    return kept


def _train(exp: str, steps: int, preset: str) -> None:
    with tempfile.TemporaryDirectory() as out:
        cli_main(
            [
                "train",
                "--exp",
                exp,
                "--max-steps",
                str(steps),
                "--preset",
                preset,
                "--no-progress",
                "--eval-every",
                str(10**9),
                "--checkpoint-every",
                str(10**9),
                "--out",
                out,
            ]
        )


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--capture", default=None, help="optimizer steps whose solves are kept (default 0,1,5,20,50,100)")
    p.add_argument("--modular-steps", type=int, default=None, help="modular GPT training steps (default 40)")
    p.add_argument("--repeat", type=int, default=2, help="time each solve this many times, keep the fastest")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat {args.repeat}: give an int >= 1")
    train_steps = args.train_steps or (6 if args.quick else 101)
    modular_steps = args.modular_steps or (2 if args.quick else 40)
    steps = {int(s) for s in (args.capture or ("0,1,5" if args.quick else "0,1,5,20,50,100")).split(",")}
    preset = "tiny" if args.quick else "small"
    sources = {"manifold_muon": capture(train_steps, steps, preset), "modular": capture_modular(modular_steps, preset)}
    rows = [
        row
        for source, solves in sources.items()
        if solves
        for row in _rows(
            source,
            {
                name: solver
                for name, solver in SOLVERS.items()
                if name != COLD or any(r["multiplier"] is not None for r in solves)
            },
            solves,
            args.device,
            args.repeat,
        )
    ]
    finish(
        "real_gradients",
        args,
        rows,
        [
            "solves_from",
            "solver",
            "solves",
            "median_iterations",
            "mean_iterations",
            "max_iterations",
            "uncertified",
            "max_rel_gap",
            "max_residual",
            "total_ms",
        ],
        extra={
            "train_steps": train_steps,
            "captured_steps": sorted(steps),
            "modular_steps": modular_steps,
            "shapes": sorted({tuple(r["W"].shape) for solves in sources.values() for r in solves}),
        },
    )


def _rows(source, solvers: dict, solves, device, repeat: int) -> list[dict]:
    """Every solve by every solver, the solvers in turn on each problem (so they see the same machine state);
    a solve's time is the fastest of ``repeat`` runs."""
    out = {name: {"its": [], "gaps": [], "res": [], "ms": []} for name in solvers}
    for rec in solves:
        W, G = rec["W"].to(device), rec["G"].to(device)
        Wt, wide = as_tall(W)
        Gt = G.mT if wide else G
        multiplier = None if rec["multiplier"] is None else rec["multiplier"].to(device)
        for name, solver in solvers.items():
            times = []
            for _ in range(repeat):
                sync(device)
                t0 = time.perf_counter()
                A, Lambda, info = solver(Problem(Wt, Gt, multiplier, steps=rec["steps"], tol=rec["tol"]))
                sync(device)
                times.append(1000 * (time.perf_counter() - t0))
            o = out[name]
            o["ms"].append(min(times))
            o["its"].append(info["iterations"])
            o["res"].append(tangent_residual(Wt.double(), A.double()))
            o["gaps"].append(duality_gap(Wt, Gt, A, Lambda)["relative_gap"])
    tol = solves[0]["tol"]
    return [
        {
            "solves_from": source,
            "solver": name,
            "solves": len(solves),
            "median_iterations": statistics.median(o["its"]),
            "mean_iterations": statistics.fmean(o["its"]),
            "max_iterations": max(o["its"]),
            "uncertified": sum(1 for g, r in zip(o["gaps"], o["res"]) if g > tol or r > tol),
            "max_rel_gap": max(o["gaps"]),
            "max_residual": max(o["res"]),
            "total_ms": sum(o["ms"]),
        }
        for name, o in out.items()
    ]


if __name__ == "__main__":
    main()
