"""Unconstrained weights: every tensor is on the manifold."""

from __future__ import annotations

import torch

from .base import Manifold

__all__ = ["Euclidean"]


class Euclidean(Manifold):
    """ℝ^shape: ``project`` and ``retract`` are the identity, ``tangent(W, G) = G``."""

    def project(self, W: torch.Tensor) -> torch.Tensor:
        return W.clone()

    def tangent(self, W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        return G.clone()

    def retract(self, W: torch.Tensor) -> torch.Tensor:
        return W.clone()

    def violation(self, W: torch.Tensor) -> float:
        return 0.0
