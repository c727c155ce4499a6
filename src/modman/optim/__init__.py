"""torch.optim optimizers built from modman's rules and manifolds."""

from .base import ManifoldOptimizer
from .hyperspherical import HypersphericalDescent
from .manifold_muon import ManifoldMuon
from .muon import Muon, SpectralDescent
from .stiefel_retraction import StiefelRetraction

__all__ = ["ManifoldOptimizer", "Muon", "SpectralDescent", "HypersphericalDescent", "ManifoldMuon", "StiefelRetraction"]
