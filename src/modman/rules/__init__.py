"""Update rules: pure functions from (W, G) to a unit-norm direction A and an ``info`` dict.

Spectral-ball descent needs no rule of its own: its direction is Muon's, ``msign(G)``, followed by
the ball's retraction.
"""

from .hyperspherical import hyperspherical_direction
from .manifold_muon import SOLVER_NAMES, SOLVERS, duality_gap, manifold_muon_direction, tangent_residual
from .muon import muon_direction, shape_scale

__all__ = [
    "hyperspherical_direction",
    "manifold_muon_direction",
    "muon_direction",
    "shape_scale",
    "tangent_residual",
    "SOLVERS",
    "SOLVER_NAMES",
    "duality_gap",
]
