"""Manifold Muon: steepest descent under the spectral norm inside the tangent space of Stiefel.

For W with WᵀW = I (tall; a wide W is solved transposed):

    A* = argmax ⟨G, A⟩  s.t.  ‖A‖_op ≤ 1,  WᵀA + AᵀW = 0,

and by Lagrange duality ``A(Λ) = msign(G + 2WΛ)`` for the symmetric multiplier Λ minimising the dual
``‖G + 2WΛ‖_*`` (Bernstein, *Modular Manifolds*, Thinking Machines Lab 2025; the blog's reference code).
Solvers are registered in ``SOLVERS``: each takes a ``Problem`` and returns a ``Solution``, one per module —
``closed_form`` (square W), ``dual_ascent`` (the blog's), ``fixed_point`` (Su's, on the reduced n×n problem of
``reduced``), ``newton`` (smoothing Newton on the same), ``hybrid`` (the default for tall/wide W) and
``tracking`` (one preconditioned step from the last multiplier).
"""

from __future__ import annotations

import torch

from ...errors import UserError
from ...manifolds.stiefel import as_tall
from ...msign import msign, times_power_of_two, unit_scaled
from .closed_form import closed_form, closed_form_batch
from .dual_ascent import dual_ascent
from .fixed_point import fixed_point
from .hybrid import hybrid
from .newton import newton
from .problem import MsignFn, Problem, Solution, Solver, tangent_residual
from .reduced import feasible_tangent
from .tracking import tracking

__all__ = [
    "manifold_muon_direction",
    "dual_ascent",
    "closed_form",
    "closed_form_batch",
    "fixed_point",
    "newton",
    "hybrid",
    "tracking",
    "tangent_residual",
    "duality_gap",
    "Problem",
    "Solution",
    "Solver",
    "SOLVERS",
    "SOLVER_NAMES",
    "resolve_solver",
    "resolve_steps",
]

SOLVERS: dict[str, Solver] = {
    "dual_ascent": dual_ascent,
    "closed_form": closed_form,
    "fixed_point": fixed_point,
    "newton": newton,
    "hybrid": hybrid,
    "tracking": tracking,
}
SOLVER_NAMES = ("auto", "certified") + tuple(SOLVERS)
DEFAULT_STEPS = {"tracking": 1}  # iterations when ``steps`` is None; the iterative certified solvers' cap is 100


def resolve_solver(solver: str, shape, warm: bool = True) -> str:
    """The closed form for square matrices under ``"auto"`` and ``"certified"``. Otherwise ``"certified"`` is
    ``"hybrid"`` (Newton / fixed point to ``tol``) and ``"auto"`` is ``"tracking"`` (matrix products only) when
    there is a multiplier to track (``warm``), else ``"hybrid"``: the first step of a matrix is certified."""
    if solver == "certified" or (solver == "auto" and not warm):
        return "closed_form" if shape[-1] == shape[-2] else "hybrid"
    if solver == "auto":
        return "closed_form" if shape[-1] == shape[-2] else "tracking"
    return solver


def resolve_steps(name: str, steps: int | None) -> int:
    """``steps``, or where it is None the default of the solver ``name`` (1 for tracking, else 100)."""
    return DEFAULT_STEPS.get(name, 100) if steps is None else steps


@torch.no_grad()
def duality_gap(W: torch.Tensor, G: torch.Tensor, A: torch.Tensor, multiplier: torch.Tensor) -> dict:
    """Certificate of a manifold Muon direction, in float64 (W on unit Stiefel, any orientation).

    ``dual = ‖G + 2WΛ‖_*`` bounds the optimum from above; ``primal = ⟨G, Ã⟩`` with Ã the tangent
    projection of A scaled into the unit spectral ball bounds it from below. Returns dual, primal,
    gap = dual − primal (>= 0 up to rounding) and relative_gap = gap/dual.
    """
    Wt, wide = as_tall(W.to(torch.float64))
    Gt, At = (G.mT, A.mT) if wide else (G, A)
    Gt, At = Gt.to(torch.float64), At.to(torch.float64)
    dual = float(torch.linalg.svdvals(Gt + 2 * Wt @ multiplier.to(torch.float64)).sum())
    primal = float((Gt * feasible_tangent(Wt, At)).sum())
    gap = dual - primal
    return {"dual": dual, "primal": primal, "gap": gap, "relative_gap": gap / dual if dual > 0 else 0.0}


