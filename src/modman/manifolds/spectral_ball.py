"""The spectral-norm ball: matrices whose largest singular value is at most r."""

from __future__ import annotations

import torch

from .base import Manifold, check_radius, require_matrix

__all__ = ["SpectralBall"]


class SpectralBall(Manifold):
    """``{W : σ_max(W) ≤ r}`` — a convex set with non-empty interior.

    ``project`` clips the singular values, ``U min(Σ, r) Vᵀ`` (float64 SVD; the Frobenius-nearest
    point). The set is full-dimensional, so ``tangent(W, G) = G``: at the boundary a step that leaves
    the ball is brought back by ``retract`` (the same clip).
    """

    def __init__(self, radius: float = 1.0):
        self.radius = check_radius(radius, "SpectralBall")

    def project(self, W: torch.Tensor) -> torch.Tensor:
        require_matrix(W, "SpectralBall")
        if W.numel() == 0:
            return W.clone()
        U, S, Vh = torch.linalg.svd(W.to(torch.float64), full_matrices=False)
        clipped = (U * S.clamp_max(self.radius).unsqueeze(-2)) @ Vh
        # Matrices already inside the ball are returned bit for bit.
        inside = (S.amax(dim=-1) <= self.radius)[..., None, None]
        return torch.where(inside, W, clipped.to(W.dtype))

    def tangent(self, W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        require_matrix(W, "SpectralBall")
        return G.clone()

    def retract(self, W: torch.Tensor) -> torch.Tensor:
        return self.project(W)

    @torch.no_grad()
    def violation(self, W: torch.Tensor) -> float:
        """``max(0, σ_max/r − 1)``."""
        require_matrix(W, "SpectralBall")
        s = torch.linalg.matrix_norm(W.to(torch.float64), ord=2)
        return float((s / self.radius - 1).clamp_min(0).max())
