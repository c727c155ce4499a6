"""Constraint sets for weights: ``Euclidean``, ``Sphere``, ``Stiefel``, ``SpectralBall``, ``SpectralSphere``."""

from .base import Manifold
from .euclidean import Euclidean
from .spectral_ball import SpectralBall
from .spectral_sphere import SpectralSphere
from .sphere import Sphere
from .stiefel import Stiefel

__all__ = ["Manifold", "Euclidean", "Sphere", "Stiefel", "SpectralBall", "SpectralSphere"]
