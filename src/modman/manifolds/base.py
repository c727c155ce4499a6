"""The interface every manifold implements (one property-test suite runs over all of them)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..errors import UserError

__all__ = ["Manifold"]


class Manifold(ABC):
    """A constraint set for a weight tensor, with the operations an optimizer needs.

    * ``project(W)`` — a nearest point of the set (used once, when an optimizer is built).
    * ``tangent(W, G)`` — the orthogonal (Frobenius) projection of G onto the tangent space at W.
    * ``retract(W)`` — map a point just off the set (W − ηA) back onto it; cheap, called every step.
    * ``violation(W)`` — a dimensionless distance from the set; 0 on it.

    Subclasses hold hyperparameters only (e.g. a radius) and never keep tensors.
    """

    @abstractmethod
    def project(self, W: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def tangent(self, W: torch.Tensor, G: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def retract(self, W: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def violation(self, W: torch.Tensor) -> float: ...

    def ensure(self, W: torch.Tensor) -> torch.Tensor:
        """``W`` itself when it is on the set to rounding (``violation(W) <= rounding_tolerance(W.dtype)``), else
        ``project(W)``. Optimizers call it when they are built, so that rebuilding one over weights it already
        keeps on the manifold (load a checkpoint, continue) changes no bit."""
        if W.numel() == 0 or self.violation(W) <= rounding_tolerance(W.dtype):
            return W
        return self.project(W)

    def random(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """A random point: a Gaussian tensor projected onto the set."""
        return self.project(torch.randn(shape, generator=generator, dtype=dtype, device=device))

    def check_point(self, W: torch.Tensor, *, atol: float = 1e-5) -> tuple[bool, str]:
        """``(True, "")`` when ``violation(W) <= atol``, else ``(False, reason)``."""
        v = self.violation(W)
        if v <= atol:
            return True, ""
        return False, f"{self!r}: violation {v:.3g} > atol {atol:g} for a tensor of shape {tuple(W.shape)}"

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))


def rounding_tolerance(dtype: torch.dtype) -> float:
    """The violation a weight of this dtype can have from rounding alone (after a retraction): float32
    retractions measure <= 2e-6 up to 1024x256, so 1e-5; float64 1e-12; half precision 3e-2."""
    return {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 3e-2)


def require_matrix(W: torch.Tensor, owner: str) -> None:
    """Raise ValueError with the shape and the fix when W is not a (batch of) matrices."""
    if W.ndim < 2:
        raise UserError(
            f"{owner} needs a matrix (..., m, n); got shape {tuple(W.shape)}. "
            "Put vectors on a Sphere or leave them to AdamW."
        )


def check_radius(radius: float, owner: str) -> float:
    """Validate a radius hyperparameter (a positive finite number)."""
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: radius must be a positive number; got {radius!r}") from None
    if not (r > 0 and r < float("inf")):
        raise UserError(f"{owner}: radius must be a positive finite number; got {radius!r}")
    return r
