"""Hyperspherical descent as an optimizer."""

from __future__ import annotations

import torch

from ..manifolds import Sphere
from ..rules import hyperspherical_direction
from .base import ManifoldOptimizer

__all__ = ["HypersphericalDescent"]


class HypersphericalDescent(ManifoldOptimizer):
    r"""``W ← r·(W − ηA)/‖W − ηA‖``, ``A = T/‖T‖``, ``T = M − W⟨W, M⟩/r²`` (per slice when ``dim`` is set).

    Each step turns W by exactly ``arctan(η/r)``; M is the gradient or its (Nesterov) momentum.
    Weights are projected onto the sphere when the optimizer is built. Works for any tensor of >= 1 dim:
    ``dim=None`` puts the whole tensor on one sphere, ``dim=-1`` each row (embeddings).
    The modular manifolds blog's reference code, ``hyperspherical_descent.py``.
    """

    matrix_only = False

    def __init__(
        self,
        params,
        lr: float = 0.1,
        momentum: float = 0.0,
        nesterov: bool = False,
        radius: float = 1.0,
        dim: int | tuple[int, ...] | None = None,
        *,
        skip_nonfinite: bool = False,
    ):
        Sphere(radius, dim)  # validates radius and dim before anything is built
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, radius=radius, dim=dim)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _init_param(self, W, group):
        W.copy_(Sphere(group["radius"], group["dim"]).ensure(W))

    def _update(self, W, G, state, group):
        sphere = Sphere(group["radius"], group["dim"])
        A, info = hyperspherical_direction(W, self._momentum(G, state, group), sphere)
        moved = sphere.slice_norms(A) != 0  # slices with a zero direction keep their exact bits (NaN moves)
        W.copy_(torch.where(moved, sphere.retract(W - group["lr"] * A), W))
        state["msign_calls"] = info["msign_calls"]
