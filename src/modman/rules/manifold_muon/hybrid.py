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
    """The default for tall/wide W. When the complement Gram C is well-conditioned (``λ_min(C) ≥ 2e-2/n``,
    one Cholesky test; generic for aspect ratios above ~2.4) the dual is smooth for every X (M ≽ C ≻ 0),
    and Newton at μ = 1e-8/n converges quadratically: 3–5 eigensolves where the fixed point takes ~9.
    Otherwise the fixed point, in rounds of ``direct_after`` iterations (``fixed_point_steps`` in all). After
    a round, if the residual is below 1e-2, Newton at μ = 1e-8/n probes for up to ``direct_steps`` iterations
    and is kept only while every step at least halves the residual: warm-started training solves are near
    their optimum and finish in 1–4 (LLM experiment: median 11 → 7 iterations). Cold-started ones (the
    modular GPT's first steps) are at 1.3e-2..2.6e-2 after 5 steps, where Newton's first step barely changes
    the residual (factor 0.94–1.9, measured; the threshold is the cheap pre-test, the halving rule the guard):
    they run another round, which brings most under 1e-2 (modular GPT, cold: median 23 → 11 iterations against
    going to smoothing Newton after 5). At 3e-2 or above after a round the fixed point is slow (residual
    ×0.85 per step for the next 8 on spectra like e^(-k/8)) and goes no further. Where the probe stalls or is
    not taken, smoothing Newton from the best iterate and μ = 1e-4/n, until certified or ``steps`` (which caps
    all of them together); the best certified result is returned.

    A stalled probe goes straight to smoothing Newton: there the optimum is degenerate (M near singular) and
    the fixed point brings the residual under the tolerance but not the gap — late in the LLM experiment (step
    400, tol 1e-4), resuming it up to 20 iterations then Newton took 17.8 iterations and 99.5 ms per solve,
    straight to Newton 10.8 and 77.3 ms, uncertified 5 → 0 of 60 (BENCHMARKS.md (e)).
    ``direct_steps=0``: the fixed point for ``fixed_point_steps``, then smoothing Newton."""
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
