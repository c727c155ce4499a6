"""Modules with mass and sensitivity, and the combinators that derive them (Bernstein & Newhouse's modular norm).

A module is a ``torch.nn.Module`` whose weights live on manifolds. Leaves declare their mass and
sensitivity (atoms: mass 1 unless ``tare`` changes it, sensitivity 1; bonds: mass 0 and a Lipschitz
constant); combinators derive both:

- composition ``m2 @ m1`` (apply m1, then m2): mass m1 + m2, sensitivity s1·s2, and
  ``‖(w1, w2)‖ = max((m/m1)·s2·‖w1‖₁, (m/m2)·‖w2‖₂)``;
- tuple ``Tuple(m1, m2)`` (same input, tuple output): mass m1 + m2, sensitivity s1 + s2, and
  ``‖(w1, w2)‖ = max((m/m1)·‖w1‖₁, (m/m2)·‖w2‖₂)``;
- ``a * m`` is ``Mul(a) @ m``; ``m1 + m2`` is ``Add() @ Tuple(m1, m2)``; ``m ** n`` composes n copies.

Unrolled, the modular norm of a network is ``max_i c_i‖w_i‖_i`` over its atoms; ``1/c_i`` is atom i's
learning-rate budget. Activations are measured in the RMS norm ``‖x‖₂/√d`` of the last dimension (the
largest over tokens / batch rows). A module is *well-normed*: for weights on their manifolds and inputs of
RMS norm ≤ 1, ``‖f(w + Δw, x) − f(w, x)‖ ≲ ‖Δw‖_modular`` to first order, and its outputs have RMS ≤ 1.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from ..errors import UserError
from ..manifolds.base import Manifold

__all__ = ["Module", "Atom", "Bond", "Compose", "Tuple", "Mul", "Add", "Identity", "rms_norm"]


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """The activation norm: ``‖x‖₂/√d`` over the last dimension, the largest over the leading ones."""
    return (x.square().mean(dim=-1).sqrt()).max() if x.ndim > 1 else x.square().mean().sqrt()


class Module(nn.Module):
    """A module of the modular norm. Subclasses: ``Atom`` (weights), ``Bond`` (no weights), combinators."""

    @property
    def mass(self) -> float:
        raise NotImplementedError

    @property
    def sensitivity(self) -> float:
        raise NotImplementedError

    # ---- combinators ------------------------------------------------------------------------------------
    def __matmul__(self, other: Module) -> Compose:
        if not isinstance(other, Module):
            return NotImplemented
        return Compose(self, other)

    def __rmul__(self, a: float) -> Compose:
        if not isinstance(a, (int, float)):
            return NotImplemented
        return Compose(Mul(a), self)

    __mul__ = __rmul__

    def __add__(self, other: Module) -> Compose:
        if not isinstance(other, Module):
            return NotImplemented
        return Compose(Add(), Tuple(self, other))

    def __pow__(self, n: int) -> Module:
        if not isinstance(n, int) or n < 1:
            raise UserError(f"module ** n needs an integer n >= 1; got {n!r}")
        out: Module = self
        for _ in range(n - 1):
            out = Compose(copy.deepcopy(self), out)  # fresh weights for each copy
        return out

    # ---- the modular norm -------------------------------------------------------------------------------
    def _coefficients(self, scale: float) -> list[tuple[Atom, float]]:
        raise NotImplementedError

    def budgets(self) -> list[tuple[Atom, float]]:
        """``(atom, c_i)`` for each atom in ``parameters()`` order: the norm is ``max_i c_i‖w_i‖_i``."""
        pairs = self._coefficients(1.0)
        params = list(self.parameters())
        if [a.weight for a, _ in pairs] != params:
            raise UserError(
                "modman.modular: every parameter must belong to exactly one atom, used once "
                "(share a module by composing it, not by placing the same instance twice)"
            )
        return pairs

    def _check_list(self, tensors: Sequence[torch.Tensor], what: str) -> list[tuple[Atom, float]]:
        pairs = self.budgets()
        if len(tensors) != len(pairs):
            raise UserError(
                f"{what}: expected {len(pairs)} tensors (one per parameter, parameters() order); got {len(tensors)}"
            )
        for (atom, _), t in zip(pairs, tensors):
            if tuple(t.shape) != tuple(atom.weight.shape):
                raise UserError(
                    f"{what}: a tensor of shape {tuple(t.shape)} where {type(atom).__name__} has "
                    f"weight shape {tuple(atom.weight.shape)}"
                )
        return pairs

    @torch.no_grad()
    def norm(self, ws: Sequence[torch.Tensor]) -> torch.Tensor:
        """The modular norm ``max_i c_i‖w_i‖_i`` of a list of tensors shaped like ``parameters()``."""
        pairs = self._check_list(ws, "norm")
        if not pairs:
            return torch.zeros(())
        return torch.stack([c * atom.weight_norm(w).double() for (atom, c), w in zip(pairs, ws)]).max()

    @torch.no_grad()
    def dualize(self, grads: Sequence[torch.Tensor], *, tangent: bool = True) -> list[torch.Tensor]:
        """The updates of unit modular norm best aligned with ``grads``: ``Δ_i = d_i(g_i)/c_i``.

        ``d_i`` is atom i's own rule (unit norm in ``‖·‖_i``): with ``tangent`` the steepest direction in
        its manifold's tangent space (manifold Muon for Linear, hyperspherical for Embed), else the
        unconstrained one (Muon's ``msign``, row normalisation).
        """
        pairs = self._check_list(grads, "dualize")
        return [atom.direction(g, tangent=tangent) / c for (atom, c), g in zip(pairs, grads)]

    @torch.no_grad()
    def project(self) -> Module:
        """Put every weight onto its manifold (in place; one already on it to rounding keeps its bits); returns self."""
        for atom, _ in self.budgets():
            atom.weight.copy_(atom.manifold.ensure(atom.weight))
        return self

    def tare(self, absolute: float = 1.0) -> Module:
        """Rescale the atoms' masses so this module's mass is ``absolute`` (their ratios stay)."""
        if not absolute > 0:
            raise UserError(f"tare: absolute must be > 0; got {absolute!r}")
        if self.mass <= 0:
            raise UserError(f"tare: {type(self).__name__} has mass 0 (no atoms); nothing to rescale")
        factor = absolute / self.mass
        for atom, _ in self._coefficients(1.0):
            atom._mass *= factor
        return self


class Atom(Module):
    """A module with one weight on a manifold; mass 1 (``tare`` rescales it), sensitivity 1."""

    manifold: Manifold  # set by each atom's __init__
    role: str  # a parameter role a caller may give it (``ModularDescent`` tags its param group with it)
    label: str  # a readable name (``modman.modular.nets``: ``block0.attention.q``)

    def __init__(self, weight: torch.Tensor, mass: float = 1.0):
        super().__init__()
        if not mass > 0:
            raise UserError(f"{type(self).__name__}: mass must be > 0; got {mass!r}")
        self.weight = nn.Parameter(weight)
        self._mass = float(mass)

    @property
    def mass(self) -> float:
        return self._mass

    @property
    def sensitivity(self) -> float:
        return 1.0

    def _coefficients(self, scale: float):
        return [(self, scale)]

    def weight_norm(self, w: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def direction(self, g: torch.Tensor, *, tangent: bool = True, state: dict | None = None) -> torch.Tensor:
        """The atom's unit-norm update direction for gradient g; ``state`` is a dict the optimizer keeps for
        this atom between steps (warm starts), None for a stateless call."""
        raise NotImplementedError  # pragma: no cover

    def retract_step(self, delta: torch.Tensor, lr: float) -> torch.Tensor:
        """The weight after a step ``W − lr·Δ`` taken back onto the manifold."""
        return self.manifold.retract(self.weight - lr * delta)


class Bond(Module):
    """A module without weights: mass 0 and a declared sensitivity (its Lipschitz constant)."""

    lipschitz = 1.0

    @property
    def mass(self) -> float:
        return 0.0

    @property
    def sensitivity(self) -> float:
        return float(self.lipschitz)

    def _coefficients(self, scale: float):
        return []


class Compose(Module):
    """``outer ∘ inner``: ``forward(x) = outer(inner(x))``."""

    def __init__(self, outer: Module, inner: Module):
        super().__init__()
        for m in (outer, inner):
            if not isinstance(m, Module):
                raise TypeError(f"@ composes modman.modular modules; got {type(m).__name__}")
        self.inner = inner  # registered first: parameters() follow the order of application
        self.outer = outer

    @property
    def mass(self) -> float:
        return self.inner.mass + self.outer.mass

    @property
    def sensitivity(self) -> float:
        return self.inner.sensitivity * self.outer.sensitivity

    def _coefficients(self, scale: float):
        m, out = self.mass, []
        if self.inner.mass > 0:
            out += self.inner._coefficients(scale * m / self.inner.mass * self.outer.sensitivity)
        if self.outer.mass > 0:
            out += self.outer._coefficients(scale * m / self.outer.mass)
        return out

    def forward(self, x):
        return self.outer(self.inner(x))


class Tuple(Module):
    """``(m1, m2, ...)``: each module applied to the same input; the output is the tuple of outputs."""

    def __init__(self, *modules: Module):
        super().__init__()
        if not modules or not all(isinstance(m, Module) for m in modules):
            raise TypeError("Tuple needs one or more modman.modular modules")
        self.parts = nn.ModuleList(modules)

    def _modules_in_order(self) -> list[Module]:
        return cast(list[Module], list(self.parts))

    @property
    def mass(self) -> float:
        return sum(m.mass for m in self._modules_in_order())

    @property
    def sensitivity(self) -> float:
        return sum(m.sensitivity for m in self._modules_in_order())

    def _coefficients(self, scale: float):
        m, parts = self.mass, self._modules_in_order()
        return [pair for part in parts if part.mass > 0 for pair in part._coefficients(scale * m / part.mass)]

    def forward(self, x):
        return tuple(part(x) for part in self.parts)


class Identity(Bond):
    def forward(self, x):
        return x


class Mul(Bond):
    """``x ↦ a·x`` (sensitivity |a|)."""

    def __init__(self, a: float):
        super().__init__()
        self.a = float(a)
        self.lipschitz = abs(self.a)

    def forward(self, x):
        return self.a * x


class Add(Bond):
    """``(x1, x2, ...) ↦ x1 + x2 + ...`` (sensitivity 1 with respect to each part)."""

    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
