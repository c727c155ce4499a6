"""The blog's manifold Muon solver: dual (sub)gradient ascent on the multiplier, step for step."""

from __future__ import annotations

from .problem import Problem, Solution, symmetric_rms

__all__ = ["dual_ascent"]


def dual_ascent(problem: Problem) -> Solution:
    """The blog's reference iteration, for tall W. Unlike the other solvers it depends on G's scale: the step
    ``problem.alpha`` is in G's units, as in the blog's reference code.

    ``Λ₀ = −¼(WᵀG + GᵀW)``; repeat ``A = msign(G + 2WΛ)``, ``H = WᵀA + AᵀW``, stop when
    ``RMS(H) < tol``, else ``Λ ← Λ − α(1 − k/steps)H``; at most ``steps`` msign calls.
    """
    W, G, steps, alpha = problem.W, problem.G, problem.steps, problem.alpha
    Lambda = -0.25 * (W.T @ G + G.T @ W) if problem.multiplier is None else problem.multiplier.clone()
    for step in range(steps):  # noqa: B007 - the count is reported after the loop
        A = problem.msign_fn(G + 2 * W @ Lambda)
        T = W.T @ A
        residual = float(symmetric_rms(T))
        if residual < problem.tol:
            break
        Lambda -= alpha * (1 - step / steps) * (T + T.T)
    return Solution(A, Lambda, {"msign_calls": step + 1, "iterations": step + 1, "residual": residual})
