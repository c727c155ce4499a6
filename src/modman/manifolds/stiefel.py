"""The Stiefel manifold of matrices with orthonormal columns (tall) or rows (wide), scaled by r."""

from __future__ import annotations

import torch

from ..errors import UserError
from ..msign import METHODS, msign
from .base import Manifold, check_radius, require_matrix

__all__ = ["Stiefel", "as_tall", "sym"]


def as_tall(X: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(X, False)`` when X is tall or square, ``(Xᵀ, True)`` when it is wide (last two dims)."""
    wide = X.size(-2) < X.size(-1)
    return (X.mT if wide else X), wide


def sym(X: torch.Tensor) -> torch.Tensor:
    """Symmetric part ``(X + Xᵀ)/2`` of a square matrix (or batch)."""
    return 0.5 * (X + X.mT)


class Stiefel(Manifold):
    """``{W ∈ ℝ^{m×n} : WᵀW = r²I}`` for m ≥ n, and ``{W : WWᵀ = r²I}`` for m < n.

    All singular values equal r. ``project`` is the exact polar factor (float64 SVD);
    ``retract`` uses ``msign`` with the configured method (Polar Express in float32 by default),
    which is accurate to ~1e-7 for the well-conditioned matrices W − ηA that an optimizer produces.

    Args:
        radius: the common singular value r.
        retraction: msign method used by ``retract``: ``"polar_express"``, ``"newton_schulz"`` (not
            accurate: leaves singular values in about [0.7, 1.2]) or ``"exact"``.
        retraction_steps: msign steps for ``retract`` (None: the method's default).
    """

    def __init__(self, radius: float = 1.0, retraction: str = "polar_express", retraction_steps: int | None = None):
        self.radius = check_radius(radius, "Stiefel")
        if retraction not in METHODS:
            raise UserError(f"Stiefel: unknown retraction {retraction!r}; choose one of {', '.join(METHODS)}")
        self.retraction = retraction
        self.retraction_steps = retraction_steps

    def project(self, W: torch.Tensor) -> torch.Tensor:
        """``r·U Vᵀ`` from the float64 SVD ``W = U Σ Vᵀ`` (a nearest point, also for rank-deficient W)."""
        require_matrix(W, "Stiefel")
        U, _, Vh = torch.linalg.svd(W.to(torch.float64), full_matrices=False)
        return (self.radius * (U @ Vh)).to(W.dtype)

    def tangent(self, W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """``G − W sym(WᵀG)/r²`` for tall W (transposed for wide): the normal space is ``{W S : S = Sᵀ}``."""
        require_matrix(W, "Stiefel")
        Wt, wide = as_tall(W)
        Gt = G.mT if wide else G
        T = Gt - Wt @ sym(Wt.mT @ Gt) / self.radius**2
        return T.mT if wide else T

    def retract(self, W: torch.Tensor) -> torch.Tensor:
        """``r·msign(W)``."""
        require_matrix(W, "Stiefel")
        return self.radius * msign(W, method=self.retraction, steps=self.retraction_steps)

    def retract_step(
        self, W: torch.Tensor, A: torch.Tensor, eta: float, gram: torch.Tensor | None = None, projector: bool = True
    ) -> tuple[torch.Tensor, bool]:
        """The polar factor of ``V = W − ηA`` from n×n algebra: ``r·V̂ K^{-1/2}``, ``K = V̂ᵀV̂``, V̂ = V/r.

        ``K^{-1/2}`` starts from ``M = I − cΠ``, ``c = 1 − 1/sqrt(1 + η̂²)`` (η̂ = η/r), when the solver gives
        ``gram = Π = AᵀA`` of a partial isometry A tangent at a W on the manifold (then ``K = I + η̂²Π`` and M
        is exact), else (or where that start leaves ``MKM`` more than 1e-5 from I: the A of a bfloat16 msign)
        from the series of ``(I + E)^{-1/2}`` to E⁴ with ``E = K − I`` (error below ‖E‖⁵);
        one Newton–Schulz step on the n×n side, ``M ← M(3I − MKM)/2``, then removes what is left (W's own
        rounding off the manifold, a direction not exactly tangent or isometric) quadratically; the series
        needs none where ‖E‖_∞ <= 0.02 (its error is then below 1e-9; K holds W's own rounding). Two m×n×n
        products (K and V̂M) and a few n×n ones; no msign, unless ``MKM`` is more than 1e-3 from I (η̂ large):
        then ``r·msign(W − ηA)``.

        Args:
            W: the point (tall or wide, on the manifold of radius r up to rounding).
            A: the direction, ``‖A‖_op <= 1`` (tall orientation of ``gram``).
            eta: the step size η.
            gram: ``AᵀA`` when the solver has it, used with ``projector``.
            projector: whether ``gram`` is a projector (A a partial isometry, as every msign output is).

        Returns:
            ``(new_W, used_msign)``.
        """
        require_matrix(W, "Stiefel")
        Wt, wide = as_tall(W / self.radius)
        At = A.mT if wide else A
        e = eta / self.radius
        V = Wt - e * At
        K = V.mT @ V
        eye = torch.eye(Wt.shape[-1], dtype=Wt.dtype, device=Wt.device)
        for start, limit in (("projector", 1e-5), ("series", 1e-3)):
            if start == "projector":
                if not projector or gram is None:
                    continue
                M = eye - (1 - (1 + e * e) ** -0.5) * gram.to(Wt.dtype)
            else:
                E = K - eye  # (I + E)^{-1/2} = I − E/2 + 3E²/8 − 5E³/16 + 35E⁴/128 − …
                M = eye + E @ (-0.5 * eye + E @ (0.375 * eye + E @ (-0.3125 * eye + 0.2734375 * E)))
                if float(E.abs().sum(-1).max()) <= 0.02:  # ‖E‖_op <= 0.02: the series is exact to 1e-9
                    X = self.radius * (V @ M)
                    return (X.mT if wide else X), False
            S = M @ K @ M
            if float((S - eye).abs().max()) <= limit:
                X = self.radius * (V @ (M @ (1.5 * eye - 0.5 * S)))
                return (X.mT if wide else X), False
        return self.retract(W - eta * A), True

    @torch.no_grad()
    def violation(self, W: torch.Tensor) -> float:
        """``max_i |σ_i(W)/r − 1|`` (float64; 0 for an empty W)."""
        require_matrix(W, "Stiefel")
        if W.numel() == 0:
            return 0.0
        s = torch.linalg.svdvals(W.to(torch.float64))
        return float((s / self.radius - 1).abs().max())
