"""The constrained-Muon family: Muon's direction, then a cheap step back onto a constraint set."""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from ..manifolds import SpectralSphere as SpectralSphereSet
from ..manifolds import Sphere, Stiefel
from ..manifolds.base import rounding_tolerance
from ..rules import muon_direction
from ..rules.spectral_sphere import gram, lanczos_top, sso_direction, start_vector, top_eigenpair
from .base import ManifoldOptimizer, out_in, param_name, split_blocks

__all__ = ["Hyperball", "SPEL", "SpectralSphere", "sphere_radius", "hyperball_update"]


def hyperball_update(W: torch.Tensor, U: torch.Tensor, lr: float, norm: torch.Tensor | float) -> torch.Tensor:
    """``R·V/‖V‖_F`` with ``V = W − η·R·U/‖U‖_F``: a step of relative size η along U, back onto ‖W‖_F = R.
    A zero U leaves W as it is; a non-finite one gives a non-finite result (for the step's check to report)."""
    u = torch.linalg.vector_norm(U)
    if bool(u == 0):
        return W
    V = W - (lr * norm / u) * U
    return V * (norm / torch.linalg.vector_norm(V))


class Hyperball(ManifoldOptimizer):
    r"""Hyperball (MuonH): ``W ← R·V/‖V‖_F``, ``V = W − η·R·msign(M)/‖msign(M)‖_F``, on ``‖W‖_F = R``.

    Muon's direction (momentum M, Nesterov, msign as in ``Muon``) taken as a step of relative Frobenius size η
    (so lr is scale-free: ‖V − W‖_F = η·R), then W is rescaled back to its Frobenius norm R; no weight decay
    (the fixed norm replaces it). Wen, Dang, Lyu, Ma, Liang, *Fantastic Pretraining Optimizers and Where to
    Find Them 2.1: Hyperball Optimization* (2025); microsoft/dion ``MuonH``.

    Args:
        lr: the relative step η.
        momentum: Muon's.
        nesterov: Muon's.
        norm: the Frobenius norm R every matrix keeps; None (default): each matrix keeps the norm it has when
            the optimizer is built (it must not be zero). A number projects every matrix onto ‖W‖_F = R first.
        msign_method: as ``Muon``.
        msign_steps: as ``Muon``.
        msign_dtype: as ``Muon``.
        skip_nonfinite: as every modman optimizer.
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.95,
        nesterov: bool = True,
        norm: float | None = None,
        msign_method: str = "polar_express",
        msign_steps: int | None = 5,
        msign_dtype: torch.dtype | str | None = "auto",
        *,
        skip_nonfinite: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            norm=norm,
            msign_method=msign_method,
            msign_steps=msign_steps,
            msign_dtype=msign_dtype,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group, gi = self.param_groups[-1], len(self.param_groups) - 1
        if group["norm"] is not None:
            return
        norms = []
        with torch.no_grad():
            for i, p in enumerate(group["params"]):
                W, _ = self._as_update_view(p)
                blocks = [
                    torch.linalg.vector_norm(b.to(torch.promote_types(b.dtype, torch.float32)))
                    for b in split_blocks(W, group)
                ]
                if W.numel() and not all(bool(n > 0) for n in blocks):
                    self.param_groups.pop()
                    what = "Frobenius norm 0" if len(blocks) == 1 else "a block (split) of Frobenius norm 0"
                    raise UserError(
                        f"Hyperball: {param_name(group, i, gi)} has {what}; with "
                        "norm=None each matrix keeps the norm it starts with, so initialise it non-zero "
                        "(e.g. torch.nn.init.orthogonal_) or pass norm=R"
                    )
                norms.append(blocks)
        for p, blocks in zip(group["params"], norms):
            for state, norm in zip(self._block_states(p, group), blocks):
                state["sphere_norm"] = norm

    def _init_param(self, W, group):
        if group["norm"] is not None:
            W.copy_(Sphere(group["norm"]).ensure(W))

    def _state_shape(self, p: torch.Tensor, key: str):
        return () if key == "sphere_norm" else super()._state_shape(p, key)

    def _update_many(self, Ws, Gs, states, group):
        """Same-shape matrices share one batched msign."""
        M = torch.stack([self._momentum(G, state, group) for G, state in zip(Gs, states)])
        U, _ = muon_direction(M, msign_fn=self._msign_fn(group))
        for W, U_i, state in zip(Ws, U.unbind(0), states):
            norm = group["norm"] if group["norm"] is not None else state["sphere_norm"].to(W.dtype)
            W.copy_(hyperball_update(W, U_i.to(W.dtype), group["lr"], norm))
            state["msign_calls"] = 1


class SPEL(ManifoldOptimizer):
    r"""SPEL: ``W ← r·polar(W − η·msign(M))`` on the Stiefel manifold ``WᵀW = r²I`` (tall; ``WWᵀ`` when wide).

    Muon's direction (momentum M, Nesterov, msign as in ``Muon``, batched over same-shape matrices), no tangent
    solve, then the polar factor of the stepped weight. *Manifold Constrained Steepest Descent*
    (arXiv:2601.21487); NVIDIA Emerging-Optimizers ``Spel`` and HeavyBall ``SpEL``, which retract with a
    5-step Newton–Schulz msign. Here the retraction is ``Stiefel.retract_step``: the exact polar factor from
    n×n algebra (a series of ``K^{-1/2}``, K = (W − ηU)ᵀ(W − ηU), and one Newton–Schulz step), so the weights
    stay on the manifold to float rounding; it falls back to msign (10 float32 Polar Express steps) only for
    steps too large for the series. Weights are projected onto the manifold when the optimizer is built.

    Args:
        lr: η, the spectral norm of the step before the retraction.
        momentum: Muon's.
        nesterov: Muon's.
        radius: the common singular value r.
        msign_method: the direction's msign, as ``Muon``.
        msign_steps: the direction's msign, as ``Muon``.
        msign_dtype: the direction's msign, as ``Muon``.
        skip_nonfinite: as every modman optimizer.
    """

    def __init__(
        self,
        params,
        lr: float = 0.05,
        momentum: float = 0.95,
        nesterov: bool = True,
        radius: float = 1.0,
        msign_method: str = "polar_express",
        msign_steps: int | None = 5,
        msign_dtype: torch.dtype | str | None = "auto",
        *,
        skip_nonfinite: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            radius=radius,
            msign_method=msign_method,
            msign_steps=msign_steps,
            msign_dtype=msign_dtype,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _init_param(self, W, group):
        W.copy_(Stiefel(group["radius"]).ensure(W))

    def _update_many(self, Ws, Gs, states, group):
        """Same-shape matrices share one batched msign for their directions; each is retracted without one."""
        M = torch.stack([self._momentum(G, state, group) for G, state in zip(Gs, states)])
        U, _ = muon_direction(M, msign_fn=self._msign_fn(group))
        stiefel = Stiefel(group["radius"])
        for W, U_i, state in zip(Ws, U.unbind(0), states):
            if not bool(U_i.any()):  # a zero direction keeps W bit for bit (no retraction rounding)
                state["msign_calls"] = 1
                continue
            Wc = W.to(torch.promote_types(W.dtype, torch.float32))
            new_W, used_msign = stiefel.retract_step(Wc, U_i.to(Wc.dtype), group["lr"])
            W.copy_(new_W)
            state["msign_calls"] = 1 + int(used_msign)


# Lanczos steps of SpectralSphere's σ_max search without the tangent step. With it the search is K's
# eigendecomposition: SSO's steps push the singular values under the top one past it every step, and Lanczos
# (48 steps) then leaves σ_max up to 7e-4 off on random gradients. Measured in BENCHMARKS.md (k).
LANCZOS_STEPS = 16
START_MIX = 0.3  # share of a fixed generic vector in Lanczos' start, beside the last step's top vector


def sphere_radius(shape: tuple[int, ...], scale: float) -> float:
    """``R = c·√(fan_out/fan_in)`` of an (out, in) matrix (spectral μP's operator norm)."""
    return scale * math.sqrt(shape[0] / shape[1])


class SpectralSphere(ManifoldOptimizer):
    r"""Spectral sphere: ``W ← R·V/σ_max(V)``, ``V = W − η·R·Φ``, ``Φ = msign(M)`` or SSO's tangent ``msign(M + λΘ)``.

    Every matrix keeps ``σ_max(W) = R = c·√(fan_out/fan_in)``. Φ is Muon's direction (momentum M, Nesterov, msign
    as in ``Muon``, batched over same-shape matrices), or with ``tangent=True`` the steepest unit-spectral-norm
    direction tangent to the sphere, ``Φ = msign(M + λΘ)``, ``Θ = u₁v₁ᵀ``, λ the root of ⟨Θ, Φ⟩ = 0
    (``modman.rules.spectral_sphere.sso_direction``: secant steps from the last step's λ; what is left of ⟨Θ, Φ⟩
    is projected out). σ_max(V)² is the top eigenvalue of V's smaller Gram matrix K: without the tangent step by
    Lanczos (``lanczos_steps``, matrix–vector products with V) from the last step's top singular vector and a
    fixed generic one; with it from K's eigendecomposition, since SSO's steps push the singular values under
    the top one past it every step and a Krylov estimate misses the new top. Xie et al., *Controlled LLM
    Training on Spectral Sphere* (arXiv:2601.08393; ``tangent=True`` is its SSO, False its λ = 0 ablation,
    microsoft/dion ``MuonSphere``). Weights are rescaled onto the sphere when the optimizer is built.

    Args:
        lr: η, the step's spectral norm relative to R (scale-free like Hyperball's).
        radius: c in ``R = c·√(fan_out/fan_in)`` (conv kernels: fan_in = in·kh·kw).
        tangent: SSO's tangent direction (``sso_evals`` msign calls per step; a matrix's first step solves λ
            cold, to |⟨Θ, Φ⟩| <= 1e-3) instead of Muon's (one msign call).
        lanczos_steps: "auto" (16 without ``tangent``, None with it), an int (Lanczos steps), or None (K's float32
            eigendecomposition: exact, an m·n² product and an n×n eigensolve per matrix; its λ_max is within
            3e-6 of float64's).
        sso_evals: msign evaluations per step of the warm multiplier solve.
        momentum: as ``Muon``.
        nesterov: as ``Muon``.
        msign_method: as ``Muon``.
        msign_steps: as ``Muon``.
        msign_dtype: as ``Muon``.
        skip_nonfinite: as every modman optimizer.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        radius: float = 1.0,
        tangent: bool = False,
        lanczos_steps: int | str | None = "auto",
        sso_evals: int = 1,
        msign_method: str = "polar_express",
        msign_steps: int | None = 5,
        msign_dtype: torch.dtype | str | None = "auto",
        *,
        skip_nonfinite: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            radius=radius,
            tangent=tangent,
            lanczos_steps=lanczos_steps,
            sso_evals=sso_evals,
            msign_method=msign_method,
            msign_steps=msign_steps,
            msign_dtype=msign_dtype,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_param(self, p, name):
        super()._check_param(p, name)
        W, _ = self._as_update_view(p)
        if W.numel() and not bool(W.detach().any()):
            raise UserError(
                f"SpectralSphere: {name} is all zeros, which has no direction to rescale onto the "
                "spectral sphere; initialise it non-zero (e.g. torch.nn.init.orthogonal_) or give it "
                "to another optimizer"
            )

    def _init_param(self, W, group):
        if W.numel() == 0:
            return
        sphere = SpectralSphereSet(sphere_radius(out_in(W.shape, group), group["radius"]))
        if sphere.violation(W) > rounding_tolerance(W.dtype):
            W.copy_(sphere.retract(W))

    def _state_shape(self, p, key):
        if key in ("sso_lam", "sso_slope"):
            return ()
        if key == "sphere_vector":
            return (min(p.shape[0], p.numel() // p.shape[0]),)
        return super()._state_shape(p, key)

    def _update_many(self, Ws, Gs, states, group):
        """Same-shape matrices share the msign calls and the Lanczos iteration (batched)."""
        dtype = torch.promote_types(Ws[0].dtype, torch.float32)
        W = torch.stack(Ws).to(dtype)
        R = sphere_radius(out_in(Ws[0].shape, group), group["radius"])
        if all("sphere_vector" in s for s in states):
            x = torch.stack([s["sphere_vector"] for s in states]).to(dtype)
        else:  # a matrix's first step: the top singular vector of W exactly (once)
            x = top_eigenpair(gram(W))[1]
        M = torch.stack([self._momentum(G, state, group) for G, state in zip(Gs, states)])
        calls, extra = 1, {}
        if group["tangent"]:
            wide = W.shape[-2] < W.shape[-1]
            y = (W.mT if wide else W) @ x.unsqueeze(-1)  # the other singular vector of the pair
            y = (y / torch.linalg.vector_norm(y, dim=(-2, -1), keepdim=True)).squeeze(-1)
            u, v = (x, y) if wide else (y, x)
            warm = all("sso_lam" in s for s in states)
            lam = torch.stack([s["sso_lam"] for s in states]).to(dtype) if warm else None
            slope = torch.stack([s["sso_slope"] for s in states]).to(dtype) if warm else None
            phi, info = sso_direction(M, u, v, self._msign_fn(group), lam, slope, evals=group["sso_evals"])
            calls, extra = info["msign_calls"], {"sso_lam": info["lam"], "sso_slope": info["slope"]}
        else:
            phi, _ = muon_direction(M, msign_fn=self._msign_fn(group))
        V = W - (group["lr"] * R) * phi.to(dtype)
        steps = group["lanczos_steps"]
        if steps == "auto":
            steps = None if group["tangent"] else LANCZOS_STEPS
        if steps is None:
            top, x_new = top_eigenpair(gram(V))
        else:
            top, x_new = lanczos_top(V, x + START_MIX * start_vector(x.shape[-1], dtype, x.device), steps)
        new_W = V * (R / top.clamp_min(0).sqrt())[:, None, None]
        moved = phi.flatten(1).any(dim=1).tolist()
        for i, (W_i, state) in enumerate(zip(Ws, states)):
            if moved[i]:  # a zero direction keeps W bit for bit (no rescaling rounding)
                W_i.copy_(new_W[i])
            state["sphere_vector"] = x_new[i] if moved[i] else x[i]
            for key, value in extra.items():
                state[key] = value[i]
            state["msign_calls"] = calls
