"""Faster solvers for the manifold Muon direction (tall W with WᵀW = I; see ``manifold_muon.py``).

* ``closed_form`` — square W: the tangent space is ``{WK : K = −Kᵀ}`` and ``‖WK‖_op = ‖K‖_op``, so
  ``A = W·msign(skew(WᵀG))`` exactly, with one msign call.
* ``fixed_point`` — Jianlin Su's fixed point (*Steepest descent on manifolds 3: Muon + Stiefel*,
  kexue.fm/archives/11221) on the n×n reduced problem. With ``A = msign(G + WX)`` (X = 2Λ symmetric),
  ``P = WᵀG`` and ``C = GᵀG − PᵀP``, the Gram matrix is ``M = (P+X)ᵀ(P+X) + C`` and ``WᵀA = (P+X)M^{-1/2}``,
  so every iteration works on n×n matrices only: one float64 ``eigh(M)`` gives ``Σ = M^{1/2}``, the
  residual, and the Lyapunov solve ``ΣX + XΣ = −(ΣP + PᵀΣ)`` for the next X. Anderson acceleration
  mixes the last iterates. The m×n work is two Gram products before and ``A = (G + WX)M^{-1/2}`` after:
  no m×n msign at all, and A has orthonormal columns whenever M is non-singular.
* ``newton`` — smoothing Newton on the same reduced dual (``manifold_muon_newton``): converges where the
  fixed point stalls (aspect ratios below ~2.5, rank-deficient G, optima that are not partial isometries).
* ``hybrid`` — the default for tall/wide W: Newton at once where the dual is uniformly smooth (the
  complement Gram C well-conditioned: aspect ratios above ~2.4 for Gaussian G), else the fixed point with a
  Newton probe after 5 steps (kept while it halves the residual), else smoothing Newton.

The last three solve the problem at W's polar factor (``polar_correction``), not at W: the reduced problem
assumes ``WᵀW = I`` exactly, which a float32 W meets only to ~3e-7.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from ..manifolds import Stiefel
from ..manifolds.stiefel import sym
from .manifold_muon_newton import gram_eig, smoothed_newton

__all__ = [
    "feasible_tangent",
    "closed_form",
    "closed_form_batch",
    "fixed_point",
    "newton",
    "hybrid",
    "reduced_problem",
    "reduced_direction",
    "polar_correction",
]


def closed_form(W, G, *, Lambda, alpha, steps, tol, msign_fn):
    """Square W: ``A = W msign(skew(WᵀG))``, ``Λ = −sym(WᵀG)/2``. One msign call, zero residual."""
    if W.shape[0] != W.shape[1]:
        raise UserError(
            f"manifold_muon: solver 'closed_form' needs a square W; got {tuple(W.shape)}. "
            "Use solver='fixed_point' (or 'auto') for tall or wide matrices."
        )
    A, Lambda, gram, residual = closed_form_batch(W, G, msign_fn)
    return A, Lambda, {"msign_calls": 1, "iterations": 1, "residual": float(residual), "gram": gram}


def closed_form_batch(W, G, msign_fn):
    """The closed form over a batch (..., n, n) with one msign call.

    Returns ``(A, Λ, AᵀA, residual)``; the residual RMS(K + Kᵀ) (= RMS(WᵀA + AᵀW) for WᵀW = I, up to W's
    rounding off the manifold: what an inexact msign leaves of K's skew symmetry) has one entry per matrix.
    """
    P = W.mT @ G
    K = msign_fn(0.5 * (P - P.mT))  # skew, like its argument
    residual = torch.linalg.vector_norm(K + K.mT, dim=(-2, -1)) / K.shape[-1]
    return W @ K, -0.25 * (P + P.mT), K.mT @ K, residual


def reduced_problem(W: torch.Tensor, G: torch.Tensor, K: torch.Tensor | None = None):
    """``(P, C, scale)`` in float64: ``P = WᵀĜ``, ``C = ĜᵀĜ − PᵀP`` with ``Ĝ = G/‖G‖_F`` (scale-free).
    With ``K`` (``polar_correction``) W stands for its polar factor ``WK``: ``P = K WᵀĜ``."""
    scale = float(torch.linalg.vector_norm(G))
    Gn = G.to(torch.float64) / (scale if scale > 0 else 1.0)
    P = W.to(torch.float64).mT @ Gn
    if K is not None:
        P = K @ P
    C = Gn.mT @ Gn - P.mT @ P
    return P, 0.5 * (C + C.mT), scale


def polar_correction(W: torch.Tensor, limit: float = 1e-4):
    """``K = (WᵀW)^{-1/2}`` in float64, so that ``WK`` (the polar factor of W) has orthonormal columns to
    float64 rounding; None where ``‖WᵀW − I‖_F > limit`` (W is not on the manifold: used as it is).

    The reduced problem assumes ``WᵀW = I``, which a float32 W on Stiefel meets only to ‖WᵀW − I‖_F ~ 3e-7.
    Near a singular M (aspect ratios below ~2.5) the solve amplifies that: measured on Gaussian float32
    problems at tol 1e-6, gaps 3.7e-6..6.3e-6 that no iteration improves (192x128, 150x100, 384x256), while
    solving for WK certifies 4.2e-7..1.0e-6 in fewer iterations, gaps that also hold for W itself (float64
    ``duality_gap`` at the float32 W). One m·n² float64 product: ``Δ = WᵀW − I``, ``K = I − Δ/2 + 3Δ²/8``
    (the series of (I + Δ)^{-1/2}; the next term, 5Δ³/16, is below 1e-12)."""
    W = W.to(torch.float64)
    eye = torch.eye(W.shape[-1], dtype=W.dtype, device=W.device)
    delta = W.mT @ W - eye
    if not float(torch.linalg.matrix_norm(delta)) <= limit:
        return None
    return sym(eye - 0.5 * delta + 0.375 * (delta @ delta))


def _inv_sqrt(V, s):
    """``M^{-1/2}`` as a pseudo-inverse: directions with s below n·eps·s_max are dropped (msign(0) = 0)."""
    cutoff = s.shape[-1] * torch.finfo(s.dtype).eps * s.max().clamp_min(torch.finfo(s.dtype).tiny)
    inv = torch.where(s > cutoff, 1.0 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
    return (V * inv) @ V.mT


def _lyapunov_step(P, V, s):
    """Solve ``ΣX + XΣ = −(ΣP + PᵀΣ)`` for symmetric X in the eigenbasis of ``Σ = V diag(s) Vᵀ``.

    In that basis ``Vᵀ(ΣP + PᵀΣ)V = diag(s)·P̃ + P̃ᵀ·diag(s)`` with ``P̃ = VᵀPV``: four n×n products in all."""
    Pv = V.mT @ P @ V
    rhs = s[:, None] * Pv + Pv.mT * s[None, :]
    den = s[:, None] + s[None, :]
    X = V @ (-rhs / torch.where(den > 0, den, torch.ones_like(den))) @ V.mT
    return 0.5 * (X + X.mT)


def _certificate(P, C, X, V, s, E, with_gap: bool, tol: float = 0.0, s0=None):
    """Residual RMS(WᵀA + AᵀW) and, when asked, the certified relative duality gap, in n×n algebra.

    For ``A = (Ĝ + WX)E`` with ``E = (M + μI)^{-1/2} = V diag(1/s) Vᵀ``: dual ``‖Ĝ + WX‖_* = Σ s0`` (s0 =
    sqrt of M's eigenvalues; s when μ = 0); primal ``⟨Ĝ, Ã⟩`` for the feasible
    ``Ã = (A − W·sym(WᵀA)) / max(1, ‖A − W·sym(WᵀA)‖_op)``, whose Gram matrix and inner product with Ĝ
    need only ``T = WᵀA``, ``AᵀA`` and ``ĜᵀĜ = C + PᵀP`` (the same quantity as ``duality_gap``).
    """
    s0 = s if s0 is None else s0
    Z = P + X
    T = Z @ E  # = WᵀA
    H = T + T.mT
    residual = float(torch.linalg.vector_norm(H) / T.shape[-1])
    if not with_gap:
        return residual, math.inf
    S = 0.5 * H
    gram = E @ (Z.mT @ Z + C) @ E  # AᵀA
    proj_gram = gram - S @ T - T.mT @ S + S @ S  # (A − WS)ᵀ(A − WS)
    proj_gram = 0.5 * (proj_gram + proj_gram.mT)
    GtA = ((C + P.mT @ P + P.mT @ X) * E).sum()  # ⟨Ĝ, A⟩ = tr(Ĝᵀ(Ĝ + WX)E)
    dual = float(s0.sum())

    def relative_gap(op_squared: float) -> float:
        primal = float(GtA - (P * S).sum()) / max(1.0, math.sqrt(max(op_squared, 0.0)))
        return (dual - primal) / dual if dual > 0 else 0.0

    # ‖Ã‖²_op = λmax(ÃᵀÃ) ≤ 1 + ‖ÃᵀÃ − I‖_F: a bound with no eigensolve, tight near convergence (A has
    # orthonormal columns there). The exact λmax only when the bound misses the tolerance by less than 10x
    # (measured: the bound's gap is within 3x of the exact one), where the exact value may still certify it.
    # A smoothed direction (μ > 0) has ‖A‖_op = max s0/s < 1, so ‖Ã‖_op ≤ max s0/s + ‖S‖_F bounds it too.
    eye = torch.eye(proj_gram.shape[-1], dtype=proj_gram.dtype, device=proj_gram.device)
    op_smoothed = float((s0 / s.clamp_min(torch.finfo(s.dtype).tiny)).max()) + float(torch.linalg.matrix_norm(S))
    bound = min(1.0 + float(torch.linalg.matrix_norm(proj_gram - eye)), op_smoothed**2)
    gap = relative_gap(bound)
    if tol <= gap < 10 * tol or tol == 0:
        gap = min(gap, relative_gap(float(torch.linalg.eigvalsh(proj_gram).max())))
    return residual, gap


def fixed_point(W, G, *, Lambda, alpha, steps, tol, msign_fn, memory: int = 10):
    """Su's fixed point with Anderson(``memory``) acceleration, on the reduced float64 problem.

    Stops when both the residual RMS(WᵀA + AᵀW) and the certified relative duality gap are below
    ``tol`` (see ``_certificate``; the gap is only evaluated once the residual is small). ``Lambda`` warm-starts the
    iteration (the seed's multiplier, in G's units); ``alpha`` and ``msign_fn`` are unused (the iteration
    has no step size and needs no msign).
    """
    return _solve(W, G, Lambda, tol, lambda P, C, X: _fixed_point_loop(P, C, X, steps, tol, memory))


def newton(W, G, *, Lambda, alpha, steps, tol, msign_fn):
    """Smoothing Newton on the dual (``manifold_muon_newton``): converges where the fixed point stalls.

    Where C is well-conditioned (``_well_conditioned``) the dual is smooth everywhere and Newton starts at
    the smallest μ = 1e-8/n; otherwise it smooths from μ = 1e-2/n down. ``steps`` caps the Newton
    iterations; info adds ``cg_steps`` (Hessian products, two n×n products each). ``alpha`` and
    ``msign_fn`` are unused.
    """

    def run(P, C, X):
        well = _well_conditioned(C)
        return _newton(P, C, X, steps, tol, mu0=1e-8 if well else 1e-2, well_conditioned=well)

    return _solve(W, G, Lambda, tol, run)


def hybrid(
    W,
    G,
    *,
    Lambda,
    alpha,
    steps,
    tol,
    msign_fn,
    fixed_point_steps: int = 10,
    direct_after: int = 5,
    direct_steps: int = 4,
):
    """The default for tall/wide W. When the complement Gram C is well-conditioned (``λ_min(C) ≥ 2e-2/n``,
    one Cholesky test; generic for aspect ratios above ~2.4) the dual is smooth for every X (M ≽ C ≻ 0),
    and Newton at μ = 1e-8/n converges quadratically: 3–5 eigensolves where the fixed point takes ~9.
    Otherwise the fixed point, in rounds of ``direct_after`` iterations (``fixed_point_steps`` in all). After
    a round, if the residual is below 1e-2, Newton at μ = 1e-8/n probes for up to ``direct_steps`` iterations
    and is kept only while every step at least halves the residual: warm-started training solves are near
    their optimum and finish in 1–4 (LLM experiment: median 11 → 7 iterations). Cold-started ones (the
    modular GPT's first steps) are at 1.3e-2..2.6e-2 after 5 steps, where Newton's first step barely changes
    the residual (factor 0.94–1.9, measured; the threshold is the cheap pre-test, the halving rule the guard):
    they run another round, which brings most under 1e-2 (modular GPT, cold: median 23 → 11 iterations against
    going to smoothing Newton after 5). At 3e-2 or above after a round the fixed point is slow (residual
    ×0.85 per step for the next 8 on spectra like e^(-k/8)) and goes no further. Where the probe stalls or is
    not taken, smoothing Newton from the best iterate and μ = 1e-4/n, until certified or ``steps`` (which caps
    all of them together); the best certified result is returned.

    A stalled probe goes straight to smoothing Newton: there the optimum is degenerate (M near singular) and
    the fixed point brings the residual under the tolerance but not the gap — late in the LLM experiment (step
    400, tol 1e-4), resuming it up to 20 iterations then Newton took 17.8 iterations and 99.5 ms per solve,
    straight to Newton 10.8 and 77.3 ms, uncertified 5 → 0 of 60 (BENCHMARKS.md (e)).
    ``direct_steps=0``: the fixed point for ``fixed_point_steps``, then smoothing Newton."""
    if direct_after < 1 or fixed_point_steps < 0 or direct_steps < 0:
        raise UserError(
            f"hybrid: direct_after must be >= 1 and fixed_point_steps, direct_steps >= 0 (got "
            f"{direct_after}, {fixed_point_steps}, {direct_steps}); fixed_point_steps=0 probes at once"
        )

    def run(P, C, X0):
        tried = []

        def left() -> int:
            return 0 if tried and _certified(_best(tried)[1], tol) else steps - _spent(tried)

        well = _well_conditioned(C)
        if well:
            tried.append(_newton(P, C, X0, steps, tol, mu0=1e-8, well_conditioned=True))
        # Newton's probe: only near the optimum (residual < 1e-2: see the docstring), and not where Newton at
        # the same μ has just run from X0 (well-conditioned C) without certifying.
        probe = direct_steps > 0 and not well
        resume, done = {"X": X0}, 0
        while done < fixed_point_steps and left() > 0:
            chunk = min(direct_after if probe else fixed_point_steps, fixed_point_steps - done, left())
            tried.append(_fixed_point_loop(P, C, resume["X"], chunk, tol, resume=resume))
            done += chunk
            if probe and not 1e-2 <= _best(tried)[1]["residual"] < 3e-2:
                break  # near enough for the probe, or too far for the fixed point to get there: see the docstring
        if probe and left() > 0 and (fixed_point_steps == 0 or _best(tried)[1]["residual"] < 1e-2):
            tried.append(
                _newton(
                    P, C, _best(tried)[0] if tried else X0, min(direct_steps, left()), tol, mu0=1e-8, min_progress=0.5
                )
            )
        if left() > 0:
            tried.append(_newton(P, C, _best(tried)[0] if tried else X0, left(), tol, mu0=1e-4))
        X, info = _best(tried)
        info.update(iterations=_spent(tried), cg_steps=sum(t[1].get("cg_steps", 0) for t in tried))
        return X, info

    return _solve(W, G, Lambda, tol, run)


def _best(tried):
    return min(tried, key=lambda t: (t[1]["gap"], t[1]["residual"]))


def _certified(info, tol) -> bool:
    return info["residual"] < tol and info["gap"] < tol


def _spent(tried) -> int:
    return sum(t[1]["iterations"] for t in tried)


def _well_conditioned(C) -> bool:
    """``λ_min(C) ≥ 2e-2/n`` (C is normalised: tr(ĜᵀĜ) = 1), by one Cholesky factorisation. Then
    M = (P+X)ᵀ(P+X) + C ≽ C is uniformly positive definite and the dual is smooth for every X.

    The bound is where Newton at μ = 1e-8/n beats the fixed point by measurement: on Gaussian G it
    certifies in 3–5 iterations from n·λ_min(C) = 1e-2 up (the fixed point: 9–19); on real gradients (the
    CIFAR MLP's 128x3072 layer, n·λ_min(C) = 3e-3..1e-2) it took 7–10 and sometimes failed to certify,
    while the fixed point took 7–11."""
    n = C.shape[-1]
    shifted = C - (2e-2 / n) * torch.eye(n, dtype=C.dtype, device=C.device)
    return int(torch.linalg.cholesky_ex(shifted).info) == 0


def _solve(W, G, Lambda, tol, run):
    """Reduce, run ``run(P, C, X₀) -> (X, info)`` from the warm start X₀ = 2Λ/‖G‖_F (else the seed's
    ``−sym(WᵀĜ)``), and form the direction; a zero G gives a zero direction. The problem solved is the one at
    W's polar factor (``polar_correction``): exactly orthonormal columns, within rounding of W."""
    W64 = W.to(torch.float64)
    K = polar_correction(W64)
    P, C, scale = reduced_problem(W64, G, K)
    if scale == 0:
        zero = torch.zeros_like(P)
        return (
            torch.zeros_like(G),
            zero.to(G.dtype),
            {"msign_calls": 0, "iterations": 0, "residual": 0.0, "gap": 0.0, "gram": zero.to(G.dtype)},
        )
    X = -0.5 * (P + P.mT) if Lambda is None else 2.0 * Lambda.to(torch.float64) / scale
    X, info = run(P, C, X)
    info.pop("stalled", None)
    return _direction(W, G, P, C, X, scale, tol, info, K)


def _regularised(C):
    # A rank-deficient G leaves the dual degenerate (M singular): solve the problem whose complement
    # Gram is C + εI instead. Its A is still exactly tangent and inside the unit ball, and its objective
    # differs from the optimum by O(sqrt(ε)); ε = 1e-14 (G is normalised to ‖G‖_F = 1).
    return C + 1e-14 * torch.eye(C.shape[-1], dtype=C.dtype, device=C.device)


def _fixed_point_loop(P, C, X, steps, tol, memory: int = 10, resume: dict | None = None):
    """Anderson-mixed fixed point from X: ``(X, info)`` with info's E = M^{-1/2} of the best iterate.

    ``resume`` (a dict, updated in place) carries the next iterate (``"X"``; None once certified) and the
    Anderson history (``"mix"``), so that a later call continues exactly where this one stopped."""
    n = P.shape[-1]
    C_reg = _regularised(C)
    mix = _Anderson(memory) if resume is None or "mix" not in resume else resume["mix"]
    best = ((math.inf, math.inf), X, None, math.inf, math.inf, 0.0)
    for k in range(steps):  # noqa: B007 - the count is reported after the loop
        _, lam, V = gram_eig(P, C_reg, X)
        s = lam.sqrt()
        E = _inv_sqrt(V, s)
        residual, gap = _certificate(P, C, X, V, s, E, with_gap=False)
        if residual < tol:
            residual, gap = _certificate(P, C, X, V, s, E, with_gap=True, tol=tol)
        if (gap, residual) < best[0]:  # the certified gap decides once known, the residual before that
            best = ((gap, residual), X, E, residual, gap, float(s.min() / s.max()))
        if residual < tol and gap < tol:
            break
        X = mix(X.reshape(-1), (_lyapunov_step(P, V, s) - X).reshape(-1)).reshape(n, n)
        X = 0.5 * (X + X.mT)
    if resume is not None:  # the next iterate, or None where this one certified
        resume.update(X=None if residual < tol and gap < tol else X, mix=mix)
    _, X, E, residual, gap, conditioning = best
    return X, {
        "msign_calls": 0,
        "iterations": k + 1,
        "residual": residual,
        "gap": gap,
        "E": E,
        "float64": conditioning < 1e-3,
    }


def _newton(P, C, X, steps, tol, mu0: float = 1e-2, well_conditioned: bool = False, min_progress: float = 0.0):
    """Smoothing Newton from X: ``(X, info)`` with info's E = (M + μI)^{-1/2} of the best certified point.

    Unless C is ``well_conditioned`` (``_well_conditioned``) the certificate uses the exact ‖Ã‖_op (an
    eigensolve each): the cheap bounds are loose for strongly smoothed directions, tight at μ = 1e-8/n on a
    well-conditioned M. Only there may A be formed in float32 (``reduced_direction``): near a singular M
    that costs the certificate ~10x (measured at 1024x512: gap 2.8e-6 instead of 3.9e-7)."""

    def certificate(X, V, s, s0, E, with_gap):
        return _certificate(P, C, X, V, s, E, with_gap, tol if well_conditioned else 0.0, s0=s0)

    X, E, residual, gap, iterations, cg, conditioning, stalled = smoothed_newton(
        P, C, X, tol=tol, steps=steps, certificate=certificate, mu0=mu0, min_progress=min_progress
    )
    return X, {
        "msign_calls": 0,
        "iterations": iterations,
        "cg_steps": cg,
        "residual": residual,
        "gap": gap,
        "E": E,
        "float64": not well_conditioned or conditioning < 1e-3,
        "stalled": stalled,
    }


def _direction(W, G, P, C, X, scale, tol, info, K=None):
    """``A = (G + WKX)E`` from the reduced solution (K from ``polar_correction``, None: I), repaired
    (tangent-projected, scaled) if not converged."""
    E = info.pop("E")
    A = reduced_direction(W, G, (X if K is None else K @ X) * scale, E / scale, exact=info.pop("float64", True))
    if info["residual"] > tol:
        # Not converged (a degenerate dual, e.g. a rank-deficient G): project A onto the tangent space and
        # scale it into the unit ball, so the step is exactly tangent and feasible whatever happened.
        A = feasible_tangent(W, A)
        info["residual"] = float(torch.linalg.vector_norm(W.mT @ A + A.mT @ W) / A.shape[-1])
        info["repaired"] = True
    else:
        Z = P + X
        info["gram"] = (E @ (Z.mT @ Z + C) @ E).to(A.dtype)  # AᵀA (a projector when A is a partial isometry)
    return A, 0.5 * scale * X.to(G.dtype), info


def feasible_tangent(W, A):
    """``(A − W·sym(WᵀA)) / max(1, ‖A − W·sym(WᵀA)‖_op)`` for tall W: the nearest tangent direction, made feasible."""
    T = Stiefel().tangent(W, A)
    return T / max(1.0, float(torch.linalg.matrix_norm(T.to(torch.float64), ord=2)))


class _Anderson:
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


def reduced_direction(W, G, X, E, exact: bool = True):
    """``A = (G + WX)E`` from float64 n×n factors X and E ≈ M^{-1/2}, returned in G's dtype (float32 at least).

    ``exact`` forms it in float64: near a degenerate optimum E has entries up to 1/s_min, and G·E and W·(XE)
    cancel to A's size, which float32 products would leave ~1e-7·‖E‖ off (measured: ‖A‖_op 1.00003 at
    15x10). Solvers pass ``exact=False`` only for a well-conditioned M (s_min/s_max >= 1e-3): 2.7x cheaper."""
    dtype = torch.promote_types(G.dtype, torch.float32)
    if exact:
        return (G.to(torch.float64) @ E + W.to(torch.float64) @ (X @ E)).to(dtype)
    return G.to(dtype) @ E.to(dtype) + W.to(dtype) @ (X @ E).to(dtype)
