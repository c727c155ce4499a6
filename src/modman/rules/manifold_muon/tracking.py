"""``tracking``: a matrix-product-only manifold Muon solver that follows the optimum from step to step.

For tall W with WᵀW = I and the symmetric X = 2Λ, the dual is ``f(X) = ‖G + WX‖_*`` with gradient
``∇f = sym(WᵀA)``, ``A = msign(G + WX)``. Su's fixed point (``fixed_point``) is the preconditioned step

    X ← X − L_Σ⁻¹(2 Σ ∇f Σ),   L_Σ(D) = ΣD + DΣ,   Σ = sym(Aᵀ(G + WX)) = |G + WX|,

which ``fixed_point`` takes with a float64 ``eigh``. Here Σ comes from the msign already computed (one
n×m×n product) and the Lyapunov system is solved approximately by a few conjugate-gradient steps (two n×n
products each; L_Σ is positive definite on symmetric matrices): no eigensolve, no SVD, no float64, no host
sync. Each iteration costs one msign of the m×n matrix. Warm-started from the optimizer's multiplier, one
iteration per optimizer step tracks the optimum as the momentum moves; the direction returned is A projected
onto the tangent space, ``A − W·sym(WᵀA)``, and ``Stiefel.retract_step`` takes the polar factor of W − ηA
from n×n algebra, so the weights stay on the manifold to rounding. The residual reported is RMS(WᵀA + AᵀW) of A
before that
projection: how far the multiplier is from the optimum.
"""

from __future__ import annotations

import torch

from ...errors import UserError
from ...manifolds.stiefel import sym
from .problem import Problem, Solution, symmetric_rms

__all__ = ["tracking", "lyapunov_cg"]


def lyapunov_cg(S: torch.Tensor, Q: torch.Tensor, steps: int) -> torch.Tensor:
    """Approximately solve ``SD + DS = Q`` for symmetric D (S symmetric positive semi-definite) by ``steps`` of
    conjugate gradients from D = 0. Only matrix products; a zero right-hand side gives D = 0."""
    D = torch.zeros_like(Q)
    R = Q.clone()
    direction = R.clone()
    rr = (R * R).sum()
    tiny = torch.finfo(Q.dtype).tiny
    for _ in range(steps):
        LP = S @ direction + direction @ S
        curvature = (direction * LP).sum()
        a = torch.where(curvature > tiny, rr / curvature.clamp_min(tiny), torch.zeros_like(rr))
        D = D + a * direction
        R = R - a * LP
        rr_next = (R * R).sum()
        direction = R + (rr_next / rr.clamp_min(tiny)) * direction
        rr = rr_next
    return sym(D)


def tracking(problem: Problem, cg_steps: int = 4) -> Solution:
    """``problem.steps`` preconditioned fixed-point iterations (one msign each, see the module docstring),
    started from the problem's multiplier (the previous step's) or the blog's ``Λ₀ = −sym(WᵀG)/2``.

    The iteration count is fixed (no tolerance), so nothing waits on the host. A is tangent (not a partial
    isometry, so no ``gram`` for the retraction); info keys msign_calls, iterations, residual.
    """
    W, G, steps, Lambda, msign_fn = problem.W, problem.G, problem.steps, problem.multiplier, problem.msign_fn
    if cg_steps < 0:
        raise UserError(f"tracking: cg_steps must be >= 0; got {cg_steps}")
    P = W.mT @ G
    X = 2 * Lambda.to(W.dtype) if Lambda is not None else -sym(P)
    for _ in range(steps):
        Y = G + W @ X
        A = msign_fn(Y)
        Sigma = sym(A.mT @ Y)
        H = sym(W.mT @ A)  # ∇f: zero at the optimum
        X = X - lyapunov_cg(Sigma, 2 * Sigma @ H @ Sigma, cg_steps)
    tangent = A - W @ H
    residual = float(symmetric_rms(H))  # RMS(WᵀA + AᵀW) = RMS(2H), H symmetric
    return Solution(tangent, 0.5 * X, {"msign_calls": steps, "iterations": steps, "residual": residual})
