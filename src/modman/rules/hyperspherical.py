"""Hyperspherical descent: the unit tangent direction of steepest descent on a sphere.

``A = T/‖T‖`` with ``T = G − W⟨W, G⟩/‖W‖²`` (per slice for a product of spheres); the step
``W ← r·(W − ηA)/‖W − ηA‖`` turns W by exactly ``arctan(η/r)`` (seed 003, hyperspherical_descent.py).
"""

from __future__ import annotations

import torch

from ..manifolds import Sphere

__all__ = ["hyperspherical_direction"]


def hyperspherical_direction(W: torch.Tensor, G: torch.Tensor, sphere: Sphere):
    """Unit-norm (per slice) tangent direction best aligned with G; a zero tangent gives zero.

    Returns ``(A, {"msign_calls": 0})``.
    """
    T = sphere.tangent(W, G)
    norms = sphere.slice_norms(T)
    A = torch.where(norms > 0, T / norms.clamp_min(torch.finfo(T.dtype).tiny), torch.zeros_like(T))
    return A, {"msign_calls": 0}
