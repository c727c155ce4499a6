"""Muon and spectral-ball descent: orthogonalized momentum steps for matrices."""

from __future__ import annotations

import torch

from ..manifolds import SpectralBall
from ..rules import muon_direction, shape_scale
from .base import ManifoldOptimizer, out_in

__all__ = ["Muon", "SpectralDescent"]


class Muon(ManifoldOptimizer):
    r"""Muon: ``W ← (1 − ηλ)W − η·s·msign(M)``, ``M = (1−μ)G + μB`` (Nesterov), ``B ← μB + (1−μ)G``.

    lr (η) is the spectral norm of the update times the shape factor s (``adjust_lr_fn``, torch's
    names and meanings: "original" or None = sqrt(max(1, out/in)), "match_rms_adamw" = 0.2·sqrt(max(out, in));
    modman's "spectral" = sqrt(out/in) and "unit" = 1).
    Weight decay λ is decoupled. Conv kernels are orthogonalized as (out, in·kh·kw) matrices. Param group options:
    ``transposed=True`` for weights stored (in, out) (the shape factor reads them the other way round);
    ``split=k`` steps k equal blocks of the out side as separate matrices (fused q, k, v projections,
    ``modman.optim.roles.fused_projections``), each with its own shape factor; every modman matrix optimizer
    takes both options.
    Keller Jordan, *Muon* (2024); torch.optim.Muon. msign: Polar Express, 5 steps; ``msign_dtype="auto"``
    computes it in bfloat16 like torch.optim.Muon and Keller's Muon (an update direction needs no more;
    BENCHMARKS.md (a)) wherever the device multiplies bfloat16 natively (GPUs; CPUs with AVX-512, AMX or
    Arm BF16), and in float32 on other CPUs, where bfloat16 products fall back to a slow scalar kernel
    (``modman.msign.fast_bfloat16``). Pass ``torch.bfloat16`` or ``None`` (float32) to fix it.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        adjust_lr_fn: str | None = "original",
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
            weight_decay=weight_decay,
            adjust_lr_fn=adjust_lr_fn,
            msign_method=msign_method,
            msign_steps=msign_steps,
            msign_dtype=msign_dtype,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _update_many(self, Ws, Gs, states, group):
        """All same-shape matrices of the group (blocks, under ``split``) share one batched msign call."""
        M = torch.stack([self._momentum(G, state, group) for G, state in zip(Gs, states)])
        A, _ = muon_direction(M, msign_fn=self._msign_fn(group))
        lr, wd = group["lr"], group["weight_decay"]
        scale = -lr * shape_scale(out_in(Ws[0].shape, group), group["adjust_lr_fn"])
        for W, A_i, state in zip(Ws, A.unbind(0), states):
            if wd:
                W.mul_(1 - lr * wd)
            W.add_(A_i, alpha=scale)
            state["msign_calls"] = 1  # one orthogonalization per matrix (computed in a batched call)


class SpectralDescent(ManifoldOptimizer):
    r"""Spectral-ball descent: ``W ← clip_r((1 − ηλ)W − η·s·msign(M))``, clip_r = singular values capped at r.

    Muon's step (momentum, Nesterov, shape factor as in ``Muon``; default ``"unit"``: lr is the update's
    spectral norm) on the ball ``σ_max(W) ≤ r``; weights
    are clipped into the ball when the optimizer is built (the LLM experiment plan's ``spectral_all``).
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        radius: float = 1.0,
        adjust_lr_fn: str | None = "unit",
        msign_method: str = "polar_express",
        msign_steps: int | None = 5,
        msign_dtype: torch.dtype | None = None,
        *,
        skip_nonfinite: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            radius=radius,
            adjust_lr_fn=adjust_lr_fn,
            msign_method=msign_method,
            msign_steps=msign_steps,
            msign_dtype=msign_dtype,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _init_param(self, W, group):
        W.copy_(SpectralBall(group["radius"]).ensure(W))

    def _update(self, W, G, state, group):
        A, info = muon_direction(self._momentum(G, state, group), msign_fn=self._msign_fn(group))
        lr, wd = group["lr"], group["weight_decay"]
        stepped = W * (1 - lr * wd) if wd else W.clone()
        stepped.add_(A, alpha=-lr * shape_scale(out_in(W.shape, group), group["adjust_lr_fn"]))
        # A non-finite step is left for the step's check to report and undo (the SVD would only raise).
        finite = bool(torch.isfinite(stepped).all())
        retracted = SpectralBall(group["radius"]).retract(stepped) if finite else stepped
        # A zero direction without decay keeps W bit for bit (the clip could re-round a boundary point).
        W.copy_(torch.where(A.any(), retracted, W) if not wd else retracted)
        state["msign_calls"] = info["msign_calls"]
