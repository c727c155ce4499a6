"""The constrained-Muon family: Muon's direction, then a cheap step back onto a constraint set."""

from __future__ import annotations

import torch

from ..manifolds import Sphere, Stiefel
from ..rules import muon_direction
from .base import ManifoldOptimizer, param_name

__all__ = ["Hyperball", "SPEL"]


def hyperball_step(W: torch.Tensor, U: torch.Tensor, lr: float, norm: torch.Tensor | float) -> torch.Tensor:
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
        lr: the relative step η. momentum, nesterov: Muon's.
        norm: the Frobenius norm R every matrix keeps; None (default): each matrix keeps the norm it has when
            the optimizer is built (it must not be zero). A number projects every matrix onto ‖W‖_F = R first.
        msign_method, msign_steps, msign_dtype: as ``Muon``.
        skip_nonfinite: as every modman optimizer.
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.95, nesterov: bool = True,
                 norm: float | None = None, msign_method: str = "polar_express", msign_steps: int | None = 5,
                 msign_dtype: torch.dtype | str | None = "auto", *, skip_nonfinite: bool = False):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, norm=norm, msign_method=msign_method,
                        msign_steps=msign_steps, msign_dtype=msign_dtype)
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
                norm = torch.linalg.vector_norm(W.to(torch.promote_types(W.dtype, torch.float32)))
                if W.numel() and not bool(norm > 0):
                    self.param_groups.pop()
                    raise ValueError(f"Hyperball: {param_name(group, i, gi)} has Frobenius norm {float(norm)}; with "
                                     "norm=None each matrix keeps the norm it starts with, so initialise it non-zero "
                                     "(e.g. torch.nn.init.orthogonal_) or pass norm=R")
                norms.append(norm)
        for p, norm in zip(group["params"], norms):
            self.state[p]["sphere_norm"] = norm

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
            W.copy_(hyperball_step(W, U_i.to(W.dtype), group["lr"], norm))
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
        lr: η, the spectral norm of the step before the retraction. momentum, nesterov: Muon's.
        radius: the common singular value r.
        msign_method, msign_steps, msign_dtype: the direction's msign, as ``Muon``.
        skip_nonfinite: as every modman optimizer.
    """

    def __init__(self, params, lr: float = 0.05, momentum: float = 0.95, nesterov: bool = True,
                 radius: float = 1.0, msign_method: str = "polar_express", msign_steps: int | None = 5,
                 msign_dtype: torch.dtype | str | None = "auto", *, skip_nonfinite: bool = False):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, radius=radius, msign_method=msign_method,
                        msign_steps=msign_steps, msign_dtype=msign_dtype)
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
