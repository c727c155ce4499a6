"""Smoothing Newton solver for the manifold Muon dual, robust where the fixed point stalls (aspect < ~2.5).

With ``Ĝ = G/‖G‖_F``, ``P = WᵀĜ``, ``C = ĜᵀĜ − PᵀP`` (see ``reduced``) the dual is
``min_X ‖Ĝ + WX‖_* = tr(M(X)^{1/2})``, ``M = (P+X)ᵀ(P+X) + C``, over symmetric X. When r = m − n < n its
minimiser can make M singular (the optimal A is then not a partial isometry), where the fixed point
``A = (Ĝ + WX)M^{-1/2}`` has no limit. Smoothing replaces the dual by the convex, twice differentiable

    F_μ(X) = tr((M(X) + μI)^{1/2}),   ∇F_μ = sym((P+X)(M+μI)^{-1/2}),

whose minimiser gives ``A_μ = (Ĝ + WX)(M + μI)^{-1/2}``: exactly tangent, singular values < 1, so feasible, and
within O(μ) (O(√μ) when degenerate) of optimal. Newton's method minimises F_μ for μ = 1e-2/n, 1e-3/n, ...
(each stage warm-starting the next) until the certificate (residual and duality gap) meets the tolerance. A
stage ends at residual < 1e-2·tol, or already at residual < tol where the certified gap is > 10·tol (there μ,
not the residual, sets the gap) or, at the floor μ = 1e-8/n, where a larger μ already certified a smaller gap.
Everything between eigensolves happens in the eigenbasis of M: the residual and gradient come from
``VᵀZV``, and the Newton system is solved there by conjugate gradients, where one Hessian product costs
two n×n products and the fixed point's Lyapunov step is an exact, diagonal preconditioner of its first term.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ...manifolds.stiefel import sym
from .problem import Problem, Solution
from .reduced import LoopResult, solve_reduced, well_conditioned
from .reduced import certificate as certify

__all__ = ["newton", "newton_loop", "smoothed_newton", "gram_eig", "NewtonResult"]


class Point(NamedTuple):
    """The smoothed dual at X, in the eigenbasis V of M: s0 = sqrt of M's eigenvalues, s = sqrt(s0² + μ),
    ``Ẑ = VᵀZV``, the gradient ``ĝ = sym(Ẑ diag(1/s))``, the residual ``2‖ĝ‖_F/n`` and the gap (inf until
    certified)."""

    X: torch.Tensor
    V: torch.Tensor
    s0: torch.Tensor
    s: torch.Tensor
    Zh: torch.Tensor
    g: torch.Tensor
    residual: float
    gap: float


class NewtonResult(NamedTuple):
    """``smoothed_newton``'s best certified point and what it cost."""

    X: torch.Tensor
    E: torch.Tensor
    residual: float
    gap: float
    iterations: int
    cg_steps: int
    conditioning: float
    stalled: bool


def newton(problem: Problem) -> Solution:
    """Smoothing Newton on the dual (``smoothed_newton``): converges where the fixed point stalls.

    Where C is well-conditioned (``_well_conditioned``) the dual is smooth everywhere and Newton starts at
    the smallest μ = 1e-8/n; otherwise it smooths from μ = 1e-2/n down. ``steps`` caps the Newton
    iterations; info adds ``cg_steps`` (Hessian products, two n×n products each). No msign.
    """
    steps, tol = problem.steps, problem.tol

    def run(P, C, X):
        well = well_conditioned(C)
        return newton_loop(P, C, X, steps, tol, mu0=1e-8 if well else 1e-2, well_conditioned=well)

    return solve_reduced(problem, run, with_cg=True)


def newton_loop(P, C, X, steps, tol, mu0: float = 1e-2, well_conditioned: bool = False, min_progress: float = 0.0):
    """Smoothing Newton from X: the ``LoopResult`` of the best certified point (E = (M + μI)^{-1/2} there).

    Unless C is ``well_conditioned`` (``reduced.well_conditioned``) the certificate uses the exact ‖Ã‖_op (an
    eigensolve each): the cheap bounds are loose for strongly smoothed directions, tight at μ = 1e-8/n on a
    well-conditioned M. Only there may A be formed in float32 (``reduced_direction``): near a singular M
    float32 products loosen the certificate by about an order of magnitude."""

    def certificate(X, V, s, s0, E, with_gap):
        return certify(P, C, X, V, s, E, with_gap, tol if well_conditioned else 0.0, s0=s0)

    r = smoothed_newton(P, C, X, tol=tol, steps=steps, certificate=certificate, mu0=mu0, min_progress=min_progress)
    float64 = not well_conditioned or r.conditioning < 1e-3
    return LoopResult(r.X, r.E, r.residual, r.gap, r.iterations, float64, r.cg_steps, r.stalled)


