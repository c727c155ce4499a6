"""torch.optim optimizers built from modman's rules and manifolds."""

import warnings

from .base import ManifoldOptimizer
from .constrained import SPEL, Hyperball, SpectralSphere
from .guard import NonFiniteError
from .hyperspherical import HypersphericalDescent
from .manifold_muon import ManifoldMuon
from .modular import ModularOptimizer
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
    "ROLES",
    "classify_parameters",
    "roles_table",
    "transposed_weights",
    "fused_projections",
    "NonFiniteError",
]


def __getattr__(name: str):
    if name == "EXPERIMENTS":  # the experiment tables moved out of the optimizers' namespace
        warnings.warn(
            "modman.optim.EXPERIMENTS is deprecated; use ModularOptimizer.EXPERIMENTS (the rule tables it knows) or "
            "modman.experiments.llm.recipes.EXPERIMENTS",
            DeprecationWarning,
            stacklevel=2,
        )
        return ModularOptimizer.EXPERIMENTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
