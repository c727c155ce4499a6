"""The solver protocol of manifold Muon: a ``Problem`` in, a ``Solution`` out; and the one tangent residual."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch

from ...msign import msign

__all__ = ["MsignFn", "Problem", "Solution", "Solver", "symmetric_rms", "tangent_residual"]

MsignFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Problem:
    """``argmax ⟨G, A⟩ s.t. ‖A‖_op ≤ 1, WᵀA + AᵀW = 0`` for a tall W with ``WᵀW = I``.

    Each solver reads what it needs: ``multiplier`` (Λ, n×n: a warm start, or None), ``steps`` (its iteration
    cap; ``tracking`` takes exactly that many), ``tol`` (residual and relative duality gap to reach),
    ``msign_fn`` (the solvers that take an msign: closed form, tracking, dual ascent) and ``alpha`` (dual
    ascent's step, in G's units).
    """

    W: torch.Tensor
    G: torch.Tensor
    multiplier: torch.Tensor | None = None
    steps: int = 100
    tol: float = 1e-6
    msign_fn: MsignFn = msign
    alpha: float = 0.01


class Solution(NamedTuple):
    """The direction A (tall, W's orientation), the multiplier Λ (n×n, in G's units), and ``info``: the
    documented keys of ``manifold_muon_direction`` (msign_calls, iterations, residual; gap, gram, cg_steps,
    repaired where the solver has them)."""

    A: torch.Tensor
    multiplier: torch.Tensor
    info: dict[str, Any]


class Solver(Protocol):
    def __call__(self, problem: Problem) -> Solution: ...


def symmetric_rms(T: torch.Tensor) -> torch.Tensor:
    """``RMS(T + Tᵀ)`` over the last two (square, n×n) dims: with ``T = WᵀA`` it is RMS(WᵀA + AᵀW), how far A
    is from the tangent space of Stiefel at W (the blog's stop rule)."""
    return torch.linalg.vector_norm(T + T.mT, dim=(-2, -1)) / T.shape[-1]


def tangent_residual(W: torch.Tensor, A: torch.Tensor) -> float:
    """RMS of ``WᵀA + AᵀW`` (tall orientation): how far A is from the tangent space (the blog's stop rule)."""
    return float(symmetric_rms(W.mT @ A))
