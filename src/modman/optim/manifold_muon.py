"""Manifold Muon as an optimizer: spectral-norm steepest descent that stays on the Stiefel manifold."""

from __future__ import annotations

import torch

from ..manifolds import Stiefel
from ..rules import manifold_muon_direction
from .base import ManifoldOptimizer

__all__ = ["ManifoldMuon"]


class ManifoldMuon(ManifoldOptimizer):
    r"""``W ← r·msign(W − ηA)``, ``A = argmax{⟨M, A⟩ : ‖A‖_op ≤ 1, WᵀA + AᵀW = 0}`` on ``WᵀW = r²I``.

    M is the gradient or its (Nesterov) momentum. The direction comes from ``solver`` (seed 003's dual
    ascent by default) and the dual multiplier Λ is kept in the state to warm-start the next step
    (``warm_start=True``). Weights are projected onto the Stiefel manifold (exact polar factor) when
    the optimizer is built, as the seed does before training; ``step`` never re-projects. Conv kernels
    are treated as (out, in·kh·kw) matrices. Diagnostics: ``residual`` (RMS of WᵀA + AᵀW),
    ``iterations`` and ``msign_calls`` (solver + retraction) of the last step.
    """

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
                 radius: float = 1.0, alpha: float = 0.01, steps: int = 100, tol: float = 1e-6,
                 solver: str = "dual_ascent", warm_start: bool = True, msign_method: str = "polar_express",
                 msign_steps: int | None = 10, msign_dtype: torch.dtype | None = None, *,
                 skip_nonfinite: bool = False):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, radius=radius, alpha=alpha, steps=steps,
                        tol=tol, solver=solver, warm_start=warm_start, msign_method=msign_method,
                        msign_steps=msign_steps, msign_dtype=msign_dtype)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _init_param(self, W, group):
        W.copy_(Stiefel(group["radius"]).project(W))

    def _update(self, W, G, state, group):
        M = self._momentum(G, state, group)
        if not bool(M.any()):  # nothing to follow: keep W bit for bit (no retraction rounding)
            state.update(msign_calls=0, iterations=0, residual=0.0)
            return
        r, msign_fn = group["radius"], self._msign_fn(group)
        compute = torch.promote_types(W.dtype, torch.float32)
        warm = state.get("multiplier") if group["warm_start"] else None
        A, info = manifold_muon_direction(
            W.to(compute) / r, M.to(compute), alpha=group["alpha"], steps=group["steps"], tol=group["tol"],
            solver=group["solver"], multiplier=None if warm is None else warm.to(compute), msign_fn=msign_fn,
        )
        W.copy_(r * msign_fn(W.to(compute) - group["lr"] * A))
        state["multiplier"] = info["multiplier"].to(W.dtype)
        state.update(msign_calls=info["msign_calls"] + 1, iterations=info["iterations"], residual=info["residual"])
