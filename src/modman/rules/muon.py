"""Muon: the steepest descent direction under the spectral norm is the polar factor of the gradient.

``A = msign(G) = argmax_{‖A‖_op ≤ 1} ⟨G, A⟩`` — Keller Jordan's Muon (kellerjordan.github.io/posts/muon)
and Bernstein & Newhouse, *Old optimizer, new norm* (arXiv:2409.20325).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import UserError
from ..msign import msign

__all__ = ["muon_direction", "shape_scale", "ADJUST_LR_FNS"]

ADJUST_LR_FNS = (None, "original", "match_rms_adamw", "spectral", "unit")


def muon_direction(G: torch.Tensor, *, msign_fn: Callable[[torch.Tensor], torch.Tensor] = msign):
    """``A = msign(G)``: unit spectral norm, maximal ⟨G, A⟩. Returns ``(A, {"msign_calls": 1})``."""
    return msign_fn(G), {"msign_calls": 1}


def shape_scale(shape: tuple[int, ...] | torch.Size, adjust_lr_fn: str | None) -> float:
    """Multiplier on the learning rate of an (out, in) matrix update, by torch.optim.Muon's names.

    * ``"original"`` or ``None`` — ``sqrt(max(1, out/in))`` (Keller Jordan's Muon; torch's default, and
      torch's meaning of None);
    * ``"unit"`` — 1 (lr is the spectral norm of the update);
    * ``"match_rms_adamw"`` — ``0.2·sqrt(max(out, in))`` (Moonlight: update RMS ≈ AdamW's);
    * ``"spectral"`` — ``sqrt(out/in)`` (RMS→RMS operator norm, Bernstein & Newhouse).
    """
    if adjust_lr_fn not in ADJUST_LR_FNS:
        raise UserError(f"adjust_lr_fn must be one of {ADJUST_LR_FNS}; got {adjust_lr_fn!r}")
    out_features, in_features = shape[0], math.prod(shape[1:])
    if out_features == 0 or in_features == 0:
        return 1.0  # an empty matrix has no update to scale
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, out_features / in_features))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(out_features, in_features))
    if adjust_lr_fn == "spectral":
        return math.sqrt(out_features / in_features)
    return 1.0
