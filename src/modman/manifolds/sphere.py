"""The hypersphere: the whole tensor, or each slice along ``dim`` (e.g. each embedding row), has norm r."""

from __future__ import annotations

import torch

from ..errors import UserError
from .base import Manifold, check_radius

__all__ = ["Sphere"]


class Sphere(Manifold):
    """``{W : ‖W‖_F = r}`` (``dim=None``) or ``{W : ‖W_i‖₂ = r for every slice along dim}``.

    Args:
        radius: the norm r of the whole tensor or of each slice.
        dim: ``None`` for the whole tensor; an int or tuple of ints for the dims a slice spans
            (``dim=-1`` puts each row of an embedding matrix on its own sphere).
    """

    def __init__(self, radius: float = 1.0, dim: int | tuple[int, ...] | None = None):
        self.radius = check_radius(radius, "Sphere")
        if dim is not None and not isinstance(dim, (int, tuple)):
            raise TypeError(f"Sphere: dim must be None, an int or a tuple of ints; got {dim!r}")
        self.dim = dim

    def slice_dims(self, W: torch.Tensor) -> tuple[int, ...]:
        """The dims one slice of W spans (all of them for ``dim=None``)."""
        if W.ndim == 0:
            raise UserError("Sphere: a 0-D tensor has no sphere to live on; use Euclidean for scalars")
        if self.dim is None:
            return tuple(range(W.ndim))
        dims = (self.dim,) if isinstance(self.dim, int) else self.dim
        for d in dims:
            if not -W.ndim <= d < W.ndim:
                raise UserError(f"Sphere(dim={self.dim!r}) does not fit a tensor of shape {tuple(W.shape)}")
        return dims

    def slice_norms(self, W: torch.Tensor) -> torch.Tensor:
        """The norm of each slice, shaped to broadcast against W."""
        return torch.linalg.vector_norm(W, dim=self.slice_dims(W), keepdim=True)

    def slice_inner(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """⟨X_i, Y_i⟩ per slice, shaped to broadcast against X."""
        return (X * Y).sum(dim=self.slice_dims(X), keepdim=True)

    def project(self, W: torch.Tensor) -> torch.Tensor:
        """``r·W/‖W‖`` per slice; a zero slice becomes the constant vector of norm r; an empty W stays empty."""
        if W.numel() == 0:
            return W.clone()
        norms = self.slice_norms(W)
        count = W.numel() // max(norms.numel(), 1)
        fill = torch.full_like(W, self.radius / count**0.5)
        return torch.where(norms == 0, fill, W * (self.radius / norms.clamp_min(torch.finfo(W.dtype).tiny)))

    def tangent(self, W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """``G − W⟨W, G⟩/‖W‖²`` per slice: removes the radial part."""
        sq = self.slice_inner(W, W).clamp_min(torch.finfo(W.dtype).tiny)
        return G - W * (self.slice_inner(W, G) / sq)

    def retract(self, W: torch.Tensor) -> torch.Tensor:
        return self.project(W)

    @torch.no_grad()
    def violation(self, W: torch.Tensor) -> float:
        """``max_i |‖W_i‖/r − 1|`` (0 for an empty W)."""
        if W.numel() == 0:
            return 0.0
        norms = torch.linalg.vector_norm(W.to(torch.float64), dim=self.slice_dims(W))
        return float((norms / self.radius - 1).abs().max())
