"""modman — modular manifolds for PyTorch: msign, manifolds, update rules and optimizers."""

from . import functional, manifolds, optim, rules
from .msign import msign
from .version import __version__

__all__ = ["msign", "functional", "manifolds", "optim", "rules", "__version__"]
