"""Atoms: ``Linear`` (Stiefel, RMS→RMS operator norm) and ``Embed`` (rows on a sphere, largest row RMS norm)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..manifolds import Sphere, Stiefel
from ..msign import msign
from ..rules import hyperspherical_direction, manifold_muon_direction
from .module import Atom

__all__ = ["Linear", "Embed"]


def _generator(seed: int | None) -> torch.Generator | None:
    return torch.Generator().manual_seed(seed) if seed is not None else None


class Linear(Atom):
    manifold: Stiefel
    """``x ↦ x Wᵀ`` with W (out × in) on the Stiefel manifold of radius √(out/in).

    Every singular value is √(out/in), so the RMS→RMS operator norm ``‖W‖ = √(in/out)·σ_max(W)`` is 1:
    sensitivity 1, and a unit-RMS input gives an output of RMS ≤ 1 (= 1 when out ≥ in).
    Update direction (unit norm): ``Δ = √(out/in)·A`` with ``A`` the manifold Muon direction at W/r
    (``tangent=True``) or ``A = msign(G)`` (Muon, ``tangent=False``).

    Args are torch's order: ``Linear(in_features, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        mass: float = 1.0,
        seed: int | None = None,
        solver: str = "auto",
        tol: float = 1e-6,
        steps: int | None = None,
    ):
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or v < 1:
                raise UserError(f"Linear: {name} must be an integer >= 1; got {v!r}")
        manifold = Stiefel(math.sqrt(out_features / in_features))
        super().__init__(manifold.project(torch.randn(out_features, in_features, generator=_generator(seed))), mass)
        self.in_features, self.out_features = in_features, out_features
        self.manifold = manifold
        self.solver, self.tol, self.steps = solver, tol, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)  # (..., in) -> (..., out)

    def weight_norm(self, w: torch.Tensor) -> torch.Tensor:
        return math.sqrt(self.in_features / self.out_features) * torch.linalg.matrix_norm(w.double(), ord=2)

    def direction(self, g: torch.Tensor, *, tangent: bool = True, state: dict | None = None) -> torch.Tensor:
        """``state`` (kept by the optimizer between steps): the solve warm-starts from its ``"multiplier"`` Λ
        and leaves the new one there, with the solver's ``"iterations"`` and ``"residual"``."""
        r = self.manifold.radius
        if tangent:
            W = self.weight.detach()
            warm = None if state is None else state.get("multiplier")
            A, info = manifold_muon_direction(
                (W / r).to(g.dtype),
                g,
                solver=self.solver,
                tol=self.tol,
                steps=self.steps,
                multiplier=None if warm is None else warm.to(g.dtype),
            )
            if state is not None:
                state["multiplier"] = info["multiplier"]
                state.update(iterations=info["iterations"], residual=info["residual"])
        else:
            A = msign(g)
        return r * A

    def retract_step(self, delta: torch.Tensor, lr: float) -> torch.Tensor:
        r = self.manifold.radius  # W − lr·Δ = W − (lr·r)·A with A = Δ/r, ‖A‖_op ≤ 1
        W, _ = self.manifold.retract_step(self.weight.detach(), delta / r, lr * r)
        return W

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mass={self.mass:g}"


class Embed(Atom):
    manifold: Sphere
    """``i ↦ E[i]`` with each row of E (num × dim) on the sphere of radius √dim (RMS norm 1).

    Norm: the largest row RMS norm ``max_i ‖E_i‖₂/√dim``, so ``‖ΔE[i]‖_RMS ≤ ‖ΔE‖``; sensitivity 1.
    Update direction: every row normalised to RMS 1, after removing its radial part when ``tangent``
    (hyperspherical descent per row).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, mass: float = 1.0, seed: int | None = None):
        for name, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(v, int) or v < 1:
                raise UserError(f"Embed: {name} must be an integer >= 1; got {v!r}")
        manifold = Sphere(math.sqrt(embedding_dim), dim=-1)
        super().__init__(manifold.project(torch.randn(num_embeddings, embedding_dim, generator=_generator(seed))), mass)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.manifold = manifold

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.weight)  # (...) -> (..., dim)

    def weight_norm(self, w: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(w.double(), dim=-1).max() / math.sqrt(self.embedding_dim)

    def direction(self, g: torch.Tensor, *, tangent: bool = True, state: dict | None = None) -> torch.Tensor:
        unit_rows = Sphere(1.0, dim=-1)
        if tangent:
            A, _ = hyperspherical_direction(self.weight.detach().to(g.dtype), g, unit_rows)
        else:
            norms = unit_rows.slice_norms(g)
            A = torch.where(norms > 0, g / norms.clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(g))
        return math.sqrt(self.embedding_dim) * A

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, mass={self.mass:g}"
