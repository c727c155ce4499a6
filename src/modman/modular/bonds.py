"""Bonds: modules without weights — nonlinearities, normalisation, residual connections, attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UserError
from .module import Bond, Identity, Module

__all__ = ["ReLU", "GELU", "RMSNorm", "residual", "Attention", "GELU_LIPSCHITZ"]

# max_x d/dx GELU(x) = Φ(√2) + √2·φ(√2), reached at x = √2.
GELU_LIPSCHITZ = 0.5 * (1 + math.erf(1.0)) + math.sqrt(2) * math.exp(-1.0) / math.sqrt(2 * math.pi)


class ReLU(Bond):
    """``max(x, 0)``: 1-Lipschitz and ``|relu(x)| ≤ |x|``."""

    def forward(self, x):
        return F.relu(x)


class GELU(Bond):
    """``GELU(x)/1.1289``: scaled so its largest slope is 1 (1-Lipschitz; ``|out| ≤ |x|``)."""

    def forward(self, x):
        return F.gelu(x) / GELU_LIPSCHITZ


class RMSNorm(Bond):
    """``x/‖x‖_RMS`` over the last dimension (no gain). Its Lipschitz constant is ``1/‖x‖_RMS``: the declared
    sensitivity 1 holds for inputs of RMS ≥ 1 (e.g. right after ``Embed``), not near zero."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + self.eps)


def residual(block: Module, alpha: float) -> Module:
    """``x ↦ (1 − α)·x + α·block(x)``: the convex residual keeps outputs in the unit ball when block does;
    sensitivity ``1 − α + α·s``, and the block's atoms get ``α`` times its coefficients (budget ``1/α``)."""
    if not 0 < alpha <= 1:
        raise UserError(f"residual: alpha must be in (0, 1]; got {alpha!r}")
    return (1 - alpha) * Identity() + alpha * block


def _rope(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding on (B, H, T, D): a rotation per position, so norms are unchanged."""
    T, D = x.shape[-2], x.shape[-1]
    half = D // 2
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float64, device=x.device) / max(half, 1))
    angle = torch.arange(T, dtype=torch.float64, device=x.device)[:, None] * freqs  # (T, D/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([out, x[..., 2 * half :]], dim=-1) if D % 2 else out


class Attention(Bond):
    """Causal multi-head attention of a tuple ``(q, k, v)``, each (B, T, C): RoPE on q and k, logits
    ``q·k/d_head`` (1/d, not 1/√d, as in modula: with per-head RMS ≤ 1 the logits stay in [−1, 1]).

    For q, k, v of per-head RMS ≤ 1, ``‖Δout‖ ≤ ‖Δq‖ + ‖Δk‖ + ‖Δv‖`` (a convex combination of values, and
    logits whose change is bounded by the inputs'), so the sensitivity is 1 per input (3 for the tuple, which
    ``Tuple``'s sum of sensitivities already counts).
    """

    def __init__(self, num_heads: int):
        super().__init__()
        if not isinstance(num_heads, int) or num_heads < 1:
            raise UserError(f"Attention: num_heads must be an integer >= 1; got {num_heads!r}")
        self.num_heads = num_heads

    def forward(self, qkv):
        q, k, v = qkv
        B, T, C = q.shape
        if C % self.num_heads:
            raise UserError(f"Attention: width {C} is not divisible by num_heads={self.num_heads}")
        D = C // self.num_heads
        q, k, v = (t.view(B, T, self.num_heads, D).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        q, k = _rope(q), _rope(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / D)  # (B, H, T, D)
        return y.transpose(1, 2).reshape(B, T, C)
