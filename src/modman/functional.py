"""The update functions of the blog's reference code, same signatures and defaults, and one-call forms of the
constrained-Muon family: ``W_new = retract(W − ηA)``.

Each takes a weight W and its gradient G and returns the new weight; none writes its arguments.
"""

from __future__ import annotations

from functools import partial

import torch

from .manifolds import SpectralBall, SpectralSphere, Sphere
from .msign import msign
from .optim.constrained import hyperball_update
from .rules import hyperspherical_direction, manifold_muon_direction, muon_direction
from .rules.spectral_sphere import SSO_MAX_EVALS, sso_direction

__all__ = [
    "hyperspherical_descent",
    "manifold_muon",
    "muon",
    "spectral_descent",
    "spectral_sphere_step",
    "hyperball_step",
    "spel_step",
]


@torch.no_grad()
def hyperspherical_descent(W: torch.Tensor, G: torch.Tensor, eta: float = 0.1) -> torch.Tensor:
    """``W ← (W − ηA)/‖W − ηA‖`` with ``A = T/‖T‖``, ``T = G − W⟨W, G⟩`` (the whole tensor on the unit sphere).

    With ``eta=0`` and a zero G this is the blog's projection onto the sphere.
    """
    sphere = Sphere(1.0)
    A, _ = hyperspherical_direction(W, G, sphere)
    return sphere.retract(W - eta * A)


@torch.no_grad()
def manifold_muon(
    W: torch.Tensor,
    G: torch.Tensor,
    eta: float = 0.1,
    alpha: float = 0.01,
    steps: int | None = None,
    tol: float = 1e-6,
    *,
    solver: str = "certified",
    return_info: bool = False,
    multiplier: torch.Tensor | None = None,
    msign_steps: int = 10,
    msign_method: str = "polar_express",
    msign_dtype: torch.dtype | None = None,
):
    """``W ← msign(W − ηA)`` with A the manifold Muon direction (W on the unit Stiefel manifold).

    ``solver="dual_ascent"`` is the blog's algorithm; the default ``"certified"`` is the closed form for
    square W and otherwise Newton on the reduced dual (straight away where the dual is smooth, after the
    fixed point where it is not; ``modman.rules.manifold_muon``): one call has no multiplier of a
    previous step to start from, which the optimizers' ``"auto"`` (``tracking`` on non-square W) needs.
    With the blog's solver, ``msign_dtype=torch.bfloat16`` runs the blog's half-precision msign (each
    product rounded once, as torch.optim.Muon does; the default computes msign in float32). With ``eta=0`` and a zero
    G this is the blog's
    projection onto Stiefel.

    Returns:
        The new weight, or ``(new_W, info)`` with ``return_info=True``; info has ``msign_calls``
        (solver calls plus the retraction), ``iterations``, ``residual`` (RMS of WᵀA + AᵀW),
        ``direction`` (A, in W's orientation) and ``multiplier`` (Λ, n×n with n = min(m, n)).
    """
    msign_fn = partial(msign, steps=msign_steps, method=msign_method, dtype=msign_dtype)
    A, info = manifold_muon_direction(
        W, G, alpha=alpha, steps=steps, tol=tol, solver=solver, multiplier=multiplier, msign_fn=msign_fn
    )
    new_W = msign_fn(W - eta * A)
    if not return_info:
        return new_W
    info["msign_calls"] += 1
    info.pop("gram", None)
    info["direction"] = A
    return new_W, info


@torch.no_grad()
def muon(
    W: torch.Tensor,
    G: torch.Tensor,
    eta: float = 0.02,
    *,
    msign_steps: int | None = None,
    msign_method: str = "polar_express",
) -> torch.Tensor:
    """``W ← W − η·msign(G)`` (no momentum; see ``modman.optim.Muon`` for the optimizer)."""
    A, _ = muon_direction(G, msign_fn=partial(msign, steps=msign_steps, method=msign_method))
    return W - eta * A


@torch.no_grad()
def spectral_descent(
    W: torch.Tensor,
    G: torch.Tensor,
    eta: float = 0.1,
    radius: float = 1.0,
    *,
    msign_steps: int | None = None,
    msign_method: str = "polar_express",
) -> torch.Tensor:
    """``W ← clip_r(W − η·msign(G))``: Muon's step, then singular values clipped to at most r."""
    A, _ = muon_direction(G, msign_fn=partial(msign, steps=msign_steps, method=msign_method))
    return SpectralBall(radius).retract(W - eta * A)


@torch.no_grad()
def spectral_sphere_step(
    W: torch.Tensor,
    G: torch.Tensor,
    eta: float = 0.02,
    radius: float = 1.0,
    *,
    tangent: bool = False,
    msign_steps: int | None = None,
    msign_method: str = "polar_express",
) -> torch.Tensor:
    """``W ← R·V/σ_max(V)``, ``V = W − η·R·Φ``: the spectral sphere σ_max = R (``modman.optim.SpectralSphere``).

    ``Φ = msign(G)``, or with ``tangent=True`` SSO's ``msign(G + λΘ)`` tangent at W (Θ = u₁v₁ᵀ of W, λ solved
    from scratch, what is left of ⟨Θ, Φ⟩ projected out). σ_max and u₁, v₁ come from float64 SVDs (one call has
    no singular vector of a previous step to start from). A W off the sphere is moved from as it is.
    """
    fn = partial(msign, steps=msign_steps, method=msign_method)
    sphere = SpectralSphere(radius)
    if tangent:
        U, _, Vh = torch.linalg.svd(W.to(torch.float64), full_matrices=False)
        M = G.to(torch.promote_types(G.dtype, torch.float32)).unsqueeze(0)
        u, v = U[..., :, 0].to(M.dtype).unsqueeze(0), Vh[..., 0, :].to(M.dtype).unsqueeze(0)
        phi = sso_direction(M, u, v, fn, max_evals=SSO_MAX_EVALS)[0][0].to(W.dtype)
    else:
        phi, _ = muon_direction(G, msign_fn=fn)
    return sphere.retract(W - (eta * sphere.radius) * phi)


@torch.no_grad()
def hyperball_step(
    W: torch.Tensor,
    G: torch.Tensor,
    eta: float = 0.01,
    norm: float | None = None,
    *,
    msign_steps: int | None = None,
    msign_method: str = "polar_express",
) -> torch.Tensor:
    """``W ← R·V/‖V‖_F``, ``V = W − η·R·U/‖U‖_F``, ``U = msign(G)``; R = ``norm``, or ‖W‖_F when None
    (``modman.optim.Hyperball``)."""
    U, _ = muon_direction(G, msign_fn=partial(msign, steps=msign_steps, method=msign_method))
    R = torch.linalg.vector_norm(W) if norm is None else norm
    return hyperball_update(W, U, eta, R)


@torch.no_grad()
def spel_step(
    W: torch.Tensor,
    G: torch.Tensor,
    eta: float = 0.05,
    radius: float = 1.0,
    *,
    msign_steps: int | None = None,
    msign_method: str = "polar_express",
) -> torch.Tensor:
    """``W ← r·msign(W − η·msign(G))``: Muon's step, then the polar factor (``modman.optim.SPEL``)."""
    fn = partial(msign, steps=msign_steps, method=msign_method)
    A, _ = muon_direction(G, msign_fn=fn)
    return radius * fn(W - eta * A)