def gram_eig(P, C, X):
    """``(Z, λ, V)``: Z = P + X and the eigen-decomposition of ``M = ZᵀZ + C`` (eigenvalues clamped at 0)."""
    Z = P + X
    lam, V = torch.linalg.eigh(Z.mT @ Z + C)
    return Z, lam.clamp_min(0), V


def _newton_direction(Zh, s, g, eta: float, max_cg: int, cg_dtype: torch.dtype):
    """``(D, slope, cg_steps)``: the Newton step ``V D Vᵀ`` for F_μ, in the eigenbasis V of M, by preconditioned CG.

    With ``Ẑ = VᵀZV`` and the gradient ``ĝ = sym(Ẑ diag(1/s))`` (both from ``evaluate``), the Hessian is
    ``H[D] = sym(D diag(1/s) + Ẑ (Γ ∘ (ẐᵀD + DẐ)))``, ``Γ_ij = −1/(s_i s_j (s_i + s_j))`` (the divided
    difference of λ^{-1/2}); preconditioner ``2 s_i s_j/(s_i + s_j)``, the inverse of the first term.
    CG runs in ``cg_dtype``: it only needs the step to ~10 %, and the line search judges it in float64.
    Every iterate is symmetric; the updates are fused and in place, since at n ~ 128 a CG step's elementwise
    passes cost more than its two products.
    """
    si, sj = s[:, None], s[None, :]
    half_gamma = -0.5 / (si * sj * (si + sj))
    pre = 2.0 * si * sj / (si + sj)
    g64 = g
    Zh, half_gamma, pre, half_inv, g = (t.to(cg_dtype) for t in (Zh, half_gamma, pre, 0.5 / sj, g))

    def hess(D):  # R + Rᵀ, R = ½(D diag(1/s) + Ẑ(Γ ∘ (ẐᵀD + DẐ))); D is symmetric, so DẐ = (ẐᵀD)ᵀ
        B = Zh.mT @ D
        R = torch.addmm(D * half_inv, Zh, torch.add(B, B.mT).mul_(half_gamma))
        return R.add(R.mT)

    def dot(a, b) -> float:
        return float(torch.dot(a.reshape(-1), b.reshape(-1)))

    r = -g
    target = eta * float(torch.linalg.vector_norm(r))
    D = torch.zeros_like(r)
    z = pre * r
    p, rz = z, dot(r, z)
    steps = 0
    for steps in range(1, max_cg + 1):  # noqa: B007 - the count is reported after the loop
        Hp = hess(p)
        curvature = dot(p, Hp)
        if curvature <= 0:  # rounding at the conditioning limit: keep what we have
            break
        a = rz / curvature
        D.add_(p, alpha=a)
        r.sub_(Hp, alpha=a)
        if float(torch.linalg.vector_norm(r)) <= target:
            break
        z = pre * r
        rz_new = dot(r, z)
        p, rz = z.add_(p, alpha=rz_new / rz), rz_new
    if not torch.isfinite(D).all() or not D.abs().sum() > 0:
        D = -pre * g  # the fixed point's step
    D = D.to(g64.dtype)
    return D, float((g64 * D).sum()), steps


