"""The spectral sphere: matrices whose largest singular value is exactly r."""

from __future__ import annotations

import torch

from .base import Manifold, check_radius, require_matrix

__all__ = ["SpectralSphere"]


def _top_pair(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(σ₁, u₁, v₁) of a (batch of) matrices from the float64 SVD."""
    U, S, Vh = torch.linalg.svd(W.to(torch.float64), full_matrices=False)
    return S[..., 0], U[..., :, 0], Vh[..., 0, :]


class SpectralSphere(Manifold):
    """``{W : σ_max(W) = r}`` — the boundary of the spectral ball ``SpectralBall(r)``.

    At a W whose top singular value is simple the set is a smooth hypersurface with unit normal ``u₁v₁ᵀ``
    (``∂σ_max/∂W = u₁v₁ᵀ``), so ``tangent(W, G) = G − ⟨u₁v₁ᵀ, G⟩·u₁v₁ᵀ``. Where σ₁ is repeated the set has a
    corner and this is the projection for the pair the SVD returns. ``project`` is the Frobenius-nearest point
    (singular values capped at r, the top one set to r); ``retract`` rescales, ``r·W/σ_max(W)`` — the step the
    spectral-sphere optimizers take (Xie et al., *Controlled LLM Training on Spectral Sphere*, arXiv:2601.08393),
    which keeps the shape of the spectrum. Both use a float64 SVD; ``SpectralSphere`` the optimizer estimates
    σ_max by power iteration instead.
    """

    def __init__(self, radius: float = 1.0):
        self.radius = check_radius(radius, "SpectralSphere")

    def project(self, W: torch.Tensor) -> torch.Tensor:
        """``U diag(r, min(σ₂, r), …) Vᵀ`` from the float64 SVD (a zero W goes to ``r·u₁v₁ᵀ`` of the SVD's basis)."""
        require_matrix(W, "SpectralSphere")
        if W.numel() == 0:
            return W.clone()
        U, S, Vh = torch.linalg.svd(W.to(torch.float64), full_matrices=False)
        S = S.clamp_max(self.radius)
        S[..., 0] = self.radius
        return ((U * S.unsqueeze(-2)) @ Vh).to(W.dtype)

    def tangent(self, W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """``G − ⟨Θ, G⟩Θ``, ``Θ = u₁v₁ᵀ`` (top singular pair of W, float64 SVD)."""
        require_matrix(W, "SpectralSphere")
        _, u, v = _top_pair(W)
        theta = (u.unsqueeze(-1) * v.unsqueeze(-2)).to(G.dtype)
        return G - theta * (theta * G).sum(dim=(-2, -1), keepdim=True)

    def retract(self, W: torch.Tensor) -> torch.Tensor:
        """``r·W/σ_max(W)`` (a zero W has no direction to keep: it is projected)."""
        require_matrix(W, "SpectralSphere")
        if W.numel() == 0:
            return W.clone()
        s = torch.linalg.matrix_norm(W.to(torch.float64), ord=2)
        if bool((s == 0).any()):
            return self.project(W)
        return (W.to(torch.float64) * (self.radius / s)[..., None, None]).to(W.dtype)

    @torch.no_grad()
    def violation(self, W: torch.Tensor) -> float:
        """``max |σ_max(W)/r − 1|`` (float64; 0 for an empty W)."""
        require_matrix(W, "SpectralSphere")
        if W.numel() == 0:
            return 0.0
        s = torch.linalg.matrix_norm(W.to(torch.float64), ord=2)
        return float((s / self.radius - 1).abs().max())
