"""A LLaMA-style decoder (the LLM experiment plan's model): RMSNorm, RoPE, causal attention, SwiGLU, untied head.

Reads top to bottom like nanoGPT's ``model.py``; shapes in comments use B (batch), T (time),
C (model width), H (heads), D (head width), F (FFN width), V (vocabulary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError

__all__ = ["ModelConfig", "PRESETS", "Transformer", "RMSNorm", "Attention", "FeedForward", "Block"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder. ``ffn_hidden`` is SwiGLU's inner width F."""

    vocab_size: int = 256
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_hidden: int = 512
    seq_len: int = 128
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_hidden", "seq_len"):
            if getattr(self, name) < 1:
                raise UserError(f"model: {name} must be >= 1; got {getattr(self, name)}")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise UserError(f"model: dim={self.dim} must split into n_heads={self.n_heads} heads of even width")


# tiny: a training step in a few milliseconds, for tests. small (the default): the smallest model on which
# the experiments separate in a few minutes of CPU. FFN width 4·dim keeps every matrix at aspect ratio 1
# or 4, where manifold Muon's solvers are exact in one msign or a few fixed-point iterations.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(dim=32, n_layers=2, n_heads=2, ffn_hidden=128, seq_len=32),
    "small": ModelConfig(dim=128, n_layers=4, n_heads=4, ffn_hidden=512, seq_len=128),
    "medium": ModelConfig(dim=256, n_layers=6, n_heads=8, ffn_hidden=1024, seq_len=256),
    "large": ModelConfig(dim=512, n_layers=8, n_heads=8, ffn_hidden=2048, seq_len=512),
}


class RMSNorm(nn.Module):
    """``x / RMS(x) · g`` over the last dimension, with a learned gain g (initialised to 1)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles t·θ^(−2i/D), each (T, D/2)."""
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), freqs)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (even, odd) pair of x (B, H, T, D) by its position's angle."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[: x.shape[-2]].to(x.dtype), sin[: x.shape[-2]].to(x.dtype)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    rope_cos: torch.Tensor  # buffers
    rope_sin: torch.Tensor
    """Causal multi-head self-attention with rotary positions; q, k, v, o projections without bias."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.dim // cfg.n_heads
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.v = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.o = nn.Linear(cfg.dim, cfg.dim, bias=False)
        cos, sin = rope_tables(cfg.seq_len, self.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        q, k = apply_rope(q, self.rope_cos, self.rope_sin), apply_rope(k, self.rope_cos, self.rope_sin)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return self.o(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) ⊙ w3 x)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, T, F) inside, (B, T, C) out


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    """Token embedding → blocks → RMSNorm → lm_head (untied). ``forward(idx (B, T)) → logits (B, T, V)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Embedding N(0, 1); projections N(0, 1/fan_in); output projections (o, w2) further / √(2L)."""
        nn.init.normal_(self.tok_embeddings.weight)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = 1.0 / math.sqrt(module.in_features)
                if name.endswith((".o", ".w2")):
                    std /= math.sqrt(2 * self.cfg.n_layers)
                nn.init.normal_(module.weight, std=std)
        nn.init.zeros_(self.lm_head.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[-1] > self.cfg.seq_len:
            raise UserError(
                f"Transformer: sequence of {idx.shape[-1]} tokens is longer than seq_len={self.cfg.seq_len}"
            )
        x = self.tok_embeddings(idx)  # (B, T, C)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))  # (B, T, V)
