"""The default manifold Muon solver for tall and wide W: Newton, the fixed point, or both, by what the problem
needs."""

from __future__ import annotations

from dataclasses import replace

from ...errors import UserError
from .fixed_point import fixed_point_loop
from .newton import newton_loop
from .problem import Problem, Solution
from .reduced import LoopResult, solve_reduced, well_conditioned

__all__ = ["hybrid"]


def hybrid(problem: Problem, fixed_point_steps: int = 10, direct_after: int = 5, direct_steps: int = 4) -> Solution:
    """Manifold Muon's direction for tall/wide W by the cheapest path that certifies it (the default solver).

    1. C well-conditioned (``λ_min(C) ≥ 2e-2/n``, one Cholesky test): the dual is smooth for every X
       (M ≽ C ≻ 0); Newton at μ = 1e-8/n, which converges quadratically.
    2. Otherwise the fixed point ``fixed_point`` in rounds of ``direct_after`` iterations
       (``fixed_point_steps`` in all). After a round whose residual is below 1e-2, Newton at μ = 1e-8/n
       probes for up to ``direct_steps`` iterations, kept only while each step at least halves the residual;
       at 1e-2..3e-2 another round; at 3e-2 or above the fixed point stops.
    3. Where the probe stalls or is not taken: smoothing Newton (``newton.solve_from``) from the best iterate
       at μ = 1e-4/n, until certified or ``steps`` (which caps all three together).

    Returns the best certified point. ``direct_steps=0``: the fixed point, then smoothing Newton. Why each
    threshold, with the iteration counts behind it: docs/solvers.md."""
    if direct_after < 1 or fixed_point_steps < 0 or direct_steps < 0:
        raise UserError(
            f"hybrid: direct_after must be >= 1 and fixed_point_steps, direct_steps >= 0 (got "
            f"{direct_after}, {fixed_point_steps}, {direct_steps}); fixed_point_steps=0 probes at once"
        )

    steps, tol = problem.steps, problem.tol

    def run(P, C, X0):
        tried: list[LoopResult] = []

        def best() -> LoopResult:
            return min(tried, key=lambda t: (t.gap, t.residual))

        def left() -> int:
            return 0 if tried and best().certified(tol) else steps - sum(t.iterations for t in tried)

        well = well_conditioned(C)
        if well:
            tried.append(newton_loop(P, C, X0, steps, tol, mu0=1e-8, well_conditioned=True))
        # Newton's probe: only near the optimum (residual < 1e-2: see the docstring), and not where Newton at
        # the same μ has just run from X0 (well-conditioned C) without certifying.
        probe = direct_steps > 0 and not well
        resume, done = {"X": X0}, 0
        while done < fixed_point_steps and left() > 0:
            chunk = min(direct_after if probe else fixed_point_steps, fixed_point_steps - done, left())
            tried.append(fixed_point_loop(P, C, resume["X"], chunk, tol, resume=resume))
            done += chunk
            if probe and not 1e-2 <= best().residual < 3e-2:
                break  # near enough for the probe, or too far for the fixed point to get there: see the docstring
        if probe and left() > 0 and (fixed_point_steps == 0 or best().residual < 1e-2):
            start = best().X if tried else X0
            tried.append(newton_loop(P, C, start, min(direct_steps, left()), tol, mu0=1e-8, min_progress=0.5))
        if left() > 0:
            tried.append(newton_loop(P, C, best().X if tried else X0, left(), tol, mu0=1e-4))
        return replace(best(), iterations=sum(t.iterations for t in tried), cg_steps=sum(t.cg_steps for t in tried))

    return solve_reduced(problem, run, with_cg=True)
