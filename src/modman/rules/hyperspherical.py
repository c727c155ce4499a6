"""Hyperspherical descent: the unit tangent direction of steepest descent on a sphere.

``A = T/‖T‖`` with ``T = G − W⟨W, G⟩/‖W‖²`` (per slice for a product of spheres); the step
``W ← r·(W − ηA)/‖W − ηA‖`` turns W by exactly ``arctan(η/r)`` (the blog's reference code, hyperspherical_descent.py).
"""

from __future__ import annotations

import torch

from ..manifolds import Sphere
from ..msign import unit_scaled

__all__ = ["hyperspherical_direction", "RADIAL_NOISE"]


# A tangent part below this fraction of ‖G‖ (per slice) is rounding noise: measured at most 2.5·eps for a purely
# radial G = cW in float32 up to 4096x1024; such a slice gets no direction rather than a step on noise.
RADIAL_NOISE = 16


def hyperspherical_direction(W: torch.Tensor, G: torch.Tensor, sphere: Sphere):
    """Unit-norm (per slice) tangent direction best aligned with G; a zero tangent gives zero.

    A slice whose tangent part is at rounding level (``‖T‖ <= 16·eps·‖G‖``, a radial G) gets zero too.
    G is first rescaled per slice by a power of two (``unit_scaled``; A does not depend on G's scale), so a
    gradient of any finite size gives the same finite direction. Returns ``(A, {"msign_calls": 0})``.
    """
    if W.numel() == 0:
        return torch.zeros_like(W), {"msign_calls": 0}
    dims = sphere.slice_dims(G)
    Gs = unit_scaled(G, dims)
    T = sphere.tangent(W.to(Gs.dtype), Gs)
    norms = sphere.slice_norms(T)
    floor = RADIAL_NOISE * torch.finfo(T.dtype).eps * sphere.slice_norms(Gs)
    A = torch.where(norms > floor, T / norms.clamp_min(torch.finfo(T.dtype).tiny), torch.zeros_like(T))
    return A.to(W.dtype), {"msign_calls": 0}