def smoothed_newton(
    P,
    C,
    X,
    *,
    tol: float,
    steps: int,
    certificate,
    mu0: float = 1e-2,
    shrink: float = 0.1,
    mu_min: float = 1e-8,
    max_cg: int = 100,
    stage_steps: int = 10,
    min_progress: float = 0.0,
):
    """Minimise the smoothed dual from X; returns the ``NewtonResult`` of the best certified point:
    ``E = (M + μI)^{-1/2}``, conditioning = s_min/s_max of ``(M + μI)^{1/2}``. With ``min_progress`` > 0 it
    stops (``stalled`` True) after the first Newton step that does not cut the residual to ``min_progress``
    times its value: outside Newton's region of fast convergence.

    ``certificate(X, V, s, s0, E, with_gap)`` gives (residual, gap) for the direction ``(Ĝ + WX)E`` with dual
    value ``Σ s0`` (s0 = sqrt of M's eigenvalues, s = sqrt(s0² + μ)). μ is relative to ``‖Ĝ‖²_F/n = 1/n``;
    below ``mu_min`` the Hessian's conditioning (~μ^{-3/2}) defeats float64.
    """
    n = P.shape[-1]
    mu, floor = mu0 / n, mu_min / n
    # float32 Hessian products from n = 128 (measured 1.7x faster at 384..1024 x 256..512 with the same
    # iterations and gaps); at n = 64 they cost accuracy (gap 1.7e-6 instead of 8.9e-7) and save nothing.
    cg_dtype = torch.float32 if n >= 128 else P.dtype

    def evaluate(X) -> Point:
        return _evaluate(P, C, X, mu)  # at the current μ

    point = evaluate(X)
    best: tuple[float, float, torch.Tensor, torch.Tensor | None, float] = (math.inf, math.inf, X, None, 0.0)
    iterations = cg_total = stalls = stage = 0
    stalled = False
    while True:
        X, V, s0, s, Zh, g, residual, gap = point
        if residual < tol:
            E = _inv_sqrt(V, s)
            residual, gap = certificate(X, V, s, s0, E, True)
            if (gap, residual) < best[:2]:
                best, stalls = (gap, residual, X, E, float(s.min() / s.max())), 0
            if gap < tol:
                break
        if stalled:
            break
        trial = None
        # A stage ends once the residual is 100x under tol, or already at tol where the certified gap is far
        # (> 10 tol) from it: that gap is set by μ, not by the residual, so a further Newton step at this μ buys
        # nothing. At the floor μ cannot shrink, so there the stage goes on (Newton's gap falls with its residual
        # where M is regular) unless a larger μ has already certified a smaller gap, by any margin (M singular: the
        # floor's O(√μ) gap, worse than its O(μ) smoothing error, will not beat it).
        far = residual < tol and (gap > 10 * tol and mu > floor or mu <= floor and gap > max(best[0], tol))
        if not (residual < 1e-2 * tol or far or stage >= stage_steps or iterations >= steps):
            iterations, stage = iterations + 1, stage + 1
            trial, cg = _newton_trial(point, evaluate, max_cg, cg_dtype, t_min=0.5 if min_progress > 0 else 1e-6)
            cg_total += cg
            stalled = min_progress > 0 and (trial is None or trial.residual > min_progress * residual)
            if stalled and trial is None:
                break
        if trial is None:  # this stage is done, or no decrease is left at this μ: smooth less
            if iterations >= steps or mu <= floor or stalls >= 2:
                break
            mu, stalls, stage = max(mu * shrink, floor), stalls + 1, 0
            trial = evaluate(X)
        point = trial
    if best[3] is None:
        best = (gap, residual, X, _inv_sqrt(V, s), float(s.min() / s.max()))
    gap, residual, X, E_best, conditioning = best
    assert E_best is not None  # set just above where no point was certified
    return NewtonResult(X, E_best, residual, gap, iterations, cg_total, conditioning, stalled)


def _evaluate(P: torch.Tensor, C: torch.Tensor, X: torch.Tensor, mu: float) -> Point:
    """Everything in the eigenbasis V of M at smoothing μ (``Point``; gap = inf until certified). The residual
    RMS(T + Tᵀ) of ``T = WᵀA = ZE`` is basis-free, and ``VᵀTV = Ẑ diag(1/s)``, so it is ``2‖ĝ‖_F/n`` with no
    n×n product beyond Ẑ, which the Newton step needs anyway; E only where the gap is certified."""
    n = P.shape[-1]
    Z, lam, V = gram_eig(P, C, X)
    s0, s = lam.sqrt(), (lam + mu).sqrt()
    Zh = V.mT @ Z @ V
    g = sym(Zh / s[None, :])
    return Point(X, V, s0, s, Zh, g, 2.0 * float(torch.linalg.vector_norm(g)) / n, math.inf)


def _inv_sqrt(V: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (V / s) @ V.mT


def _newton_trial(point: Point, evaluate, max_cg: int, cg_dtype: torch.dtype, t_min: float):
    """One damped Newton step from ``point``: ``(the accepted Point or None, CG steps)``. Probing, ``t_min`` = 0.5:
    a step that needs more than one halving is already a stall."""
    eta = min(0.1, math.sqrt(point.residual))
    D, slope, cg = _newton_direction(point.Zh, point.s, point.g, eta=eta, max_cg=max_cg, cg_dtype=cg_dtype)
    dX = sym(point.V @ D @ point.V.mT)
    return _line_search(evaluate, point.X, dX, float(point.s.sum()), slope, point.residual, t_min=t_min), cg


def _line_search(evaluate, X, dX, F, slope, residual, t_min: float = 1e-6):
    """Armijo backtracking on the convex F_μ (never accepting an increase) down to step ``t_min``; where F's
    rounding (1e-13·F) cannot see the predicted decrease, the gradient norm (residual) must fall instead.
    None if nothing does."""
    resolvable = -1e-4 * slope > 1e-13 * F
    t = 1.0
    while t >= t_min:
        trial = evaluate(X + t * dX)  # F_μ = Σ s
        if (float(trial.s.sum()) <= F + 1e-4 * t * slope) if resolvable else trial.residual < residual:
            return trial
        t *= 0.5
    return None
