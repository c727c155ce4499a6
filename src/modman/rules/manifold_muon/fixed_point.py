"""Su's fixed point for manifold Muon on the reduced problem, with Anderson acceleration.

Every iteration works on n×n matrices only: one float64 ``eigh(M)`` gives ``Σ = M^{1/2}``, the residual, and
the Lyapunov solve ``ΣX + XΣ = −(ΣP + PᵀΣ)`` for the next X; Anderson acceleration mixes the last iterates.
The m×n work is two Gram products before and ``A = (G + WX)M^{-1/2}`` after: no m×n msign at all, and A has
orthonormal columns whenever M is non-singular. Jianlin Su, *Steepest descent on manifolds 3: Muon + Stiefel*
(kexue.fm/archives/11221).
"""

from __future__ import annotations

import math

import torch

from ...manifolds.stiefel import sym
from .newton import gram_eig
from .problem import Problem, Solution
from .reduced import LoopResult, certificate, inv_sqrt, regularised, solve_reduced

__all__ = ["fixed_point", "fixed_point_loop", "lyapunov_step", "Anderson"]


def fixed_point(problem: Problem, memory: int = 10) -> Solution:
    """Su's fixed point with Anderson(``memory``) acceleration, on the reduced float64 problem.

    Stops when both the residual RMS(WᵀA + AᵀW) and the certified relative duality gap are below
    ``tol`` (see ``certificate``; the gap is only evaluated once the residual is small), from the problem's
    multiplier (in G's units) or the blog's guess; at most ``steps`` iterations, no msign.
    """
    steps, tol = problem.steps, problem.tol
    return solve_reduced(problem, lambda P, C, X: fixed_point_loop(P, C, X, steps, tol, memory))


def fixed_point_loop(P, C, X, steps, tol, memory: int = 10, resume: dict | None = None):
    """Anderson-mixed fixed point from X; the ``LoopResult`` of its best iterate (E = M^{-1/2} there).

    ``resume`` (a dict, updated in place) carries the next iterate (``"X"``; None once certified) and the
    Anderson history (``"mix"``), so that a later call continues exactly where this one stopped."""
    n = P.shape[-1]
    C_reg = regularised(C)
    mix = Anderson(memory) if resume is None or "mix" not in resume else resume["mix"]
    best = ((math.inf, math.inf), X, None, math.inf, math.inf, 0.0)
    for k in range(steps):  # noqa: B007 - the count is reported after the loop
        _, lam, V = gram_eig(P, C_reg, X)
        s = lam.sqrt()
        E = inv_sqrt(V, s)
        residual, gap = certificate(P, C, X, V, s, E, with_gap=False)
        if residual < tol:
            residual, gap = certificate(P, C, X, V, s, E, with_gap=True, tol=tol)
        if (gap, residual) < best[0]:  # the certified gap decides once known, the residual before that
            best = ((gap, residual), X, E, residual, gap, float(s.min() / s.max()))
        if residual < tol and gap < tol:
            break
        X = mix(X.reshape(-1), (lyapunov_step(P, V, s) - X).reshape(-1)).reshape(n, n)
        X = sym(X)
    if resume is not None:  # the next iterate, or None where this one certified
        resume.update(X=None if residual < tol and gap < tol else X, mix=mix)
    _, X, E, residual, gap, conditioning = best
    return LoopResult(X, E, residual, gap, iterations=k + 1, float64=conditioning < 1e-3)


def lyapunov_step(P, V, s):
    """Solve ``ΣX + XΣ = −(ΣP + PᵀΣ)`` for symmetric X in the eigenbasis of ``Σ = V diag(s) Vᵀ``.

    In that basis ``Vᵀ(ΣP + PᵀΣ)V = diag(s)·P̃ + P̃ᵀ·diag(s)`` with ``P̃ = VᵀPV``: four n×n products in all."""
    Pv = V.mT @ P @ V
    rhs = s[:, None] * Pv + Pv.mT * s[None, :]
    den = s[:, None] + s[None, :]
    X = V @ (-rhs / torch.where(den > 0, den, torch.ones_like(den))) @ V.mT
    return sym(X)


class Anderson:
    """Type-II Anderson mixing ``x + f − (ΔX + ΔF)γ``, γ the least-squares fit of f by ΔF, over the last
    ``memory`` differences, kept as rows of ring buffers (each iteration writes one contiguous row; no
    (n², memory) temporaries)."""

    def __init__(self, memory: int):
        self.memory, self.count = memory, 0
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None
        self.dX: torch.Tensor | None = None
        self.dF: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        if self.last is not None:
            if self.dX is None or self.dF is None:
                self.dX = x.new_empty((self.memory, x.numel()))
                self.dF = x.new_empty((self.memory, x.numel()))
            j = self.count % self.memory
            torch.sub(x, self.last[0], out=self.dX[j])
            torch.sub(f, self.last[1], out=self.dF[j])
            self.count += 1
        self.last = (x, f)
        k = min(self.count, self.memory)
        if k == 0:
            return x + f
        assert self.dX is not None and self.dF is not None  # k > 0: a difference was stored
        dX, dF = self.dX[:k], self.dF[:k]
        # Regularised normal equations: tiny (memory x memory), and the same code on every device.
        gram = dF @ dF.mT
        ridge = 1e-12 * gram.diagonal().sum().clamp_min(torch.finfo(gram.dtype).tiny)
        gamma = torch.linalg.solve(gram + ridge * torch.eye(k, dtype=gram.dtype, device=gram.device), dF @ f)
        return x + f - gamma @ dX - gamma @ dF
