"""Modular manifolds in PyTorch: modules with mass, sensitivity and a manifold per weight; the modular norm."""

from .atoms import Embed, Linear
from .bonds import GELU, Attention, ReLU, RMSNorm, residual
from .descent import ModularDescent
from .module import Add, Atom, Bond, Compose, Identity, Module, Mul, Tuple, rms_norm
from .nets import GPT, MLP

__all__ = [
    "Module",
    "Atom",
    "Bond",
    "Compose",
    "Tuple",
    "Mul",
    "Add",
    "Identity",
    "rms_norm",
    "Linear",
    "Embed",
    "ReLU",
    "GELU",
    "RMSNorm",
    "Attention",
    "residual",
    "ModularDescent",
    "MLP",
    "GPT",
]
