"""Deprecated: moved to ``modman.rules.manifold_muon`` (a package, one module per solver); import from there."""

import warnings

from .manifold_muon import *  # noqa: F403
from .manifold_muon.fixed_point import *  # noqa: F403
from .manifold_muon.newton import *  # noqa: F403
from .manifold_muon.reduced import *  # noqa: F403
from .manifold_muon.tracking import *  # noqa: F403

warnings.warn(
    "modman.rules.manifold_muon_newton is deprecated; import from modman.rules.manifold_muon (solvers now take a "
    "Problem and return a Solution)",
    DeprecationWarning,
    stacklevel=2,
)
