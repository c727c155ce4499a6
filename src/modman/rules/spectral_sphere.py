"""The spectral sphere's two computations: σ_max by warm-started Lanczos, and SSO's tangent multiplier.

Xie et al., *Controlled LLM Training on Spectral Sphere* (arXiv:2601.08393): weights keep ``σ_max(W) = R``;
the update is the steepest unit-spectral-norm direction tangent to the sphere,
``Φ = argmax {⟨M, Φ⟩ : ‖Φ‖_op ≤ 1, ⟨Θ, Φ⟩ = 0}`` with ``Θ = u₁v₁ᵀ`` (the sphere's normal at W), which is
``Φ = msign(M + λΘ)`` for the root λ of the non-decreasing ``h(λ) = ⟨Θ, msign(M + λΘ)⟩`` (the derivative of
the dual function ``‖M + λΘ‖_*``, convex in λ).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

__all__ = ["gram", "lanczos_top", "start_vector", "top_eigenpair", "sso_direction", "SSO_TOL", "SSO_MAX_EVALS"]

SSO_TOL = 1e-3  # |h| below which a multiplier is accepted (h ∈ [−1, 1]; bfloat16 msign rounds it at ~1e-3)
SSO_MAX_EVALS = 30  # msign evaluations a cold solve (no multiplier yet) may take


def gram(V: torch.Tensor) -> torch.Tensor:
    """``VᵀV`` for tall or square V, ``VVᵀ`` for wide: the smaller Gram matrix, whose top eigenvalue is σ_max²."""
    return V.mT @ V if V.shape[-2] >= V.shape[-1] else V @ V.mT


def lanczos_top(V: torch.Tensor, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(λ_max, x')`` of V's smaller Gram matrix K (``gram(V)``, never formed) by ``steps`` Lanczos steps from x.

    The Krylov space of x, Kx, …, K^{k−1}x (fully reorthogonalized) holds a far sharper polynomial filter than
    the power iteration's K^{k−1}: its Ritz value converges like ``exp(−4k·sqrt(gap))`` against
    ``(1 − gap)^{2k}`` (gap = 1 − λ₂/λ₁). Products with K only, then the k×k tridiagonal's top eigenpair
    (float64); ``Kq = Aᵀ(Aq)`` with A = V in its tall orientation, two matrix–vector products per step instead
    of the m·n² product K costs. A breakdown (x spans an invariant subspace) ends the space. Start from the last
    step's top vector plus a fixed generic one (``start_vector``): a top eigenvector alone spans nothing else
    and misses a singular value that has just crossed it.
    """
    A = V if V.shape[-2] >= V.shape[-1] else V.mT
    n = A.shape[-1]
    k = max(1, min(steps, n))
    tiny = torch.finfo(V.dtype).tiny
    # Row vectors throughout: (1, n) @ (n, n) runs ~60x faster than (n, n) @ (n, 1) in batched CPU matmul.
    Q = V.new_zeros(*V.shape[:-2], k, n)
    q = (x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(tiny)).unsqueeze(-2)
    alphas, betas = [], []
    scale = None  # the largest Rayleigh quotient so far: a breakdown is ‖w‖ <= 1e-6 of it
    for j in range(k):
        Q[..., j : j + 1, :] = q
        w = (q @ A.mT) @ A  # (AᵀAq)ᵀ
        alphas.append((w * q).sum((-2, -1)))
        scale = alphas[-1].abs() if scale is None else torch.maximum(scale, alphas[-1].abs())
        basis = Q[..., : j + 1, :]
        for _ in range(2):  # full reorthogonalization; twice is enough (Kahan–Parlett)
            w = w - (w @ basis.mT) @ basis
        b = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        alive = b > 1e-6 * scale[..., None, None]
        q = torch.where(alive, w / b.clamp_min(tiny), torch.zeros_like(w))
        betas.append(torch.where(alive, b, torch.zeros_like(b))[..., 0, 0])
    T = torch.diag_embed(torch.stack(alphas, -1).to(torch.float64))
    if not bool(torch.isfinite(T).all()):  # a non-finite step: NaN out, for the optimizer's check to report
        return _nan_pair(Q.mT @ Q)
    if k > 1:
        off = torch.stack(betas[:-1], -1).to(torch.float64)
        T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    evals, evecs = torch.linalg.eigh(T)
    x = (evecs[..., :, -1].to(V.dtype).unsqueeze(-2) @ Q).squeeze(-2)
    return evals[..., -1].to(V.dtype), x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(tiny)


