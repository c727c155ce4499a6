"""torch.optim optimizers built from modman's rules and manifolds."""

from .base import ManifoldOptimizer
from .constrained import SPEL, Hyperball, SpectralSphere
from .guard import NonFiniteError
from .hyperspherical import HypersphericalDescent
from .manifold_muon import ManifoldMuon
from .modular import EXPERIMENTS, ModularOptimizer
from .muon import Muon, SpectralDescent
from .retraction import ManifoldRetraction, SpectralRetraction, StiefelRetraction
from .roles import ROLES, classify_parameters, fused_projections, roles_table, transposed_weights

__all__ = [
    "ManifoldOptimizer",
    "Muon",
    "SpectralDescent",
    "HypersphericalDescent",
    "ManifoldMuon",
    "Hyperball",
    "SPEL",
    "SpectralSphere",
    "ManifoldRetraction",
    "StiefelRetraction",
    "SpectralRetraction",
    "ModularOptimizer",
    "EXPERIMENTS",
    "ROLES",
    "classify_parameters",
    "roles_table",
    "transposed_weights",
    "fused_projections",
    "NonFiniteError",
]
