"""The reduced problem every eigen-solver of manifold Muon works on, and how its solution becomes a direction.

With ``Ĝ = G/‖G‖_F``, ``P = WᵀĜ`` and ``C = ĜᵀĜ − PᵀP`` (n×n, float64), ``A = msign(Ĝ + WX)`` (X = 2Λ
symmetric) has Gram ``M = (P+X)ᵀ(P+X) + C`` and ``WᵀA = (P+X)M^{-1/2}``, so the fixed point and Newton work
on n×n matrices only (Jianlin Su, *Steepest descent on manifolds 3: Muon + Stiefel*, kexue.fm/archives/11221).
They solve the problem at W's polar factor (``polar_correction``), not at W: the reduced problem assumes
``WᵀW = I`` exactly, which a float32 W meets only to ~3e-7.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...manifolds import Stiefel
from ...manifolds.stiefel import sym
from .problem import Problem, Solution, symmetric_rms

__all__ = [
    "LoopResult",
    "reduced_problem",
    "polar_correction",
    "inv_sqrt",
    "certificate",
    "regularised",
    "well_conditioned",
    "solve_reduced",
    "feasible_tangent",
    "reduced_direction",
]


@dataclass(frozen=True)
class LoopResult:
    """What an iteration on the reduced dual leaves: its best point X, ``E = (M + μI)^{-1/2}`` there (None if it
    never formed one), that point's certificate, the work done, whether A may be formed in float32 (``float64``
    False: M well-conditioned), and whether a Newton probe stalled."""

    X: torch.Tensor
    E: torch.Tensor | None
    residual: float
    gap: float
    iterations: int
    float64: bool = True
    cg_steps: int = 0
    stalled: bool = False

    def certified(self, tol: float) -> bool:
        return self.residual < tol and self.gap < tol


def reduced_problem(W: torch.Tensor, G: torch.Tensor, K: torch.Tensor | None = None):
    """``(P, C, scale)`` in float64: ``P = WᵀĜ``, ``C = ĜᵀĜ − PᵀP`` with ``Ĝ = G/‖G‖_F`` (scale-free).
    With ``K`` (``polar_correction``) W stands for its polar factor ``WK``: ``P = K WᵀĜ``."""
    scale = float(torch.linalg.vector_norm(G))
    Gn = G.to(torch.float64) / (scale if scale > 0 else 1.0)
    P = W.to(torch.float64).mT @ Gn
    if K is not None:
        P = K @ P
    C = Gn.mT @ Gn - P.mT @ P
    return P, sym(C), scale


def polar_correction(W: torch.Tensor, limit: float = 1e-4):
    """``K = (WᵀW)^{-1/2}`` in float64, so that ``WK`` (the polar factor of W) has orthonormal columns to
    float64 rounding; None where ``‖WᵀW − I‖_F > limit`` (W is not on the manifold: used as it is).

    The reduced problem assumes ``WᵀW = I``, which a float32 W on Stiefel meets only to ‖WᵀW − I‖_F ~ 3e-7.
    Near a singular M (aspect ratios below ~2.5) the solve amplifies that into a duality gap above 1e-6 that
    no iteration improves; solving for WK certifies the tolerance, and the gap holds for W itself (float64
    ``duality_gap`` at the float32 W; tests/test_rules_manifold_muon_reduced.py). One m·n² float64 product:
    ``Δ = WᵀW − I``, ``K = I − Δ/2 + 3Δ²/8`` (the series of (I + Δ)^{-1/2}; the next term, 5Δ³/16, is below 1e-12)."""
    W = W.to(torch.float64)
    eye = torch.eye(W.shape[-1], dtype=W.dtype, device=W.device)
    delta = W.mT @ W - eye
    if not float(torch.linalg.matrix_norm(delta)) <= limit:
        return None
    return sym(eye - 0.5 * delta + 0.375 * (delta @ delta))


def inv_sqrt(V, s):
    """``M^{-1/2}`` as a pseudo-inverse: directions with s below n·eps·s_max are dropped (msign(0) = 0)."""
    cutoff = s.shape[-1] * torch.finfo(s.dtype).eps * s.max().clamp_min(torch.finfo(s.dtype).tiny)
    inv = torch.where(s > cutoff, 1.0 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
    return (V * inv) @ V.mT


def certificate(P, C, X, V, s, E, with_gap: bool, tol: float = 0.0, s0=None):
    """Residual RMS(WᵀA + AᵀW) and, when asked, the certified relative duality gap, in n×n algebra.

    For ``A = (Ĝ + WX)E`` with ``E = (M + μI)^{-1/2} = V diag(1/s) Vᵀ``: dual ``‖Ĝ + WX‖_* = Σ s0`` (s0 =
    sqrt of M's eigenvalues; s when μ = 0); primal ``⟨Ĝ, Ã⟩`` for the feasible
    ``Ã = (A − W·sym(WᵀA)) / max(1, ‖A − W·sym(WᵀA)‖_op)``, whose Gram matrix and inner product with Ĝ
    need only ``T = WᵀA``, ``AᵀA`` and ``ĜᵀĜ = C + PᵀP`` (the same quantity as ``duality_gap``).
    """
    s0 = s if s0 is None else s0
    Z = P + X
    T = Z @ E  # = WᵀA
    residual = float(symmetric_rms(T))
    if not with_gap:
        return residual, math.inf
    S = sym(T)
    gram = E @ (Z.mT @ Z + C) @ E  # AᵀA
    proj_gram = gram - S @ T - T.mT @ S + S @ S  # (A − WS)ᵀ(A − WS)
    proj_gram = sym(proj_gram)
    GtA = ((C + P.mT @ P + P.mT @ X) * E).sum()  # ⟨Ĝ, A⟩ = tr(Ĝᵀ(Ĝ + WX)E)
    dual = float(s0.sum())

    def relative_gap(op_squared: float) -> float:
        primal = float(GtA - (P * S).sum()) / max(1.0, math.sqrt(max(op_squared, 0.0)))
        return (dual - primal) / dual if dual > 0 else 0.0

    # ‖Ã‖²_op = λmax(ÃᵀÃ) ≤ 1 + ‖ÃᵀÃ − I‖_F: a bound with no eigensolve, tight near convergence (A has
    # orthonormal columns there). The exact λmax only when the bound misses the tolerance by less than 10x
    # (measured: the bound's gap is within 3x of the exact one), where the exact value may still certify it.
    # A smoothed direction (μ > 0) has ‖A‖_op = max s0/s < 1, so ‖Ã‖_op ≤ max s0/s + ‖S‖_F bounds it too.
    eye = torch.eye(proj_gram.shape[-1], dtype=proj_gram.dtype, device=proj_gram.device)
    op_smoothed = float((s0 / s.clamp_min(torch.finfo(s.dtype).tiny)).max()) + float(torch.linalg.matrix_norm(S))
    bound = min(1.0 + float(torch.linalg.matrix_norm(proj_gram - eye)), op_smoothed**2)
    gap = relative_gap(bound)
    if tol <= gap < 10 * tol or tol == 0:
        gap = min(gap, relative_gap(float(torch.linalg.eigvalsh(proj_gram).max())))
    return residual, gap


def regularised(C):
    """``C + εI``: a rank-deficient G leaves the dual degenerate (M singular), so the iterations solve the
    problem whose complement Gram is C + εI instead. Its A is still exactly tangent and inside the unit ball,
    and its objective differs from the optimum by O(sqrt(ε)); ε = 1e-14 (G is normalised to ‖G‖_F = 1)."""
    return C + 1e-14 * torch.eye(C.shape[-1], dtype=C.dtype, device=C.device)


def well_conditioned(C) -> bool:
    """``λ_min(C) ≥ 2e-2/n`` (C is normalised: tr(ĜᵀĜ) = 1), by one Cholesky factorisation. Then
    M = (P+X)ᵀ(P+X) + C ≽ C is uniformly positive definite and the dual is smooth for every X.

    The bound is where Newton at μ = 1e-8/n beats the fixed point by measurement: on Gaussian G it
    certifies in 3–5 iterations from n·λ_min(C) = 1e-2 up (the fixed point: 9–19); on real gradients (the
    CIFAR MLP's 128x3072 layer, n·λ_min(C) = 3e-3..1e-2) it took 7–10 and sometimes failed to certify,
    while the fixed point took 7–11."""
    n = C.shape[-1]
    shifted = C - (2e-2 / n) * torch.eye(n, dtype=C.dtype, device=C.device)
    return int(torch.linalg.cholesky_ex(shifted).info) == 0


def solve_reduced(
    problem: Problem, run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], LoopResult], with_cg: bool = False
) -> Solution:
    """Reduce, run ``run(P, C, X₀)`` from the warm start X₀ = 2Λ/‖G‖_F (else the blog's ``−sym(WᵀĜ)``), and form
    the direction; a zero G gives a zero direction. The problem solved is the one at W's polar factor
    (``polar_correction``): exactly orthonormal columns, within rounding of W. ``with_cg``: info has
    ``cg_steps`` (the Newton solvers)."""
    W, G, tol = problem.W, problem.G, problem.tol
    K = polar_correction(W.to(torch.float64))
    P, C, scale = reduced_problem(W, G, K)
    if scale == 0:
        zero = torch.zeros_like(P).to(G.dtype)
        return Solution(
            torch.zeros_like(G), zero, {"msign_calls": 0, "iterations": 0, "residual": 0.0, "gap": 0.0, "gram": zero}
        )
    Lambda = problem.multiplier
    X0 = -sym(P) if Lambda is None else 2.0 * Lambda.to(torch.float64) / scale
    result = run(P, C, X0)
    info: dict = {"msign_calls": 0, "iterations": result.iterations, "residual": result.residual, "gap": result.gap}
    if with_cg:
        info["cg_steps"] = result.cg_steps
    X, E = result.X, result.E
    assert E is not None  # every loop forms E at its best point
    A = reduced_direction(W, G, (X if K is None else K @ X) * scale, E / scale, exact=result.float64)
    if result.residual > tol:
        # Not converged (a degenerate dual, e.g. a rank-deficient G): project A onto the tangent space and
        # scale it into the unit ball, so the step is exactly tangent and feasible whatever happened.
        A = feasible_tangent(W, A)
        info["residual"] = float(symmetric_rms(W.mT @ A))
        info["repaired"] = True
    else:
        Z = P + X
        info["gram"] = (E @ (Z.mT @ Z + C) @ E).to(A.dtype)  # AᵀA (a projector when A is a partial isometry)
    return Solution(A, 0.5 * scale * X.to(G.dtype), info)


def feasible_tangent(W, A):
    """``(A − W·sym(WᵀA)) / max(1, ‖A − W·sym(WᵀA)‖_op)`` for tall W: the nearest tangent direction, made feasible."""
    T = Stiefel().tangent(W, A)
    return T / max(1.0, float(torch.linalg.matrix_norm(T.to(torch.float64), ord=2)))


def reduced_direction(W, G, X, E, exact: bool = True):
    """``A = (G + WX)E`` from float64 n×n factors X and E ≈ M^{-1/2}, returned in G's dtype (float32 at least).

    ``exact`` forms it in float64: near a degenerate optimum E has entries up to 1/s_min, and G·E and W·(XE)
    cancel to A's size, which float32 products would leave ~1e-7·‖E‖ off (‖A‖_op > 1 + 1e-5). Solvers pass
    ``exact=False`` (float32 products, cheaper) only for a well-conditioned M (s_min/s_max >= 1e-3)."""
    dtype = torch.promote_types(G.dtype, torch.float32)
    if exact:
        return (G.to(torch.float64) @ E + W.to(torch.float64) @ (X @ E)).to(dtype)
    return G.to(dtype) @ E.to(dtype) + W.to(dtype) @ (X @ E).to(dtype)