@functools.lru_cache(maxsize=64)
def start_vector(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A fixed generic unit vector of length n (seeded: every rank and run alike; random, so it has a share of
    every eigenvector except with probability 0). Cached: callers must not write into it."""
    v = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (v / torch.linalg.vector_norm(v)).to(dtype=dtype, device=device)


def top_eigenpair(K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(λ_max, x)`` of symmetric K (..., n, n) from its eigendecomposition (in float32 λ_max is within ~n·eps of
    float64's)."""
    if not bool(torch.isfinite(K).all()):  # a non-finite step: NaN out, for the optimizer's check to report
        return _nan_pair(K)
    evals, evecs = torch.linalg.eigh(K)
    return evals[..., -1], evecs[..., :, -1]


def _nan_pair(K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    nan = float("nan")
    return K.new_full(K.shape[:-2], nan), K.new_full(K.shape[:-1], nan)


def _h(X: torch.Tensor, theta: torch.Tensor, lam: torch.Tensor, msign_fn) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Φ, h) = (msign(X + λΘ), ⟨Θ, Φ⟩)`` for a batch."""
    phi = msign_fn(X + lam[:, None, None] * theta)
    return phi, (theta * phi.to(theta.dtype)).sum(dim=(-2, -1))


def sso_direction(
    M: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    msign_fn: Callable[[torch.Tensor], torch.Tensor],
    lam: torch.Tensor | None = None,
    slope: torch.Tensor | None = None,
    *,
    evals: int = 2,
    tol: float = SSO_TOL,
    max_evals: int = SSO_MAX_EVALS,
    clean: bool = True,
) -> tuple[torch.Tensor, dict]:
    """``Φ = msign(X + λΘ) − h·Θ`` with ``X = M/‖M‖_F``, ``Θ = u vᵀ``, λ the root of ``h(λ) = ⟨Θ, msign(X + λΘ)⟩``.

    Warm (``lam`` and ``slope`` from the last step): secant steps from λ, the first along the stored slope,
    ``evals`` msign evaluations at most, none after ``|h| <= tol``. Cold (``slope`` None or not positive): a
    bracket around 0 widened until h changes sign, then Illinois regula falsi, to ``tol`` or ``max_evals``.
    ``clean`` removes what is left of ⟨Θ, Φ⟩ (``h·Θ``, |h| <= tol once solved), so Φ is tangent to rounding.

    Args:
        M: (b, m, n) momenta. u: (b, m), v: (b, n) unit top singular vectors of the weights.
        msign_fn: the msign to use. lam, slope: (b,) the last step's multiplier and ``h'`` estimate.
    Returns:
        ``(Φ, info)``, info: ``lam`` (the multiplier predicted for the next step: a Newton step past the last
        evaluation), ``slope`` (b,) for the next step, ``h`` (b,) before cleaning,
        ``msign_calls`` (evaluations).
    """
    dtype = torch.promote_types(M.dtype, torch.float32)
    X = M.to(dtype)
    X = X / torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    theta = u.to(dtype).unsqueeze(-1) * v.to(dtype).unsqueeze(-2)
    b = M.shape[0]
    cold = slope is None or lam is None or not bool(torch.isfinite(slope).all() and (slope > 0).all())
    lam0 = torch.zeros(b, dtype=dtype, device=M.device) if lam is None else lam.to(dtype)
    phi, h = _h(X, theta, lam0, msign_fn)
    calls = 1
    if cold:
        phi, h, lam_out, new_slope, calls = _bracketed(X, theta, lam0, phi, h, msign_fn, tol, max_evals)
    else:
        assert slope is not None  # not cold
        lam_out, new_slope = lam0, slope.to(dtype)
        lam_prev: torch.Tensor | None = None
        h_prev = h
        while calls < evals and float(h.abs().max()) > tol:
            if lam_prev is None:
                step = h / new_slope
            else:
                secant = (h - h_prev) / (lam_out - lam_prev)
                ok = torch.isfinite(secant) & (secant > 0)
                new_slope = torch.where(ok, secant, new_slope)
                step = h / new_slope
            lam_prev, h_prev = lam_out, h
            lam_out = lam_out - step
            phi, h = _h(X, theta, lam_out, msign_fn)
            calls += 1
        if lam_prev is not None:  # the slope seen by the last secant pair, for the next step
            secant = (h - h_prev) / (lam_out - lam_prev)
            new_slope = torch.where(torch.isfinite(secant) & (secant > 0), secant, new_slope)
    h_left = h
    # The next step starts from the Newton prediction past the last evaluation (its momentum moves little).
    lam_next = lam_out - torch.where(h.abs() > tol, h / new_slope, torch.zeros_like(h))
    if clean:
        phi = phi.to(dtype) - h[:, None, None] * theta
    return phi.to(M.dtype), {"lam": lam_next, "slope": new_slope, "h": h_left, "msign_calls": calls}


def _bracketed(X, theta, lam0, phi, h, msign_fn, tol, max_evals):
    """Illinois regula falsi on the non-decreasing h from a bracket grown geometrically around ``lam0``."""
    calls = 1
    lo, hi, h_lo, h_hi = lam0.clone(), lam0.clone(), h.clone(), h.clone()
    width = torch.ones_like(lam0)  # ‖X‖_op <= ‖X‖_F = 1: the root is found within a few widenings
    best_phi, best_h, best_lam = phi, h, lam0.clone()
    while calls < max_evals and bool(((h_lo > 0) | (h_hi < 0)).any()):
        need_lo, need_hi = h_lo > 0, h_hi < 0
        trial = torch.where(need_lo, lam0 - width, torch.where(need_hi, lam0 + width, lam0))
        phi_t, h_t = _h(X, theta, trial, msign_fn)
        calls += 1
        best_phi, best_h, best_lam = _keep_best(best_phi, best_h, best_lam, phi_t, h_t, trial)
        # a trial on the wrong side of the root still narrows the other end of the bracket
        hi, h_hi = torch.where(need_lo & (h_t > 0), trial, hi), torch.where(need_lo & (h_t > 0), h_t, h_hi)
        lo, h_lo = torch.where(need_hi & (h_t < 0), trial, lo), torch.where(need_hi & (h_t < 0), h_t, h_lo)
        lo, h_lo = torch.where(need_lo, trial, lo), torch.where(need_lo, h_t, h_lo)
        hi, h_hi = torch.where(need_hi, trial, hi), torch.where(need_hi, h_t, h_hi)
        width = width * 4
    f_lo, f_hi = h_lo.clone(), h_hi.clone()  # Illinois: the value of an end kept twice in a row is halved
    side = torch.zeros_like(lam0)
    while calls < max_evals and float(best_h.abs().max()) > tol:
        denom = f_hi - f_lo
        trial = torch.where(
            denom > 0, lo - f_lo * (hi - lo) / denom.clamp_min(torch.finfo(lo.dtype).tiny), 0.5 * (lo + hi)
        )
        phi_t, h_t = _h(X, theta, trial, msign_fn)
        calls += 1
        best_phi, best_h, best_lam = _keep_best(best_phi, best_h, best_lam, phi_t, h_t, trial)
        right = h_t > 0  # the root is left of the trial: it becomes the upper end
        hi, h_hi, f_hi = (
            torch.where(right, trial, hi),
            torch.where(right, h_t, h_hi),
            torch.where(right, h_t, torch.where(side < 0, 0.5 * f_hi, f_hi)),
        )
        lo, h_lo, f_lo = (
            torch.where(right, lo, trial),
            torch.where(right, h_lo, h_t),
            torch.where(right, torch.where(side > 0, 0.5 * f_lo, f_lo), h_t),
        )
        side = torch.where(right, torch.ones_like(side), -torch.ones_like(side))
    width = hi - lo
    slope = (h_hi - h_lo) / width
    slope = torch.where(torch.isfinite(slope) & (slope > 0) & (width > 0), slope, torch.ones_like(slope))
    return best_phi, best_h, best_lam, slope, calls


def _keep_best(best_phi, best_h, best_lam, phi, h, lam):
    better = h.abs() < best_h.abs()
    return (
        torch.where(better[:, None, None], phi, best_phi),
        torch.where(better, h, best_h),
        torch.where(better, lam, best_lam),
    )