def manifold_muon_direction(
    W: torch.Tensor,
    G: torch.Tensor,
    *,
    alpha: float = 0.01,
    steps: int | None = None,
    tol: float = 1e-6,
    solver: str = "auto",
    multiplier: torch.Tensor | None = None,
    msign_fn: MsignFn = msign,
):
    """Solve for the manifold Muon direction at W (``WᵀW = I`` or ``WWᵀ = I``).

    Args:
        W: (m, n) weight on the unit Stiefel manifold.
        G: (m, n) gradient (or momentum).
        alpha: the dual ascent's step size.
        steps: iteration cap (None: 1 for ``tracking``, which always takes that many, 100 for the others).
        tol: stopping tolerance (unused by ``tracking``).
        solver: ``"auto"`` (closed form when square, otherwise ``tracking`` from a ``multiplier``, ``hybrid``
            without one), ``"certified"`` (closed form when square, ``hybrid`` otherwise) or a key of ``SOLVERS``:
            ``"tracking"`` (one preconditioned
            fixed-point step from the warm multiplier: matrix products only), ``"dual_ascent"`` (the blog's),
            ``"closed_form"`` (square only), ``"fixed_point"``, ``"newton"`` (smoothing Newton on the reduced
            dual) or ``"hybrid"`` (Newton at once where the dual is smooth, else the fixed point, then Newton).
        multiplier: warm start Λ (n×n with n = min(m, n)); None starts from the blog's guess.
        msign_fn: the matrix sign function to use.

    Returns:
        ``(A, info)``: A in W's orientation with ``‖A‖_op ≤ 1`` (``tracking``: tangent, ‖A‖_op within its
        residual of 1); info has ``solver`` (the one used), ``msign_calls``, ``iterations``, ``residual`` (RMS
        of WᵀA + AᵀW, for ``tracking`` before its tangent repair) and ``multiplier`` (Λ, n×n); the closed form
        and the hybrid also give ``gram`` (AᵀA of a partial isometry, n×n) for the retraction.
    """
    if solver not in SOLVER_NAMES:
        raise UserError(f"manifold_muon: unknown solver {solver!r}; choose one of {', '.join(SOLVER_NAMES)}")
    if W.ndim != 2 or W.shape != G.shape:
        raise UserError(f"manifold_muon needs 2-D W and G of the same shape; got {tuple(W.shape)} and {tuple(G.shape)}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise UserError(f"manifold_muon: steps must be an int >= 1 or None; got {steps!r}")
    Wt, wide = as_tall(W)
    n = Wt.shape[1]
    if multiplier is not None and tuple(multiplier.shape) != (n, n):
        raise UserError(
            f"manifold_muon: multiplier must be {n}x{n} for W of shape {tuple(W.shape)}; got {tuple(multiplier.shape)}"
        )
    if multiplier is not None and not bool(torch.isfinite(multiplier).all()):
        multiplier = None  # a non-finite warm start is dropped: cold start
    name = resolve_solver(solver, W.shape, warm=multiplier is not None)
    steps = resolve_steps(name, steps)
    # A is invariant to G's scale and Λ proportional to it: solve for G/2^e (exact), so that a gradient of any
    # finite size is in range, and scale Λ back. Not for the blog's dual ascent, whose step α is in G's units.
    G, exponent = unit_scaled(G, return_exponent=True) if name != "dual_ascent" else (G, None)
    if multiplier is not None and exponent is not None:
        multiplier = times_power_of_two(multiplier, -exponent)
    problem = Problem(Wt, G.mT if wide else G, multiplier, steps, tol, msign_fn, alpha)
    A, Lambda, info = SOLVERS[name](problem)
    info = dict(info)
    info["multiplier"] = Lambda if exponent is None else times_power_of_two(Lambda, exponent)
    info["solver"] = name
    return (A.mT if wide else A), info
