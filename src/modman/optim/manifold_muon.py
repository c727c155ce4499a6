"""Manifold Muon as an optimizer: spectral-norm steepest descent that stays on the Stiefel manifold."""

from __future__ import annotations

from functools import partial

import torch

from ..manifolds import Stiefel
from ..msign import fast_bfloat16, msign, times_power_of_two, unit_scaled
from ..rules import manifold_muon_direction
from ..rules.manifold_muon import closed_form_batch, resolve_solver
from .base import ManifoldOptimizer
from .concurrent import run_concurrently

__all__ = ["ManifoldMuon"]

FAST_SOLVERS = ("auto", "tracking")


class ManifoldMuon(ManifoldOptimizer):
    r"""``W ← r·polar(W − ηA)``, ``A = argmax{⟨M, A⟩ : ‖A‖_op ≤ 1, WᵀA + AᵀW = 0}`` on ``WᵀW = r²I``.

    M is the gradient or its (Nesterov) momentum (Bernstein, *Modular Manifolds*, 2025). The direction comes
    from ``solver`` (``modman.rules.manifold_muon_direction``): ``"auto"`` (the default) is the closed form
    for square matrices (one msign) and, for tall and wide ones, ``"tracking"`` (one preconditioned
    fixed-point step from the last step's multiplier: one msign and matrix products) after a certified
    ``"hybrid"`` solve on the first step; ``"certified"`` is the closed form and ``"hybrid"`` to ``tol`` at
    every step; ``"tracking"``, ``"fixed_point"``, ``"newton"``, ``"hybrid"``, ``"closed_form"`` or seed
    003's ``"dual_ascent"`` force one solver. The dual multiplier Λ is kept in the state to warm-start the
    next step (``warm_start=True``; without it ``"auto"`` certifies every step). ``steps`` caps the
    certified iterations (None: 100; ``tracking`` takes 1). msign: ``msign_steps=None`` and
    ``msign_dtype="auto"`` are Muon's Polar Express, 5 steps, bfloat16 where the device multiplies it
    natively, under ``"auto"``/``"tracking"``, and 10 float32 steps under the other solvers.
    ``retraction="auto"``: the polar factor of W − ηA from n×n algebra (``Stiefel.retract_step``, no msign);
    ``"msign"``: ``r·msign(W − ηA)`` (the blog's retraction). Weights are projected onto the Stiefel
    manifold (exact polar factor) when the optimizer is built, as the blog does before training; ``step``
    never re-projects. Conv kernels are treated as (out, in·kh·kw) matrices. ``diagnostics()`` per matrix,
    of the last step: ``solver`` (the one used), ``iterations``, ``msign_calls`` (solver + retraction),
    ``residual`` (RMS of WᵀA + AᵀW) and, where a certified solver computed it, ``gap`` (relative duality gap).

    ``workers``: matrices solved one by one (tall, wide, or alone in their shape) are solved up to this
    many at a time, each in its own thread on its own CUDA stream (``modman.optim.concurrent``). None (the
    default): 4 on CUDA (the fastest on the GPUs of BENCHMARKS.md), 1 on the CPU, whose cores are already
    busy inside each solve. The results are bit for bit the same either way; only the time differs.
    """

    diagnostic_keys = ("step", "solver", "msign_calls", "iterations", "residual", "gap")

    def __init__(
        self,
        params,
        lr: float = 0.1,
        momentum: float = 0.0,
        nesterov: bool = False,
        radius: float = 1.0,
        alpha: float = 0.01,
        steps: int | None = None,
        tol: float = 1e-6,
        solver: str = "auto",
        warm_start: bool = True,
        retraction: str = "auto",
        msign_method: str = "polar_express",
        msign_steps: int | None = None,
        msign_dtype: torch.dtype | str | None = "auto",
        *,
        workers: int | None = None,
        skip_nonfinite: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            radius=radius,
            alpha=alpha,
            steps=steps,
            tol=tol,
            solver=solver,
            warm_start=warm_start,
            retraction=retraction,
            msign_method=msign_method,
            msign_steps=msign_steps,
            msign_dtype=msign_dtype,
            workers=workers,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)
        self._streams: dict = {}  # CUDA streams of the concurrent lanes, by device
        self._lanes: dict[int, int] = {}  # id(state) -> lane: a matrix keeps its stream from step to step

    @staticmethod
    def _msign_fn(group: dict):
        """msign as configured; ``msign_steps=None`` / ``msign_dtype="auto"`` are Muon's (Polar Express, 5 steps,
        bfloat16 where native) under the fast solvers (``auto``, ``tracking``), 10 float32 steps otherwise."""
        fast = group["solver"] in FAST_SOLVERS
        steps = group["msign_steps"] if group["msign_steps"] is not None else (5 if fast else 10)
        dtype = None if group["msign_dtype"] == "auto" and not fast else group["msign_dtype"]
        return partial(msign, method=group["msign_method"], steps=steps, dtype=dtype)

    @classmethod
    def _half_precision_msign(cls, group: dict, device) -> bool:
        dtype = cls._msign_fn(group).keywords["dtype"]
        return (torch.bfloat16 if dtype == "auto" and fast_bfloat16(device) else dtype) in (
            torch.bfloat16,
            torch.float16,
        )

    def _init_param(self, W, group):
        W.copy_(Stiefel(group["radius"]).ensure(W))

    @staticmethod
    def _batched(Ws, group) -> bool:
        return (
            len(Ws) > 1
            and Ws[0].shape[0] == Ws[0].shape[1]
            and resolve_solver(group["solver"], Ws[0].shape) == "closed_form"
        )

    def _update_buckets(self, buckets):
        """Batched closed forms first, then every other matrix, concurrently per device (``workers``)."""
        single: dict[torch.device, list] = {}
        for Ws, Gs, states, group in buckets:
            if self._batched(Ws, group):
                self._update_many(Ws, Gs, states, group)
                continue
            for W, G, state in zip(Ws, Gs, states):
                lane = self._lanes.setdefault(id(state), len(self._lanes))
                single.setdefault(W.device, []).append((group, (lane, partial(self._update, W, G, state, group))))
        for device, tasks in single.items():
            chosen = [g["workers"] for g, _ in tasks if g["workers"] is not None]
            run_concurrently([task for _, task in tasks], device, min(chosen, default=None), self._streams)

    def _update_many(self, Ws, Gs, states, group):
        """Square matrices under the closed form share one batched msign; the rest go one by one."""
        if not self._batched(Ws, group):
            return super()._update_many(Ws, Gs, states, group)
        Ms = [self._momentum(G, state, group) for G, state in zip(Gs, states)]
        moving = [i for i, M in enumerate(Ms) if bool(M.any())]
        for i in set(range(len(Ws))) - set(moving):
            states[i].update(msign_calls=0, iterations=0, residual=0.0)
        if not moving:
            return
        r, compute = group["radius"], torch.promote_types(Ws[0].dtype, torch.float32)
        W = torch.stack([Ws[i].to(compute) for i in moving]) / r
        # The direction does not depend on M's scale: solve for M/2^e (any finite size in range), Λ scaled back.
        M, exponent = unit_scaled(torch.stack([Ms[i].to(compute) for i in moving]), return_exponent=True)
        A, Lambda, gram, residual = closed_form_batch(W, M.to(compute), self._msign_fn(group))  # one msign call
        Lambda = times_power_of_two(Lambda, exponent)
        stiefel = Stiefel(r, group["msign_method"], group["msign_steps"])
        if self._half_precision_msign(group, W.device):
            gram = [None] * len(moving)  # AᵀA of a bfloat16 msign is no projector: the retraction's series start
        for j, i in enumerate(moving):
            new_W, used_msign = stiefel.retract_step(r * W[j], A[j], group["lr"], gram=gram[j])
            Ws[i].copy_(new_W)
            states[i]["multiplier"] = Lambda[j].to(Ws[i].dtype)
            states[i].update(
                msign_calls=1 + int(used_msign), iterations=1, solver="closed_form", residual=float(residual[j])
            )

    def _update(self, W, G, state, group):
        M = self._momentum(G, state, group)
        if not bool(M.any()):  # nothing to follow: keep W bit for bit (no retraction rounding)
            state.update(msign_calls=0, iterations=0, residual=0.0)
            state.pop("gap", None)
            return
        r, msign_fn = group["radius"], self._msign_fn(group)
        Wc = W.to(torch.promote_types(W.dtype, torch.float32))
        warm = state.get("multiplier") if group["warm_start"] else None
        A, info = manifold_muon_direction(
            Wc / r,
            M.to(Wc.dtype),
            alpha=group["alpha"],
            steps=group["steps"],
            tol=group["tol"],
            solver=group["solver"],
            multiplier=None if warm is None else warm.to(Wc.dtype),
            msign_fn=msign_fn,
        )
        if group["retraction"] == "auto":
            stiefel = Stiefel(r, group["msign_method"], group["msign_steps"])
            new_W, used_msign = stiefel.retract_step(Wc, A, group["lr"], gram=info.get("gram"))
        else:
            new_W, used_msign = r * msign_fn(Wc - group["lr"] * A), True
        W.copy_(new_W)
        state["multiplier"] = info["multiplier"].to(W.dtype)
        state.update(
            msign_calls=info["msign_calls"] + int(used_msign),
            iterations=info["iterations"],
            residual=info["residual"],
            solver=info["solver"],
        )
        if "gap" in info:  # the certified solvers' relative duality gap bound
            state["gap"] = float(info["gap"])
        else:
            state.pop("gap", None)
