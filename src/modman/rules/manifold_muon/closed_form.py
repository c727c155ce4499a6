"""Manifold Muon for square W: the tangent space is ``{WK : K = −Kᵀ}`` and ``‖WK‖_op = ‖K‖_op``, so the
direction is ``A = W·msign(skew(WᵀG))`` exactly, with one msign call."""

from __future__ import annotations

from ...errors import UserError
from ...manifolds.stiefel import sym
from .problem import Problem, Solution, symmetric_rms

__all__ = ["closed_form", "closed_form_batch"]


def closed_form(problem: Problem) -> Solution:
    """Square W: ``A = W msign(skew(WᵀG))``, ``Λ = −sym(WᵀG)/2``. One msign call, zero residual."""
    W = problem.W
    if W.shape[0] != W.shape[1]:
        raise UserError(
            f"manifold_muon: solver 'closed_form' needs a square W; got {tuple(W.shape)}. "
            "Use solver='fixed_point' (or 'auto') for tall or wide matrices."
        )
    A, Lambda, gram, residual = closed_form_batch(W, problem.G, problem.msign_fn)
    return Solution(A, Lambda, {"msign_calls": 1, "iterations": 1, "residual": float(residual), "gram": gram})


def closed_form_batch(W, G, msign_fn):
    """The closed form over a batch (..., n, n) with one msign call.

    Returns ``(A, Λ, AᵀA, residual)``; the residual RMS(K + Kᵀ) (= RMS(WᵀA + AᵀW) for WᵀW = I, up to W's
    rounding off the manifold: what an inexact msign leaves of K's skew symmetry) has one entry per matrix.
    """
    P = W.mT @ G
    K = msign_fn(0.5 * (P - P.mT))  # skew, like its argument
    return W @ K, -0.5 * sym(P), K.mT @ K, symmetric_rms(K)
